"""The records every dataset reader produces: one ``Sample`` per image and a ``DatasetIndex`` around them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Sample:
    """One image of a dataset.

    Attributes:
        path: the image file.
        label: 0-based class index into ``DatasetIndex.classes``, or ``None`` when unlabelled.
        key: identifier unique within the dataset (for SER30K ``topic/file_name``), used in reports and splits.
        ocr_text: text written inside the image as the dataset gives it (SER30K ``text``), ``""`` when none.
        group: what must not be split across train and test (a SER30K topic, a sticker pack), if known.
        descriptions: view name -> description text, when the dataset carries them (see ``mghft.views``).
        meta: any further fields of the source row, kept for reports.
    """

    path: Path
    label: int | None
    key: str
    ocr_text: str = ""
    group: str | None = None
    descriptions: dict[str, str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetIndex:
    """A list of samples with the class names their labels index into (and what was left out, with why)."""

    name: str
    root: Path
    classes: tuple[str, ...]
    samples: list[Sample]
    skipped: dict[str, str] = field(default_factory=dict)
    """Items the reader or ``validate_index`` left out: key -> reason."""
    grouping: str | None = None
    """What each sample's ``group`` is when a split grouped by another field (``data.group_by: pack``: the
    ``pack`` column); ``None``: the reader's own groups (SER30K topic, manifest ``group``, sub-folder)."""

    def __len__(self) -> int:
        return len(self.samples)

    def class_counts(self) -> dict[str, int]:
        """Images per class name (unlabelled samples are not counted)."""
        counts = Counter(s.label for s in self.samples if s.label is not None)
        return {name: counts.get(i, 0) for i, name in enumerate(self.classes)}
