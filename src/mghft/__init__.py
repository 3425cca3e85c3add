"""mghft: Multi-Granularity Hierarchical Fusion Transformer for sticker emotion recognition.

Front door::

    import mghft
    model = mghft.create_model("mghft_pvt_small", pretrained="imagenet")
    out = model(images, text_features=features)        # features: (B, 4, 768)
    out["logits"], out["align_loss"]

    predictor = mghft.load_predictor("runs/ser30k/mghft/best")
    predictor.predict(["sticker.png"])

Names are imported on first use, so ``import mghft`` (and every ``mghft`` command) starts without loading torch.
"""

from __future__ import annotations

from mghft._lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "ConfigError": "mghft.config",
    "FusionConfig": "mghft.config",
    "ModelConfig": "mghft.config",
    "TextConfig": "mghft.config",
    "VisionConfig": "mghft.config",
    "MghftError": "mghft.errors",
    "UsageError": "mghft.errors",
    "WeightsNotFoundError": "mghft.hub",
    "save_checkpoint": "mghft.hub",
    "count_parameters": "mghft.models.factory",
    "create_model": "mghft.models.factory",
    "load_backbone_weights": "mghft.models.factory",
    "load_model": "mghft.models.factory",
    "load_official": "mghft.models.factory",
    "MGHFT": "mghft.models.mghft",
    "convert_official": "mghft.models.official",
    "SER30K_CLASSES": "mghft.registry",
    "list_models": "mghft.registry",
    "register_model": "mghft.registry",
    "load_predictor": "mghft.serve.predictor",
    "VIEWS": "mghft.views",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, globals(), _EXPORTS)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
