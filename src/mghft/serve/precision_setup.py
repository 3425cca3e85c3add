"""Choosing, checking and recording a predictor's precision; writing low-precision exports with their agreement.

The rules (:mod:`mghft.precision` defines the precisions and the agreement check):

* An ONNX file holds one precision (``fp32`` or ``int8``; its metadata says which, with the agreement measured at
  export). ``auto`` takes it when this CPU runs it well; a different explicit precision is refused, naming the
  export that gives it.
* A checkpoint folder runs ``fp32`` or ``bf16`` in PyTorch. ``bf16``'s agreement with fp32 is measured on the
  calibration set the first time (the given images, else the run's validation split) and stored in the folder's
  ``precision.json`` keyed by the weights' hash; ``int8`` is refused with the export command that makes it.
* ``auto`` takes the fastest precision offered that this CPU runs well and whose agreement passes, else fp32, and
  records why (:attr:`Predictor.precision_reason`).
* An explicitly asked precision whose agreement fails still runs (it was asked for), with a warning, and the
  failing agreement is reported with every output.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mghft.errors import MghftError, UsageError
from mghft.precision import (
    DEFAULT_CALIBRATION_IMAGES,
    PRECISION_CHOICES,
    Agreement,
    PrecisionRefused,
    calibration_set,
    check_precision,
    choose_auto,
    cpu_support,
    measure_agreement,
    read_agreements,
    store_agreement,
    weights_id,
)

CalibrationInput = Sequence[str | Path] | str | Path | None


def bare_probabilities(predictor: Any, images: Sequence[Any], precision: str) -> np.ndarray:
    """(B, C) probabilities of loaded images run without views in ``precision`` (restored afterwards)."""
    before = predictor.precision
    predictor.precision = precision
    try:
        preds = predictor.run(images, [[None] * 4 for _ in images], ["absent"] * len(images), explain=False)
    finally:
        predictor.precision = before
    return np.array([[p.probabilities[c] for c in predictor.class_names] for p in preds])


def load_calibration_images(predictor: Any, files: Sequence[str]) -> list[Any]:
    """The calibration images loaded by ``predictor`` (its preprocessing); an unreadable one stops with its name."""
    return [predictor.load(Path(f)) for f in files]


def setup_precision(
    predictor: Any,
    requested: str,
    *,
    source: str | Path,
    agreement_set: CalibrationInput = None,
    limit: int = DEFAULT_CALIBRATION_IMAGES,
) -> None:
    """Set ``predictor.precision``, ``.agreement`` and ``.precision_reason`` for ``requested`` (see the module).

    Raises:
        PrecisionRefused: the CPU cannot run it well, the file holds another precision, or int8 from a checkpoint.
        UsageError: an unknown precision name; a non-CPU device with a low precision.
    """
    if requested not in PRECISION_CHOICES:
        raise UsageError(f"--precision {requested!r}: choose one of {', '.join(PRECISION_CHOICES)}")
    model = predictor.model
    is_file = getattr(model, "backend", "pytorch") == "onnxruntime"
    if agreement_set and (is_file or requested == "fp32"):  # a flag that would change nothing is a mistake
        what = "a file carries the agreement measured at export" if is_file else "fp32 is the reference"
        raise UsageError(f"--agreement-set: nothing is measured here ({what})", hint="leave out --agreement-set")
    if is_file:
        _setup_file(predictor, requested, source)
        return
    if requested == "fp32":
        return
    if predictor.device.type != "cpu":
        if requested == "auto":
            predictor.precision_reason = f"auto on {predictor.device.type}: low precisions are for CPU inference"
            return
        raise PrecisionRefused(
            f"--precision {requested}: low precisions are for CPU inference, the model runs on {predictor.device}",
            hint="use --device cpu, or --precision fp32",
        )
    if requested == "int8":
        raise PrecisionRefused(
            f"--precision int8 runs from an exported file, and {source} is a checkpoint",
            hint=f"mghft export {source} --out model.int8.onnx --precision int8, then --model model.int8.onnx",
        )
    cpu = cpu_support()
    if requested == "bf16":
        check_precision("bf16", cpu)
        agreement = checkpoint_agreement(predictor, "bf16", source, agreement_set, limit)
        if not agreement.passed:
            warnings.warn(f"bf16 runs as asked, but {agreement.line()}", stacklevel=3)
        predictor.precision, predictor.agreement = "bf16", agreement.to_dict()
        predictor.precision_reason = "asked for"
        return
    # auto: bf16 when this CPU runs it well and its agreement passes
    agreements: dict[str, Agreement] = {}
    if cpu.refusal("bf16") is None:
        try:
            agreements["bf16"] = checkpoint_agreement(predictor, "bf16", source, agreement_set, limit)
        except UsageError as e:  # no calibration set: bf16 cannot be checked, so it is not chosen
            predictor.precision_reason = f"bf16 not checked: {e}"
            return
    chosen, why = choose_auto(("bf16", "fp32"), agreements, cpu)
    predictor.precision = chosen
    predictor.agreement = agreements[chosen].to_dict() if chosen in agreements else None
    predictor.precision_reason = f"auto: {why}"


def _setup_file(predictor: Any, requested: str, source: str | Path) -> None:
    model = predictor.model
    held = model.precision
    if requested not in ("auto", held):
        raise PrecisionRefused(
            f"--precision {requested}: {source} holds a {held} model",
            hint=f"export the checkpoint with mghft export CHECKPOINT --out model.onnx --precision {requested}",
        )
    reason = cpu_support().refusal(held)
    if reason:
        raise PrecisionRefused(f"{source} is {held}, and {reason}", hint="use a float32 export (--precision fp32)")
    agreement = model.agreement
    failed = agreement is not None and not agreement.get("passed", False)
    if held != "fp32" and requested == "auto" and (agreement is None or failed):
        why = Agreement.from_dict(agreement).line() if agreement else "no agreement with fp32 was measured at export"
        raise PrecisionRefused(
            f"--precision auto: {source} is {held} and {why}",
            hint=f"run it anyway with --precision {held}, or use a float32 export",
        )
    if failed:
        warnings.warn(f"{source} runs as asked, but {Agreement.from_dict(agreement).line()}", stacklevel=3)
    predictor.precision, predictor.agreement = held, agreement
    predictor.precision_reason = "the file's precision" + (" (auto)" if requested == "auto" else "")


def checkpoint_agreement(
    predictor: Any, precision: str, source: str | Path, calibration: CalibrationInput, limit: int
) -> Agreement:
    """The stored agreement of ``precision`` for this checkpoint's weights, calibration set and CPU kind, or a new
    measurement (stored in the folder's ``precision.json`` when it is a writable local folder)."""
    folder = Path(source) if Path(source).is_dir() else None
    weights = weights_id(folder) if folder is not None else ""
    cal = calibration_set(folder, calibration, limit=limit)  # raises a UsageError naming --agreement-set if none
    cal_hash = cal.sha256()
    if folder is not None:
        stored = read_agreements(folder).get(precision)
        if (
            stored is not None
            and (stored.weights, stored.calibration_sha256) == (weights, cal_hash)
            and stored.cpu == cpu_support().summary()  # bf16 kernels differ between AVX512-BF16 and AMX
        ):
            return stored
    images = load_calibration_images(predictor, cal.files)
    agreement = measure_agreement(
        lambda chunk: bare_probabilities(predictor, chunk, "fp32"),
        lambda chunk: bare_probabilities(predictor, chunk, precision),
        images,
        precision,
        batch_size=predictor.batch_size,
        calibration=cal.source,
        calibration_sha256=cal_hash,
        weights=weights,
    )
    if folder is not None:
        store_agreement(folder, agreement)
    return agreement


# ----------------------------------------------------------------------------------------------------------------
# exports


def activation_matmuls(path: str | Path) -> list[str]:
    """Names of the MatMul nodes of an ONNX graph whose two inputs are both computed (attention scores, attention
    times values, rollout products): kept in float32 by :func:`quantize_int8`."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    constants = {i.name for i in proto.graph.initializer}
    constants |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in proto.graph.node if n.op_type == "MatMul" and not any(i in constants for i in n.input)]


def quantize_int8(fp32_path: str | Path, out: str | Path) -> dict[str, Any]:
    """Write an int8 copy of an exported float32 ONNX file: weight matrix products int8 (dynamic quantisation,
    weights signed int8 per output channel, in 7 bits), activation x activation products float32. Returns its
    settings.

    The weights use 7 of the 8 bits (``reduce_range``): without VNNI, x86 multiplies uint8 activations by int8
    weights with ``vpmaddubsw``, whose int16 pair sums saturate at full range. On a ``mghft demo`` checkpoint and
    its 112 test stickers on an AVX2 CPU, full range kept 68.8% of the labels (max |dp| 0.19) and 7 bits 97.3%
    (max |dp| 0.010) (``benchmarks/bench_precision.py``); the file may run on either kind of CPU, so it is
    always written in 7 bits."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = activation_matmuls(fp32_path)
    settings = {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "op_types": ["MatMul"],
        "weight_type": "int8",
        "per_channel": True,
        "reduce_range": True,
        "float32_matmuls": len(keep),
    }
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs advice on the root logger that does not apply here
    try:
        quantize_dynamic(
            str(fp32_path),
            str(out),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=keep,
            per_channel=True,
            reduce_range=True,
        )
    finally:
        root.setLevel(level)
    return settings


def write_file_metadata(path: str | Path, key: str, value: Any) -> None:
    """Set one entry of the ``mghft`` metadata JSON inside an exported ONNX file."""
    import onnx

    from mghft.export import METADATA_KEY

    proto = onnx.load(str(path))
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            meta = json.loads(entry.value)
            meta[key] = value
            entry.value = json.dumps(meta)
            break
    else:
        raise MghftError(f"{path}: no '{METADATA_KEY}' metadata to add {key} to")
    onnx.save(proto, str(path))


def export_with_precision(
    model: Any,
    out: str | Path,
    precision: str,
    *,
    checkpoint: str | Path,
    agreement_set: CalibrationInput = None,
    limit: int = DEFAULT_CALIBRATION_IMAGES,
    opset: int = 17,
) -> Agreement | None:
    """Export ``model`` to the ONNX file ``out`` in ``precision`` and store its agreement with the PyTorch float32
    model, measured on the calibration set (required for int8; for fp32 measured when one is available).

    Raises:
        PrecisionRefused: bf16 (ONNX Runtime's CPU provider has no bf16 kernels for these operators).
        UsageError: int8 without a calibration set.
    """
    from mghft.export import checkpoint_calibration_record, export_model
    from mghft.serve.onnx_model import OnnxModel
    from mghft.serve.predictor import Predictor

    if precision not in ("fp32", "int8"):
        raise PrecisionRefused(
            f"--precision {precision}: exports are fp32 or int8 (ONNX Runtime's CPU provider has no bfloat16 "
            "kernels for this graph)",
            hint=f"run bf16 from the checkpoint: mghft predict --model {checkpoint} --precision bf16",
        )
    try:
        cal = calibration_set(checkpoint, agreement_set, limit=limit)
    except UsageError:
        if precision == "int8":
            raise
        cal = None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {}
    if precision == "int8":
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.fp32.", suffix=".onnx")
        os.close(fd)
        try:
            export_model(model, tmp, format="onnx", opset=opset)
            settings = quantize_int8(tmp, out)
        finally:
            Path(tmp).unlink(missing_ok=True)
            Path(tmp + ".data").unlink(missing_ok=True)
        write_file_metadata(out, "precision", {"precision": "int8", "quantization": settings})
    else:
        export_model(model, out, format="onnx", opset=opset)
    agreement = None
    if cal is not None:
        meta = model.checkpoint_meta
        kwargs: dict[str, Any] = {
            "class_names": meta["class_names"],
            "calibration": checkpoint_calibration_record(model),  # one temperature per input condition
        }
        if meta.get("preprocess"):
            from mghft.data.transforms import Preprocess

            kwargs["preprocess"] = Preprocess.from_dict(meta["preprocess"])
        text_encoder, model.text_encoder = model.text_encoder, None
        try:
            reference = Predictor(model, device="cpu", **kwargs)
            candidate = Predictor(OnnxModel(out, text_encoder=False), device="cpu", **kwargs)
            images = load_calibration_images(reference, cal.files)
            agreement = measure_agreement(
                lambda chunk: bare_probabilities(reference, chunk, "fp32"),
                lambda chunk: bare_probabilities(candidate, chunk, "fp32"),
                images,
                precision,
                calibration=cal.source,
                calibration_sha256=cal.sha256(),
                weights=weights_id(checkpoint) if Path(checkpoint).is_dir() else "",
            )
        finally:
            model.text_encoder = text_encoder
    block: dict[str, Any] = {"precision": precision, "agreement": agreement.to_dict() if agreement else None}
    if settings:
        block["quantization"] = settings
    write_file_metadata(out, "precision", block)
    return agreement


def precision_metadata(predictor: Any) -> dict[str, Any]:
    """What an output's metadata records about the precision (``mghft predict``'s ``.meta.json``)."""
    return predictor.precision_info()


__all__ = [
    "activation_matmuls",
    "bare_probabilities",
    "checkpoint_agreement",
    "export_with_precision",
    "precision_metadata",
    "quantize_int8",
    "setup_precision",
]
