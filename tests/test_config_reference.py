"""docs/config.md is generated from the config classes and stays in step with them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mghft.config import FusionConfig, ModelConfig, TextConfig, VisionConfig
from mghft.config_reference import field_rows, render
from mghft.train.config import DataConfig, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CLASSES = (TrainConfig, DataConfig, ModelConfig, VisionConfig, TextConfig, FusionConfig)


def test_config_doc_matches_the_code() -> None:
    written = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert written == render(), "docs/config.md is stale: python -m mghft.config_reference > docs/config.md"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_field_is_documented_with_type_default_and_meaning(cls: type) -> None:
    rows = field_rows(cls)
    assert [r["field"] for r in rows] == [f.name for f in dataclasses.fields(cls)]
    undocumented = [r["field"] for r in rows if not r["meaning"]]
    assert not undocumented and all(r["type"] and r["default"] for r in rows), undocumented


def test_the_reference_states_the_values_a_user_looks_for() -> None:
    doc = render()
    assert "| `pretrained` | bool \\| str | `imagenet` | `imagenet`, `false`, or a checkpoint folder" in doc
    assert "| `data.format` | str | `ser30k` | `ser30k`, `metmeme`, `manifest`, `folder` |" in doc
    assert "`mghft_tiny`" in doc.split("| `model` |")[1].split("\n")[0]
    assert "| `model_overrides.fusion.attention` | str | `tgfa` | `tgfa`, `self` |" in doc


def test_a_drifted_class_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    import mghft.config_reference as ref

    changed = dataclasses.make_dataclass("DataConfig", [("format", str, dataclasses.field(default="folder"))])
    sections = tuple((t, changed if c is DataConfig else c, p, i) for t, c, p, i in ref._SECTIONS)
    monkeypatch.setattr(ref, "_SECTIONS", sections)
    monkeypatch.setattr(ref, "field_docstrings", lambda cls: {})
    assert render() != (ROOT / "docs" / "config.md").read_text(encoding="utf-8")


def test_readme_and_the_unknown_field_error_point_at_the_reference() -> None:
    from mghft.config import ConfigError

    assert "docs/config.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"epochz": 3})
    assert "docs/config.md" in (info.value.hint or "")
