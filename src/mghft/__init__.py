"""mghft: Multi-Granularity Hierarchical Fusion Transformer for sticker emotion recognition.

Front door::

    import mghft
    model = mghft.create_model("mghft_pvt_small", pretrained="imagenet")
    out = model(images, text_features=features)        # features: (B, 4, 768)
    out["logits"], out["align_loss"]
"""

from mghft.config import ConfigError, FusionConfig, ModelConfig, TextConfig, VisionConfig
from mghft.hub import WeightsNotFoundError, save_checkpoint
from mghft.models.factory import count_parameters, create_model, load_backbone_weights, load_model, load_official
from mghft.models.mghft import MGHFT
from mghft.models.official import convert_official
from mghft.registry import SER30K_CLASSES, list_models, register_model
from mghft.serve.predictor import load_predictor
from mghft.views import VIEWS

__version__ = "0.1.0"

__all__ = [
    "MGHFT",
    "SER30K_CLASSES",
    "VIEWS",
    "ConfigError",
    "FusionConfig",
    "ModelConfig",
    "TextConfig",
    "VisionConfig",
    "WeightsNotFoundError",
    "convert_official",
    "count_parameters",
    "create_model",
    "list_models",
    "load_backbone_weights",
    "load_model",
    "load_official",
    "load_predictor",
    "register_model",
    "save_checkpoint",
]
