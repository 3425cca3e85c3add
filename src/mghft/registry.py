"""Registered model variants (name -> config) and known weights (name -> where to get them).

A variant is a registry name, not a copied file: ``create_model("mghft_pvt_small")``. Add one with
:func:`register_model`.
"""

from __future__ import annotations

import dataclasses

from mghft.config import FusionConfig, ModelConfig, TextConfig
from mghft.data.ser30k import SER30K_CLASSES
from mghft.errors import UnknownNameError
from mghft.hub import WeightsEntry
from mghft.models.pvt import BACKBONES
from mghft.models.text import PACKAGED_MINILM

_MODELS: dict[str, ModelConfig] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_model(config: ModelConfig, description: str = "") -> ModelConfig:
    """Add a variant under ``config.name`` (an error if the name is taken)."""
    if config.name in _MODELS:
        raise ValueError(f"model {config.name!r} is already registered")
    _MODELS[config.name] = config
    _DESCRIPTIONS[config.name] = description
    return config


def list_models() -> list[str]:
    """Registered variant names, sorted."""
    return sorted(_MODELS)


def describe_model(name: str) -> str:
    return _DESCRIPTIONS[get_model_config(name).name]


def get_model_config(name: str) -> ModelConfig:
    """The config of a registered variant; an unknown name lists the known ones."""
    try:
        return _MODELS[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown model {name!r}; registered: {', '.join(list_models())}",
            hint="`mghft models` describes each; in a training config set `model:` (--set model=NAME)",
        ) from None


_PVT_RELEASE = "https://github.com/whai362/PVT/releases/download/v2/"

BACKBONE_WEIGHTS: dict[str, WeightsEntry] = {
    **{
        name: WeightsEntry(filename=f"{name}.pth", url=_PVT_RELEASE + f"{name}.pth", key_layout="pvt_v1")
        for name in ("pvt_tiny", "pvt_small", "pvt_medium", "pvt_large")
    },
    **{
        name: WeightsEntry(
            filename=f"{name}.safetensors",
            hf_repo=f"timm/{name}.in1k",
            hf_filename="model.safetensors",
            url=_PVT_RELEASE + f"{name}.pth",
            key_layout="pvt_v2",
        )
        for name in ("pvt_v2_b0", "pvt_v2_b1", "pvt_v2_b2", "pvt_v2_b2_li", "pvt_v2_b3", "pvt_v2_b4", "pvt_v2_b5")
    },
}
"""ImageNet-1k weights of the backbones (the PVT release publishes no checksums; none is invented here)."""


def _variant(
    name: str, backbone: str, description: str, image_size: int = 448, text: TextConfig | None = None, **fusion
) -> ModelConfig:
    cfg = ModelConfig(
        name=name,
        num_classes=len(SER30K_CLASSES),
        image_size=image_size,
        vision=BACKBONES[backbone],
        text=text or TextConfig(),
        fusion=FusionConfig(**fusion),
    )
    return register_model(cfg, description)


_variant("mghft_pvt_small", "pvt_small", "The paper's model: PVT-v1-small, 448 px, BERT-base-uncased, 7 classes.")
_variant("mghft_pvt_tiny", "pvt_tiny", "PVT-v1-tiny backbone, 448 px, BERT-base-uncased.")
_variant("mghft_pvt_medium", "pvt_medium", "PVT-v1-medium backbone, 448 px, BERT-base-uncased.")
_variant("mghft_pvt_large", "pvt_large", "PVT-v1-large backbone, 448 px, BERT-base-uncased.")
_variant("mghft_pvt_v2_b2", "pvt_v2_b2", "PVT-v2-b2 backbone, 448 px, BERT-base-uncased.")
_variant("mghft_pvt_v2_b0", "pvt_v2_b0", "PVT-v2-b0 backbone, 448 px, BERT-base-uncased.")
_variant(
    "mghft_pvt_v2_b0_minilm",
    "pvt_v2_b0",
    "PVT-v2-b0 at 224 px with the packaged MiniLM text encoder: a small model that runs fully offline.",
    image_size=224,
    text=TextConfig(encoder=PACKAGED_MINILM, dim=384, max_length=256),
    hidden_dim=384,
    num_heads=6,
    mlp_dim=1536,
)
register_model(
    ModelConfig(
        name="mghft_tiny",
        num_classes=len(SER30K_CLASSES),
        image_size=64,
        vision=dataclasses.replace(
            BACKBONES["pvt_tiny"],
            name=None,
            embed_dims=(16, 32, 48, 64),
            num_heads=(1, 1, 2, 2),
            mlp_ratios=(2, 2, 2, 2),
            depths=(2, 2, 2, 2),
            drop_path_rate=0.0,
            pretrain_size=64,
        ),
        text=TextConfig(encoder=PACKAGED_MINILM, dim=384, max_length=64),
        fusion=FusionConfig(hidden_dim=64, num_heads=2, mlp_dim=128, alpha=1),
    ),
    "A tiny model for tests and demos: 64 px, a few hundred thousand vision parameters, packaged MiniLM text.",
)
