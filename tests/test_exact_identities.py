"""Exact identities: a text feature never depends on its batch-mates, a description's writer is matched exactly,
the encoder's identity follows its content and a hub encoder loads the revision its identity names."""

from __future__ import annotations

from pathlib import Path

import pytest

from mghft.cli import main
from mghft.config import ConfigError, ModelConfig, TextConfig
from mghft.train.config import TrainConfig


def test_an_unmasked_mean_without_fixed_padding_is_refused_naming_both_fields() -> None:
    with pytest.raises(ConfigError) as err:
        TextConfig(masked_mean=False)
    assert "text.masked_mean" in str(err.value) and "text.pad_to_max_length" in str(err.value)
    assert err.value.hint is not None and "pad_to_max_length: true" in err.value.hint
    with pytest.raises(ConfigError, match="masked_mean"):
        ModelConfig().replace(text={"masked_mean": False})
    # batch-independent settings stay accepted: the masked mean, or every text padded to max_length
    assert not TextConfig(masked_mean=False, pad_to_max_length=True).masked_mean
    assert TextConfig(pad_to_max_length=True).masked_mean


def test_a_training_config_with_a_batch_dependent_text_feature_is_refused_before_any_data(tmp_path: Path) -> None:
    cfg = {"model": "mghft_tiny", "data": {"format": "manifest", "root": str(tmp_path / "absent.csv")}}
    with pytest.raises(ConfigError, match=r"model_overrides\.text\.masked_mean"):
        TrainConfig.from_dict({**cfg, "model_overrides": {"text": {"masked_mean": False}}})
    TrainConfig.from_dict({**cfg, "compat": "official"})  # the public code's pair of settings
    TrainConfig.from_dict({**cfg, "model_overrides": {"text": {"masked_mean": False, "pad_to_max_length": True}}})
    config = tmp_path / "train.yaml"
    config.write_text(f"model: mghft_tiny\ndata: {{format: manifest, root: {tmp_path / 'absent.csv'}}}\n")
    code = main(["train", str(config), "--set", "model_overrides.text.masked_mean=false", "--set",
                 f"output={tmp_path / 'run'}"])  # fmt: skip
    assert code == 2 and not (tmp_path / "run").exists()
