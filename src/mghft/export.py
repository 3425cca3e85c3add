"""Export a trained MGHFT model to one self-contained file: ONNX (onnxruntime) or TorchScript.

The exported graph is the vision tower, the stage fusion and the head; the frozen text encoder stays outside
(view texts are encoded once, or not at all for bare images). Inputs and outputs:

* ``images`` (B, 3, S, S) float32, preprocessed as the checkpoint says; ``text_features`` (B, 4, text_dim) float32;
  ``view_mask`` (B, 4) bool (False: view absent, its features ignored).
* ``logits`` and ``probabilities`` (B, classes): the probabilities are ``softmax(logits / T)`` with, per row, the
  checkpoint's temperature for that row's input condition: ``bare`` when no trained view is present in
  ``view_mask``, else ``views`` (:mod:`mghft.calibration`; T = 1 for a condition that is uncalibrated; metadata
  ``calibration`` says per condition which T and why); ``view_attention`` (B, 4), and
  ``patches_stage<i>`` (B, K_i) int64, the patches Local Re-Attention picked (row-major in the stage grid).

The file carries what a deployment needs to use it, as JSON: class names, preprocessing, view names, input size,
stage grids, text encoder id (ONNX ``metadata_props`` key ``mghft``; TorchScript extra file ``mghft.json``).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mghft.calibration import CalibrationRecord, checkpoint_calibration
from mghft.models.mghft import MGHFT
from mghft.provenance import training_views, view_keep
from mghft.views import VIEWS

INPUT_NAMES = ("images", "text_features", "view_mask")
METADATA_KEY = "mghft"


class ExportWrapper(nn.Module):
    """The model with tensor inputs and a fixed tuple of outputs (what exporters need).

    The views the checkpoint was trained with (its provenance) are built in: the others are masked out whatever
    ``view_mask`` says.
    """

    def __init__(self, model: MGHFT, calibration: CalibrationRecord | None = None) -> None:
        super().__init__()
        self.model = model
        temps = (calibration or CalibrationRecord.uncalibrated("none given")).temperatures()
        # (views, bare): the graph picks one per row from its view mask (exported as constants)
        self.register_buffer("temperatures", torch.tensor([temps["views"], temps["bare"]]), persistent=False)
        keep = view_keep(training_views(getattr(model, "checkpoint_meta", None)))
        self.register_buffer("keep", torch.tensor(keep, dtype=torch.bool), persistent=False)

    def row_temperatures(self, view_mask: Tensor) -> Tensor:
        """(B,) the temperature of each row's input condition: ``bare`` where no (trained) view is present."""
        t = self.temperatures.to(view_mask.device)
        return torch.where(view_mask.any(dim=1), t[0], t[1])

    def forward(self, images: Tensor, text_features: Tensor, view_mask: Tensor) -> tuple[Tensor, ...]:
        view_mask = view_mask & self.keep.to(view_mask.device)
        out = self.model(images, text_features=text_features, view_mask=view_mask, explain=True)
        logits = out["logits"]  # (B, C)
        attn = out.get("view_attention")
        if attn is None:  # fusion without text attention: no per-view weights
            attn = torch.full((images.shape[0], len(VIEWS)), 1.0 / len(VIEWS), device=images.device)
        return (
            logits,
            torch.softmax(logits / self.row_temperatures(view_mask).to(logits.dtype)[:, None], dim=-1),
            attn,
            *[idx for idx, _ in out.get("local_patches", [])],
        )


def output_names(model: nn.Module) -> list[str]:
    """Names of the exported outputs, in order: a baseline (``text_only``, ``clip``) picks no patches."""
    local = model.cfg.fusion.local_stages if isinstance(model, MGHFT) else ()
    stages = [i + 1 for i, on in enumerate(local) if on]
    return ["logits", "probabilities", "view_attention"] + [f"patches_stage{i}" for i in stages]


def example_inputs(model: MGHFT, batch: int = 2, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Random inputs of the right shapes (some views absent), for tracing and for parity checks."""
    g = torch.Generator().manual_seed(seed)
    s, dim = model.cfg.image_size, model.cfg.text.dim
    images = torch.randn(batch, 3, s, s, generator=g)
    feats = torch.randn(batch, len(VIEWS), dim, generator=g)
    mask = torch.rand(batch, len(VIEWS), generator=g) > 0.3
    mask[0] = False  # one bare image
    return images, feats, mask


def export_metadata(model: MGHFT, class_names: Sequence[str], preprocess: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON that travels inside the exported file."""
    with torch.no_grad():
        out = model(*example_inputs(model, 1)[:1], explain=True)
    return {
        "format": 1,
        "class_names": list(class_names),
        "views": list(VIEWS),
        "preprocess": dict(preprocess or {}),
        "image_size": model.cfg.image_size,
        "text_encoder": model.cfg.text.encoder,
        "text_dim": model.cfg.text.dim,
        "identical_views": model.cfg.text.identical_views,
        "stage_grids": [list(size) for _, size in out.get("local_patches", [])],
        "arch": model.cfg.arch,
        "inputs": list(INPUT_NAMES),
        "outputs": output_names(model),
        "model": model.cfg.to_dict(),
        "calibration": checkpoint_calibration_record(model).summary(),  # per condition: T applied, status
        "calibration_note": checkpoint_calibration_record(model).note or None,
        # the stored record itself, so a predictor reading this file applies the same temperature per row
        "calibration_record": (getattr(model, "checkpoint_meta", None) or {}).get("calibration"),
        "metrics": (getattr(model, "checkpoint_meta", None) or {}).get("metrics"),
        "emoji": (getattr(model, "checkpoint_meta", None) or {}).get("emoji"),
        "trained_views": list(training_views(getattr(model, "checkpoint_meta", None))),
        "provenance": (getattr(model, "checkpoint_meta", None) or {}).get("provenance"),
    }


def checkpoint_calibration_record(model: MGHFT) -> CalibrationRecord:
    """The checkpoint's calibration record (:func:`mghft.calibration.checkpoint_calibration`): one temperature per
    input condition, T = 1 (with the reason) where it has none or it is unreliable."""
    return checkpoint_calibration(getattr(model, "checkpoint_meta", None))


def export_model(
    model: MGHFT,
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    preprocess: dict[str, Any] | None = None,
    format: str | None = None,
    opset: int = 17,
) -> Path:
    """Write ``model`` to ``path`` as ONNX (``.onnx``) or TorchScript (``.pt``/``.ts``); returns the path.

    ``class_names`` and ``preprocess`` default to the checkpoint's (``model.checkpoint_meta``).
    """
    path = Path(path)
    fmt = format or ("onnx" if path.suffix.lower() == ".onnx" else "torchscript")
    if fmt not in ("onnx", "torchscript"):
        raise ValueError(f"format must be 'onnx' or 'torchscript', got {fmt!r}")
    meta_ck = getattr(model, "checkpoint_meta", {}) or {}
    class_names = list(class_names or meta_ck.get("class_names") or [str(i) for i in range(model.cfg.num_classes)])
    preprocess = preprocess or meta_ck.get("preprocess")
    text_encoder, model.text_encoder = model.text_encoder, None  # not part of the graph
    was_training = model.training
    model.eval()
    try:
        meta = export_metadata(model, class_names, preprocess)
        wrapper = ExportWrapper(model, checkpoint_calibration_record(model)).eval()
        inputs = example_inputs(model)
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "onnx":
            _export_onnx(wrapper, inputs, path, meta, opset)
        else:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer notes on shape checks; TorchScript's deprecation notice
                traced = torch.jit.trace(wrapper, inputs, check_trace=False)
                torch.jit.save(traced, str(path), _extra_files={"mghft.json": json.dumps(meta)})
    finally:
        model.text_encoder = text_encoder
        model.train(was_training)
    return path


def _export_onnx(wrapper: nn.Module, inputs: tuple[Tensor, ...], path: Path, meta: dict[str, Any], opset: int) -> None:
    import onnx

    names = meta["outputs"]
    axes = {n: {0: "batch"} for n in (*INPUT_NAMES, *names)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes on shape checks that are constant for a fixed input size
        torch.onnx.export(
            wrapper,
            inputs,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=names,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(proto, str(path))


class ExportedModel:
    """Run an exported file with onnxruntime (``.onnx``) or TorchScript; needs neither the model code nor the
    checkpoint. ``metadata`` holds the JSON written at export."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() == ".onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if threads:
                opts.intra_op_num_threads = threads
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
            raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "{}")
            self.module = None
        else:
            files = {"mghft.json": ""}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self.module = torch.jit.load(str(self.path), map_location="cpu", _extra_files=files)
            self.session = None
            raw = files["mghft.json"] or "{}"
        self.metadata: dict[str, Any] = json.loads(raw)

    def __call__(self, images: Any, text_features: Any = None, view_mask: Any = None) -> dict[str, np.ndarray]:
        """Outputs by name; missing text means every view absent."""
        images = np.asarray(images, dtype=np.float32)
        b = images.shape[0]
        if text_features is None:
            text_features = np.zeros((b, len(VIEWS), int(self.metadata.get("text_dim", 0))), dtype=np.float32)
            view_mask = np.zeros((b, len(VIEWS)), dtype=bool)
        if view_mask is None:
            view_mask = np.ones((b, len(VIEWS)), dtype=bool)
        feeds = (images, np.asarray(text_features, dtype=np.float32), np.asarray(view_mask, dtype=bool))
        names = self.metadata.get("outputs") or []
        if self.session is not None:
            # an input the graph never reads (a text_only model's images) is not among the session's inputs
            wanted = {i.name for i in self.session.get_inputs()}
            outs = self.session.run(None, {k: v for k, v in zip(INPUT_NAMES, feeds, strict=True) if k in wanted})
        else:
            with torch.no_grad():
                outs = [o.numpy() for o in self.module(*(torch.from_numpy(f) for f in feeds))]
        return dict(zip(names, outs, strict=True))


def compare_outputs(model: MGHFT, exported: ExportedModel, inputs: tuple[Tensor, ...]) -> dict[str, float]:
    """Largest absolute difference per float output, and the share of equal entries per patch output."""
    model.eval()
    text_encoder, model.text_encoder = model.text_encoder, None
    try:
        with torch.no_grad():
            ref = ExportWrapper(model, checkpoint_calibration_record(model))(*inputs)
    finally:
        model.text_encoder = text_encoder
    got = exported(*(t.numpy() for t in inputs))
    report = {}
    for name, r in zip(output_names(model), ref, strict=True):
        g = got[name]
        if name.startswith("patches"):
            report[name] = float((g == r.numpy()).mean())
        else:
            report[name] = float(np.abs(g - r.numpy()).max())
    return report


def time_exported(exported: ExportedModel, inputs: tuple[Tensor, ...], repeats: int = 5) -> float:
    """Median seconds per call."""
    arrays = [t.numpy() for t in inputs]
    exported(*arrays)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        exported(*arrays)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
