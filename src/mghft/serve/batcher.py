"""A bounded queue that gathers images from concurrent requests into model batches.

One worker thread owns the model. Requests put their (already decoded) images in the queue and wait on a future;
the worker takes up to ``batch_size`` images, from one or several requests, waiting at most ``max_wait`` seconds
for a batch to fill, runs them in one forward pass and hands every request its own results. The queue holds at
most ``max_pending`` images: beyond that :meth:`Batcher.submit` raises :class:`QueueFull` at once (the service
answers 503), so memory stays bounded however many clients push.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

RunFn = Callable[[Sequence[Any], Sequence[Sequence[str | None]], Sequence[str], bool], list[Any]]


class QueueFull(RuntimeError):
    """The batch queue has no room for the request's images."""


@dataclass
class _Job:
    images: list[Any]
    texts: list[list[str | None]]
    sources: list[str]
    explain: bool
    future: Future = field(default_factory=Future)
    results: list[Any] = field(default_factory=list)
    taken: int = 0  # images handed to the worker so far
    done: int = 0


class Batcher:
    """Run ``run_fn(images, texts, sources, explain)`` over batches gathered from concurrent submissions.

    Args:
        run_fn: the batch step (:meth:`mghft.serve.predictor.Predictor.run` with ``explain`` positional).
        batch_size: most images per forward pass.
        max_wait: seconds the worker waits for a batch to fill once it has at least one image.
        max_pending: most images waiting in the queue (not counting the batch being run).
    """

    def __init__(self, run_fn: RunFn, *, batch_size: int = 8, max_wait: float = 0.005, max_pending: int = 64) -> None:
        if batch_size < 1 or max_pending < 1:
            raise ValueError("batch_size and max_pending must be at least 1")
        self.run_fn = run_fn
        self.batch_size = batch_size
        self.max_wait = max_wait
        self.max_pending = max_pending
        self._jobs: deque[_Job] = deque()
        self._pending = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self.batches_run = 0
        self.images_run = 0
        self.largest_batch = 0

    @property
    def pending(self) -> int:
        """Images waiting for the worker."""
        return self._pending

    @property
    def running(self) -> bool:
        """True while the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Batcher:
        """Start the worker thread (idempotent)."""
        with self._cond:
            if self.running:
                return self
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="mghft-batcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker; waiting jobs fail with ``RuntimeError``."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            jobs = list(self._jobs)
            self._jobs.clear()
            self._pending = 0
        for job in jobs:
            _settle(job.future, exception=RuntimeError("the service is shutting down"))
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def submit(
        self, images: Sequence[Any], texts: Sequence[Sequence[str | None]], sources: Sequence[str], explain: bool
    ) -> Future:
        """Queue one request's images; the future's result is the list of its predictions, in order.

        Raises:
            QueueFull: no room for ``len(images)`` more images.
        """
        job = _Job(list(images), [list(t) for t in texts], list(sources), explain)
        if not job.images:
            job.future.set_result([])
            return job.future
        with self._cond:
            if not self.running:
                raise RuntimeError("the batch worker is not running")
            if self._pending + len(job.images) > self.max_pending:
                raise QueueFull(
                    f"the prediction queue is full ({self._pending} images waiting, room for {self.max_pending})"
                )
            self._jobs.append(job)
            self._pending += len(job.images)
            self._cond.notify_all()
        return job.future

    def _take(self) -> list[tuple[_Job, int, int]] | None:
        """Wait for work; return slices (job, start, stop) of at most ``batch_size`` images, or None to stop."""
        with self._cond:
            while not self._jobs and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            deadline = time.monotonic() + self.max_wait
            while self._pending < self.batch_size and not self._stop:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._stop:
                return None
            room, slices = self.batch_size, []
            while room and self._jobs:
                job = self._jobs[0]
                n = min(room, len(job.images) - job.taken)
                slices.append((job, job.taken, job.taken + n))
                job.taken += n
                room -= n
                self._pending -= n
                if job.taken == len(job.images):
                    self._jobs.popleft()
            return slices

    def _loop(self) -> None:
        while True:
            slices = self._take()
            if slices is None:
                return
            images = [im for job, a, b in slices for im in job.images[a:b]]
            texts = [t for job, a, b in slices for t in job.texts[a:b]]
            sources = [s for job, a, b in slices for s in job.sources[a:b]]
            explain = any(job.explain for job, _, _ in slices)
            try:
                out = self.run_fn(images, texts, sources, explain)
            except BaseException as e:  # hand the error to every waiting request, keep serving
                for job, _, _ in slices:
                    _settle(job.future, exception=e)
                    self._drop(job)
                continue
            self.batches_run += 1
            self.images_run += len(images)
            self.largest_batch = max(self.largest_batch, len(images))
            k = 0
            for job, a, b in slices:
                job.results.extend(out[k : k + b - a])
                k += b - a
                job.done += b - a
                if job.done == len(job.images):
                    _settle(job.future, result=job.results)

    def _drop(self, job: _Job) -> None:
        """Remove a failed job's images that are still waiting."""
        with self._cond:
            if job in self._jobs:
                self._pending -= len(job.images) - job.taken
                job.taken = len(job.images)
                self._jobs.remove(job)


def _settle(future: Future, *, result: Any = None, exception: BaseException | None = None) -> None:
    """Complete ``future`` unless it is already done; the waiting request may cancel it at any moment (timeout)."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:  # cancelled (or completed) meanwhile: nobody is waiting for it
        pass
