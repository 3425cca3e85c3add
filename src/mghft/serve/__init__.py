"""Use a trained model: the predictor (Python API), the HTTP service with its web page, and batch prediction.

``mghft.serve.app`` (FastAPI) is imported only when the service is built, so the predictor needs no web stack.
"""

from mghft.serve.predictor import Explanation, LoadedImage, Prediction, Predictor, heatmap_overlay, load_predictor

__all__ = ["Explanation", "LoadedImage", "Prediction", "Predictor", "heatmap_overlay", "load_predictor"]
