"""Seeded, stratified, grouped splits and their split file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mghft.data import DatasetIndex, Sample, Split, stratified_split


def _index(n_per_class: list[int], groups: int | None = None, unlabelled: int = 0) -> DatasetIndex:
    samples = []
    for label, n in enumerate(n_per_class):
        for i in range(n):
            group = f"theme{(i * 7 + label) % groups}" if groups else None
            samples.append(Sample(Path(f"/x/{label}_{i}.png"), label, f"{label}/{i}", group=group))
    samples += [Sample(Path(f"/x/u{i}.png"), None, f"u/{i}") for i in range(unlabelled)]
    return DatasetIndex("toy", Path("/x"), tuple(f"c{i}" for i in range(len(n_per_class))), samples)


def test_stratified_proportions_and_coverage() -> None:
    index = _index([100, 50, 20, 3], unlabelled=10)
    split = stratified_split(index, (0.8, 0.1, 0.1), seed=1)
    assert split.names == ("train", "val", "test")
    all_keys = [k for keys in split.splits.values() for k in keys]
    assert sorted(all_keys) == sorted(s.key for s in index.samples)  # a partition
    assert split.class_counts["train"] == {"c0": 80, "c1": 40, "c2": 16, "c3": 3}
    assert split.class_counts["val"] == {"c0": 10, "c1": 5, "c2": 2, "c3": 0}
    assert split.class_counts["test"] == {"c0": 10, "c1": 5, "c2": 2, "c3": 0}
    assert sum(k.startswith("u/") for k in split.splits["val"]) == 1
    # keys keep the index's order
    order = {s.key: i for i, s in enumerate(index.samples)}
    assert split.splits["train"] == sorted(split.splits["train"], key=order.__getitem__)


def test_seeded() -> None:
    index = _index([40, 40])
    a = stratified_split(index, seed=7)
    b = stratified_split(index, seed=7)
    c = stratified_split(index, seed=8)
    assert a.splits == b.splits
    assert a.splits != c.splits


def test_grouped_split_keeps_groups_whole() -> None:
    index = _index([120, 60, 30], groups=25)
    split = stratified_split(index, (0.7, 0.15, 0.15), seed=3, group_by="group")
    assert split.group_by == "group"
    part_of = {k: part for part, keys in split.splits.items() for k in keys}
    groups: dict[str, set[str]] = {}
    for s in index.samples:
        groups.setdefault(s.group, set()).add(part_of[s.key])  # type: ignore[arg-type]
    assert all(len(parts) == 1 for parts in groups.values())
    sizes = {part: len(keys) for part, keys in split.splits.items()}
    assert abs(sizes["train"] / len(index) - 0.7) < 0.1
    assert sizes["val"] > 0 and sizes["test"] > 0
    for part in ("val", "test"):  # every class present in the small parts too
        assert all(n > 0 for n in split.class_counts[part].values())


def test_group_by_function_and_meta() -> None:
    index = _index([30, 30])
    split = stratified_split(index, (0.5, 0.5), names=("a", "b"), group_by=lambda s: s.key.split("/")[1][-1])
    part_of = {k: p for p, keys in split.splits.items() for k in keys}
    by_digit: dict[str, set[str]] = {}
    for s in index.samples:
        by_digit.setdefault(s.key[-1], set()).add(part_of[s.key])
    assert all(len(v) == 1 for v in by_digit.values())
    assert split.group_by == "<lambda>"


def test_save_load_apply(tmp_path: Path) -> None:
    index = _index([20, 10], groups=5)
    split = stratified_split(index, seed=0, group_by="group")
    path = split.save(tmp_path / "splits" / "toy.json")
    data = json.loads(path.read_text())
    assert data["format"] == "mghft.split" and data["version"] == 1 and data["seed"] == 0
    assert data["fractions"] == {"train": 0.8, "val": 0.1, "test": 0.1} and data["dataset"] == "toy"
    loaded = Split.load(path)
    assert loaded.splits == split.splits and loaded.group_by == "group"
    parts = loaded.apply(index)
    assert {n: len(p) for n, p in parts.items()} == {n: len(k) for n, k in split.splits.items()}
    assert parts["train"].name == "toy-train" and parts["train"].classes == index.classes
    assert Counter(s.key for p in parts.values() for s in p.samples) == Counter(s.key for s in index.samples)


def test_apply_is_strict_about_keys(tmp_path: Path) -> None:
    index = _index([10, 10])
    split = stratified_split(index, seed=0)
    smaller = DatasetIndex(index.name, index.root, index.classes, index.samples[1:])
    with pytest.raises(ValueError, match=r"not in index 'toy'"):
        split.apply(smaller)
    assert sum(len(p) for p in split.apply(smaller, strict=False).values()) == len(smaller)
    bigger = DatasetIndex(index.name, index.root, index.classes, [*index.samples, Sample(Path("/n.png"), 0, "new")])
    with pytest.raises(ValueError, match=r"in no part, e.g. \['new'\]"):
        split.apply(bigger)


def test_bad_split_files(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a split file"):
        Split.load(path)
    path.write_text(json.dumps({"format": "mghft.split", "version": 1, "splits": {"train": ["a"], "test": ["a"]}}))
    with pytest.raises(ValueError, match="'a' is in both 'train' and 'test'"):
        Split.load(path)


def test_bad_arguments() -> None:
    index = _index([5])
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(index, (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="2 fractions for 3 part names"):
        stratified_split(index, (0.5, 0.5))
    dup = DatasetIndex("d", Path("/"), ("a",), [Sample(Path("/1"), 0, "k"), Sample(Path("/2"), 0, "k")])
    with pytest.raises(ValueError, match="duplicate keys"):
        stratified_split(dup)
