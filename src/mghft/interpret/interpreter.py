"""A synchronous interpreter for one sticker at a time, with the description store as a cache.

The prediction service calls :meth:`Interpreter.describe` from request threads. Requests run on one private event
loop in a background thread, so the same HTTP connections serve every call, calls from several threads overlap,
and the caller needs no event loop of its own.
"""

from __future__ import annotations

import asyncio
import re
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from mghft.errors import UsageError
from mghft.interpret.backends import Backend
from mghft.interpret.description import Description, image_sha256
from mghft.interpret.imaging import DEFAULT_MAX_SIDE, ImageInput, prepare_image, read_image_bytes
from mghft.interpret.store import DescriptionStore

DATED_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})")
"""The one alias a writer's model name has: a dated snapshot of it (``gpt-4o-2024-08-06`` for ``gpt-4o``,
``claude-3-5-sonnet-20240620`` for ``claude-3-5-sonnet``), the name a server answers with for an undated alias.
Nothing else that merely starts with the asked name (``gpt-4o-mini``, ``…-Instruct-AWQ``) is the same model."""


def same_model(stored: str, asked: str) -> bool:
    """Whether a description stored under model name ``stored`` was written by the model asked for as ``asked``:
    the same name, or ``asked`` followed by exactly a dated snapshot suffix (:data:`DATED_SNAPSHOT`)."""
    if stored == asked:
        return True
    return stored.startswith(asked) and DATED_SNAPSHOT.fullmatch(stored[len(asked) :]) is not None


def same_writer(desc: Description, backend: Backend) -> bool:
    """Whether ``backend`` wrote ``desc``: the same backend name, the same prompt version and the same model
    (:func:`same_model`: exactly, or its dated snapshot; the offline backend, whose model name carries its
    revision, writes ``<model>-noocr`` without OCR and is matched exactly)."""
    model = str(getattr(backend, "model", "")) + ("-noocr" if getattr(backend, "ocr", True) is False else "")
    if desc.backend != getattr(backend, "name", None) or desc.prompt_version != getattr(
        backend, "prompt_version", None
    ):
        return False
    return desc.model == model or (desc.backend != "offline" and same_model(desc.model, model))


class Interpreter:
    """Describe single images on demand.

    Args:
        backend: from :func:`~mghft.interpret.build_backend`.
        store: optional cache; a new description is written to it.
        max_side: longer side of the image sent to the model.
        timeout: seconds to wait for one description (retries included) before giving up.
        reuse: ``"same"`` (default): a stored description is used only when this backend wrote it (same backend,
            model and prompt version; see :func:`same_writer`), otherwise the image is described again and the
            store updated; ``"any"``: use whatever the store holds.
    """

    def __init__(
        self,
        backend: Backend,
        store: DescriptionStore | None = None,
        *,
        max_side: int = DEFAULT_MAX_SIDE,
        timeout: float | None = 600.0,
        reuse: str = "same",
    ) -> None:
        if reuse not in ("same", "any"):
            raise UsageError(f"reuse must be 'same' or 'any', got {reuse!r}", hint="--reuse same|any")
        self.reuse = reuse
        self.backend = backend
        self.store = store
        self.max_side = max_side
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="mghft-interpreter", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())
        try:
            return future.result(self.timeout)
        except FutureTimeout:  # the builtin TimeoutError only from Python 3.11
            future.cancel()
            raise

    def describe(self, image: ImageInput, *, use_cache: bool = True) -> Description:
        """The four views of one image (a path or the file's bytes).

        Returns the stored description when the store has one for these bytes (and ``use_cache``); otherwise asks
        the backend and stores the answer.

        Raises:
            mghft.data.images.ImageLoadError: not a readable image.
            BackendError: the backend failed for this image (after its retries).
            FatalBackendError: the backend is misconfigured.
        """
        data, source = read_image_bytes(image)
        sha = image_sha256(data)
        if use_cache and self.store is not None:
            cached = self.store.get(sha)
            if cached is not None and (self.reuse == "any" or same_writer(cached, self.backend)):
                return cached
        prepared = prepare_image(data, source=source, max_side=self.max_side, sha256=sha)
        desc: Description = self._run(self.backend.describe(prepared))
        if self.store is not None:
            self.store.put(desc)
        return desc

    def close(self) -> None:
        """Close connections and stop the background loop (idempotent)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.backend.aclose(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(10)
            loop.close()

    def __enter__(self) -> Interpreter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
