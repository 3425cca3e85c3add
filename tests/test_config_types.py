"""Configs are typed: every field of every config class is coerced by its annotation when read (YAML file,
``--set`` and constructor alike), and a value of the wrong type is an error naming the field, value and type."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from mghft.config import (
    ConfigError,
    FusionConfig,
    ModelConfig,
    TextConfig,
    VisionConfig,
    _describe,
    dump_yaml,
    load_yaml,
)
from mghft.errors import UsageError
from mghft.train.config import DataConfig, TrainConfig

# Each config class, the path its fields are named by, and how to build one from a mapping of some fields.
_CLASSES: dict[type, tuple[str, Any]] = {
    VisionConfig: ("vision.", lambda d: ModelConfig.from_dict({"vision": d}).vision),
    # fixed padding underneath, so that `masked_mean: off` alone is a valid config (an unmasked mean needs it)
    TextConfig: ("text.", lambda d: ModelConfig.from_dict({"text": {"pad_to_max_length": True, **d}}).text),
    FusionConfig: ("fusion.", lambda d: ModelConfig.from_dict({"fusion": d}).fusion),
    ModelConfig: ("", ModelConfig.from_dict),
    DataConfig: ("data.", lambda d: TrainConfig.from_dict({"data": d}).data),
    TrainConfig: ("", TrainConfig.from_dict),
}
_FIELDS = [(cls, f.name) for cls in _CLASSES for f in dataclasses.fields(cls)]


def _hint(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _wrong(tp: Any) -> Any:
    """A value that no conversion can fit into ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        kinds = {a for a in args if a is not type(None)}
        if kinds == {bool, str}:
            return 3
        return _wrong(next(iter(kinds)))
    if tp is int:
        return "three"
    if tp is float:
        return "fast"
    if tp is bool:
        return "maybe"
    if tp is str:
        return 12
    if origin is Literal:
        return "nonsense"
    if origin is tuple:
        return 7
    return "not a mapping"  # dict and nested configs


def _sample(cls: type, name: str) -> Any:
    """A valid value of the field: its default, or for a field that defaults to null one of its type."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if default is not None:
        return default
    args = {a for a in typing.get_args(_hint(cls, name)) if a is not type(None)}
    return {int: 3, float: 1e-4, str: "x", tuple[str, ...]: ("x", "y")}[next(iter(args))]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return value.to_dict() if hasattr(value, "to_dict") else dataclasses.asdict(value)
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize(("cls", "name"), _FIELDS, ids=[f"{c.__name__}.{n}" for c, n in _FIELDS])
def test_every_field_round_trips_and_rejects_the_wrong_type(cls: type, name: str) -> None:
    prefix, build = _CLASSES[cls]
    tp = _hint(cls, name)
    value = _sample(cls, name)
    if value == getattr(build({}), name):
        value = getattr(build({}), name)  # the default as built: 5 of a float field is 5.0
    # Written as YAML and read back, the value keeps its type exactly (a tuple stays a tuple).
    back = getattr(build(load_yaml(dump_yaml({name: _plain(value)}))), name)
    assert back == value and type(back) is type(value)
    bad = _wrong(tp)
    with pytest.raises(ConfigError) as err:
        build({name: bad})
    message = str(err.value)
    assert message.startswith(f"{prefix}{name}: expected {_describe(tp)}, got {bad!r}"), message
    assert isinstance(err.value, UsageError) and err.value.exit_code == 2


def _floats(tp: Any) -> bool:
    return tp is float or float in typing.get_args(tp)


_FLOAT_FIELDS = [(c, n) for c, n in _FIELDS if _floats(_hint(c, n))]
_BOOL_FIELDS = [(c, n) for c, n in _FIELDS if _hint(c, n) is bool]


def _sci(x: float) -> str:
    """``x`` as YAML 1.1 misreads it: scientific notation without a dot (``5e-02``)."""
    text = f"{x:.0e}" if x else "0e0"
    assert float(text) == x
    return text


@pytest.mark.parametrize(("cls", "name"), _FLOAT_FIELDS, ids=[f"{c.__name__}.{n}" for c, n in _FLOAT_FIELDS])
def test_every_number_field_reads_scientific_notation_as_a_number(cls: type, name: str) -> None:
    _, build = _CLASSES[cls]
    sample = _sample(cls, name)
    if isinstance(sample, tuple):  # a list of numbers
        xs = [float(v) for v in sample]
        text, raw = f"{name}: [{', '.join(_sci(x) for x in xs)}]\n", [_sci(x) for x in xs]
    else:
        xs = [float(sample)]
        text, raw = f"{name}: {_sci(xs[0])}\n", _sci(xs[0])
    loaded = yaml.safe_load(text)[name]
    assert isinstance(loaded[0] if isinstance(loaded, list) else loaded, str)  # the YAML 1.1 surprise
    for got in (getattr(build(load_yaml(text)), name), getattr(build({name: raw}), name)):  # file; YAML 1.1 string
        got = list(got) if isinstance(got, tuple) else [got]
        assert got == xs and all(type(v) is float for v in got)


@pytest.mark.parametrize(("cls", "name"), _BOOL_FIELDS, ids=[f"{c.__name__}.{n}" for c, n in _BOOL_FIELDS])
def test_every_boolean_field_takes_yes_no_on_off(cls: type, name: str) -> None:
    _, build = _CLASSES[cls]
    for word, want in (("off", False), ("on", True), ("no", False), ("yes", True), ("false", False), ("true", True)):
        assert getattr(build(load_yaml(f"{name}: {word}\n")), name) is want, word
    with pytest.raises(ConfigError, match=f"{name}: expected a boolean"):
        build({name: 1})  # a number is not a boolean


def test_yaml_1_1_surprises_are_read_as_written(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(
        "lr: 1e-4\nmin_lr: 1e-5\namp: off\nprogress: no\ntensorboard: on\nseed: 010\n"
        "data:\n  root: 2024-01-01\n  language: no\n"
    )
    cfg = TrainConfig.from_file(path, ["weight_decay=5e-2", "clip_grad=1e0", "epochs=1e1", "compile=off"])
    assert (cfg.lr, cfg.min_lr, cfg.weight_decay, cfg.clip_grad) == (1e-4, 1e-5, 0.05, 1.0)
    assert type(cfg.lr) is float and type(cfg.weight_decay) is float
    assert (cfg.amp, cfg.progress, cfg.tensorboard, cfg.compile) == ("off", False, True, False)
    assert cfg.seed == 10 and cfg.epochs == 10 and type(cfg.epochs) is int  # decimal, not YAML 1.1 octal
    assert (cfg.data.root, cfg.data.language) == ("2024-01-01", "no")  # a string, not a date or a boolean
    # The saved config reads back the same with this reader and with any YAML 1.1 reader.
    assert TrainConfig.from_dict(load_yaml(cfg.to_yaml())) == cfg
    assert TrainConfig.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


def test_wrong_types_are_errors_naming_file_field_value_and_type(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("lr: fast\n")
    with pytest.raises(ConfigError, match=r"train.yaml: lr: expected a number or null, got 'fast' \(str\)"):
        TrainConfig.from_file(path)
    path.write_text("epochs: 2\n")
    with pytest.raises(ConfigError, match=r"batch_size: expected an integer, got 2.5 \(float\)"):
        TrainConfig.from_file(path, ["batch_size=2.5"])
    with pytest.raises(ConfigError, match=r"epochs: expected an integer, got True \(boolean\)"):
        TrainConfig.from_file(path, ["epochs=true"])
    with pytest.raises(ConfigError, match=r"amp: expected one of 'auto', 'bf16', 'fp16', 'off', got False"):
        TrainConfig(amp=False)  # what a YAML 1.1 reader makes of "amp: off"
    with pytest.raises(ConfigError, match=r"model_overrides.fusion.alpha: expected an integer, got 'four'"):
        TrainConfig.from_file(path, ["model_overrides.fusion.alpha=four"])
    with pytest.raises(ConfigError, match=r"model_overrides.fusion.alpah: unknown field"):
        TrainConfig.from_file(path, ["model_overrides.fusion.alpah=4"])
    with pytest.raises(ConfigError, match=r"data.split_fractions\[1\]: expected a number, got 'x'"):
        TrainConfig.from_file(path, ["data.split_fractions=[0.8, x, 0.1]"])
    with pytest.raises(ConfigError, match=r"weight_decay: must be a finite number, got nan"):
        TrainConfig.from_file(path, ["weight_decay=.nan"])
