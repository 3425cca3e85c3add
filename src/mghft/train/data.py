"""Datasets for training: splits from any supported format, descriptions, cached text features, samplers."""

from __future__ import annotations

import hashlib
import json
import math
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
from mghft.data.splits import empty_split_error, resolve_group_by, ser30k_official_split
from mghft.errors import DataError, MghftError, first_few
from mghft.train.config import DataConfig
from mghft.train.randomness import item_rng, item_uniforms


class SplitOverlapError(MghftError):
    """The same item (by key) or the same image (by content) is in more than one of train, val and test."""


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
    if cfg.classes is not None and cfg.format not in ("manifest", "folder"):
        from mghft.config import ConfigError

        raise ConfigError(
            f"data.classes: the {cfg.format} reader has its own classes; set it only for a manifest or class folders",
            hint="remove data.classes",
        )
    if cfg.format == "ser30k" and not cfg.split_file and ser30k_official_split(cfg.root, cfg.annotations):
        parts = {s: read_ser30k(cfg.root, s, cfg.annotations) for s in splits}
    else:
        if cfg.format == "ser30k":  # all_annos.json (or one annotation file), split here by topic
            whole = read_ser30k(cfg.root, "all", cfg.annotations)
        elif cfg.format == "metmeme":
            whole = read_metmeme(cfg.root, cfg.language)
        elif cfg.format == "manifest":
            whole = read_manifest(cfg.root, classes=cfg.classes)
        else:
            whole = read_folder(cfg.root, classes=cfg.classes)
        split_path = Path(cfg.split_file) if cfg.split_file else output / "split.json"
        if split_path.exists():
            split = Split.load(split_path)
        elif not create_split:
            raise FileNotFoundError(
                f"no split file at {split_path}: evaluate with the training config (same output or data.split_file)"
            )
        else:
            group_by, note = resolve_group_by(whole, cfg.group_by)
            if log:
                print(f"split: {note}")
            split = stratified_split(whole, cfg.split_fractions, seed=cfg.split_seed, group_by=group_by, note=note)
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
        raise empty_split_error(cfg.format, cfg.root, empty, parts)
    if skipped and log:
        report_dir = report_dir or output
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "skipped.json").write_text(json.dumps(skipped, indent=2, default=str), encoding="utf-8")
    check_split_overlap(parts, cfg.allow_duplicate_images, report_dir=(report_dir or output) if log else None)
    return parts


def _file_sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None  # unreadable: validation reports it (or the loader does, when image checks are off)
    return digest.hexdigest()


def split_overlap(parts: dict[str, DatasetIndex]) -> dict[str, list[dict[str, object]]]:
    """Items shared between splits: ``{"keys": [...], "images": [...]}``.

    ``keys``: one entry per key listed in more than one split, ``{"key", "splits", "paths"}``. ``images``: one
    entry per image content (SHA-256 of the file's bytes) found in more than one split under different keys,
    ``{"sha256", "splits", "items": [[split, key, path], ...]}``. Duplicates within one split are not listed
    here (the validation reports a repeated key; a repeated image inside train is not a leak).
    """
    by_key: dict[str, list[tuple[str, str]]] = {}
    by_hash: dict[str, list[tuple[str, str, str]]] = {}
    for name, part in parts.items():
        for s in part.samples:
            by_key.setdefault(s.key, []).append((name, str(s.path)))
            digest = _file_sha256(Path(s.path))
            if digest is not None:
                by_hash.setdefault(digest, []).append((name, s.key, str(s.path)))
    keys = [
        {"key": k, "splits": sorted({n for n, _ in v}), "paths": sorted({p for _, p in v})}
        for k, v in by_key.items()
        if len({n for n, _ in v}) > 1
    ]
    shared_keys = {e["key"] for e in keys}
    images = [
        {"sha256": h, "splits": sorted({n for n, _, _ in v}), "items": [list(x) for x in v]}
        for h, v in by_hash.items()
        if len({n for n, _, _ in v}) > 1 and not {k for _, k, _ in v} <= shared_keys
    ]
    return {"keys": keys, "images": images}


def check_split_overlap(
    parts: dict[str, DatasetIndex], allow_duplicate_images: bool = False, report_dir: Path | None = None
) -> dict[str, list[dict[str, object]]]:
    """Stop when train, val and test share an item: the same key always, the same image content unless allowed.

    Every overlap found is written to ``report_dir/duplicates.json`` (when given); allowed duplicate images are
    printed as a count there too.

    Raises:
        SplitOverlapError: naming the shared keys or images with their paths (the first few, and a count) and the fix.
    """
    found = split_overlap(parts)
    if not found["keys"] and not found["images"]:
        return found
    where = ""
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        path = report_dir / "duplicates.json"
        path.write_text(json.dumps(found, indent=2), encoding="utf-8")
        where = f" (all of them in {path})"
    if found["keys"]:
        lines = [f"  {e['key']} in {' and '.join(e['splits'])}: {first_few(e['paths'])}" for e in found["keys"][:5]]
        lines += [f"  and {len(found['keys']) - 5} more"] if len(found["keys"]) > 5 else []
        raise SplitOverlapError(
            f"{len(found['keys'])} item(s) are listed in more than one split{where}:\n" + "\n".join(lines),
            hint="remove each item from all but one of the split files",
        )
    if not allow_duplicate_images:
        lines = [
            "  " + first_few((f"{n}: {p}" for n, _, p in _one_per_split_first(e["items"])), 3)
            for e in found["images"][:5]
        ]
        lines += [f"  and {len(found['images']) - 5} more"] if len(found["images"]) > 5 else []
        raise SplitOverlapError(
            f"{len(found['images'])} image(s) appear in more than one split under different names (identical "
            f"bytes){where}:\n" + "\n".join(lines),
            hint="remove the copies from the dataset (or, with your own split file, from val/test), or set "
            "data.allow_duplicate_images: true to train anyway",
        )
    if report_dir is not None:
        print(f"warning: {len(found['images'])} image(s) appear in more than one split (allowed){where}")
    return found


def _one_per_split_first(items: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """``(split, key, path)`` items reordered so that the first few shown name every split involved."""
    firsts: dict[str, tuple[str, str, str]] = {}
    for item in items:
        firsts.setdefault(item[0], item)
    return [*firsts.values(), *(item for item in items if item not in firsts.values())]


def attach_descriptions(index: DatasetIndex, store_path: str | None) -> list[dict[str, str] | None]:
    """Each sample's view descriptions: from the store (by image content hash) or from the dataset itself."""
    if store_path is None:
        return [s.descriptions for s in index.samples]
    from mghft.interpret import DescriptionStore, image_sha256

    out: list[dict[str, str] | None] = []
    missing = 0
    with DescriptionStore(store_path, read_only=True) as store:
        for s in index.samples:
            desc = store.get(image_sha256(s.path))
            out.append(dict(desc.views) if desc else None)
            missing += desc is None
    if missing:
        warnings.warn(
            f"{missing} of {len(index)} images of {index.name} have no description in {store_path}", stacklevel=2
        )
    return out


class StickerDataset(Dataset):
    """Images with labels, per-view text features (N, 4, D) and the mask of present views.

    An index ``i + r * len`` (the ``r``-th copy of item ``i`` from :class:`RepeatAugSampler`) reads item ``i``;
    it is the item's global id, returned as ``sample``. For training its augmentation is seeded from
    ``(seed, "augment", epoch, id)`` (:mod:`mghft.train.randomness`): the same whatever process or worker reads
    it, different for every copy, and a run resumed at an epoch boundary sees exactly the images an
    uninterrupted run would.
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
            image = self.transform(img, rng=item_rng(self.seed, "augment", self.epoch, copy_id))
        else:
            image = self.transform(img)
        item = {
            "image": image,
            "label": -1 if s.label is None else s.label,
            "text_features": self.features[i],
            "view_mask": self.view_mask[i],
            "index": i,
            "sample": copy_id,
        }
        if self.texts is not None:
            item["texts"] = tuple(self.texts[i])  # for a fine-tuned text encoder
        return item


class RepeatAugSampler(Sampler[int]):
    """Shuffled (or ordered) indices, each repeated ``repeats`` times, sharded over ``num_replicas`` processes.

    The epoch's order depends only on ``(seed, epoch)``: a stream of global item ids in which the ``r``-th copy
    of item ``i`` is ``i + r * length`` (read by :class:`StickerDataset` as item ``i``, augmented as that copy);
    where the stream wraps around to pad, the copies get fresh ids (``r + repeats``, ...). Process ``rank`` takes
    the stream's positions ``rank, rank + num_replicas, ...``, so the global batch ``k`` (batch ``k`` of every
    process together) is the stream's positions ``[k * G, (k + 1) * G)`` with ``G = batch_size * num_replicas``.

    An epoch has the dataset's length in samples whatever ``repeats`` is (as in DeiT's repeated augmentation).
    With ``batch_size`` (training), it is cut to whole optimizer steps of ``batch_size * accum_steps *
    num_replicas`` samples, so the steps of an epoch and the samples in each are the same for every split of one
    global batch into processes, micro-batches and accumulation (an epoch shorter than one step is padded to a
    multiple of ``num_replicas`` instead). Without it (evaluation), every process gets ``ceil(length /
    num_replicas)`` indices, the last ones wrapping around.
    """

    def __init__(
        self,
        length: int,
        num_replicas: int = 1,
        rank: int = 0,
        repeats: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        batch_size: int | None = None,
        accum_steps: int = 1,
    ) -> None:
        self.length = length
        self.num_replicas = num_replicas
        self.rank = rank
        self.repeats = repeats
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.batch_size = batch_size
        global_batch = (batch_size or 1) * accum_steps * num_replicas
        if batch_size is not None and length >= global_batch:
            self.total = length // global_batch * global_batch
        else:
            self.total = math.ceil(length / num_replicas) * num_replicas
        self.num_samples = self.total // num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def global_order(self) -> list[int]:
        """The epoch's stream of global item ids, all processes together (``self.total`` of them)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        stream = [i + r * self.length for i in order for r in range(self.repeats)]
        period = len(stream)
        # Padding wraps around with fresh copy numbers, so no id appears twice in an epoch.
        return [stream[p % period] + (p // period) * period for p in range(self.total)]

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_order()[self.rank : self.total : self.num_replicas])


def drop_views(
    mask: Tensor,
    keep: Tensor,
    view_dropout: float,
    text_dropout: float,
    *,
    seed: int,
    epoch: int,
    items: Tensor,
) -> Tensor:
    """Training-time view and text dropout on a (B, 4) mask of present views; ``keep`` (4,) selects the views in
    use at all.

    Item ``b`` draws from ``(seed, "view_dropout" / "text_dropout", epoch, items[b])`` where ``items`` (B,) are the
    global item ids (``batch["sample"]``): the same masks for the same items on any number of processes and
    workers, and no two items of a batch sharing a draw.
    """
    mask = mask & keep.to(mask.device)
    B, V = mask.shape
    if view_dropout > 0:
        mask = mask & (item_uniforms(seed, "view_dropout", epoch, items, V) >= view_dropout).to(mask.device)
    if text_dropout > 0:
        mask = mask & (item_uniforms(seed, "text_dropout", epoch, items, 1) >= text_dropout).to(mask.device)
    return mask
