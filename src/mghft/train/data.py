"""Datasets for training: splits from any supported format, descriptions, cached text features, samplers."""

from __future__ import annotations

import hashlib
import json
import math
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from mghft.data import (
    DatasetIndex,
    Split,
    load_image,
    read_folder,
    read_manifest,
    read_metmeme,
    read_ser30k,
    stratified_split,
    validate_index,
)
from mghft.errors import DataError
from mghft.train.config import DataConfig


def load_splits(
    cfg: DataConfig,
    output: Path,
    log: bool = True,
    *,
    create_split: bool = True,
    report_dir: Path | None = None,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> dict[str, DatasetIndex]:
    """The ``splits`` indexes for ``cfg`` (all three by default), validated (bad items stop the run or are skipped).

    Only the files of the splits asked for are read (evaluating ``test`` needs no ``train.json``).

    Without an official split the run's split file (``data.split_file`` or ``<output>/split.json``) is read, or
    made and written when ``create_split``; with ``log`` skipped items are printed and saved to
    ``<report_dir or output>/skipped.json``.
    """
    if cfg.format == "ser30k":
        parts = {s: read_ser30k(cfg.root, s, cfg.annotations) for s in splits}
    else:
        if cfg.format == "metmeme":
            whole = read_metmeme(cfg.root, cfg.language)
        elif cfg.format == "manifest":
            whole = read_manifest(cfg.root)
        else:
            whole = read_folder(cfg.root)
        split_path = Path(cfg.split_file) if cfg.split_file else output / "split.json"
        if split_path.exists():
            split = Split.load(split_path)
        elif not create_split:
            raise FileNotFoundError(
                f"no split file at {split_path}: evaluate with the training config (same output or data.split_file)"
            )
        else:
            split = stratified_split(whole, cfg.split_fractions, seed=cfg.split_seed, group_by=cfg.group_by)
            split.save(split_path)
        parts = {name: part for name, part in split.apply(whole).items() if name in splits}
    first = "train" if "train" in parts else next(iter(parts))
    classes = parts[first].classes
    for name, part in parts.items():
        if part.classes != classes:
            raise DataError(f"{name} split classes {part.classes} differ from {first}'s {classes}")
    skipped: dict[str, object] = {}
    for name in list(parts):
        report = validate_index(parts[name], cfg.on_error, cfg.check_images)
        if report.problems:
            skipped[name] = report.to_dict()
            parts[name] = report.index
            if log:
                print(f"{name}: skipped {len(report.problems)} of {report.total} items\n{report.summary()}")
    empty = [name for name, part in parts.items() if len(part) == 0]
    if empty:
        raise DataError(
            f"split(s) {empty} of {cfg.format} dataset {cfg.root} hold no usable images",
            hint="add images, or change data.split_fractions so that every part gets some",
        )
    if skipped and log:
        report_dir = report_dir or output
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "skipped.json").write_text(json.dumps(skipped, indent=2, default=str), encoding="utf-8")
    return parts


def attach_descriptions(index: DatasetIndex, store_path: str | None) -> list[dict[str, str] | None]:
    """Each sample's view descriptions: from the store (by image content hash) or from the dataset itself."""
    if store_path is None:
        return [s.descriptions for s in index.samples]
    from mghft.interpret import DescriptionStore, image_sha256

    out: list[dict[str, str] | None] = []
    missing = 0
    with DescriptionStore(store_path) as store:
        for s in index.samples:
            desc = store.get(image_sha256(s.path))
            out.append(dict(desc.views) if desc else None)
            missing += desc is None
    if missing:
        warnings.warn(
            f"{missing} of {len(index)} images of {index.name} have no description in {store_path}", stacklevel=2
        )
    return out


def _sample_seed(*parts: int) -> int:
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little")


class StickerDataset(Dataset):
    """Images with labels, per-view text features (N, 4, D) and the mask of present views.

    For training the augmentation of item ``i`` in epoch ``e`` is seeded from ``(seed, e, i)``, so a run
    resumed at an epoch boundary sees exactly the images an uninterrupted run would. An index ``i + r * len``
    (the ``r``-th copy of item ``i`` from :class:`RepeatAugSampler`) reads item ``i`` with its own augmentation.
    """

    def __init__(
        self,
        index: DatasetIndex,
        transform: object,
        features: Tensor,
        view_mask: Tensor,
        texts: list[list[str]] | None = None,
        train: bool = False,
        seed: int = 0,
    ) -> None:
        self.index = index
        self.transform = transform
        self.features = features
        self.view_mask = view_mask
        self.texts = texts
        self.train = train
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Tensor | int]:
        copy_id, i = i, i % len(self.index)
        s = self.index.samples[i]
        img = load_image(s.path)
        if self.train:
            # Seeded per (seed, epoch, copy): the same augmentation whatever worker draws the item.
            image = self.transform(img, rng=random.Random(_sample_seed(self.seed, self.epoch, copy_id)))
        else:
            image = self.transform(img)
        item = {
            "image": image,
            "label": -1 if s.label is None else s.label,
            "text_features": self.features[i],
            "view_mask": self.view_mask[i],
            "index": i,
        }
        if self.texts is not None:
            item["texts"] = tuple(self.texts[i])  # for a fine-tuned text encoder
        return item


class RepeatAugSampler(Sampler[int]):
    """Shuffled (or ordered) indices, each repeated ``repeats`` times, sharded over ``num_replicas`` processes.

    Each process yields ``ceil(len / num_replicas)`` indices per epoch, so an epoch has the dataset's length
    in samples whatever ``repeats`` is (as in DeiT's repeated augmentation); with ``repeats=1`` this is a
    distributed sampler. The order depends only on ``(seed, epoch)``. The ``r``-th copy of item ``i`` is
    yielded as ``i + r * length``, which :class:`StickerDataset` reads as item ``i`` augmented differently.
    """

    def __init__(
        self,
        length: int,
        num_replicas: int = 1,
        rank: int = 0,
        repeats: int = 1,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        self.length = length
        self.num_replicas = num_replicas
        self.rank = rank
        self.repeats = repeats
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.num_samples = math.ceil(length / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        order = [i + r * self.length for i in order for r in range(self.repeats)]
        total = self.num_samples * self.num_replicas
        while len(order) < total:  # pad by wrapping so every process gets the same count
            order += order[: total - len(order)]
        return iter(order[self.rank : total : self.num_replicas][: self.num_samples])


def drop_views(mask: Tensor, keep: Tensor, view_dropout: float, text_dropout: float, g: torch.Generator) -> Tensor:
    """Training-time view dropout on a (B, 4) mask: ``keep`` selects the views in use at all."""
    mask = mask & keep.to(mask.device)
    B, V = mask.shape
    if view_dropout > 0:
        mask = mask & (torch.rand(B, V, generator=g) >= view_dropout).to(mask.device)
    if text_dropout > 0:
        mask = mask & (torch.rand(B, 1, generator=g) >= text_dropout).to(mask.device)
    return mask
