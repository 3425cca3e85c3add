"""Every platform's sticker format through the one image-opening path: decoded pixels, the frame policy, the decode
budget against frame bombs, the format allowlist, and the same files through predict, interpret, training readers
and the service."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mghft.data.images import (
    ALLOWED_FORMATS,
    IMAGE_EXTENSIONS,
    MIN_FRAME_COST,
    DecodeLimits,
    ImageFormatError,
    ImageLoadError,
    ImageTooLargeError,
    decode_image,
    load_frames,
    load_image,
    policy_indices,
)
from mghft.data.walk import find_images
from mghft.serve.predictor import Predictor
from tests import sticker_files as sf

WHITE = (255, 255, 255)


def _close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 6) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


# name -> (file name, builder, expected format, pixel -> expected colour checks)
Check = dict[tuple[int, int], tuple[int, int, int]]
CASES: dict[str, tuple[str, Callable[[], bytes], str, Check]] = {
    "png": ("still.png", sf.png_still, "PNG", {(0, 0): WHITE, (16, 16): sf.RED}),
    "apng_named_png": ("line.png", sf.apng, "PNG", {(0, 0): WHITE, (16, 16): sf.BLUE}),
    "apng": ("line.apng", sf.apng, "PNG", {(0, 0): WHITE, (31, 31): WHITE, (16, 16): sf.BLUE}),
    "webp_still": ("still.webp", sf.webp_still, "WEBP", {(0, 0): WHITE, (16, 16): sf.RED}),
    "webp_animated": ("whatsapp.webp", sf.webp_animated, "WEBP", {(0, 0): WHITE, (16, 16): sf.BLUE}),
    "gif_disposal": ("wechat.gif", sf.gif_disposal, "GIF", {(0, 0): WHITE, (16, 16): sf.BLUE}),
    "avif": ("anim.avif", sf.avif, "AVIF", {(0, 0): WHITE, (16, 16): sf.BLUE}),
    "tgs": ("telegram.tgs", sf.tgs, "TGS", {(0, 0): WHITE, (32, 32): sf.BLUE}),
    "webm_alpha": ("telegram.webm", sf.webm_alpha, "WEBM", {(0, 0): WHITE, (31, 0): WHITE, (16, 16): sf.BLUE}),
    "png_1bit_trns": ("onebit.png", sf.png_1bit_trns, "PNG", {(0, 0): WHITE, (4, 4): WHITE}),
    "png_2bit_trns": ("twobit.png", sf.png_2bit_grey_trns, "PNG", {(0, 0): WHITE, (1, 1): (0, 0, 0)}),
    "png_16bit_grey_trns": ("grey16.png", sf.png_16bit_grey_trns, "PNG", {(0, 0): WHITE, (1, 1): (128, 128, 128)}),
    "png_16bit_rgb_trns": ("rgb16.png", sf.png_16bit_rgb_trns, "PNG", {(0, 0): WHITE, (1, 1): sf.RED}),
    "cmyk_jpeg": ("cmyk.jfif", sf.cmyk_jpeg, "JPEG", {(8, 8): sf.RED}),
    "exif_rotated": ("rotated.jpg", sf.exif_rotated_jpeg, "JPEG", {(10, 5): sf.RED, (10, 35): sf.BLUE}),
}


def _check_pixels(im: Image.Image, checks: Check, tol: int = 6) -> None:
    assert im.mode == "RGB"
    for xy, colour in checks.items():
        got = im.getpixel(xy)
        assert _close(got, colour, tol), f"pixel {xy}: {got} != {colour}"


@pytest.fixture(scope="module")
def sticker_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stickers")
    for file_name, build, _, _ in CASES.values():
        (root / file_name).write_bytes(build())
    return root


@pytest.mark.parametrize("case", list(CASES))
def test_each_format_decodes_to_the_expected_pixels(case: str) -> None:
    _, build, fmt, checks = CASES[case]
    decoded = decode_image(build(), name=case)
    assert decoded.format == fmt
    assert decoded.note == ""
    _check_pixels(decoded.image, checks)


def test_platform_formats_are_all_accepted() -> None:
    assert set(ALLOWED_FORMATS) == {"PNG", "JPEG", "GIF", "WEBP", "AVIF", "BMP", "TGS", "WEBM"}
    for ext in (".png", ".apng", ".jpg", ".jpeg", ".jfif", ".gif", ".webp", ".avif", ".bmp", ".tgs", ".webm"):
        assert ext in IMAGE_EXTENSIONS
    for ext in (".tif", ".tiff", ".ico", ".eps", ".ps", ".pdf", ".psd"):
        assert ext not in IMAGE_EXTENSIONS


def test_trns_keys_were_black_before() -> None:
    # The colour key is in the file's units: Pillow's own conversion leaves these keys opaque (black, grey).
    im = Image.open(io.BytesIO(sf.png_1bit_trns()))
    assert im.convert("RGB").getpixel((0, 0)) == (0, 0, 0)
    assert load_image(sf.png_1bit_trns()).getpixel((0, 0)) == WHITE


@pytest.mark.parametrize("case", ["apng", "webp_animated", "gif_disposal", "avif", "webm_alpha"])
def test_frame_policy_middle_and_sampled_frames(case: str) -> None:
    _, build, _, _ = CASES[case]
    data = build()
    d = decode_image(data)
    assert d.n_frames == 5 and d.indices == [2]
    strip = load_frames(data, 5)
    assert [_close(f.getpixel((16, 16)), c) for f, c in zip(strip, sf.COLOURS, strict=True)] == [True] * 5
    three = decode_image(data, frames=3)
    assert three.indices == [0, 2, 4]
    assert [f.getpixel((0, 0)) for f in three.frames] == [WHITE] * 3


def test_tgs_frame_policy() -> None:
    d = decode_image(sf.tgs(), frames=5)  # 50 frames, colour k on frames 10k .. 10k + 9
    assert d.n_frames == 50 and d.indices == [5, 15, 25, 35, 45]
    assert [_close(f.getpixel((32, 32)), c) for f, c in zip(d.frames, sf.COLOURS, strict=True)] == [True] * 5


def test_half_transparent_pixels_blend_like_a_png() -> None:
    half_red_on_white = (255, 128, 128)
    png = load_image(sf._save([sf.frame(sf.RED, alpha=128)], "PNG")).getpixel((16, 16))
    assert _close(png, half_red_on_white, 2)
    doc = json.loads(gzip.decompress(sf.tgs([sf.RED])))
    doc["layers"][0]["shapes"][1]["o"] = {"a": 0, "k": 50}  # rlottie renders premultiplied alpha
    assert _close(load_image(sf.lottie_json(doc)).getpixel((32, 32)), half_red_on_white, 3)
    webm = load_image(sf.webm_alpha([sf.RED], alpha=128)).getpixel((16, 16))
    assert _close(webm, half_red_on_white, 8), webm


def test_policy_indices() -> None:
    assert policy_indices(1) == [0]
    assert policy_indices(2) == [1]
    assert policy_indices(7) == [3]
    assert policy_indices(10, 4) == [1, 3, 6, 8]
    assert policy_indices(2, 5) == [0, 1]


# --- bombs ---------------------------------------------------------------------------------------------------------


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    """Result (or raised ImageLoadError) and the CPU seconds the process spent."""
    start = time.process_time()
    try:
        result: object = fn()
    except ImageLoadError as err:
        result = err
    return result, time.process_time() - start


@pytest.mark.parametrize("builder", [sf.gif_bomb, sf.apng_bomb, sf.webp_bomb], ids=["gif", "apng", "webp"])
def test_frame_bomb_gives_an_early_frame_within_two_seconds(builder: Callable[[], bytes]) -> None:
    data = builder()  # 4000 x 4000 canvas, 8000 frames of one pixel
    assert len(data) < 600_000
    decoded, cpu = _timed(lambda: decode_image(data, name="bomb"))
    assert cpu < 2.0
    assert not isinstance(decoded, Exception), decoded
    assert decoded.n_frames == 8000
    assert decoded.indices == [1]  # the budget (40 M canvas pixels) reaches frame 1 of 16 M-pixel canvases
    assert "instead of the middle frame 4000" in decoded.note and "decode budget" in decoded.note


def test_avif_and_webm_follow_the_same_budget() -> None:
    limits = DecodeLimits(decode_budget=3 * MIN_FRAME_COST)  # small canvases count MIN_FRAME_COST: frame 2 at most
    for data in (sf.avif(sf.COLOURS * 2), sf.webm_alpha(sf.COLOURS * 2)):
        d = decode_image(data, limits=limits)
        assert d.n_frames == 10 and d.indices == [2], d
        assert _close(d.image.getpixel((16, 16)), sf.COLOURS[2]) and "decode budget" in d.note


def test_frame_limit_is_checked_from_headers() -> None:
    limits = DecodeLimits(max_frames=4)
    for data in (sf.apng(), sf.webp_animated(), sf.gif_disposal(), sf.avif(), sf.webm_alpha()):
        with pytest.raises(ImageTooLargeError, match="frame"):
            decode_image(data, limits=limits)
    # a GIF announcing a huge canvas is refused from its header, before its frames are even counted
    result, cpu = _timed(lambda: decode_image(sf.gif_bomb(), limits=DecodeLimits(max_pixels=4000 * 4000 - 1)))
    assert isinstance(result, ImageTooLargeError) and "4000x4000" in str(result) and cpu < 1.0


def test_webm_with_thousands_of_frames() -> None:
    data = sf.webm_alpha([sf.RED, sf.GREEN], side=16, repeat=1000)  # 2000 frames
    d, cpu = _timed(lambda: decode_image(data))
    assert not isinstance(d, Exception) and d.n_frames == 2000 and d.indices == [1000] and cpu < 2.0
    assert _close(d.image.getpixel((8, 8)), sf.RED)
    with pytest.raises(ImageTooLargeError, match="more than 1500 frames"):
        decode_image(data, limits=DecodeLimits(max_frames=1500))


def _lottie(**overrides: object) -> bytes:
    doc = json.loads(gzip.decompress(sf.tgs()))
    doc.update(overrides)
    return sf.lottie_json(doc)


def test_tgs_bombs_are_refused_or_bounded() -> None:
    huge_canvas, cpu = _timed(lambda: decode_image(_lottie(w=100_000, h=100_000)))
    assert isinstance(huge_canvas, ImageTooLargeError) and "100000x100000" in str(huge_canvas) and cpu < 1
    many, cpu = _timed(lambda: decode_image(_lottie(op=10**9)))
    assert isinstance(many, ImageTooLargeError) and "frames exceeds the limit" in str(many) and cpu < 1
    # A large canvas is rendered at 512 px at most, whatever it declares.
    layer = json.loads(gzip.decompress(sf.tgs()))["layers"][0]
    heavy = _lottie(w=7000, h=7000, layers=[dict(layer, ind=i + 1) for i in range(300)])
    d, cpu = _timed(lambda: decode_image(heavy, frames=4))
    assert not isinstance(d, Exception) and d.image.size == (512, 512) and cpu < 2
    inflated = sf.lottie_json({"layers": [], "w": 10, "h": 10, "ip": 0, "op": 1, "pad": " " * (3 << 20)})
    with pytest.raises(ImageTooLargeError, match="expands to more than"):
        decode_image(inflated)
    external = _lottie(assets=[{"id": "a", "w": 8, "h": 8, "u": "/etc/", "p": "passwd"}])
    with pytest.raises(ImageLoadError, match="external image files"):
        decode_image(external)
    with pytest.raises(ImageLoadError, match="not Lottie JSON"):
        decode_image(gzip.compress(b"\x00\x01 binary"))


# --- the allowlist -------------------------------------------------------------------------------------------------


def _ico_holding_png(side: int = 12000) -> bytes:
    """An ICO whose directory says 16 x 16 and whose image is a PNG announcing ``side`` x ``side``."""
    png = sf.png_raw(side, side, 8, 0, [])[:33] + sf._chunk(b"IEND", b"")
    header = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 22)
    return header + png


def _tiff_pages(n: int) -> bytes:
    buf = io.BytesIO()
    pages = [Image.new("L", (1, 1)) for _ in range(n)]
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:])
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "PostScript/EPS"),
        (_ico_holding_png(), "ICO"),
        (_tiff_pages(200), "TIFF"),
        (b"%PDF-1.4\n", "PDF"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
    ],
    ids=["eps", "ico", "tiff", "pdf", "svg"],
)
def test_other_formats_are_refused_before_any_decoder(data: bytes, kind: str, tmp_path: Path) -> None:
    path = tmp_path / "upload.png"  # the extension does not matter
    path.write_bytes(data)
    err, cpu = _timed(lambda: load_image(path, name="upload.png"))
    assert isinstance(err, ImageFormatError) and cpu < 0.5
    assert str(err) == f"upload.png: {kind} is not an accepted image format"
    assert err.hint is not None and "WEBM" in err.hint and str(tmp_path) not in str(err) + err.hint


def test_errors_survive_pickling_between_processes() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(ImageFormatError("a.tif", "TIFF is not an accepted image format", hint="h")))
    assert isinstance(err, ImageFormatError) and str(err) == "a.tif: TIFF is not an accepted image format"
    assert err.reason.startswith("TIFF") and err.hint == "h"


def test_decoder_errors_never_carry_paths() -> None:
    data = sf.png_still()
    err = pytest.raises(ImageLoadError, load_image, data[: len(data) // 2], name="cut.png").value
    assert str(err) == "cut.png: truncated PNG file: the data ends before the image does"


# --- walking inputs ------------------------------------------------------------------------------------------------


@pytest.fixture()
def hostile_folder(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    root.mkdir()
    (root / "real.png").write_bytes(sf.png_still())
    os.mkfifo(root / "fifo.png")
    (root / "zero.png").symlink_to("/dev/zero")
    (root / "gone.png").symlink_to(root / "missing.png")
    (root / "loop").symlink_to(root)
    (root / "notes.txt").write_text("not an image")
    return root


def test_walk_takes_regular_files_only_and_names_each_skip(hostile_folder: Path) -> None:
    found = find_images([hostile_folder])
    assert found.files == [hostile_folder / "real.png"]
    assert found.ignored == 1
    reasons = {s.path.name: s.reason for s in found.skipped}
    assert reasons == {
        "fifo.png": "not a regular file (FIFO)",
        "zero.png": "not a regular file (device behind a symbolic link)",
        "gone.png": "broken symbolic link",
        "loop": "symbolic link to a folder (not followed)",
    }
    # Named explicitly, still checked; the loader itself refuses them too, without opening.
    assert find_images([hostile_folder / "fifo.png"]).files == []
    with pytest.raises(ImageLoadError, match=r"fifo\.png: not a regular file \(FIFO\)"):
        load_image(hostile_folder / "fifo.png")
    with pytest.raises(ImageLoadError, match=r"zero\.png: not a regular file \(device\)"):
        load_image(hostile_folder / "zero.png")


@contextlib.contextmanager
def _unblocking(fifo: Path) -> Iterator[None]:
    """Should code under test open ``fifo`` for reading, a writer connects and closes at once: EOF, not a hang."""
    stop = threading.Event()

    def writer() -> None:
        while not stop.wait(0.01):
            with contextlib.suppress(OSError):  # opening succeeds only while a reader waits
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_interpret_plan_never_opens_special_dataset_items(hostile_folder: Path, tmp_path: Path) -> None:
    from mghft.interpret.runner import WorkItem, plan_batch
    from mghft.interpret.store import DescriptionStore

    items = [WorkItem(key=p.name, path=hostile_folder / p.name) for p in (Path("real.png"), Path("fifo.png"))]
    with _unblocking(hostile_folder / "fifo.png"), DescriptionStore(tmp_path / "s.sqlite") as store:
        plan = plan_batch(items, store)  # hashing the FIFO would block forever (here: read it as empty)
    assert plan.summary.unreadable == 1 and len(plan.todo) == 1
    assert plan.unreadable[0][1] == f"{hostile_folder / 'fifo.png'}: not a regular file (FIFO)"


def test_folder_search_takes_every_sticker_extension(sticker_folder: Path) -> None:
    found = find_images([sticker_folder])
    assert sorted(p.name for p in found.files) == sorted(c[0] for c in CASES.values())
    assert found.skipped == [] and found.ignored == 0


def test_interpret_does_not_hang_on_a_fifo(hostile_folder: Path, tmp_path: Path) -> None:
    store = tmp_path / "d.sqlite"
    cmd = [sys.executable, "-m", "mghft", "interpret", str(hostile_folder), "--backend", "offline", "--no-ocr",
           "--store", str(store), "--no-progress"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert "fifo.png: not a regular file (FIFO)" in proc.stderr
    assert "zero.png: not a regular file" in proc.stderr
    assert "described 1," in proc.stderr, proc.stderr


# --- the same files through every path -----------------------------------------------------------------------------


def test_interpret_prepares_every_format(sticker_folder: Path) -> None:
    from mghft.interpret.imaging import prepare_image, read_image_bytes

    for case, (file_name, _, _, checks) in CASES.items():
        data, source = read_image_bytes(sticker_folder / file_name)
        prepared = prepare_image(data, source=source, max_side=1024)
        jpeg = Image.open(io.BytesIO(__import__("base64").b64decode(prepared.data_url.split(",", 1)[1])))
        assert jpeg.size == prepared.image.size, case
        _check_pixels(prepared.image, checks)
    strip = prepare_image(sf.apng(), frames=5, max_side=1024).image
    assert strip.size == (5 * sf.SIDE + 4 * 4, sf.SIDE)
    assert [strip.getpixel((16 + 36 * i, 16)) for i in range(5)] == sf.COLOURS


def test_training_reader_reads_every_format(sticker_folder: Path, tmp_path: Path) -> None:
    import torch

    from mghft.data import read_folder
    from mghft.data.transforms import Preprocess
    from mghft.train.data import StickerDataset

    root = tmp_path / "ds"
    (root / "happy").mkdir(parents=True)
    for p in sticker_folder.iterdir():
        (root / "happy" / p.name).write_bytes(p.read_bytes())
    os.mkfifo(root / "happy" / "fifo.webp")
    index = read_folder(root)
    assert len(index) == len(CASES) and index.skipped == {"happy/fifo.webp": "not a regular file (FIFO)"}
    pre = Preprocess(size=32, crop_pct=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    n = len(index)
    ds = StickerDataset(index, pre.transform(), torch.zeros(n, 4, 8), torch.zeros(n, 4, dtype=torch.bool))
    by_name = {Path(s.path).name: i for i, s in enumerate(index.samples)}
    for case, (file_name, _, _, _) in CASES.items():
        x = ds[by_name[file_name]]["image"]
        assert x.shape == (3, 32, 32), case
        if case not in ("cmyk_jpeg", "exif_rotated", "png_16bit_grey_trns", "png_16bit_rgb_trns", "png_2bit_trns"):
            assert torch.allclose(x[:, 0, 0], torch.ones(3), atol=0.03), case  # transparent corner -> white


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_serve_api import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("fmt") / "tiny")


@pytest.fixture(scope="module")
def predictor(checkpoint: Path) -> Predictor:
    from mghft.serve.predictor import load_predictor

    return load_predictor(checkpoint, device="cpu")


def test_predict_reads_every_format_and_counts_special_files(
    sticker_folder: Path,
    hostile_folder: Path,
    checkpoint: Path,
    predictor: Predictor,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for file_name, _, _, checks in CASES.values():
        loaded = predictor.load(sticker_folder / file_name, keep_image=True)
        _check_pixels(loaded.image, checks)
    from mghft.cli import main

    out = tmp_path / "p.csv"
    argv = ["predict", str(sticker_folder), str(hostile_folder), "--model", str(checkpoint), "--out", str(out)]
    rc = main([*argv, "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0
    assert f"{len(CASES) + 1} predicted, 4 skipped" in err
    assert "fifo.png: not a regular file (FIFO)" in err and "zero.png: not a regular file" in err


def test_service_reads_every_format_and_refuses_others(sticker_folder: Path, predictor: Predictor) -> None:
    import httpx

    from mghft.serve.app import BackgroundServer, ServeSettings, create_app

    with BackgroundServer(create_app(predictor, ServeSettings())) as srv, httpx.Client(base_url=srv.url) as client:
        for case, (file_name, _, _, _) in CASES.items():
            r = client.post("/v1/predict", files=[("files", (file_name, (sticker_folder / file_name).read_bytes()))])
            assert r.status_code == 200, (case, r.text)
            assert len(r.json()["predictions"]) == 1
        eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
        r = client.post("/v1/predict", files=[("files", ("x.eps", eps))])
        assert r.status_code == 422 and "PostScript/EPS is not an accepted image format" in r.text
        assert "gs" not in r.text.split() and "/tmp" not in r.text
        start = time.monotonic()
        r = client.post("/v1/predict", files=[("files", ("icon.ico", _ico_holding_png()))])
        assert r.status_code == 422 and "ICO is not an accepted image format" in r.text
        assert time.monotonic() - start < 5
        bomb = sf.gif_bomb()
        start = time.monotonic()
        r = client.post("/v1/predict", files=[("files", ("bomb.gif", bomb))])
        assert r.status_code == 200  # under the service's pixel limit: the decode budget picks an early frame
        assert time.monotonic() - start < 5


def test_arrays_match_between_paths(sticker_folder: Path, predictor: Predictor) -> None:
    """predict, interpret and training all see the very same pixels for a file (one opening path)."""
    from mghft.interpret.imaging import prepare_image

    path = sticker_folder / "whatsapp.webp"
    a = np.asarray(load_image(path))
    b = np.asarray(predictor.load(path, keep_image=True).image)
    c = np.asarray(prepare_image(path.read_bytes(), max_side=4096).image)
    assert np.array_equal(a, b) and np.array_equal(a, c)
