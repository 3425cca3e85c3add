"""Use a trained model: the predictor (Python API), the HTTP service with its web page, and batch prediction.

``mghft.serve.app`` (FastAPI) is imported only when the service is built, so the predictor needs no web stack;
the predictor itself (and torch) is imported on first use, so the CLI starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Explanation", "LoadedImage", "Prediction", "Predictor", "heatmap_overlay", "load_predictor"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(importlib.import_module("mghft.serve.predictor"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mghft.serve' has no attribute {name!r}")
