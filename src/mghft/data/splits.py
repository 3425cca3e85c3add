"""Seeded, stratified, optionally grouped train/val/test splits that are written down as JSON.

MET-MEME has no official split; SER30K's themes (groups) must not straddle train and test, since stickers of one
theme share character and style. A split is computed once, saved, and read back by key.

Split file (``Split.save`` / ``Split.load``)::

    {
      "format": "mghft.split", "version": 1,
      "dataset": "metmeme-E", "seed": 0, "group_by": null,
      "fractions": {"train": 0.8, "val": 0.1, "test": 0.1},
      "splits": {"train": ["E/image_ (3).jpg", ...], "val": [...], "test": [...]},
      "class_counts": {"train": {"happiness": 812, ...}, ...}
    }

``splits`` lists sample keys in the index's order; ``class_counts`` is informative only.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mghft.data.records import DatasetIndex, Sample

SPLIT_FORMAT = "mghft.split"
SPLIT_VERSION = 1

GroupBy = str | Callable[[Sample], Hashable] | None


@dataclass
class Split:
    """Which sample keys belong to which part (``train``, ``val``, ``test`` ...), and how that was decided."""

    splits: dict[str, list[str]]
    seed: int | None = None
    fractions: dict[str, float] = field(default_factory=dict)
    group_by: str | None = None
    dataset: str = ""
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    note: str = ""
    """How groups were handled, in words (e.g. that the dataset defines none)."""

    @property
    def names(self) -> tuple[str, ...]:
        """Part names, in order."""
        return tuple(self.splits)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (see the module docstring)."""
        return {
            "format": SPLIT_FORMAT,
            "version": SPLIT_VERSION,
            "dataset": self.dataset,
            "seed": self.seed,
            "group_by": self.group_by,
            "fractions": self.fractions,
            "splits": self.splits,
            "class_counts": self.class_counts,
            **({"note": self.note} if self.note else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "split") -> Split:
        """Inverse of ``to_dict``; checks the format and that no key is in two parts."""
        if data.get("format") != SPLIT_FORMAT:
            raise ValueError(f"{source}: not a split file (format {data.get('format')!r}, expected {SPLIT_FORMAT!r})")
        if data.get("version") != SPLIT_VERSION:
            raise ValueError(f"{source}: unsupported split file version {data.get('version')!r}")
        splits = data.get("splits")
        if not isinstance(splits, dict) or not all(
            isinstance(v, list) and all(isinstance(k, str) for k in v) for v in splits.values()
        ):
            raise ValueError(f"{source}: field 'splits' must map part names to lists of keys")
        owner: dict[str, str] = {}
        for part, keys in splits.items():
            for key in keys:
                if key in owner:
                    raise ValueError(f"{source}: key {key!r} is in both {owner[key]!r} and {part!r}")
                owner[key] = part
        return cls(
            splits={k: list(v) for k, v in splits.items()},
            seed=data.get("seed"),
            fractions=dict(data.get("fractions") or {}),
            group_by=data.get("group_by"),
            dataset=str(data.get("dataset") or ""),
            class_counts=dict(data.get("class_counts") or {}),
            note=str(data.get("note") or ""),
        )

    def save(self, path: str | Path) -> Path:
        """Write the split file (UTF-8 JSON, one part per key)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)  # readers never see a half-written split
        return path

    @classmethod
    def load(cls, path: str | Path) -> Split:
        """Read a split file written by ``save``."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {exc.lineno}: invalid JSON ({exc.msg})") from exc
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return cls.from_dict(data, source=str(path))

    def select(self, index: DatasetIndex, name: str, *, strict: bool = True) -> DatasetIndex:
        """The samples of part ``name``, in the index's order, as a new index named ``<index>-<name>``.

        When the split was grouped by a field other than the samples' own ``group`` (``data.group_by: pack``), each
        sample's ``group`` becomes its value of that field (``None``: it stands alone) and the index's ``grouping``
        names the field: the groups the split kept together are the ones every interval on the part resamples.

        With ``strict``, a key of the part that the index lacks is an error (the split was made on other data).
        """
        if name not in self.splits:
            raise KeyError(f"no part {name!r} in this split; parts are {list(self.splits)}")
        wanted = set(self.splits[name])
        samples = [s for s in index.samples if s.key in wanted]
        if strict and len(samples) != len(wanted):
            have = {s.key for s in index.samples}
            missing = sorted(wanted - have)
            raise ValueError(
                f"{len(missing)} key(s) of part {name!r} are not in index {index.name!r}, e.g. {missing[:5]} "
                "(pass strict=False to ignore)"
            )
        grouping = index.grouping
        if self.group_by not in (None, "group"):
            samples = [replace(s, group=_group_value(s, self.group_by)) for s in samples]
            grouping = self.group_by
        return DatasetIndex(f"{index.name}-{name}", index.root, index.classes, samples, dict(index.skipped), grouping)

    def apply(self, index: DatasetIndex, *, strict: bool = True) -> dict[str, DatasetIndex]:
        """Every part of the split as its own index. With ``strict``, index keys in no part are an error too."""
        parts = {name: self.select(index, name, strict=strict) for name in self.splits}
        if strict:
            assigned = {k for keys in self.splits.values() for k in keys}
            extra = [s.key for s in index.samples if s.key not in assigned]
            if extra:
                raise ValueError(
                    f"{len(extra)} sample(s) of index {index.name!r} are in no part, e.g. {extra[:5]} "
                    "(pass strict=False to ignore)"
                )
        return parts


def resolve_group_by(index: DatasetIndex, group_by: str | None) -> tuple[str | None, str]:
    """The grouping a split of ``index`` must use, and a sentence saying so.

    ``None`` means the reader's own groups (a manifest's ``group`` column, SER30K topics, a class folder's
    sub-folders) whenever any sample has one; ``"none"`` turns grouping off on purpose; anything else is used as
    given (a ``Sample`` attribute or ``meta`` key).
    """
    if group_by == "none":
        return None, "grouping turned off (group_by: none): images of one group may straddle the split"
    if group_by is not None:
        return group_by, f"grouped by {group_by!r}"
    groups = {s.group for s in index.samples if s.group is not None}
    if groups:
        return "group", f"grouped by the dataset's own groups ({len(groups)} groups never straddle two parts)"
    return None, f"{index.name} defines no groups (nothing that must stay on one side of a split): split by image"


def ser30k_official_split(root: str | Path, annotations: str | Path | None = None) -> bool:
    """Whether a SER30K folder (or ``annotations``) has its own split files (any of train/val/test: one that is
    missing is then an error naming it); if none, ``all_annos.json`` is split here (grouped by topic). A single
    annotation file is never an official split."""
    from mghft.data.ser30k import annotation_file

    if annotations is not None and not (Path(root) / annotations).is_dir() and not Path(annotations).is_dir():
        return False
    return any(annotation_file(root, s, annotations).is_file() for s in ("train", "val", "test"))


def empty_split_error(fmt: str, root: str | Path, empty: Sequence[str], parts: Mapping[str, DatasetIndex]) -> Exception:
    """The error for splits left without a usable image, with the reasons the reader and checks gave."""
    from mghft.errors import MghftError

    skipped: dict[str, str] = {}
    for part in parts.values():
        skipped.update(part.skipped)
    if not skipped:  # nothing was left out: the dataset is too small for the split fractions
        sizes = ", ".join(f"{name} {len(part)}" for name, part in parts.items())
        return MghftError(
            f"split(s) {list(empty)} of {fmt} dataset {root} hold no images: the split gives {sizes} (no item was "
            "left out by the reader or the checks)",
            hint="add images (each class needs a few per split), or change data.split_fractions",
        )
    return MghftError(
        f"split(s) {list(empty)} of {fmt} dataset {root} hold no usable images: {skipped_summary(skipped)}",
        hint="check data.root and the image folders (skipped.json in the run folder lists every item)",
    )


def _reason_kind(reason: str) -> str:
    for sep in (" (", ": "):
        if sep in reason:
            reason = reason.split(sep, 1)[0]
    return reason.strip()


def skipped_summary(skipped: Mapping[str, str], first: int = 3) -> str:
    """Counts of left-out items by reason, and the first few with their full reason (one line)."""
    if not skipped:
        return "no item was left out by the reader or the checks"
    counts: dict[str, int] = {}
    for reason in skipped.values():
        counts[_reason_kind(reason)] = counts.get(_reason_kind(reason), 0) + 1
    by_reason = ", ".join(f"{c} {k}" for k, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    examples = "; ".join(f"{k}: {r}" for k, r in list(skipped.items())[:first])
    return f"{len(skipped)} item(s) left out ({by_reason}), e.g. {examples}"


def _group_value(sample: Sample, name: str) -> str | None:
    """A sample's value of the attribute or ``meta`` key ``name`` a split was grouped by, as text (``None``: none)."""
    value = getattr(sample, name) if hasattr(sample, name) and name != "meta" else sample.meta.get(name)
    return None if value is None else str(value)


def _group_fn(group_by: GroupBy) -> tuple[Callable[[Sample], Hashable] | None, str | None]:
    if group_by is None:
        return None, None
    if callable(group_by):
        return group_by, getattr(group_by, "__name__", "<function>")
    name = group_by

    def get(sample: Sample) -> Hashable:
        value = getattr(sample, name) if hasattr(sample, name) and name != "meta" else sample.meta.get(name)
        # A sample without a group is a group of its own.
        return ("key", sample.key) if value is None else ("group", value)

    return get, name


def _largest_remainder(n: int, fractions: Sequence[float]) -> list[int]:
    """Integer counts summing to ``n``, proportional to ``fractions``; leftovers go to the largest remainders."""
    exact = [f * n for f in fractions]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(fractions)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def stratified_split(
    index: DatasetIndex,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    *,
    seed: int = 0,
    group_by: GroupBy = None,
    names: Sequence[str] = ("train", "val", "test"),
    note: str = "",
) -> Split:
    """Split an index into parts whose class proportions follow the whole.

    Without groups, each class is shuffled (seeded) and cut by the largest-remainder rule, so every part holds
    ``fraction × class size`` images of each class, rounded. With groups, whole groups are assigned: largest group
    first (seeded order among equal sizes), each to the part where it most reduces the squared gap between the
    part's class counts and their targets. Unlabelled samples form one more stratum.

    Args:
        index: the samples; keys must be unique.
        fractions: one per part, non-negative, summing to 1.
        seed: the random seed; the same seed and index give the same split.
        group_by: ``None``; a ``Sample`` attribute (``"group"``) or ``meta`` key; or a function of a sample.
            Samples sharing a value never straddle two parts; a sample whose value is ``None`` stands alone.
        names: part names, one per fraction.
        note: how groups were handled, in words (written to the split file).
    """
    fractions = [float(f) for f in fractions]
    names = list(names)
    if len(fractions) != len(names):
        raise ValueError(f"{len(fractions)} fractions for {len(names)} part names {names}")
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate part names {names}")
    keys = [s.key for s in index.samples]
    if len(set(keys)) != len(keys):
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"index {index.name!r} has duplicate keys, e.g. {dupes[:5]}")

    rng = random.Random(seed)
    n_strata = len(index.classes) + 1  # the last stratum holds unlabelled samples

    def stratum(sample: Sample) -> int:
        return sample.label if sample.label is not None else len(index.classes)

    assignment: dict[str, int] = {}
    get_group, group_name = _group_fn(group_by)
    if get_group is None:
        by_class: list[list[str]] = [[] for _ in range(n_strata)]
        for s in index.samples:
            by_class[stratum(s)].append(s.key)
        for members in by_class:
            rng.shuffle(members)
            start = 0
            for part, count in enumerate(_largest_remainder(len(members), fractions)):
                for key in members[start : start + count]:
                    assignment[key] = part
                start += count
    else:
        groups: dict[Hashable, list[Sample]] = {}
        for s in index.samples:
            groups.setdefault(get_group(s), []).append(s)
        units = list(groups.values())
        rng.shuffle(units)
        units.sort(key=len, reverse=True)  # stable: equal sizes keep their shuffled order
        totals = [0] * n_strata
        for s in index.samples:
            totals[stratum(s)] += 1
        targets = [[f * t for t in totals] for f in fractions]
        counts = [[0] * n_strata for _ in fractions]
        for position, unit in enumerate(units):
            hist = [0] * n_strata
            for s in unit:
                hist[stratum(s)] += 1
            # Increase of sum_c (count - target)^2, plus that of (part size - its target)^2, if the unit joins
            # part p: the size term keeps small parts from staying empty when every class is already near target.
            n = len(unit)
            costs = [
                sum(h * (2 * (counts[p][c] - targets[p][c]) + h) for c, h in enumerate(hist) if h)
                + n * (2 * (sum(counts[p]) - fractions[p] * len(index.samples)) + n)
                for p in range(len(fractions))
            ]
            # When only as many units remain as parts are empty, each empty part gets one: no part is left empty
            # while a unit could fill it.
            empty = [p for p in range(len(fractions)) if fractions[p] > 0 and not sum(counts[p])]
            allowed = empty if empty and len(units) - position <= len(empty) else range(len(fractions))
            best = min(allowed, key=lambda p: (costs[p], p))
            for c, h in enumerate(hist):
                counts[best][c] += h
            for s in unit:
                assignment[s.key] = best

    splits: dict[str, list[str]] = {name: [] for name in names}
    class_counts: dict[str, dict[str, int]] = {name: dict.fromkeys(index.classes, 0) for name in names}
    for s in index.samples:
        part = names[assignment[s.key]]
        splits[part].append(s.key)
        if s.label is not None:
            class_counts[part][index.classes[s.label]] += 1
    return Split(
        splits=splits,
        seed=seed,
        fractions=dict(zip(names, fractions, strict=True)),
        group_by=group_name,
        dataset=index.name,
        class_counts=class_counts,
        note=note,
    )
