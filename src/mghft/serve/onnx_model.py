"""Run an exported ONNX file (``mghft export``) through ONNX Runtime behind the interface the predictor uses.

:class:`OnnxModel` answers the calls :class:`mghft.serve.predictor.Predictor` makes of a PyTorch MGHFT model: it
has ``cfg`` (from the config inside the file), ``checkpoint_meta`` (class names, preprocessing, calibration,
emoji, provenance, as a checkpoint folder's ``config.json`` gives them), an optional ``text_encoder`` (loaded
from the encoder id the file names, for view texts) and a ``__call__`` returning ``logits``, ``view_attention``
and ``local_patches`` as torch tensors. So predictions from a file have the same fields, calibration, emoji,
explanations and errors as from a checkpoint folder.

Session settings: the intra-op threads are torch's thread count (what ``mghft`` would use itself, capped to
the cores this process may run on), every graph optimisation on, the memory arena and memory patterns on
(the inputs have one shape per batch size), sequential execution (one forward at a time, as the predictor runs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mghft.errors import MghftError, NotFoundError, UsageError

METADATA_KEY = "mghft"


class OnnxModel:
    """An exported ``.onnx`` file, called like an MGHFT model on CPU.

    Args:
        path: the file.
        text_encoder: load the text encoder the file names (needed to read view texts).
        offline: never touch the network for the text encoder.
        threads: intra-op threads (default: ``torch.get_num_threads()``).

    Raises:
        NotFoundError: no such file. MghftError: not an ONNX file ``mghft export`` wrote (no metadata).
    """

    backend = "onnxruntime"

    def __init__(
        self, path: str | Path, *, text_encoder: bool = True, offline: bool | None = None, threads: int | None = None
    ) -> None:
        import onnxruntime as ort

        from mghft.config import ModelConfig

        self.path = Path(path)
        if not self.path.is_file():
            raise NotFoundError(f"{self.path}: no such ONNX file")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_cpu_mem_arena = True
        opts.enable_mem_pattern = True
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for a damaged or foreign file
            raise MghftError(f"{self.path}: ONNX Runtime cannot load it: {e}", hint="export it again") from e
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if not raw:
            raise MghftError(
                f"{self.path}: not a file written by mghft export (no '{METADATA_KEY}' metadata: class names, "
                "preprocessing and output names are unknown)",
                hint="export the checkpoint with mghft export CHECKPOINT --out model.onnx",
            )
        self.metadata: dict[str, Any] = json.loads(raw)
        self.cfg = ModelConfig.from_dict(self.metadata["model"])
        self.output_names = list(self.metadata["outputs"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.precision = str((self.metadata.get("precision") or {}).get("precision", "fp32"))
        # the checkpoint's own calibration record (one temperature per input condition); files written before it
        # was stored carry one temperature, read as a one-temperature record (fitted with views)
        calibration = self.metadata.get("calibration_record")
        if calibration is None and self.metadata.get("calibrated"):
            calibration = {"temperature": self.metadata.get("temperature", 1.0)}
        self.checkpoint_meta: dict[str, Any] = {
            "class_names": list(self.metadata["class_names"]),
            "preprocess": self.metadata.get("preprocess") or None,
            "calibration": calibration,
            "emoji": self.metadata.get("emoji"),
            "provenance": self.metadata.get("provenance"),
            "metrics": self.metadata.get("metrics") or {},
        }
        self.text_encoder = None
        if text_encoder and self.cfg.text.encoder:
            from mghft.models.text import TextEncoder

            self.text_encoder = TextEncoder.from_config(self.cfg.text, offline).eval()

    # the nn.Module calls the predictor makes
    def to(self, device: Any) -> OnnxModel:
        if torch.device(device).type != "cpu":
            raise UsageError(f"--device {device}: an ONNX file runs on the CPU here", hint="use --device cpu")
        return self

    def eval(self) -> OnnxModel:
        return self

    @property
    def agreement(self) -> dict[str, Any] | None:
        """The agreement with float32 stored at export (:class:`mghft.precision.Agreement` as a dict), if any."""
        return (self.metadata.get("precision") or {}).get("agreement")

    def __call__(
        self,
        images: torch.Tensor,
        *,
        text_features: torch.Tensor | None = None,
        view_mask: torch.Tensor | None = None,
        explain: bool = False,
    ) -> dict[str, Any]:
        """Outputs as the PyTorch model names them: ``logits`` (B, C), ``view_attention`` (B, 4) and
        ``local_patches`` (per picking stage: (B, K) indices, grid (H, W)); every view absent without text."""
        b = images.shape[0]
        views = 4
        if text_features is None:
            text_features = torch.zeros(b, views, self.cfg.text.dim)
            view_mask = torch.zeros(b, views, dtype=torch.bool)
        elif view_mask is None:
            view_mask = torch.ones(b, views, dtype=torch.bool)
        feeds = {
            "images": np.ascontiguousarray(images.detach().float().cpu().numpy()),
            "text_features": np.ascontiguousarray(text_features.detach().float().cpu().numpy()),
            "view_mask": np.ascontiguousarray(view_mask.detach().cpu().numpy().astype(bool)),
        }
        feeds = {k: v for k, v in feeds.items() if k in self.input_names}  # a graph lists only what it reads
        outs = dict(zip(self.output_names, self.session.run(None, feeds), strict=True))
        result: dict[str, Any] = {"logits": torch.from_numpy(outs["logits"])}
        if explain:
            grids = [tuple(g) for g in self.metadata.get("stage_grids") or []]
            patches = [outs[n] for n in self.output_names if n.startswith("patches_stage")]
            result["local_patches"] = [(torch.from_numpy(p), g) for p, g in zip(patches, grids, strict=True)]
            if "view_attention" in outs:
                result["view_attention"] = torch.from_numpy(outs["view_attention"])
        return result


def is_onnx_file(path: str | Path) -> bool:
    """Whether ``--model`` names an ONNX file (by its extension)."""
    return str(path).lower().endswith(".onnx")


__all__ = ["OnnxModel", "is_onnx_file"]
