"""Description stores are read where they are: a read command creates nothing, a store in a folder the reader
cannot write (a read-only mount, another user's folder) is read, and the journal suits the filesystem."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mghft.cli import main
from mghft.interpret import Description, DescriptionStore
from mghft.interpret import store as store_mod
from mghft.interpret.store import MissingStoreError

ROOT = Path(__file__).resolve().parents[1]
VIEWS = {"intention": "i", "style": "s", "main_role": "m", "posture_expression": "p"}


def test_a_read_command_on_a_missing_store_is_an_error_and_creates_nothing(tmp_path: Path, capsys) -> None:
    typo = tmp_path / "typo" / "s.sqlite"
    assert main(["descriptions", "stats", "--store", str(typo)]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and str(typo) in err
    assert not (tmp_path / "typo").exists()  # no folder, no empty store
    assert main(["descriptions", "export-jsonl", "--store", str(typo), "--out", str(tmp_path / "d.jsonl")]) == 1
    assert not (tmp_path / "typo").exists()
    with pytest.raises(MissingStoreError):
        DescriptionStore(typo, read_only=True)


def test_a_read_only_store_is_never_written(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with DescriptionStore(path) as s:
        s.put(Description(image_sha256="a" * 64, views=VIEWS, backend="b", model="m"))
    before = sorted(p.name for p in tmp_path.iterdir())
    with DescriptionStore(path, read_only=True) as s:
        assert len(s) == 1 and s.get("a" * 64).views["style"] == "s"
        with pytest.raises(Exception, match="readonly"):
            s.put(Description(image_sha256="b" * 64, views=VIEWS, backend="b", model="m"))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_the_journal_is_wal_on_a_local_filesystem_and_rollback_on_a_network_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert store_mod.filesystem_type(tmp_path) is not None
    assert store_mod.journal_mode(tmp_path / "s.sqlite") == "WAL"
    monkeypatch.setattr(store_mod, "filesystem_type", lambda path: "nfs4")
    with DescriptionStore(tmp_path / "n.sqlite") as s:
        assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


READER = """
import json, sys
from mghft.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("setpriv"),
    reason="switches to an unprivileged user (root and util-linux's setpriv)",
)
def test_a_store_in_a_folder_the_reader_cannot_write_is_read(capfd) -> None:
    """The situation of a read-only mount: SQLite can create no journal, WAL index or lock file beside the store."""
    import torch

    from mghft.hub import save_checkpoint
    from mghft.interpret import image_sha256
    from mghft.models.factory import create_model
    from tests import synthetic

    top = Path(tempfile.mkdtemp(prefix="mghft-ro-"))
    try:
        os.chmod(top, 0o755)
        (top / "out").mkdir()
        os.chmod(top / "out", 0o777)
        images = [p for p, _, _ in synthetic.write_images(top / "in", 1)]
        torch.manual_seed(0)
        save_checkpoint(create_model("mghft_tiny", num_classes=len(synthetic.CLASSES), text_encoder=False),
                        top / "ck", class_names=list(synthetic.CLASSES))  # fmt: skip
        store = top / "shared" / "s.sqlite"
        with DescriptionStore(store) as s:
            s.put(Description(image_sha256=image_sha256(images[0]), views=VIEWS, backend="b", model="m"))
        for p in top.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.chmod(top / "out", 0o777)
        import mghft

        src = Path(mghft.__file__).resolve().parents[1]  # the package under test, wherever it was imported from
        env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT}", "HOME": str(top / "out")}

        def as_nobody(*argv: str) -> subprocess.CompletedProcess:
            drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            return subprocess.run([*drop, sys.executable, "-c", READER, *argv], env=env, capture_output=True,
                                  text=True, cwd=top / "out")  # fmt: skip

        stats = as_nobody("descriptions", "stats", "--store", str(store))
        assert stats.returncode == 0, stats.stderr
        assert '"descriptions": 1' in stats.stdout
        out = top / "out" / "p.jsonl"
        pred = as_nobody("predict", *map(str, images), "--model", str(top / "ck"), "--store", str(store),
                         "--out", str(out), "--no-progress")  # fmt: skip
        assert pred.returncode == 0, pred.stderr
        assert len(out.read_text().splitlines()) == len(images)
        assert sorted(p.name for p in store.parent.iterdir()) == ["s.sqlite"]  # nothing created beside it
        write = as_nobody("descriptions", "import-jsonl", "--store", str(store), str(out))
        assert write.returncode == 1 and str(store) in write.stderr and "unexpected" not in write.stderr
    finally:
        shutil.rmtree(top, ignore_errors=True)
