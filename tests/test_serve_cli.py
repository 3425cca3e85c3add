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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_applies_its_flags(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: seen.setdefault("config", self.config))
    key = tmp_path / "key.txt"
    key.write_text("k3y\n", encoding="utf-8")
    port = _free_port()
    from mghft.interpret import DescriptionStore

    DescriptionStore(tmp_path / "d.sqlite").close()  # --store without --interpreter reads it: it must exist
    rc = main(["serve", "--model", str(checkpoint), "--port", str(port), "--max-images", "3", "--queue-size", "9",
               "--max-file-mb", "0.5", "--api-key-file", str(key), "--store", str(tmp_path / "d.sqlite")])  # fmt: skip
    assert rc == 0
    config = seen["config"]
    assert config.port == port and config.host == "127.0.0.1" and config.limit_concurrency == 128
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
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: started.append(self))
    monkeypatch.delenv("MGHFT_API_KEY", raising=False)
    key = tmp_path / "key.txt"
    key.write_text("\n", encoding="utf-8")  # e.g. a secret that was not mounted
    rc = main(["serve", "--model", str(checkpoint), "--api-key-file", str(key)])
    assert rc != 0 and not started  # never served without the key the operator asked for
    assert "key.txt" in capsys.readouterr().err
    rc = main(["serve", "--model", str(checkpoint), "--api-key-file", str(tmp_path / "absent.txt")])
    assert rc == 2 and not started
    assert "absent.txt" in capsys.readouterr().err


def test_predict_csv_escapes_formulas_and_overlays_stay_in_their_folder(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mghft.interpret import Description, DescriptionStore, image_sha256

    inputs = tmp_path / "in"
    inputs.mkdir()
    names = ['=HYPERLINK("evil.example?x","open").png', "@SUM(1+1).png", "ok.png", "x" * 240 + ".png"]
    for i, name in enumerate(names):
        sticker(i).save(inputs / name)
    store_path = tmp_path / "views.sqlite"
    with DescriptionStore(store_path) as store:  # a model server's answer is untrusted text too
        views = {v: "=cmd|'/c calc'!A1" if v == "style" else f"{v} text" for v in VIEWS}
        store.put(Description(image_sha256=image_sha256(inputs / "ok.png"), views=views, backend="test"))
    outside = tmp_path / "outside.png"
    explain = tmp_path / "explain"
    explain.mkdir()
    (explain / "000002_ok.png").symlink_to(outside)  # a link planted where an overlay goes
    monkeypatch.chdir(inputs)  # relative paths: the file name starts the cell
    out = tmp_path / "labels.csv"
    args = ["predict", ".", "--model", str(checkpoint), "--out", str(out), "--explain", str(explain),
            "--store", str(store_path), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert sorted(r["path"] for r in rows) == sorted(
        ['\'=HYPERLINK("evil.example?x","open").png', "'@SUM(1+1).png", "ok.png", "x" * 240 + ".png"]
    )
    ok = next(r for r in rows if r["path"] == "ok.png")
    assert ok["view_style"] == "The sticker's style: =cmd|'/c calc'!A1"  # not a formula: the prefix comes first
    for r in rows:
        for cell in r.values():
            assert not cell.startswith(("=", "@", "+", "-", "\t", "\r")), cell
        overlay = Path(r["overlay"])
        assert overlay.parent == explain and not overlay.is_symlink() and overlay.is_file()
        assert len(overlay.name) <= 100
    assert not outside.exists()  # the planted link was replaced, not followed
    # JSONL keeps the exact values
    jl = tmp_path / "labels.jsonl"
    assert main(["predict", ".", "--model", str(checkpoint), "--out", str(jl), "--no-progress"]) == 0
    assert {json.loads(line)["path"] for line in jl.read_text(encoding="utf-8").splitlines()} == set(names)


def test_overlay_names_never_leave_the_folder(tmp_path: Path) -> None:
    from mghft.serve.cli import csv_cell, overlay_path

    for name in ["../../etc/passwd", "..\\..\\win.png", "/abs/x.png", "a\nb.png", ".hidden.png", "..", "", "é😀.png"]:
        p = overlay_path(tmp_path, 7, name)
        assert p.parent == tmp_path and p.name.startswith("000007_") and p.suffix == ".png", name
        assert "\n" not in p.name and "/" not in p.name[7:]
    assert overlay_path(tmp_path, 1, "a/b/happy cat.gif").name == "000001_happy_cat.png"
    assert csv_cell("-2+3") == "'-2+3" and csv_cell("\tx") == "'\tx" and csv_cell("fine") == "fine"
    assert csv_cell(-0.5) == -0.5  # numbers are not text


def _serve_args(checkpoint: Path, *extra: str) -> list[str]:
    return ["serve", "--model", str(checkpoint), *extra]


def _usage_error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    """The one-line error of a mistaken ``serve`` call, whether the CLI prints it or raises it."""
    from mghft.errors import UsageError

    try:
        rc = main(args)
    except UsageError as e:
        return f"error: {e}\nhint: {e.hint}"
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    return err


def test_serve_names_the_flags_of_an_impossible_queue(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _usage_error(capsys, _serve_args(checkpoint, "--queue-size", "8"))
    assert "--max-images (32) exceeds --queue-size (8)" in err and "ServeSettings" not in err
    assert "raise --queue-size to at least 32" in err
    err = _usage_error(capsys, _serve_args(checkpoint, "--header-timeout", "0"))
    assert "argument --header-timeout: must be a number > 0, got 0" in err


def test_serve_on_a_taken_port_is_one_error_line(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = _usage_error(capsys, _serve_args(checkpoint, "--port", str(port)))
    assert f"port {port} on 127.0.0.1 is taken" in err and "--port" in err and "Errno" not in err


def test_serve_prints_its_url_once_it_listens(checkpoint: Path, tmp_path: Path) -> None:
    """A real ``mghft serve`` process: the moment it prints its URL, that URL answers."""
    import os
    import re
    import subprocess
    import sys
    import threading

    import httpx

    import mghft

    env = {**os.environ, "PYTHONPATH": str(Path(mghft.__file__).parents[1]), "MGHFT_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mghft", *_serve_args(checkpoint, "--port", "0", "--device", "cpu")],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    timer = threading.Timer(120, proc.kill)  # the test ends by itself whatever happens
    timer.start()
    try:
        url = None
        for line in proc.stderr:  # type: ignore[union-attr]
            m = re.search(r"serving \S+ on (http://127\.0\.0\.1:(\d+))", line)
            if m:
                url = m.group(1)
                assert int(m.group(2)) > 0  # the real port, not the 0 asked for
                r = httpx.get(url + "/readyz", timeout=10)  # right away: no retry
                assert r.status_code == 200 and r.json()["ready"] is True
                assert "answering Host names localhost, 127.0.0.1, ::1" in line
                break
        assert url is not None, "no URL printed"
    finally:
        timer.cancel()
        proc.terminate()
        proc.wait(30)


def test_bare_image_predict_loads_no_text_encoder(
    checkpoint: Path, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``--interpreter`` or ``--store`` no view text can come, so the text encoder is never loaded."""
    import mghft.models.text

    out = tmp_path / "labels.jsonl"
    args = ["predict", str(folder / "happy.png"), str(folder / "pack"), "--model", str(checkpoint), "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    expected = out.read_text(encoding="utf-8")

    loaded: list[object] = []
    real = mghft.models.text.load_text_backbone

    def counted(*args: object, **kwargs: object) -> object:
        loaded.append(args[0] if args else kwargs)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(mghft.models.text, "load_text_backbone", counted)
    assert main(args) == 0
    assert loaded == [] and out.read_text(encoding="utf-8") == expected  # not loaded; the same predictions
    from mghft.interpret import DescriptionStore

    DescriptionStore(tmp_path / "views.sqlite").close()  # read where it is: it must exist
    assert main([*args, "--store", str(tmp_path / "views.sqlite")]) == 0
    assert len(loaded) == 1  # a store may give views: then it is loaded
