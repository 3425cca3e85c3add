"""Use a trained model: the predictor (Python API), the HTTP service with its web page, and batch prediction.

``mghft.serve.app`` (FastAPI) is imported only when the service is built, so the predictor needs no web stack;
the predictor itself (and torch) is imported on first use, so the CLI starts fast.
"""

from __future__ import annotations

from mghft._lazy import lazy_getattr

__all__ = ["Explanation", "LoadedImage", "Prediction", "Predictor", "heatmap_overlay", "load_predictor"]


__getattr__ = lazy_getattr(__name__, globals(), dict.fromkeys(__all__, "mghft.serve.predictor"))
