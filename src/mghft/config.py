"""Typed, self-checking model configuration: one dataclass per tower, YAML/JSON round-trip.

Every config validates itself on construction and names the bad field in its error, so a typo in a YAML file
fails at load time rather than as a shape mismatch deep inside a forward pass.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from mghft.errors import UsageError, did_you_mean

CONFIG_DOC_HINT = "every config field, its type, default and allowed values: docs/config.md"
COMPAT_MODES = ("none", "official")
ARCHS = ("mghft", "text_only", "clip")
BackboneArch = Literal["pvt_v1", "pvt_v2"]

T = TypeVar("T")


class ConfigError(UsageError, ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range; the message names the field."""


def _check(cond: bool, field_name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{field_name}: {msg}")


# ---------------------------------------------------------------------------------------------------------------
# Reading YAML: the YAML 1.2 core schema, not PyYAML's YAML 1.1.
#
# PyYAML follows YAML 1.1, where ``1e-4`` (no dot) is a string, ``off``/``no``/``on``/``yes`` are booleans,
# ``010`` is octal 8, ``1:30`` is 90 and ``2024-01-01`` is a date. Configs are read with the YAML 1.2 core rules
# instead: ``1e-4`` is a number, only ``true``/``false`` are booleans (``amp: off`` stays the string ``off``),
# integers are decimal (``0x``/``0o`` prefixes excepted), and there are no sexagesimal numbers or dates. A bool
# field still accepts ``yes``/``no``/``on``/``off`` (as strings, coerced by the field's type).

_BOOL_TAG, _INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_DROPPED_TAGS = {_BOOL_TAG, _INT_TAG, _FLOAT_TAG, "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value"}
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT_RE = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class ConfigLoader(yaml.SafeLoader):
    """A safe YAML loader with the YAML 1.2 core schema's scalars (see above)."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _DROPPED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(_BOOL_TAG, _BOOL_RE, list("tTfF"))
ConfigLoader.add_implicit_resolver(_INT_TAG, _INT_RE, list("-+0123456789"))
ConfigLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = loader.construct_scalar(node)
    if text.startswith(("0x", "0o")):
        return int(text[2:], 16 if text[1] == "x" else 8)
    return int(text, 10)  # "010" is ten, not YAML 1.1's octal eight


ConfigLoader.add_constructor(_INT_TAG, _construct_int)


class ConfigDumper(yaml.SafeDumper):
    """A safe YAML dumper that quotes every string either YAML 1.1 or YAML 1.2 would read as something else."""


for _first, _resolvers in ConfigLoader.yaml_implicit_resolvers.items():
    for _tag, _rx in _resolvers:
        ConfigDumper.add_implicit_resolver(_tag, _rx, [_first])


def load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`ConfigLoader` (``1e-4`` is a float, ``off`` is a string)."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - ConfigLoader is a SafeLoader


def dump_yaml(data: Any) -> str:
    """YAML text that :func:`load_yaml` and any YAML 1.1 reader both read back as ``data``."""
    return yaml.dump(data, Dumper=ConfigDumper, sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------------------------------------------------
# Typed fields: every config dataclass coerces and checks its fields by their annotations on construction.

_TRUE_WORDS = {"true", "yes", "on"}
_FALSE_WORDS = {"false", "no", "off"}
_NUMBER_RE = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    """A type annotation in words: ``float | None`` -> ``a number or null``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if tp is bool:
        return "a boolean (true/false)"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is Any:
        return "any value"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} {_plural(args[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {tp.__name__} fields"
    return str(tp)


def _plural(tp: Any) -> str:
    word = _describe(tp)
    for article in ("an ", "a "):
        if word.startswith(article):
            return word[len(article) :].split(" (")[0] + "s"
    return word


def _show(value: Any) -> str:
    kind = "boolean" if isinstance(value, bool) else type(value).__name__
    return f"{value!r} ({kind})"


class _Mismatch(Exception):
    """The value does not fit the type (internal: turned into a :class:`ConfigError` naming the field)."""


def coerce_value(value: Any, tp: Any, where: str) -> Any:
    """``value`` converted to the annotated type ``tp``, or a :class:`ConfigError` naming ``where``.

    Conversions made on purpose: an integer where a number is expected becomes a float; a whole number written as
    a float (``1e3``) where an integer is expected becomes an int; a string holding a number (``"1e-4"``, as a
    YAML 1.1 reader leaves it) becomes that number; ``yes``/``no``/``on``/``off``/``true``/``false`` strings
    become booleans where a boolean is expected; lists become tuples. A boolean is never taken as a number, a
    number never as a string.
    """
    try:
        return _coerce_value(value, tp, where)
    except _Mismatch:
        raise ConfigError(f"{where}: expected {_describe(tp)}, got {_show(value)}") from None


def _coerce_value(value: Any, tp: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        # Exact type first (a bool stays a bool in ``bool | str``), then conversions in the order written.
        for a in args:
            if isinstance(a, type) and a is not type(None) and type(value) is a:
                return value
        if isinstance(value, str) and bool in args and value.lower() in _TRUE_WORDS | _FALSE_WORDS:
            return value.lower() in _TRUE_WORDS
        for a in args:
            try:
                return _coerce_value(value, a, where)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise _Mismatch
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE_WORDS | _FALSE_WORDS:
            return value.lower() in _TRUE_WORDS
        raise _Mismatch
    if tp is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, str) and _NUMBER_RE.match(value.strip()):
            value = float(value) if not re.fullmatch(r"[-+]?[0-9]+", value.strip()) else int(value)
            if isinstance(value, int):
                return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise _Mismatch
    if tp is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, str) and _NUMBER_RE.match(value.strip()):
            value = float(value)
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise ConfigError(f"{where}: must be a finite number, got {value!r}")
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce_value(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _Mismatch
        return tuple(coerce_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return _from_dict(tp, value, where)
        raise _Mismatch
    raise TypeError(f"{where}: no coercion for the annotation {tp!r}")  # a programming error, not the user's


def check_fields(obj: Any, prefix: str = "") -> None:
    """Coerce every field of the dataclass instance ``obj`` to its annotated type, in place (frozen or not).

    Raises:
        ConfigError: a value that does not fit its field's type; the message names ``prefix.field``, the value
            and the expected type.
    """
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        where = f"{prefix}{f.name}"
        value = coerce_value(getattr(obj, f.name), hints[f.name], where)
        object.__setattr__(obj, f.name, value)


@dataclass(frozen=True)
class VisionConfig:
    """A pyramid vision transformer (PVT v1 or v2) with a CLS token in every stage."""

    arch: BackboneArch = "pvt_v1"
    name: str | None = "pvt_small"
    """Registered backbone whose ImageNet weights fit (``None``: a custom shape with no released weights)."""
    embed_dims: tuple[int, ...] = (64, 128, 320, 512)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    mlp_ratios: tuple[float, ...] = (8, 8, 4, 4)
    depths: tuple[int, ...] = (3, 4, 6, 3)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    patch_size: int = 4
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    pretrain_size: int = 224
    """Input size the positional embeddings are stored for (PVT v1); they are interpolated to the real grid."""
    linear_attn: bool = False
    """PVT v2 ``_li`` variants: pooled linear spatial reduction."""

    def __post_init__(self) -> None:
        check_fields(self, "vision.")
        _check(self.arch in ("pvt_v1", "pvt_v2"), "vision.arch", f"must be 'pvt_v1' or 'pvt_v2', got {self.arch!r}")
        n = len(self.embed_dims)
        _check(n == 4, "vision.embed_dims", f"MGHFT needs 4 stages, got {n}")
        for name in ("num_heads", "mlp_ratios", "depths", "sr_ratios"):
            _check(len(getattr(self, name)) == n, f"vision.{name}", f"needs {n} entries like embed_dims")
        for i, (d, h) in enumerate(zip(self.embed_dims, self.num_heads, strict=True)):
            _check(h > 0 and d % h == 0, f"vision.num_heads[{i}]", f"{h} heads must divide embed dim {d}")
        _check(all(d >= 1 for d in self.depths), "vision.depths", "every stage needs at least one block")
        _check(all(r >= 1 for r in self.sr_ratios), "vision.sr_ratios", "must be >= 1")
        _check(self.sr_ratios[-1] == 1, "vision.sr_ratios", "the last stage must not reduce (ratio 1)")
        _check(0 <= self.drop_path_rate < 1, "vision.drop_path_rate", "must be in [0, 1)")
        _check(self.pretrain_size % 32 == 0, "vision.pretrain_size", "must be a multiple of 32")

    def stage_strides(self) -> tuple[int, ...]:
        """Total downsampling factor at the output of each stage."""
        first = self.patch_size if self.arch == "pvt_v1" else 4
        return tuple(first * 2**i for i in range(4))


@dataclass(frozen=True)
class TextConfig:
    """The text encoder and how its hidden states become one feature per view."""

    encoder: str | None = "bert-base-uncased"
    """Hugging Face hub id, local folder, or ``packaged:all-MiniLM-L6-v2`` (ships in a pip package)."""
    dim: int = 768
    max_length: int = 512
    last_layers: int = 4
    """Average of the last ``last_layers`` hidden layers, then a mean over tokens."""
    masked_mean: bool = True
    """Mean over real tokens only; ``False`` reproduces the public code, whose mean includes padding (it needs
    ``pad_to_max_length``, else a feature would depend on the other texts of its batch)."""
    pad_to_max_length: bool = False
    """Pad every text to ``max_length`` (the public code's tokenisation; required without ``masked_mean``)."""
    identical_views: bool = False
    """Public-code defect: every view is fed the whole lower-cased description instead of its own section."""
    trainable: bool = False
    """Fine-tune the encoder. A frozen encoder runs in eval mode and its features can be cached."""

    def __post_init__(self) -> None:
        check_fields(self, "text.")
        _check(self.dim > 0, "text.dim", "must be positive")
        _check(1 <= self.max_length <= 8192, "text.max_length", "must be in [1, 8192]")
        _check(self.last_layers >= 1, "text.last_layers", "must be >= 1")
        if not self.masked_mean and not self.pad_to_max_length:
            # The unmasked mean runs over padding up to the longest text of the encoder's batch, so a text's
            # feature would depend on its batch-mates while the feature cache keys it by its own text alone.
            raise ConfigError(
                "text.masked_mean: false without text.pad_to_max_length: true makes a text's feature depend on the "
                "other texts of its encoder batch (the mean runs over padding up to the longest of them)",
                hint="set text.pad_to_max_length: true with it (the public code's tokenisation, as compat: "
                "official does), or keep text.masked_mean: true",
            )


@dataclass(frozen=True)
class FusionConfig:
    """Stage text injection, local re-attention and the text-guided fusion attention block."""

    hidden_dim: int = 768
    num_heads: int = 12
    mlp_dim: int = 3072
    dropout: float = 0.1
    attn_dropout: float = 0.0
    alpha: int = 8
    """Local tokens per head and stage are ``alpha * sr_ratio**2``."""
    local_stages: tuple[bool, ...] = (True, True, True, True)
    """Stages whose local tokens enter the fusion (the last stage always does)."""
    local_text_injection: bool = True
    """Add each stage's projected view feature to its local tokens (off: the "no local injection" ablation)."""
    attention: Literal["tgfa", "self"] = "tgfa"
    """``tgfa``: text-guided fusion attention; ``self``: plain self-attention over the visual sequence."""
    rollout: Literal["row", "full"] = "row"
    """``row``: push the CLS row through the attention maps; ``full``: form the full products as the public code
    does (same tokens, far more compute and memory; kept for benchmarks and checks)."""
    stale_stage4_text: bool = False
    """Public-code defect: the stage-4 local text token repeats stage 3's."""

    def __post_init__(self) -> None:
        check_fields(self, "fusion.")
        _check(self.hidden_dim % self.num_heads == 0, "fusion.num_heads", "must divide fusion.hidden_dim")
        _check(self.alpha >= 1, "fusion.alpha", "must be >= 1")
        _check(len(self.local_stages) == 4, "fusion.local_stages", "needs 4 entries")
        _check(bool(self.local_stages[-1]), "fusion.local_stages", "the last stage always gives local tokens")
        _check(0 <= self.dropout < 1 and 0 <= self.attn_dropout < 1, "fusion.dropout", "must be in [0, 1)")
        _check(
            self.attention in ("tgfa", "self"), "fusion.attention", f"must be 'tgfa' or 'self', not {self.attention!r}"
        )
        _check(self.rollout in ("row", "full"), "fusion.rollout", f"must be 'row' or 'full', not {self.rollout!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The whole MGHFT model."""

    name: str = "mghft_pvt_small"
    num_classes: int = 7
    image_size: int = 448
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    num_views: int = 4
    compat: str = "none"
    """``official`` reproduces the public code's defects; ``none`` is correct."""
    arch: str = "mghft"
    """``mghft``; or a baseline trained by the same loop: ``text_only`` (an MLP over the view features) or
    ``clip`` (a CLIP image tower from ``clip_model`` with a linear head)."""
    clip_model: str | None = None
    """Hugging Face id or folder of a CLIP model (``arch: clip``)."""
    clip_finetune: bool = False
    """``arch: clip``: train the image tower too (``False``: a linear probe on frozen features)."""

    def __post_init__(self) -> None:
        check_fields(self)
        _check(self.num_classes >= 1, "num_classes", "must be >= 1")
        _check(self.arch in ARCHS, "arch", f"must be one of {ARCHS}, got {self.arch!r}")
        _check(self.arch != "clip" or bool(self.clip_model), "clip_model", "arch 'clip' needs a CLIP model id")
        _check(self.num_views == 4, "num_views", "MGHFT injects one view per stage: 4")
        _check(self.compat in COMPAT_MODES, "compat", f"must be one of {COMPAT_MODES}, got {self.compat!r}")
        strides = self.vision.stage_strides()
        _check(self.image_size % strides[-1] == 0, "image_size", f"must be a multiple of {strides[-1]}")
        for i, (s, r, h) in enumerate(zip(strides, self.vision.sr_ratios, self.vision.num_heads, strict=True)):
            side = self.image_size // s
            _check(side % r == 0, "image_size", f"stage {i + 1} grid {side} is not divisible by sr ratio {r}")
            k = self.local_tokens_per_head()[i]
            _check(
                k <= side * side,
                "image_size",
                f"stage {i + 1} has {side * side} patches, fewer than the {k} local tokens per head that "
                f"fusion.alpha={self.fusion.alpha} asks for; use a larger image or a smaller alpha",
            )
            del h

    def local_tokens_per_head(self) -> tuple[int, ...]:
        """Local Re-Attention picks ``alpha * sr**2`` tokens per head in each stage (0 for unused stages)."""
        return tuple(
            self.fusion.alpha * r * r if use else 0
            for r, use in zip(self.vision.sr_ratios, self.fusion.local_stages, strict=True)
        )

    def local_token_counts(self) -> tuple[int, ...]:
        """Local tokens each stage contributes to the visual sequence (all heads)."""
        return tuple(k * h for k, h in zip(self.local_tokens_per_head(), self.vision.num_heads, strict=True))

    @property
    def visual_tokens(self) -> int:
        """Length of the visual sequence: 4 global tokens plus all local tokens (996 for the paper model)."""
        return self.num_views + sum(self.local_token_counts())

    @property
    def model_dim(self) -> int:
        """Width of the stage-4 tokens, the global tokens and the projected text features (512 for PVT-small)."""
        return self.vision.embed_dims[-1]

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with top-level fields replaced; nested configs may be given as dicts of changes."""
        updates: dict[str, Any] = {}
        for key, value in changes.items():
            current = getattr(self, key, None) if key in _field_names(ModelConfig) else None
            if key not in _field_names(ModelConfig):
                raise ConfigError(f"{key}: unknown model config field", hint=CONFIG_DOC_HINT)
            if dataclasses.is_dataclass(current) and isinstance(value, dict):
                value = dataclasses.replace(current, **_coerce(type(current), value, key))
            updates[key] = value
        return dataclasses.replace(self, **updates)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return _from_dict(cls, data, "")

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        """Read a ``.yaml``/``.yml``/``.json`` model config."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else load_yaml(text)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}", hint=e.hint) from None


def apply_compat(config: ModelConfig, mode: str) -> ModelConfig:
    """Set the switches that reproduce the public code (``official``) or the corrected model (``none``)."""
    _check(mode in COMPAT_MODES, "compat", f"must be one of {COMPAT_MODES}, got {mode!r}")
    official = mode == "official"
    return dataclasses.replace(
        config,
        compat=mode,
        text=dataclasses.replace(
            config.text, masked_mean=not official, pad_to_max_length=official, identical_views=official
        ),
        fusion=dataclasses.replace(config.fusion, stale_stage4_text=official),
    )


_NESTED = {"vision": VisionConfig, "text": TextConfig, "fusion": FusionConfig}


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _coerce(cls: type, data: dict[str, Any], prefix: str) -> dict[str, Any]:
    names = _field_names(cls)
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"{where}{unknown[0]}: unknown field{did_you_mean(unknown[0], names)} (known: {sorted(names)})",
            hint=CONFIG_DOC_HINT,
        )
    out = {}
    for key, value in data.items():
        if isinstance(value, list):
            value = tuple(value)
        out[key] = value
    return out


def _from_dict(cls: type[T], data: dict[str, Any], prefix: str) -> T:
    kwargs = _coerce(cls, data, prefix)
    for key, sub in _NESTED.items():
        if key in kwargs and isinstance(kwargs[key], dict):
            kwargs[key] = _from_dict(sub, kwargs[key], key)
    return cls(**kwargs)


def coerce_partial(cls: type, data: Any, prefix: str) -> dict[str, Any]:
    """Some fields of the config class ``cls`` (nested configs as mappings of some of their fields), coerced.

    Used for changes on top of a variant (``model_overrides``): every key must be a field, every value must fit
    its type; the values are not range-checked here (the built config does that).

    Raises:
        ConfigError: an unknown field or a value of the wrong type, naming ``prefix.field``.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: expected a mapping of {cls.__name__} fields, got {_show(data)}")
    names = _field_names(cls)
    hints = _hints(cls)
    out: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}.{key}"
        if key not in names:
            raise ConfigError(f"{where}: unknown field{did_you_mean(key, names)} (known: {sorted(names)})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            out[key] = coerce_partial(tp, value, where)
        else:
            out[key] = coerce_value(value, tp, where)
    return out
