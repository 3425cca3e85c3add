"""Inference precision: which number formats this CPU runs well, and how closely each agrees with float32.

Three precisions, one name each wherever a precision is chosen (``load_predictor(precision=)``, ``mghft predict
--precision``, ``mghft serve --precision``, ``mghft export --precision``):

* ``fp32``: float32 throughout (the reference).
* ``bf16``: PyTorch autocast to bfloat16 for the matrix products and convolutions, with the parts that decide
  discrete choices kept in float32: attention scores and their softmax, the attention rollout and the patch
  selection of Local Re-Attention, the fusion's row-0 attention (see :func:`mghft.models.ops.attention_probs`).
  Runs from a checkpoint folder. Needs AVX512-BF16 or AMX: without them bfloat16 is emulated and slower than
  float32, so it is refused.
* ``int8``: an ONNX file whose weight matrix products run in int8 through ONNX Runtime's dynamic quantisation
  (``onnxruntime.quantization.quantize_dynamic``: weights int8 per output channel in 7 bits, activations
  quantised per call); products of two activations (attention scores, attention x values, the rollout) stay
  float32. Written by ``mghft export --precision int8``. Needs AVX2 at least; with AVX512-VNNI, AVX-VNNI or AMX
  the int8 products use the dot-product instructions.

``auto`` picks the fastest precision that this CPU runs well and whose measured agreement passes
(:data:`MIN_LABELS_KEPT`, :data:`MAX_ABS_DP`); the choice and the reason are reported with every output.

Agreement is measured against float32 on a calibration set of images (given by the user, or the checkpoint's
validation split), run bare (every view absent): the share of images whose label is unchanged and the largest
change of any class probability. It is stored with what it describes (inside an exported file; in
``precision.json`` of a checkpoint folder), keyed by the weights, so a changed checkpoint is measured again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import platform
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mghft.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

PRECISIONS = ("fp32", "bf16", "int8")
"""The precisions, in the order of preference when they tie (the reference first)."""

PRECISION_CHOICES = ("auto", *PRECISIONS)
"""What ``--precision`` accepts."""

SPEED_ORDER = ("int8", "bf16", "fp32")
"""Fastest first, as ``auto`` tries them: int8 dot products run ~4x and bf16 ~2x the float32 rate on CPUs with
VNNI and AVX512-BF16 (measured by ``benchmarks/bench_precision.py``)."""

MIN_LABELS_KEPT = 0.995
"""Least share of calibration images whose label must stay what float32 says, for a precision to pass."""

MAX_ABS_DP = 0.02
"""Largest change of any class probability on the calibration set, for a precision to pass."""

DEFAULT_CALIBRATION_IMAGES = 256
"""Calibration images read at most (the first ones in sorted order of a folder, or of the split)."""

AGREEMENT_FILE = "precision.json"
"""The file in a checkpoint folder that stores the measured agreement of its precisions."""

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


class PrecisionRefused(UsageError):
    """A precision this CPU, this model file or this checkpoint cannot run as asked; the message says why."""


# ----------------------------------------------------------------------------------------------------------------
# what the CPU runs well


@dataclass(frozen=True)
class CpuSupport:
    """The CPU's instruction sets that matter for low precision.

    Attributes:
        flags: the ``flags`` of ``/proc/cpuinfo`` (empty where it is not readable).
        capability: ``torch.backends.cpu.get_cpu_capability()`` (``AVX2``, ``AVX512``, ...).
        machine: ``platform.machine()``.
    """

    flags: frozenset[str]
    capability: str
    machine: str = ""

    @property
    def bf16(self) -> bool:
        """AVX512-BF16 or AMX-BF16: bfloat16 dot products in hardware."""
        return any(f in self.flags for f in BF16_FLAGS)

    @property
    def vnni(self) -> bool:
        """AVX512-VNNI, AVX-VNNI or AMX-INT8: int8 dot products in one instruction."""
        return any(f in self.flags for f in VNNI_FLAGS)

    @property
    def avx2(self) -> bool:
        return "avx2" in self.flags or self.capability.upper().startswith(("AVX2", "AVX512"))

    def refusal(self, precision: str) -> str | None:
        """Why this CPU cannot run ``precision`` well, or ``None`` when it can."""
        if precision == "fp32":
            return None
        if precision == "bf16":
            if self.bf16:
                return None
            return (
                "this CPU has no bfloat16 dot-product instructions (AVX512-BF16 or AMX; /proc/cpuinfo flags "
                f"lack {' and '.join(BF16_FLAGS)}, torch reports {self.capability}): bfloat16 would be emulated "
                "and run slower than float32"
            )
        if precision == "int8":
            if self.vnni or self.avx2:
                return None
            return f"this CPU has neither AVX2 nor VNNI (torch reports {self.capability}): int8 would be slower"
        raise UsageError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISION_CHOICES)}")

    def summary(self) -> dict[str, Any]:
        """What the metadata records about the CPU."""
        return {
            "capability": self.capability,
            "machine": self.machine,
            "bf16": self.bf16,
            "vnni": self.vnni,
            "flags": sorted(f for f in self.flags if f in (*BF16_FLAGS, *VNNI_FLAGS, "avx2", "avx512f")),
        }


@functools.cache
def cpu_support() -> CpuSupport:
    """This machine's :class:`CpuSupport` (read once per process)."""
    import torch

    flags: frozenset[str] = frozenset()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("flags"):
                flags = frozenset(line.split(":", 1)[1].split())
                break
    return CpuSupport(flags, str(torch.backends.cpu.get_cpu_capability()), platform.machine())


def check_precision(precision: str, cpu: CpuSupport | None = None) -> None:
    """Refuse a precision this CPU cannot run well.

    Raises:
        PrecisionRefused: naming the missing instructions.
        UsageError: not a precision name.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISION_CHOICES)}")
    reason = (cpu or cpu_support()).refusal(precision)
    if reason:
        raise PrecisionRefused(f"--precision {precision}: {reason}", hint="use --precision fp32 or auto")


# ----------------------------------------------------------------------------------------------------------------
# agreement


@dataclass
class Agreement:
    """How closely a precision reproduces float32 on a calibration set.

    Attributes:
        precision: the precision measured.
        images: calibration images compared.
        labels_kept: share of images whose most probable class is the float32 one, in [0, 1].
        max_abs_dp: largest |p - p_fp32| over every image and class.
        mean_abs_dp: mean |p - p_fp32| over every image and class.
        calibration: where the images came from (a folder, or a split of a run).
        calibration_sha256: hash of the images' contents (sorted file hashes): the same set gives the same hash.
        passed: ``labels_kept >= min_labels_kept`` and ``max_abs_dp <= max_abs_dp_allowed``.
        min_labels_kept, max_abs_dp_allowed: the thresholds it was judged by.
        cpu: the CPU it was measured on (:meth:`CpuSupport.summary`).
        weights: what identifies the weights measured (a checkpoint's weights hash), where known.
    """

    precision: str
    images: int
    labels_kept: float
    max_abs_dp: float
    mean_abs_dp: float
    calibration: str = ""
    calibration_sha256: str = ""
    passed: bool = False
    min_labels_kept: float = MIN_LABELS_KEPT
    max_abs_dp_allowed: float = MAX_ABS_DP
    cpu: dict[str, Any] = field(default_factory=dict)
    weights: str = ""
    reference: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Agreement:
        """The inverse of :meth:`to_dict` (unknown keys ignored, so newer files still load)."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def line(self) -> str:
        """One line for a terminal."""
        verdict = "passes" if self.passed else "FAILS"
        return (
            f"{self.precision} against fp32 on {self.images} calibration images: {self.labels_kept:.1%} labels kept, "
            f"max |dp| {self.max_abs_dp:.3g} ({verdict}: >= {self.min_labels_kept:.1%} and <= "
            f"{self.max_abs_dp_allowed:g})"
        )


def compare_probabilities(
    reference: np.ndarray,
    candidate: np.ndarray,
    precision: str,
    *,
    min_labels_kept: float = MIN_LABELS_KEPT,
    max_abs_dp: float = MAX_ABS_DP,
    **info: Any,
) -> Agreement:
    """The :class:`Agreement` of ``candidate`` (N, C) probabilities with the float32 ``reference`` (N, C).

    Raises:
        ValueError: shapes differ, or no images.
    """
    import numpy as np

    ref, got = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    if ref.shape != got.shape or ref.ndim != 2:
        raise ValueError(f"probabilities of shapes {ref.shape} and {got.shape} cannot be compared")
    if ref.shape[0] == 0:
        raise ValueError("no calibration images to compare")
    kept = float((ref.argmax(1) == got.argmax(1)).mean())
    diff = np.abs(ref - got)
    worst, mean = float(diff.max()), float(diff.mean())
    return Agreement(
        precision=precision,
        images=int(ref.shape[0]),
        labels_kept=kept,
        max_abs_dp=worst,
        mean_abs_dp=mean,
        passed=bool(kept >= min_labels_kept and worst <= max_abs_dp),
        min_labels_kept=min_labels_kept,
        max_abs_dp_allowed=max_abs_dp,
        cpu=cpu_support().summary(),
        **info,
    )


@dataclass
class CalibrationSet:
    """Images to measure agreement on.

    Attributes:
        files: image paths, sorted.
        source: where they came from, for the record.
    """

    files: list[str]
    source: str

    def sha256(self) -> str:
        """Hash of the sorted content hashes of the files (names and order do not matter)."""
        digests = sorted(hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in self.files)
        return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def calibration_set(
    checkpoint: str | Path | None,
    given: Sequence[str | Path] | str | Path | None = None,
    *,
    limit: int = DEFAULT_CALIBRATION_IMAGES,
) -> CalibrationSet:
    """The calibration images: ``given`` files and folders, else the validation split of the checkpoint's run.

    Raises:
        UsageError: nothing given and the checkpoint has no run config (``train.yaml``) beside it, or no image.
    """
    from mghft.data.walk import find_images

    if given is not None and given != []:
        paths = [given] if isinstance(given, (str, Path)) else list(given)
        found = find_images(paths, as_str=True)
        if found.missing:
            raise UsageError(f"--agreement-set: {found.missing[0]}")
        files = sorted(found.files)[:limit]
        if not files:
            raise UsageError(f"--agreement-set: no image files under {' '.join(map(str, paths))}")
        return CalibrationSet(files, " ".join(map(str, paths)))
    found_cfg = _run_config_path(checkpoint) if checkpoint is not None else None
    if found_cfg is None:
        raise UsageError(
            f"no agreement images: give --agreement-set (a folder of stickers); {checkpoint} has no train.yaml "
            "beside it naming its validation split",
            hint="--agreement-set DIR with a few hundred stickers like the ones you will label",
        )
    from mghft.train.config import TrainConfig
    from mghft.train.data import load_splits

    cfg = TrainConfig.from_file(found_cfg, [f"output={found_cfg.parent}"])
    part = load_splits(cfg.data, found_cfg.parent, log=False, create_split=False, splits=("val",))["val"]
    files = sorted(str(s.path) for s in part.samples)[:limit]
    if not files:
        raise UsageError(f"the validation split of {found_cfg} is empty", hint="give --agreement-set DIR")
    return CalibrationSet(files, f"val split of {found_cfg}")


def _run_config_path(checkpoint: str | Path) -> Path | None:
    """The ``train.yaml`` a training run wrote beside a local checkpoint folder (``<run>/best``), if any (the rule
    ``mghft evaluate`` and ``mghft calibrate`` follow)."""
    folder = Path(checkpoint)
    if not folder.is_dir():
        return None
    return next((c for c in (folder.parent / "train.yaml", folder / "train.yaml") if c.is_file()), None)


def measure_agreement(
    reference: Callable[[Sequence[Any]], np.ndarray],
    candidate: Callable[[Sequence[Any]], np.ndarray],
    images: Sequence[Any],
    precision: str,
    *,
    batch_size: int = 16,
    **info: Any,
) -> Agreement:
    """Run both (each maps a list of loaded images to (B, C) probabilities) over ``images`` in batches."""
    import numpy as np

    ref, got = [], []
    for i in range(0, len(images), batch_size):
        chunk = images[i : i + batch_size]
        ref.append(np.asarray(reference(chunk)))
        got.append(np.asarray(candidate(chunk)))
    return compare_probabilities(np.concatenate(ref), np.concatenate(got), precision, **info)


# ----------------------------------------------------------------------------------------------------------------
# storing the agreement of a checkpoint's precisions


def read_agreements(folder: str | Path) -> dict[str, Agreement]:
    """The agreements stored in a checkpoint folder's ``precision.json`` (none when absent or unreadable)."""
    path = Path(folder) / AGREEMENT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: Agreement.from_dict(v) for k, v in (data.get("agreements") or {}).items() if isinstance(v, dict)}


def store_agreement(folder: str | Path, agreement: Agreement) -> Path | None:
    """Add ``agreement`` to the folder's ``precision.json`` (atomically); ``None`` when the folder is read-only."""
    import os
    import tempfile

    folder = Path(folder)
    data = {"agreements": {k: v.to_dict() for k, v in read_agreements(folder).items()}}
    data["agreements"][agreement.precision] = agreement.to_dict()
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".precision.", suffix=".tmp")
    except OSError:
        return None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, folder / AGREEMENT_FILE)
    return folder / AGREEMENT_FILE


def weights_id(folder: str | Path) -> str:
    """What identifies a checkpoint folder's weights: the hash of its weight files' contents."""
    h = hashlib.sha256()
    for f in sorted(Path(folder).iterdir()):
        if f.suffix in (".safetensors", ".pt", ".bin", ".pth") and f.is_file():
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# running in a precision


@contextlib.contextmanager
def precision_context(precision: str) -> Iterator[None]:
    """Where a PyTorch forward runs in ``precision``: bf16 autocast on CPU, else nothing changes."""
    if precision != "bf16":
        yield
        return
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16):
        yield


def choose_auto(
    offered: Sequence[str], agreements: dict[str, Agreement], cpu: CpuSupport | None = None
) -> tuple[str, str]:
    """The fastest of ``offered`` that this CPU runs well and whose agreement passed; returns it and why.

    float32 needs no agreement; any other precision without a stored passing agreement is passed over (the
    reason names each one passed over).
    """
    cpu = cpu or cpu_support()
    skipped = []
    for p in SPEED_ORDER:
        if p not in offered:
            continue
        if p == "fp32":
            break
        reason = cpu.refusal(p)
        if reason is None:
            a = agreements.get(p)
            if a is None:
                reason = "no agreement with fp32 measured"
            elif not a.passed:
                reason = a.line()
        if reason is None:
            return p, f"fastest offered precision passing the agreement check ({agreements[p].line()})"
        skipped.append(f"{p}: {reason}")
    return "fp32", "; ".join(skipped) if skipped else "the only precision offered"


__all__ = [
    "AGREEMENT_FILE",
    "MAX_ABS_DP",
    "MIN_LABELS_KEPT",
    "PRECISIONS",
    "PRECISION_CHOICES",
    "Agreement",
    "CalibrationSet",
    "CpuSupport",
    "PrecisionRefused",
    "calibration_set",
    "check_precision",
    "choose_auto",
    "compare_probabilities",
    "cpu_support",
    "measure_agreement",
    "precision_context",
    "read_agreements",
    "store_agreement",
    "weights_id",
]
