"""What produced an output row: a stable id of a loaded predictor (or a description writer) and its readable parts.

Every row of a catalogue output (``mghft predict --engine ray``, ``mghft interpret --engine ray``) carries the
fingerprint of what wrote it, so rows of two models never mix: a rerun with the same fingerprint resumes, a run with
another one writes its own rows beside the old ones, and a difference is named part by part.

The parts of a predictor's fingerprint:

- ``weights_sha256``: SHA-256 of the loaded weights (every tensor of the state dict: name, dtype, shape, bytes);
- ``calibration_sha256``: SHA-256 of the checkpoint's whole calibration record as stored (``config.json
  ["calibration"]``, whatever it holds: one temperature or several), ``None`` without one; ``calibration_applied``:
  per input condition (views, bare), the temperature applied and whether it is (``--uncalibrated`` or an unreliable
  fit: not);
- ``views``: the views the model reads; ``emoji``: the class -> emoji map; ``classes``: the label names;
- ``writer``: the description writer (backend, model, prompt version) of an interpreter, ``None`` without one;
- ``store``: the writers (backend/model/prompt version) of the descriptions in the description store read for views,
  ``None`` without a store (a copy of the same store on another node has the same identity);
- ``precision``: the predictor's numeric precision (``fp32`` unless it says otherwise);
- ``selection``: options that change a row's content (``top_k``, ``min_probability``), ``None`` when not set;
- ``package``: the mghft version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ID_HEX = 32
"""Hex digits of a fingerprint id (128 bits of SHA-256)."""


@dataclass(frozen=True)
class Fingerprint:
    """A stable id and the readable parts it is the hash of.

    Attributes:
        id: ``ID_HEX`` hex digits, SHA-256 of the canonical JSON of ``parts``.
        parts: name -> JSON value (see the module docstring).
    """

    id: str
    parts: dict[str, Any] = field(compare=False)

    @classmethod
    def of(cls, parts: Mapping[str, Any]) -> Fingerprint:
        """The fingerprint of ``parts`` (JSON-serialisable values)."""
        canon = json.dumps(parts, sort_keys=True, ensure_ascii=True, separators=(",", ":"), default=str)
        return cls(hashlib.sha256(canon.encode()).hexdigest()[:ID_HEX], json.loads(canon))

    def differences(self, other: Fingerprint) -> list[str]:
        """``"part: a != b"`` for each part that differs (empty when the ids are equal)."""
        names = sorted(set(self.parts) | set(other.parts))
        return [
            f"{n}: {_short(self.parts.get(n))} != {_short(other.parts.get(n))}"
            for n in names
            if self.parts.get(n) != other.parts.get(n)
        ]

    def to_json(self) -> str:
        """``{"id": ..., "parts": {...}}`` as one line of JSON."""
        return json.dumps({"id": self.id, "parts": self.parts}, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        data = json.loads(text)
        return cls(str(data["id"]), dict(data["parts"]))


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _sha256_json(value: Any) -> str | None:
    if value is None:
        return None
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def weights_sha256(model: Any) -> str:
    """SHA-256 of a torch module's state dict (name, dtype, shape and bytes of every tensor, in name order); for
    an exported file run through ONNX Runtime (:class:`mghft.serve.onnx_model.OnnxModel`), of the file's bytes (its
    weights, graph and metadata)."""
    import torch

    h = hashlib.sha256()
    if not hasattr(model, "state_dict") and hasattr(model, "path"):  # an ONNX file: its bytes are its weights
        with open(model.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def writer_identity(backend: Any) -> dict[str, str] | None:
    """``{"backend", "model", "prompt_version"}`` of an interpreter backend (or of an interpreter's), or ``None``."""
    if backend is None:
        return None
    backend = getattr(backend, "backend", backend)  # an Interpreter: its backend
    if backend is None:
        return None
    name = getattr(backend, "name", None) or type(backend).__name__
    model = getattr(backend, "model", "") or getattr(getattr(backend, "client", None), "model", "") or ""
    return {"backend": str(name), "model": str(model), "prompt_version": str(getattr(backend, "prompt_version", ""))}


def store_identity(store: Any) -> list[str] | None:
    """The distinct writers (``backend/model/prompt_version``) of a description store's descriptions, sorted."""
    if store is None:
        return None
    return sorted(set(store.provenance().values()))


def package_version() -> str:
    from mghft import __version__

    return str(__version__)


def predictor_fingerprint(
    predictor: Any,
    *,
    store: Any = None,
    selection: Mapping[str, Any] | None = None,
) -> Fingerprint:
    """The fingerprint of a loaded :class:`mghft.serve.predictor.Predictor`.

    Args:
        predictor: the predictor (its model, calibration, views, emoji map, interpreter and precision are read).
        store: the :class:`mghft.interpret.DescriptionStore` its views are looked up in, if any (its interpreter's
            store is used when not given).
        selection: options that change the rows' content (``{"top_k": 3, "min_probability": 0.2}``); ``None`` or
            empty values leave the fingerprint as without them.
    """
    from mghft.views import VIEWS

    meta = getattr(predictor.model, "checkpoint_meta", None) or {}
    interpreter = getattr(predictor, "interpreter", None)
    if store is None and interpreter is not None:
        store = getattr(interpreter, "store", None)
    keep = getattr(predictor, "view_keep", None)
    views = [v for v in VIEWS if keep is None or v in keep]
    chosen = {k: v for k, v in (selection or {}).items() if v is not None}
    parts = {
        "weights_sha256": weights_sha256(predictor.model),
        "calibration_sha256": _sha256_json(meta.get("calibration")),
        # per input condition: the temperature applied and whether it is (``--uncalibrated``, an unreliable fit: not)
        "calibration_applied": {
            c: {"temperature": float(v["temperature"]), "calibrated": bool(v["calibrated"])}
            for c, v in predictor.calibration.summary().items()
        },
        "classes": list(predictor.class_names),
        "views": views,
        "emoji": dict(predictor.emoji) if predictor.emoji else None,
        "writer": writer_identity(getattr(interpreter, "backend", None)),
        "store": store_identity(store),
        "precision": str(getattr(predictor, "precision", "fp32")),
        "selection": chosen or None,
        "package": package_version(),
    }
    return Fingerprint.of(parts)


def writer_fingerprint(backend: Any, *, max_side: int | None = None) -> Fingerprint:
    """The fingerprint of a description writer (``mghft interpret``): backend, model, prompt version, the image
    size sent (``max_side``) and the package version."""
    return Fingerprint.of({"writer": writer_identity(backend), "max_side": max_side, "package": package_version()})


__all__ = [
    "Fingerprint",
    "package_version",
    "predictor_fingerprint",
    "store_identity",
    "weights_sha256",
    "writer_fingerprint",
    "writer_identity",
]
