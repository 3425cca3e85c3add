"""Out-of-process decoding for the formats whose decoders are native libraries with a history of crashes.

TGS (rlottie), WebM (FFmpeg/libvpx through PyAV) and AVIF (libavif with dav1d/aom through Pillow) are decoded in
a small pool of worker processes, so that a file that makes one of these libraries crash, hang or take all memory
costs only itself: the caller gets an :class:`~mghft.data.images.ImageLoadError` naming the file and what happened
(``the TGS renderer crashed on this file (SIGSEGV)``), the worker is replaced, and the next file goes on. The
formats Pillow decodes with its own code (PNG, JPEG, GIF, WebP, BMP) stay in the calling process.

Each worker is a fresh interpreter (``subprocess``, never a ``fork`` of the caller, so it is safe from threaded
servers, Ray actors, DataLoader workers and daemonic processes alike) that imports only the decoders. Limits:

* **wall time**: the caller waits at most ``limits.max_seconds`` + :data:`WALL_GRACE` seconds for an answer, then
  kills the worker; the worker also arms ``alarm()`` for that time, so it ends itself should its caller be gone;
* **CPU time**: ``RLIMIT_CPU`` is set before each file to the time used so far plus :data:`CPU_FACTOR` × the wall
  limit (decoders may run several threads), so a spinning decoder is killed by the kernel (``SIGXCPU``);
* **memory**: ``RLIMIT_AS`` caps the worker's address space at its size after start-up plus ``limits.max_memory``
  bytes, so a memory blow-up fails an allocation in the worker instead of swapping the machine.

The worker answers with a JSON header and raw RGB pixels, never a pickle: a worker subverted by a crafted file
cannot make its caller run code. When the caller exits, workers see end-of-file on their input and leave; a caller
killed outright leaves them the same end-of-file (and the alarm for a file in progress), so none outlives it by
more than one file's wall limit. A forked child (a DataLoader worker) starts its own pool on first use.

Test hook: with the environment variable ``MGHFT_DECODE_FAULTS=1`` in the worker's environment, a file containing
``mghft-decode-fault:<kind>`` (``abort``, ``hang``, ``spin``, ``memory``) makes the worker misbehave that way, so
tests can prove the isolation end to end. Without the variable the marker means nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mghft.errors import MghftError

WALL_GRACE = 2.0
"""Seconds the caller waits beyond ``limits.max_seconds`` (the decoder's own deadline, checked between frames,
fires first with a precise message; the grace covers one slow frame and the transfer)."""
CPU_FACTOR = 2.0
"""CPU seconds allowed per wall second of the limit (FFmpeg and libavif decode with threads)."""
START_TIMEOUT = 120.0
"""Seconds a new worker may take to start (import the decoders) before the pool gives up."""
MAX_JOBS_PER_WORKER = 500
"""Files a worker decodes before it is replaced (bounds slow leaks in native code)."""
FAULT_ENV = "MGHFT_DECODE_FAULTS"
_FAULT_MARK = b"mghft-decode-fault:"
_HEAD = struct.Struct(">IQ")  # JSON header length, payload length
_MAX_HEADER = 1 << 20

# Which library decodes each isolated format, for the messages.
RENDERERS = {"TGS": "the TGS renderer (rlottie)", "WEBM": "the WebM decoder (FFmpeg)", "AVIF": "the AVIF decoder"}
ISOLATED_FORMATS = frozenset(RENDERERS)
"""Formats decoded out of process (see the module docstring)."""
AVAILABLE = os.name == "posix"
"""Whether this platform can run the pool (it needs ``resource``, ``select`` on pipes and ``alarm``); elsewhere
every format is decoded in the calling process."""


class DecodeWorkerError(MghftError, RuntimeError):
    """A decode worker could not be started at all (a problem of this machine, not of any file)."""


def default_workers() -> int:
    """Pool size: ``MGHFT_DECODE_WORKERS`` when set, else the CPU count capped at 4."""
    env = os.environ.get("MGHFT_DECODE_WORKERS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise DecodeWorkerError(
                f"MGHFT_DECODE_WORKERS: {env!r} is not a whole number", hint="unset it or give e.g. 2"
            ) from None
    return max(1, min(4, os.cpu_count() or 1))


# --- framing ---------------------------------------------------------------------------------------------------------


def _send(fd: int, header: dict[str, Any], payload: bytes | memoryview = b"") -> None:
    head = json.dumps(header, separators=(",", ":")).encode()
    _write_all(fd, _HEAD.pack(len(head), len(payload)) + head)
    if payload:
        _write_all(fd, payload)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    """``n`` bytes from ``fd``; ``EOFError`` when the other side closed, ``TimeoutError`` past ``deadline``."""
    parts, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        part = os.read(fd, min(n - got, 1 << 22))
        if not part:
            raise EOFError
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _receive(fd: int, deadline: float | None, max_payload: int) -> tuple[dict[str, Any], bytes]:
    head_len, payload_len = _HEAD.unpack(_read_exact(fd, _HEAD.size, deadline))
    if head_len > _MAX_HEADER or payload_len > max_payload:
        raise ValueError("message larger than allowed")
    header = json.loads(_read_exact(fd, head_len, deadline))
    if not isinstance(header, dict):
        raise ValueError("message header is not an object")
    return header, _read_exact(fd, payload_len, deadline) if payload_len else b""


# --- the caller's side -----------------------------------------------------------------------------------------------


class _Worker:
    """One worker process and the caller's ends of its pipes."""

    def __init__(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # the folder holding this mghft package: same code
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")  # numpy's thread pools would only reserve address space here
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from mghft.data.decode_pool import worker_main; worker_main()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                close_fds=True,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the caller, which ends its workers
            )
        except OSError as exc:
            raise DecodeWorkerError(
                f"cannot start a decode worker ({exc.strerror or type(exc).__name__})",
                hint="TGS, WebM and AVIF files are decoded in worker processes; check the process limit (ulimit -u)",
            ) from None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.wfd, self.rfd = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        self.jobs = 0
        try:
            header, _ = _receive(self.rfd, time.monotonic() + START_TIMEOUT, 0)
            if header.get("ready") is not True:
                raise ValueError(header.get("error", "no ready message"))
            self.address_space = int(header.get("address_space", 0))
        except (EOFError, TimeoutError, ValueError, OSError) as exc:
            self.kill()
            raise DecodeWorkerError(
                f"a decode worker did not start ({type(exc).__name__}: {exc})",
                hint="run `python -c 'import mghft.data.decode_pool'` to see the error",
            ) from None

    def kill(self, grace: float = 0.0) -> None:
        """End the worker now (after ``grace`` seconds to finish dying by itself, so its own signal is kept)."""
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.close_pipes()

    def close_pipes(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()

    def stop(self, timeout: float = 1.0) -> None:
        """End the worker: close its input (it leaves on end-of-file), kill it if it lingers."""
        self.close_pipes()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _signal_name(returncode: int | None) -> str:
    if returncode is None or returncode >= 0:
        return f"exit status {returncode}"
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


class DecodePool:
    """Up to ``workers`` decode worker processes, started on demand and reused; thread-safe.

    A worker serves one file at a time; callers beyond ``workers`` wait for a free one.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.size = workers or default_workers()
        self._idle: list[_Worker] = []
        self._busy = 0
        self._cond = threading.Condition()
        self._closed = False
        self.started = 0
        """Workers started so far (replacements included)."""

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise DecodeWorkerError("the decode pool is closed (the interpreter is exiting)")
                if self._idle:
                    self._busy += 1
                    return self._idle.pop()
                if self._busy < self.size:
                    self._busy += 1
                    break
                self._cond.wait()
        try:
            worker = _Worker()
        except BaseException:
            with self._cond:
                self._busy -= 1
                self._cond.notify()
            raise
        with self._cond:
            self.started += 1
        return worker

    def _release(self, worker: _Worker | None) -> None:
        with self._cond:
            self._busy -= 1
            if worker is not None and not self._closed:
                self._idle.append(worker)
            elif worker is not None:
                worker.stop()
            self._cond.notify()

    def decode(
        self, data: bytes, fmt: str, label: str, count: int, limits: Any, background: tuple[int, int, int]
    ) -> Any:
        """Decode one file in a worker; arguments as :func:`mghft.data.images.decode_image`'s decoders take.

        Returns:
            :class:`~mghft.data.images.DecodedImage`.

        Raises:
            ImageLoadError: the decoder refused the file, or crashed, hung or ran out of memory on it.
            DecodeWorkerError: no worker could be started.
        """
        from mghft.data import images

        renderer = RENDERERS.get(fmt, f"the {fmt} decoder")
        wall = float(limits.max_seconds) + WALL_GRACE
        job = {
            "fmt": fmt,
            "label": label,
            "count": count,
            "limits": asdict(limits),
            "background": list(background),
            "wall": wall,
            "cpu": math.ceil(wall * CPU_FACTOR),
        }
        worker = self._acquire()
        keep: _Worker | None = None
        try:
            worker.jobs += 1
            try:
                _send(worker.wfd, job, data)
                max_payload = _max_payload(limits, count)
                header, payload = _receive(worker.rfd, time.monotonic() + wall, max_payload)
            except TimeoutError:
                worker.kill()
                raise images.DecodeBudgetError(
                    label, f"{renderer} did not finish within {wall:g} s on this file; it was stopped"
                ) from None
            except (EOFError, BrokenPipeError, ConnectionResetError):
                worker.kill(grace=2.0)  # its pipe closed as it died: wait for the exit status that says how
                how = _signal_name(worker.proc.returncode)
                if how == "SIGXCPU":
                    raise images.DecodeBudgetError(
                        label, f"{renderer} used over {job['cpu']} s of processor time on this file; it was stopped"
                    ) from None
                if how == "SIGALRM":
                    raise images.DecodeBudgetError(
                        label, f"{renderer} did not finish within {wall:g} s on this file; it was stopped"
                    ) from None
                raise images.ImageLoadError(label, f"{renderer} crashed on this file ({how})") from None
            except (ValueError, OSError):
                worker.kill()
                raise images.ImageLoadError(label, f"{renderer} gave an unreadable answer for this file") from None
            except BaseException:  # KeyboardInterrupt, SystemExit while waiting: the worker's answer is lost
                worker.kill()
                raise
            if header.get("retire") or worker.jobs >= MAX_JOBS_PER_WORKER:
                worker.stop()
            else:
                keep = worker
            return _result(header, payload, label, fmt, renderer, limits)
        finally:
            self._release(keep)

    def close(self) -> None:
        """Stop every idle worker; workers in use stop when their file is done. Later use raises."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cond.notify_all()
        for worker in idle:
            worker.stop()

    def worker_pids(self) -> list[int]:
        """Process ids of the idle workers (for tests and diagnostics)."""
        with self._cond:
            return [w.proc.pid for w in self._idle]


def _max_payload(limits: Any, count: int) -> int:
    pixels = limits.max_pixels if limits.max_pixels is not None else 1 << 31
    return 3 * pixels * max(1, count) + (1 << 20)


_ERRORS = ("ImageLoadError", "ImageTooLargeError", "ImageFormatError", "DecodeBudgetError")


def _result(header: dict[str, Any], payload: bytes, label: str, fmt: str, renderer: str, limits: Any) -> Any:
    """The worker's answer as a ``DecodedImage`` (or the error it reports), every field checked."""
    import numpy as np
    from PIL import Image

    from mghft.data import images

    if not header.get("ok"):
        kind = header.get("error")
        cls = getattr(images, kind) if kind in _ERRORS else images.ImageLoadError
        reason = header.get("reason")
        hint = header.get("hint")
        if not isinstance(reason, str) or not reason:
            reason = f"{renderer} failed on this file"
        raise cls(label, reason, hint=hint if isinstance(hint, str) else None)
    try:
        sizes = [(int(w), int(h)) for w, h in header["frames"]]
        indices = [int(i) for i in header["indices"]]
        canvas = (int(header["canvas"][0]), int(header["canvas"][1]))
        n_frames = int(header["n_frames"])
        note = str(header.get("note", ""))
        extra = header.get("extra") or {}
        if (
            not sizes
            or len(sizes) != len(indices)
            or any(w < 1 or h < 1 for w, h in sizes)
            or sum(w * h * 3 for w, h in sizes) != len(payload)
            or header.get("format") != fmt
            or not isinstance(extra, dict)
        ):
            raise ValueError
    except (KeyError, TypeError, ValueError, IndexError):
        raise images.ImageLoadError(label, f"{renderer} gave an unreadable answer for this file") from None
    frames, pos = [], 0
    for w, h in sizes:
        arr = np.frombuffer(payload, dtype=np.uint8, count=w * h * 3, offset=pos).reshape(h, w, 3)
        frames.append(Image.fromarray(arr.copy(), mode="RGB"))
        pos += w * h * 3
    if "render_size" in extra:
        extra["render_size"] = tuple(extra["render_size"])
    return images.DecodedImage(frames, fmt, n_frames, indices, canvas, note, extra)


_pool: DecodePool | None = None
_pool_pid = 0
_pool_lock = threading.Lock()


def get_pool() -> DecodePool:
    """This process's pool (a forked child gets a new one on first use)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool, _pool_pid = DecodePool(), os.getpid()
        return _pool


def shutdown() -> None:
    """Stop this process's workers (run at interpreter exit; the next decode starts a new pool)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None and _pool_pid == os.getpid():
        pool.close()


def _after_fork_in_child() -> None:
    # The parent's workers belong to the parent: close our copies of their pipes (so that they still see
    # end-of-file when the parent exits) and forget them without signalling anyone.
    global _pool, _pool_lock
    _pool_lock = threading.Lock()
    pool, _pool = _pool, None
    if pool is not None:
        for worker in pool._idle:
            worker.close_pipes()


atexit.register(shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def decode_isolated(
    data: bytes, fmt: str, label: str, count: int, limits: Any, background: tuple[int, int, int]
) -> Any:
    """Decode one file in this process's pool (see :meth:`DecodePool.decode`)."""
    return get_pool().decode(data, fmt, label, count, limits, background)


# --- the worker's side -----------------------------------------------------------------------------------------------


def _address_space() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _fault(data: bytes) -> None:
    """The test hook (module docstring): misbehave as the file asks, only under ``MGHFT_DECODE_FAULTS=1``."""
    at = data.find(_FAULT_MARK)
    if at < 0:
        return
    kind = data[at + len(_FAULT_MARK) : at + len(_FAULT_MARK) + 8].split(b'"')[0].split(b"\n")[0]
    if kind.startswith(b"abort"):
        os.abort()
    if kind.startswith(b"hang"):
        while True:
            time.sleep(3600)
    if kind.startswith(b"spin"):
        while True:
            pass
    if kind.startswith(b"memory"):
        hoard = []
        while True:
            hoard.append(bytearray(64 << 20))


def worker_main() -> None:
    """The worker's loop: read a job, decode, answer; leave on end-of-file. Not for direct use."""
    import resource

    # Our own copies of the pipes; fd 1 then points at stderr so stray prints cannot corrupt the answers.
    rfd, wfd = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from mghft.data import images, lottie, video  # noqa: F401  (import the decoders before the limits)

        try:
            import av  # noqa: F401
            import rlottie_python  # noqa: F401
        except ImportError:
            pass  # the decoder names the missing package for the file that needs it
    except Exception as exc:  # reported to the caller, which raises DecodeWorkerError
        _send(wfd, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    base = _address_space()
    _send(wfd, {"ready": True, "address_space": base, "pid": os.getpid()})
    faults = os.environ.get(FAULT_ENV) == "1"
    while True:
        try:
            job, data = _receive(rfd, None, 1 << 40)
        except (EOFError, OSError, ValueError):
            return
        extra = int(job["limits"].get("max_memory", 0) or 0)
        if base and extra > 0:  # per file: the hard limit stays unlimited, so a later file may have another
            with contextlib.suppress(ValueError, OSError):  # macOS does not enforce RLIMIT_AS
                resource.setrlimit(resource.RLIMIT_AS, (base + extra, resource.RLIM_INFINITY))
        used = resource.getrusage(resource.RUSAGE_SELF)
        cpu_used = math.ceil(used.ru_utime + used.ru_stime)
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_used + int(job["cpu"]), hard))
        signal.alarm(math.ceil(float(job["wall"])) + 1)
        answer, payload = _decode_job(job, data, faults)
        signal.alarm(0)
        try:
            _send(wfd, answer, payload)
        except OSError:
            return
        if answer.get("retire"):
            return


def _out_of_memory(job: dict[str, Any]) -> str:
    mib = int(job["limits"].get("max_memory", 0) or 0) >> 20
    return f"out of memory while decoding (the decode worker's limit is {mib} MiB)"


def _decode_job(job: dict[str, Any], data: bytes, faults: bool) -> tuple[dict[str, Any], bytes]:
    from mghft.data import images

    label = str(job["label"])
    retire = False
    try:
        if faults:
            _fault(data)
        limits = images.DecodeLimits(**job["limits"])
        decoded = images.decode_sniffed(
            data, str(job["fmt"]), label, int(job["count"]), limits, tuple(job["background"])
        )
    except MemoryError:  # the address-space limit: this worker's heap may be fragmented, so it is replaced
        reason = _out_of_memory(job)
        return {"ok": False, "error": "ImageTooLargeError", "reason": reason, "retire": True}, b""
    except images.ImageLoadError as exc:
        retire = isinstance(exc, images.ImageTooLargeError) and "out of memory" in exc.reason
        reason = _out_of_memory(job) if retire else exc.reason
        return {"ok": False, "error": type(exc).__name__, "reason": reason, "hint": exc.hint, "retire": retire}, b""
    except Exception as exc:  # decode_sniffed maps decoder errors; anything else is ours, kept short
        return {"ok": False, "error": "ImageLoadError", "reason": f"decoding failed ({type(exc).__name__})"}, b""
    frames = [im if im.mode == "RGB" else im.convert("RGB") for im in decoded.frames]
    extra = {k: list(v) if isinstance(v, tuple) else v for k, v in decoded.extra.items()}
    header = {
        "ok": True,
        "format": decoded.format,
        "n_frames": decoded.n_frames,
        "indices": list(decoded.indices),
        "canvas": list(decoded.canvas),
        "note": decoded.note,
        "extra": extra,
        "frames": [list(im.size) for im in frames],
    }
    return header, b"".join(im.tobytes() for im in frames)
