"""Native decoders isolated: a crash, hang, spin or memory blow-up in a decode worker costs only its file; Lottie
structures rlottie recurses on are refused before rendering; unreadable metadata and damaged animations still
decode (with a note); every refusal speaks the user's terms."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from mghft.data import decode_pool
from mghft.data.images import (
    DecodeBudgetError,
    DecodeLimits,
    ImageFormatError,
    ImageLoadError,
    ImageTooLargeError,
    decode_image,
    load_image,
)
from mghft.data.lottie import MAX_JSON_DEPTH, MAX_LAYER_INSTANCES, check_structure
from tests import sticker_files as sf
from tests.decode_faults import fault_tgs, self_referencing_tgs

SRC = str(Path(__file__).resolve().parents[1] / "src")
ROOT = str(Path(__file__).resolve().parents[1])


@pytest.fixture()
def faults(monkeypatch: pytest.MonkeyPatch):
    """The decode pool's test hook on, in a fresh pool (workers take the environment they start with)."""
    monkeypatch.setenv(decode_pool.FAULT_ENV, "1")
    decode_pool.shutdown()
    yield
    decode_pool.shutdown()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


# --- the self-referencing TGS ----------------------------------------------------------------------------------------


def test_the_self_referencing_tgs_really_kills_rlottie_in_a_bare_process(tmp_path: Path) -> None:
    pytest.importorskip("rlottie_python")
    data = self_referencing_tgs()
    assert len(data) < 130
    (tmp_path / "loop.tgs").write_bytes(data)
    code = (
        "import gzip,sys; "
        "from rlottie_python import LottieAnimation as L; L.from_data(gzip.open(sys.argv[1]).read().decode())"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "loop.tgs")], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGSEGV  # why the checks below exist


@pytest.mark.parametrize("isolate", [True, False])
def test_the_self_referencing_tgs_is_refused_before_rendering(isolate: bool) -> None:
    with pytest.raises(ImageLoadError) as err:
        decode_image(self_referencing_tgs(), name="loop.tgs", limits=DecodeLimits(isolate=isolate))
    assert str(err.value) == (
        "loop.tgs: Lottie animation refused before rendering: precomposition 'a' contains itself "
        "(rlottie would recurse until it crashes)"
    )


def _precomp(ref: str, ind: int = 1) -> dict:
    return {"ty": 0, "refId": ref, "ind": ind}


def test_every_unbounded_lottie_structure_is_named() -> None:
    two = {"assets": [{"id": "a", "layers": [_precomp("b")]}, {"id": "b", "layers": [_precomp("a")]}]}
    assert "precomposition 'a' contains itself through ['b']" in check_structure({**two, "layers": [_precomp("a")]})
    fan = [{"id": f"a{i}", "layers": [_precomp(f"a{i + 1}", k) for k in range(10)]} for i in range(6)]
    doc = {"assets": [*fan, {"id": "a6", "layers": [{"ty": 4}]}], "layers": [_precomp("a0")]}
    assert check_structure(doc) == f"more than {MAX_LAYER_INSTANCES} layers once its precompositions are expanded"
    chain = [{"id": f"c{i}", "layers": [_precomp(f"c{i + 1}")]} for i in range(40)] + [{"id": "c40", "layers": []}]
    assert "nested more than 32 deep" in check_structure({"assets": chain, "layers": [_precomp("c0")]})
    loop = {"layers": [{"ty": 4, "ind": 1, "parent": 2}, {"ty": 4, "ind": 2, "parent": 1}]}
    assert check_structure(loop) == "the parent chain of layer 1 in the main composition comes back to itself"
    deep: dict = {"layers": []}
    node = deep
    for _ in range(MAX_JSON_DEPTH + 5):
        node["x"] = {}
        node = node["x"]
    assert check_structure(deep) == f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    # a diamond (two layers using the same asset) and a shared parent are fine
    ok = {"assets": [{"id": "s", "layers": [{"ty": 4}]}], "layers": [_precomp("s", 1), _precomp("s", 2)]}
    ok["layers"].append({"ty": 4, "ind": 3, "parent": 1})
    assert check_structure(ok) == ""


# --- the pool: crash, hang, spin, memory ----------------------------------------------------------------------------


def test_a_crashing_decoder_costs_only_its_file_and_its_worker_is_replaced(faults) -> None:
    good = decode_image(sf.tgs(), name="good.tgs")
    pool = decode_pool.get_pool()
    (first,) = pool.worker_pids()
    with pytest.raises(ImageLoadError) as err:
        decode_image(fault_tgs("abort"), name="crash.tgs")
    assert str(err.value) == "crash.tgs: the TGS renderer (rlottie) crashed on this file (SIGABRT)"
    assert type(err.value) is ImageLoadError
    assert _wait_gone(first, 5) and pool.worker_pids() == []
    again = decode_image(sf.tgs(), name="good.tgs")  # a new worker, the same answer
    assert again.image.tobytes() == good.image.tobytes() and pool.started == 2


def test_a_hang_is_stopped_at_the_wall_limit(faults) -> None:
    decode_image(sf.tgs())  # a started worker: the limit below times the decode, not the start
    start = time.monotonic()
    with pytest.raises(DecodeBudgetError, match=r"hang.tgs: the TGS renderer \(rlottie\) did not finish within 2.2 s"):
        decode_image(fault_tgs("hang"), name="hang.tgs", limits=DecodeLimits(max_seconds=0.2))
    assert time.monotonic() - start < 4.5
    assert decode_image(sf.webm_alpha()).indices == [2]  # the next file goes on


def test_a_spinning_decoder_is_stopped_by_the_cpu_limit(faults, monkeypatch: pytest.MonkeyPatch) -> None:
    # 1 CPU second for a 32 s wall limit: the kernel stops the worker first, even on a busy machine
    monkeypatch.setattr(decode_pool, "CPU_FACTOR", 0.02)
    with pytest.raises(DecodeBudgetError, match="used over 1 s of processor time on this file"):
        decode_image(fault_tgs("spin"), name="spin.tgs", limits=DecodeLimits(max_seconds=30))


def test_a_memory_blow_up_is_refused_at_the_address_space_limit(faults) -> None:
    with pytest.raises(ImageTooLargeError) as err:
        decode_image(fault_tgs("memory"), name="big.tgs", limits=DecodeLimits(max_memory=256 << 20))
    assert err.value.reason == "out of memory while decoding (the decode worker's limit is 256 MiB)"
    assert decode_image(sf.tgs()).format == "TGS"


def test_threads_share_the_pool_and_each_file_gets_its_own_answer(faults) -> None:
    pool = decode_pool.DecodePool(workers=2)
    files = [("crash", fault_tgs("abort")), ("tgs", sf.tgs()), ("webm", sf.webm_alpha()), ("avif", sf.avif())] * 3
    results: dict[int, object] = {}

    def one(i: int) -> None:
        kind, data = files[i]
        fmt = {"crash": "TGS", "tgs": "TGS", "webm": "WEBM", "avif": "AVIF"}[kind]
        try:
            results[i] = pool.decode(data, fmt, f"{kind}{i}", 1, DecodeLimits(), (255, 255, 255))
        except ImageLoadError as e:
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(files))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    pool.close()
    for i, (kind, _) in enumerate(files):
        if kind == "crash":
            assert isinstance(results[i], ImageLoadError) and "crashed on this file" in str(results[i])
        else:
            centre = results[i].image.getpixel((16, 16))  # the middle frame (WebM and AVIF: lossy chroma)
            assert max(abs(a - b) for a, b in zip(centre, sf.BLUE, strict=True)) <= 3, (kind, centre)
    assert len(pool.worker_pids()) == 0  # closed: every worker stopped


def test_a_forked_child_starts_its_own_pool_and_leaves_the_parents_alone() -> None:
    before = decode_image(sf.tgs()).image.tobytes()
    parent_workers = decode_pool.get_pool().worker_pids()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        try:
            ok = decode_image(sf.tgs()).image.tobytes() == before
            os._exit(0 if ok and decode_pool.get_pool().worker_pids() != parent_workers else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert decode_pool.get_pool().worker_pids() == parent_workers and all(map(_alive, parent_workers))
    assert decode_image(sf.tgs()).image.tobytes() == before


_CHILD = """
import os, sys, time
from mghft.data.images import decode_image
from tests import sticker_files as sf
from mghft.data import decode_pool
decode_image(sf.tgs())
print(decode_pool.get_pool().worker_pids()[0], flush=True)
if sys.argv[1] == "wait":
    time.sleep(60)
"""


@pytest.mark.parametrize("how", ["exit", "killed"])
def test_no_worker_outlives_its_caller(how: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, ROOT])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, "wait" if how == "killed" else "exit"], stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    worker = int(proc.stdout.readline())
    assert _alive(worker)
    if how == "killed":
        proc.kill()  # no atexit: the worker sees end-of-file on its input
    assert proc.wait(60) in (0, -signal.SIGKILL)
    assert _wait_gone(worker, 10)


# --- training's data loading ----------------------------------------------------------------------------------------


def _folder_with_a_crasher(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "a.png", tmp_path / "b.tgs", tmp_path / "crash.tgs", tmp_path / "c.webm"]
    paths[0].write_bytes(sf.png_still())
    paths[1].write_bytes(sf.tgs())
    paths[2].write_bytes(fault_tgs("abort"))
    paths[3].write_bytes(sf.webm_alpha())
    return paths


def test_validation_skips_or_stops_on_a_crashing_file_as_on_error_says(faults, tmp_path: Path) -> None:
    from mghft.data import DatasetIndex, DatasetValidationError, Sample, validate_index

    paths = _folder_with_a_crasher(tmp_path)
    index = DatasetIndex("toy", tmp_path, ("a", "b"), [Sample(p, i % 2, p.name) for i, p in enumerate(paths)])
    report = validate_index(index, "skip")
    assert [s.key for s in report.index.samples] == ["a.png", "b.tgs", "c.webm"]
    (problem,) = report.problems
    assert (problem.key, problem.kind) == ("crash.tgs", "unreadable")
    assert problem.detail == "the TGS renderer (rlottie) crashed on this file (SIGABRT)"
    with pytest.raises(DatasetValidationError, match="crash.tgs"):
        validate_index(index, "stop")


class _Files:
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import numpy as np

        return np.asarray(load_image(self.paths[i]).resize((8, 8)))


def test_a_dataloader_worker_reports_the_file_instead_of_dying(faults, tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    paths = _folder_with_a_crasher(tmp_path)
    good = DataLoader(_Files([p for p in paths if p.name != "crash.tgs"]), batch_size=None, num_workers=2)
    assert len(list(good)) == 3
    loader = DataLoader(_Files(paths), batch_size=None, num_workers=2)
    with pytest.raises(Exception) as err:
        list(loader)
    assert "crash.tgs: the TGS renderer (rlottie) crashed on this file" in str(err.value)
    assert "killed by signal" not in str(err.value)


# --- metadata and refusals ------------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + (zlib.crc32(kind + data) & 0xFFFFFFFF).to_bytes(4, "big")


def _with_chunk(png: bytes, chunk: bytes) -> bytes:
    return png[:33] + chunk + png[33:]  # after IHDR


def test_unreadable_exif_metadata_decodes_without_orientation_and_says_so() -> None:
    # Pillow reads EXIF from a "Raw profile type exif" text chunk with bytes.fromhex: non-hex text makes it raise
    raw = b"Raw profile type exif\x00\nexif\n      12\nzz not hex at all zz\n"
    data = _with_chunk(sf.png_still(sf.GREEN), _chunk(b"tEXt", raw))
    decoded = decode_image(data, name="meta.png")
    assert decoded.image.getpixel((16, 16)) == sf.GREEN and decoded.image.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.note == "the file's EXIF/XMP metadata is unreadable: its orientation was not applied"


def _refusal(data: bytes, name: str) -> ImageLoadError:
    return pytest.raises(ImageLoadError, decode_image, data, name=name).value


def test_a_png_signature_damaged_by_a_text_mode_transfer_says_so() -> None:
    png = sf.png_still()
    crlf = png.replace(b"\n", b"\r\n")  # LF -> CRLF (a Windows text-mode copy)
    lf = png[:4] + png[4:8].replace(b"\r\n", b"\n") + png[8:]  # CRLF -> LF (a Unix text-mode copy)
    for damaged in (crlf, lf):
        err = _refusal(damaged, "x.png")
        assert err.reason == (
            "damaged PNG file: its signature has the line ends changed, as a text-mode (CR/LF) transfer does"
        )
        assert "binary mode" in err.hint
    other = b"\x89PNG\r\n\x1a\x0b" + png[8:]
    assert _refusal(other, "y.png").reason == "damaged PNG file: its first 8 bytes (the PNG signature) are wrong"


def test_a_dotlottie_and_raw_lottie_json_are_refused_with_what_to_use_instead() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("manifest.json", json.dumps({"animations": [{"id": "a"}]}))
        z.writestr("animations/a.json", json.dumps({"v": "5.5.2", "layers": []}))
    err = _refusal(buf.getvalue(), "anim.lottie")
    assert isinstance(err, ImageFormatError)
    assert str(err) == "anim.lottie: a dotLottie (.lottie) file: this format is not supported"
    assert "TGS" in err.hint and "Lottie JSON" in err.hint
    raw = json.dumps({"v": "5.5.2", "fr": 30, "ip": 0, "op": 10, "w": 8, "h": 8, "layers": []}).encode()
    err = _refusal(raw, "anim.json")
    assert err.reason == "uncompressed Lottie JSON: stickers are read as TGS (gzipped Lottie JSON)"
    assert err.hint == "gzip it into a TGS: gzip -c anim.json > anim.tgs"


def _apng_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]))
        pos += 12 + n
    return out


def _png_from(chunks: list[tuple[bytes, bytes]]) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"".join(_chunk(k, d) for k, d in chunks)


def test_damaged_png_and_apng_get_specific_messages() -> None:
    chunks = _apng_chunks(sf.apng())
    # frame chunks out of order after frame 1: the frames before the damage are used, and the note says so
    seq = [i for i, (k, _) in enumerate(chunks) if k == b"fcTL"]
    broken = list(chunks)
    k, d = broken[seq[2]]
    broken[seq[2]] = (k, (99).to_bytes(4, "big") + d[4:])
    decoded = decode_image(_png_from(broken), name="anim.png")
    assert decoded.indices == [1] and decoded.image.getpixel((16, 16)) == sf.GREEN
    assert decoded.note == (
        "frame 1 instead of the middle frame 2: frame 2 of 5 cannot be read (damaged APNG animation: its frame "
        "chunks (fcTL/fdAT) are missing, repeated or out of order)"
    )
    no_pixels = [c for c in chunks if c[0] in (b"IHDR", b"acTL", b"IEND")]  # Pillow: "cannot load this image"
    err = _refusal(_png_from(no_pixels), "n.png")
    assert err.reason == "damaged APNG animation: it has no image data (no IDAT chunk)"
    still = _apng_chunks(sf.png_still())
    idat = [(k, d[:2] + bytes(b ^ 0x55 for b in d[2:]) if k == b"IDAT" else d) for k, d in still]
    assert _refusal(_png_from(idat), "c.png").reason == "damaged PNG file: its compressed pixel data is corrupt"
    cut = sf.png_still()
    assert _refusal(cut[: len(cut) // 2], "t.png").reason == "truncated PNG file: the data ends before the image does"


def test_no_refusal_carries_an_exception_text() -> None:
    cases = {
        "bmp": b"BM" + bytes(12) + (40).to_bytes(4, "little") + bytes(40),
        "gif": b"GIF89a" + bytes(7),
        "webm": b"\x1a\x45\xdf\xa3" + b"webm" + bytes(100),
        "tgs": b"\x1f\x8b" + bytes(20),
    }
    for name, data in cases.items():
        err = _refusal(data, name)
        assert not any(t in err.reason for t in ("Error", "errno", "Traceback", "/", "b'")), (name, err.reason)


def test_decoded_images_keep_their_pixels_through_the_pool() -> None:
    for data in (sf.tgs(), sf.webm_alpha(), sf.avif()):
        inside = decode_image(data, limits=DecodeLimits(isolate=False))
        outside = decode_image(data)
        assert (outside.format, outside.indices, outside.n_frames, outside.canvas, outside.note) == (
            inside.format,
            inside.indices,
            inside.n_frames,
            inside.canvas,
            inside.note,
        )
        assert [im.tobytes() for im in outside.frames] == [im.tobytes() for im in inside.frames]
        assert isinstance(outside.image, Image.Image) and outside.image.mode == "RGB"
