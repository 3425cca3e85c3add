"""``mghft predict`` over a folder mixing good stickers with broken, empty, huge and non-image files."""

from __future__ import annotations

import csv
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from mghft.cli import main
from mghft.views import VIEWS
from tests.test_serve_api import CLASSES, make_checkpoint, png_bytes, sticker


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header announces ``width`` x ``height`` pixels and holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("serve-cli") / "tiny")


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "stickers"
    (root / "pack" / "nested").mkdir(parents=True)
    sticker(0).save(root / "happy.png")
    sticker(1).convert("RGB").save(root / "pack" / "sad.JPG")
    frames = [sticker(i) for i in range(3)]
    frames[0].save(root / "pack" / "anim.gif", save_all=True, append_images=frames[1:], duration=80, loop=0)
    sticker(3, (300, 40)).save(root / "pack" / "nested" / "wide.webp")
    (root / "broken.png").write_bytes(png_bytes(sticker(4))[:70])  # truncated
    (root / "empty.png").write_bytes(b"")
    (root / "huge.png").write_bytes(_png_header_only(5_000, 5_000))  # 25 M pixels in a few bytes
    (root / "notes.jpg").write_text("this is not a picture\n", encoding="utf-8")
    (root / "readme.txt").write_text("not an image extension: ignored\n", encoding="utf-8")
    (root / ".hidden.png").write_bytes(png_bytes(sticker(5)))
    return root


GOOD = {"happy.png", "sad.JPG", "anim.gif", "wide.webp"}
BAD = {"broken.png", "empty.png", "huge.png", "notes.jpg"}


def test_predict_folder_to_csv_with_overlays(
    checkpoint: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "labels.csv"
    rc = main(["predict", str(folder), "--model", str(checkpoint), "--out", str(out), "--batch-size", "3",
               "--explain", "--no-progress", "--max-pixels", "10000000"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert {Path(r["path"]).name for r in rows} == GOOD
    for bad in BAD:  # each unreadable file is reported by name
        assert f"{bad}:" in err
    assert "25000000 pixels exceeds the limit of 10000000" in err and "empty file" in err
    assert "4 predicted, 4 skipped, 1 non-image files ignored" in err
    for r in rows:
        probs = [float(r[f"p_{c}"]) for c in CLASSES]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert r["label"] == CLASSES[probs.index(max(probs))]
        assert r["view_source"] == "absent" and all(r[f"view_{v}"] == "" for v in VIEWS)
        assert sum(float(r[f"weight_{v}"]) for v in VIEWS) == pytest.approx(1.0, abs=1e-4)
        overlay = Path(r["overlay"])
        assert overlay.parent == tmp_path / "out" / "labels_explain"
        with Image.open(overlay) as im, Image.open(r["path"]) as original:
            assert im.format == "PNG" and im.width == max(original.width, 320)  # small stickers scaled up
            assert im.height > original.height * im.width / original.width  # and a caption strip below
    meta = json.loads((tmp_path / "out" / "labels.csv.meta.json").read_text())
    assert meta["predicted"] == 4 and meta["skipped"] == 4 and meta["classes"] == CLASSES


def test_predict_jsonl_files_and_views_from_a_store(
    checkpoint: Path, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mghft.interpret import Description, DescriptionStore, image_sha256

    happy = folder / "happy.png"
    store_path = tmp_path / "views.sqlite"
    views = {v: f"{v} of the happy sticker" for v in VIEWS}
    with DescriptionStore(store_path) as store:
        store.put(Description(image_sha256=image_sha256(happy), views=views, backend="test"))
    out = tmp_path / "labels.jsonl"
    args = ["predict", str(happy), str(folder / "pack"), str(folder / "missing.png"), "--model", str(checkpoint),
            "--out", str(out), "--store", str(store_path), "--batch-size", "2", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "missing.png: no such file" in err
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    by_name = {Path(d["path"]).name: d for d in lines}
    assert set(by_name) == {"happy.png", "sad.JPG", "anim.gif", "wide.webp"}
    assert by_name["happy.png"]["view_source"] == "interpreter"
    assert by_name["happy.png"]["views"]["style"].endswith("style of the happy sticker")
    assert by_name["sad.JPG"]["view_source"] == "absent"
    assert len(by_name["wide.webp"]["explanation"]["stages"]) == 4


def test_predict_exit_codes(checkpoint: Path, folder: Path, tmp_path: Path) -> None:
    only_bad = [str(folder / name) for name in sorted(BAD)]
    assert main(["predict", *only_bad, "--model", str(checkpoint), "--out", str(tmp_path / "x.csv"),
                 "--no-progress"]) == 1  # fmt: skip
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert main(["predict", str(empty), "--model", str(checkpoint), "--out", str(tmp_path / "y.csv")]) == 1
    assert main(["predict", str(folder), "--model", str(checkpoint), "--out", str(tmp_path / "z")]) == 2


def test_serve_command_applies_its_flags(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: seen.setdefault("config", self.config))
    key = tmp_path / "key.txt"
    key.write_text("k3y\n", encoding="utf-8")
    rc = main(["serve", "--model", str(checkpoint), "--port", "8123", "--max-images", "3", "--queue-size", "9",
               "--max-file-mb", "0.5", "--api-key-file", str(key), "--store", str(tmp_path / "d.sqlite")])  # fmt: skip
    assert rc == 0
    config = seen["config"]
    assert config.port == 8123 and config.host == "127.0.0.1" and config.limit_concurrency == 128
    settings = config.app.state.settings
    assert (settings.max_images, settings.queue_size, settings.max_file_bytes) == (3, 9, 1 << 19)
    assert settings.api_key == "k3y"
    assert config.app.state.predictor.interpreter is not None  # the store answers for described images
    config.app.state.predictor.interpreter.close()


def test_serve_refuses_an_empty_api_key_file(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    started = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: started.append(self))
    monkeypatch.delenv("MGHFT_API_KEY", raising=False)
    key = tmp_path / "key.txt"
    key.write_text("\n", encoding="utf-8")  # e.g. a secret that was not mounted
    rc = main(["serve", "--model", str(checkpoint), "--api-key-file", str(key)])
    assert rc != 0 and not started  # never served without the key the operator asked for
    assert "key.txt" in capsys.readouterr().err
    rc = main(["serve", "--model", str(checkpoint), "--api-key-file", str(tmp_path / "absent.txt")])
    assert rc == 2 and not started
    assert "absent.txt" in capsys.readouterr().err
