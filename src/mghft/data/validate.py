"""A validation pass over a ``DatasetIndex``: missing, unreadable, unlabelled or mislabelled items, by key."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mghft.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from mghft.data.records import DatasetIndex, Sample
from mghft.errors import MghftError

ProblemKind = Literal["duplicate_key", "unlabelled", "bad_label", "missing", "unreadable"]


@dataclass(frozen=True)
class Problem:
    """One item that failed validation."""

    key: str
    kind: str
    detail: str
    path: str


@dataclass
class ValidationReport:
    """What ``validate_index`` found.

    Attributes:
        dataset: the index's name.
        total: samples checked.
        problems: one entry per failing sample (its first problem).
        index: the index without the failing samples (with ``on_error="stop"``: the input index, which had none).
    """

    dataset: str
    total: int
    problems: list[Problem] = field(default_factory=list)
    index: DatasetIndex | None = None

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    @property
    def counts(self) -> dict[str, int]:
        """Problems per kind."""
        return dict(Counter(p.kind for p in self.problems))

    def summary(self, limit: int = 10) -> str:
        """A few lines for a log or an exception: counts, then the first ``limit`` items."""
        if self.ok:
            return f"{self.dataset}: all {self.total} samples valid"
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        lines = [f"{self.dataset}: {len(self.problems)} of {self.total} samples invalid ({kinds})"]
        lines += [f"  {p.key}: {p.kind}: {p.detail}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: dataset, total, kept, counts, items."""
        return {
            "dataset": self.dataset,
            "total": self.total,
            "kept": self.total - len(self.problems),
            "counts": self.counts,
            "items": [{"key": p.key, "kind": p.kind, "detail": p.detail, "path": p.path} for p in self.problems],
        }

    def save(self, path: str | Path) -> Path:
        """Write ``to_dict()`` as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        return path


class DatasetValidationError(MghftError, ValueError):
    """``validate_index(on_error="stop")`` found problems; ``report`` lists them all."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(
            report.summary(),
            hint="fix or remove these items, or skip them with data.on_error: skip (--set data.on_error=skip)",
        )
        self.report = report


def _check_image(sample: Sample, check_images: bool, max_pixels: int | None) -> tuple[str, str] | None:
    if not sample.path.exists():
        return "missing", f"no such file: {sample.path}"
    if not sample.path.is_file():
        return "missing", f"not a file: {sample.path}"
    if check_images:
        try:
            load_image(sample.path, max_pixels=max_pixels)
        except ImageLoadError as exc:
            return "unreadable", exc.reason
    return None


def _record(
    results: Iterable[tuple[int, tuple[str, str] | None]], index: DatasetIndex, problems: dict[int, Problem]
) -> None:
    for i, result in results:
        if result is not None:
            s = index.samples[i]
            problems[i] = Problem(s.key, result[0], result[1], str(s.path))


def validate_index(
    index: DatasetIndex,
    on_error: Literal["stop", "skip"] = "stop",
    check_images: bool = True,
    *,
    require_labels: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    workers: int = 1,
) -> ValidationReport:
    """Check every sample of ``index``.

    Checks, in order (a sample reports its first failure): a key seen before (``duplicate_key``); no label while
    ``require_labels`` (``unlabelled``); a label outside ``index.classes`` (``bad_label``); the file absent
    (``missing``); with ``check_images``, the file not loadable by ``load_image`` under ``max_pixels``
    (``unreadable``: truncated, not an image, too large).

    Args:
        index: the samples.
        on_error: ``"stop"`` raises ``DatasetValidationError`` (listing every problem) if any sample fails;
            ``"skip"`` returns the report with ``report.index`` holding only the valid samples (the dropped keys are
            added to its ``skipped`` with their reason).
        check_images: decode every image (slow on big datasets; use ``workers``) instead of only checking existence.
        require_labels: treat unlabelled samples as problems (off for prediction sets).
        max_pixels: the pixel limit passed to ``load_image``.
        workers: threads decoding images (Pillow decodes outside the GIL).
    """
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    problems: dict[int, Problem] = {}
    seen: set[str] = set()
    to_check: list[int] = []
    for i, s in enumerate(index.samples):
        if s.key in seen:
            problems[i] = Problem(s.key, "duplicate_key", "key appears more than once", str(s.path))
            continue
        seen.add(s.key)
        if s.label is None:
            if require_labels:
                problems[i] = Problem(s.key, "unlabelled", "no label", str(s.path))
                continue
        elif not 0 <= s.label < len(index.classes):
            problems[i] = Problem(
                s.key, "bad_label", f"label {s.label} outside 0..{len(index.classes) - 1}", str(s.path)
            )
            continue
        to_check.append(i)

    def check(i: int) -> tuple[int, tuple[str, str] | None]:
        return i, _check_image(index.samples[i], check_images, max_pixels)

    if workers > 1 and len(to_check) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            step = 256 * workers  # a bounded number of checks in flight, not one future per sample at once
            results: Iterable[tuple[int, tuple[str, str] | None]] = (
                r for at in range(0, len(to_check), step) for r in pool.map(check, to_check[at : at + step])
            )
            _record(results, index, problems)
    else:
        _record((check(i) for i in to_check), index, problems)

    ordered = [problems[i] for i in sorted(problems)]
    report = ValidationReport(dataset=index.name, total=len(index.samples), problems=ordered)
    if ordered and on_error == "stop":
        raise DatasetValidationError(report)
    kept = [s for i, s in enumerate(index.samples) if i not in problems]
    skipped = dict(index.skipped)
    skipped.update({p.key: f"{p.kind}: {p.detail}" for p in ordered})
    report.index = DatasetIndex(index.name, index.root, index.classes, kept, skipped, index.grouping)
    return report
