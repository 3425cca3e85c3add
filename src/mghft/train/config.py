"""Training configuration: typed, self-checking, YAML round-trip, ``key.sub=value`` overrides from the CLI."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mghft.config import (
    COMPAT_MODES,
    CONFIG_DOC_HINT,
    ConfigError,
    ModelConfig,
    apply_compat,
    check_fields,
    coerce_partial,
    dump_yaml,
    load_yaml,
)
from mghft.errors import UsageError, did_you_mean
from mghft.filekinds import looks_like
from mghft.views import VIEWS

DATA_FORMATS = ("ser30k", "metmeme", "manifest", "folder")


@dataclass
class DataConfig:
    """Where the images, labels and descriptions come from, and how they are split.

    SER30K brings its own ``train``/``val``/``test`` files. MET-MEME, manifests and class folders have no official
    split: a seeded, stratified one is made (grouped by ``group_by`` when given) and written to ``split_file``
    (default ``<output>/split.json``); an existing split file is reused as it is.
    """

    format: Literal["ser30k", "metmeme", "manifest", "folder"] = "ser30k"
    root: str = ""
    """Dataset folder (SER30K, MET-MEME, class folders) or the manifest file."""
    annotations: str | None = None
    """SER30K: another annotations folder (e.g. one whose ``text`` holds descriptions in the public format)."""
    language: str = "E"
    """MET-MEME: ``E``, ``C`` or ``both``."""
    descriptions: str | None = None
    """A description store (``mghft interpret`` output); ``None``: the descriptions the dataset itself carries."""
    description_source: str | None = None
    """Which writer's descriptions to use (``backend/model/prompt_version``) when the store holds several;
    ``any``: mix them on purpose. Left unset, a store with several writers is an error."""
    split_file: str | None = None
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 42
    group_by: str | None = None
    classes: tuple[str, ...] | None = None
    """Manifest and class folders: the class names in label order. A label outside the list stops the run naming
    its row; left unset, the classes are the labels found, and two that look like one name mistyped
    (``happiness``, ``happpiness``) stop the run until the label is corrected or the classes are declared here."""
    on_error: Literal["stop", "skip"] = "stop"
    """A missing, unreadable or unlabelled item: stop with the list, or skip it (counted, printed and saved)."""
    check_images: bool = True
    allow_duplicate_images: bool = False
    """The same image bytes in more than one of train/val/test under different names: an error unless ``true``
    (then listed in ``<output>/duplicates.json``). The same key in two splits is always an error."""

    def __post_init__(self) -> None:
        check_fields(self, "data.")
        if self.format not in DATA_FORMATS:
            raise ConfigError(f"data.format: must be one of {DATA_FORMATS}, got {self.format!r}")
        if self.on_error not in ("stop", "skip"):
            raise ConfigError(f"data.on_error: must be 'stop' or 'skip', got {self.on_error!r}")
        if self.classes is not None and (len(set(self.classes)) != len(self.classes) or len(self.classes) < 2):
            raise ConfigError(f"data.classes: at least two distinct class names, got {list(self.classes)}")
        if len(self.split_fractions) != 3 or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ConfigError("data.split_fractions: three fractions (train, val, test) summing to 1")


@dataclass
class TrainConfig:
    """One training run. Defaults are the public code's recipe (method.md section 6)."""

    data: DataConfig = field(default_factory=DataConfig)
    output: str = "runs/mghft"
    model: str = "mghft_pvt_small"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """Config changes on top of the variant, e.g. ``{"fusion": {"attention": "self"}}``."""
    compat: str = "none"
    pretrained: bool | str = "imagenet"
    """ImageNet backbone weights (``"imagenet"``), none (``false``), or a checkpoint folder to start from."""
    weights_dir: str | None = None
    image_size: int | None = None
    epochs: int = 50
    batch_size: int = 16
    """Per process."""
    accum_steps: int = 1
    lr: float | None = None
    """Peak learning rate; default 1e-3 x global batch / 512 (6.25e-5 for 2 x 16)."""
    min_lr: float = 1e-5
    warmup_epochs: float = 5
    warmup_lr: float = 1e-5
    weight_decay: float = 0.05
    clip_grad: float | None = None
    label_smoothing: float = 0.2
    align_weight: float = 0.5
    mlce_weight: float = 30.0
    temperature: float = 0.07
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    """``auto``: bf16 on a GPU that supports it (else fp16), full precision on CPU."""
    seed: int = 42
    workers: int = 4
    repeated_aug: int = 1
    """Repeated augmentation: each image appears this many times per epoch, differently augmented (paper: 3)."""
    rand_augment: str | None = "m9-mstd0.5"
    views: tuple[str, ...] = VIEWS
    """Views the model sees; the others are always absent (one-view ablation: one name; image only: none)."""
    view_dropout: float = 0.0
    """Probability of dropping each view of a training sample, so the model works with views absent."""
    text_dropout: float = 0.0
    """Probability of dropping all views of a training sample (the bare-image path)."""
    select_on: Literal["val", "test"] = "val"
    select_metric: Literal["accuracy", "macro_f1", "weighted_f1"] = "accuracy"
    patience: int | None = None
    """Stop after this many epochs without improvement on the selection split."""
    max_steps_per_epoch: int | None = None
    feature_cache: str | None = None
    """Text-feature cache root; default ``$MGHFT_CACHE/text-features``."""
    bootstrap: int = 1000
    tensorboard: bool = True
    progress: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            self.data = _build(DataConfig, self.data, "data")
        check_fields(self)
        self.model_overrides = coerce_partial(ModelConfig, self.model_overrides, "model_overrides")
        if isinstance(self.model_overrides.get("text"), dict) and self.compat in COMPAT_MODES:
            # The text settings are checked together now, before any data is read (e.g. an unmasked mean needs
            # fixed padding, else a feature depends on its batch-mates); the variant does not set them.
            try:
                apply_compat(ModelConfig(), self.compat).replace(text=self.model_overrides["text"])
            except ConfigError as e:
                raise ConfigError(f"model_overrides.{e}", hint=e.hint) from None
        bad = [v for v in self.views if v not in VIEWS]
        if bad:
            raise ConfigError(f"views: unknown view(s) {bad}; known: {list(VIEWS)}")
        checks = [
            (self.epochs >= 1, "epochs", "must be >= 1"),
            (self.batch_size >= 1, "batch_size", "must be >= 1"),
            (self.accum_steps >= 1, "accum_steps", "must be >= 1"),
            (self.repeated_aug >= 1, "repeated_aug", "must be >= 1"),
            (0 <= self.view_dropout < 1, "view_dropout", "must be in [0, 1)"),
            (0 <= self.text_dropout <= 1, "text_dropout", "must be in [0, 1]"),
            (self.select_on in ("val", "test"), "select_on", "must be 'val' or 'test'"),
            (
                self.select_metric in ("accuracy", "macro_f1", "weighted_f1"),
                "select_metric",
                "must be accuracy, macro_f1 or weighted_f1",
            ),
            (self.patience is None or self.patience >= 1, "patience", "must be >= 1 (or null: no early stopping)"),
            (self.amp in ("auto", "bf16", "fp16", "off"), "amp", "must be auto, bf16, fp16 or off"),
            (self.lr is None or self.lr >= 0, "lr", "must be >= 0 (or null: 1e-3 x global batch / 512)"),
            (self.min_lr >= 0 and self.warmup_lr >= 0, "min_lr", "min_lr and warmup_lr must be >= 0"),
            (self.warmup_epochs >= 0, "warmup_epochs", "must be >= 0"),
            (self.weight_decay >= 0, "weight_decay", "must be >= 0"),
            (self.clip_grad is None or self.clip_grad > 0, "clip_grad", "must be > 0 (or null: no clipping)"),
            (0 <= self.label_smoothing < 1, "label_smoothing", "must be in [0, 1)"),
            (self.temperature > 0, "temperature", "must be > 0"),
            (self.workers >= 0, "workers", "must be >= 0"),
            (self.bootstrap >= 0, "bootstrap", "must be >= 0 (0: no intervals)"),
            (
                self.max_steps_per_epoch is None or self.max_steps_per_epoch >= 1,
                "max_steps_per_epoch",
                "must be >= 1 (or null: whole epochs)",
            ),
            (self.image_size is None or self.image_size >= 1, "image_size", "must be positive (or null: variant's)"),
        ]
        for ok, name, msg in checks:
            if not ok:
                raise ConfigError(f"{name}: {msg}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["views"] = list(self.views)
        d["data"]["split_fractions"] = list(self.data.split_fractions)
        return d

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())

    def workers_set(self) -> bool:
        """Whether ``workers`` differs from its default (a default is fitted to the machine without a word)."""
        return self.workers != type(self).__dataclass_fields__["workers"].default

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _build(cls, data, "")

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        """Read a YAML config and apply ``key.sub=value`` overrides (values parsed as YAML).

        A config may start from another one: ``base: ../mghft.yaml`` (relative to its own folder); its fields
        are merged over the base's, nested mappings key by key.
        """
        data = load_yaml_with_base(Path(path))
        try:
            return cls.from_dict(apply_overrides(data, overrides or []))
        except ConfigError as e:
            hint = e.hint or CONFIG_DOC_HINT  # every field's type, default and allowed values
            raise ConfigError(f"{_source_of(str(e), path, overrides or [])}: {e}", hint=hint) from None


def _source_of(message: str, path: str | Path, overrides: list[str]) -> str:
    """Where a config error's field came from: the ``--set`` item that wrote it, else the file."""
    field = message.split(":", 1)[0]
    for item in reversed(overrides):  # the last one given wins, as when applied
        key = item.partition("=")[0]
        if key == field or key.startswith(field + "."):
            return f"--set {item}"
    return str(path)


def load_yaml_with_base(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML mapping with its ``base:`` chain merged in (a cycle is an error)."""
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    hint = "a training config is a YAML mapping of fields (epochs: 3), e.g. configs/demo/mghft_tiny.yaml"
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a YAML config (not UTF-8 text: {looks_like(path)})", hint=hint) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})", hint=hint) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: not a YAML config: expected a mapping of fields at the top level ({looks_like(path)})",
            hint=hint,
        )
    base = data.pop("base", None)
    if base is None:
        return data
    return _merge(load_yaml_with_base(path.parent / base, (*_seen, path)), data)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def refuse_owned_fields(overrides: Sequence[str], owned: Mapping[str, str], command: str) -> None:
    """Refuse a ``--set KEY=VALUE`` of a field that ``command`` sets itself from a flag of its own (it would be
    overridden without a word).

    Args:
        overrides: the ``KEY=VALUE`` strings given with ``--set``.
        owned: field -> the flag that sets it (e.g. ``{"output": "--output"}``).
        command: the command's name, for the message.

    Raises:
        UsageError: naming the ``--set`` and the flag to use instead.
    """
    for text in overrides:
        key = text.partition("=")[0].strip()
        if key in owned:
            raise UsageError(
                f"--set {text}: `mghft {command}` sets {key} itself from {owned[key]}, so this --set would be ignored",
                hint=f"use {owned[key]} instead",
            )


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["epochs=3", "data.root=/x", "model_overrides.fusion.alpha=4"]`` applied to a nested dict.

    Values are read as YAML by :func:`mghft.config.load_yaml` (``lr=1e-4`` is a number, ``amp=off`` a string) and
    coerced by the field's type when the config is built.
    """
    data = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value")
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node[p] = dict(node.get(p) or {})
            node = node[p]
        node[parts[-1]] = load_yaml(raw)
    return data


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"{where}{unknown[0]}: unknown field{did_you_mean(unknown[0], names)} (known: {sorted(names)})",
            hint=CONFIG_DOC_HINT,
        )
    return cls(**data)
