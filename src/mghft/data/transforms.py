"""Training and evaluation preprocessing on PIL images and torch tensors, without torchvision.

The recipe is the public MGHFT code's (method §6): for training, RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3,
bicubic), horizontal flip, RandAugment ``m9-mstd0.5`` (2 ops), ImageNet normalisation; for evaluation, resize the
short side to ``size / crop_pct`` (512 for 448) and centre-crop ``size``.

Randomness comes from a ``random.Random`` owned by the transform. Inside a ``DataLoader`` worker the transform
reseeds itself once from the worker's seed (``torch.utils.data.get_worker_info().seed``, drawn from the main
process's torch RNG each epoch), so workers never repeat each other's augmentations and a run is reproducible
from ``torch.manual_seed``.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
_MAX_LEVEL = 10.0
# Geometric ops fill uncovered pixels with the ImageNet mean colour.
_FILL = tuple(round(255 * m) for m in IMAGENET_MEAN)
# Beyond this aspect ratio the evaluation transform resamples only its centre crop instead of the whole image.
_MAX_EVAL_ASPECT = 4


def _interpolation(name: str) -> Image.Resampling:
    try:
        return _INTERPOLATIONS[name]
    except KeyError:
        raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {name!r}") from None


def to_tensor(img: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """RGB image -> normalised float32 tensor (3, H, W)."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.array(img, dtype=np.float32)  # (H, W, 3), a writable copy
    x = torch.from_numpy(arr).permute(2, 0, 1).div_(255.0)  # (3, H, W)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return x.sub_(m).div_(s)


def resize_short_side(img: Image.Image, short: int, interpolation: Image.Resampling) -> Image.Image:
    """Resize so the shorter side is ``short``, keeping the aspect ratio (the long side is truncated)."""
    w, h = img.size
    new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    return img if new == img.size else img.resize(new, interpolation)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """The central ``size`` × ``size`` region (offsets rounded); pads with black if the image is smaller."""
    w, h = img.size
    if w < size or h < size:
        canvas = Image.new("RGB", (max(w, size), max(h, size)))
        canvas.paste(img, ((canvas.width - w) // 2, (canvas.height - h) // 2))
        img, (w, h) = canvas, canvas.size
    left = int(round((w - size) / 2.0))
    top = int(round((h - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def random_resized_crop_box(
    width: int,
    height: int,
    rng: random.Random,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """A random crop box (left, top, right, bottom) covering ``scale`` of the area with aspect in ``ratio``.

    Ten tries; then the largest central crop whose aspect is clamped into ``ratio``.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = rng.randint(0, width - w)
            top = rng.randint(0, height - h)
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


# ---------------------------------------------------------------------------------------------------------------
# RandAugment. Each op takes (image, magnitude in [0, 10], rng); severity grows with the magnitude for every op
# (the "increasing" variants, as the public code's ``rand-m9-mstd0.5-inc1``).


def _signed(value: float, rng: random.Random) -> float:
    return -value if rng.random() < 0.5 else value


def _auto_contrast(img: Image.Image, m: float, rng: random.Random) -> Image.Image:
    return ImageOps.autocontrast(img)


def _equalize(img: Image.Image, m: float, rng: random.Random) -> Image.Image:
    return ImageOps.equalize(img)


def _invert(img: Image.Image, m: float, rng: random.Random) -> Image.Image:
    return ImageOps.invert(img)


def _rotate(img: Image.Image, m: float, rng: random.Random) -> Image.Image:
    degrees = _signed(30.0 * m / _MAX_LEVEL, rng)
    return img.rotate(degrees, resample=Image.Resampling.BILINEAR, fillcolor=_FILL)


def _posterize(img: Image.Image, m: float, rng: random.Random) -> Image.Image:
    bits = 8 - int(4 * m / _MAX_LEVEL)  # 8 (no change) .. 4 bits kept
    return img if bits >= 8 else ImageOps.posterize(img, bits)


def _solarize(img: Image.Image, m: float, rng: random.Random) -> Image.Image:
    threshold = 256 - int(256 * m / _MAX_LEVEL)  # 256 (no change) .. 0 (full inversion)
    return ImageOps.solarize(img, threshold)


def _solarize_add(img: Image.Image, m: float, rng: random.Random) -> Image.Image:
    add = int(110 * m / _MAX_LEVEL)
    lut = [min(255, v + add) if v < 128 else v for v in range(256)] * 3
    return img.point(lut)


def _enhancer(cls: type) -> Callable[[Image.Image, float, random.Random], Image.Image]:
    def op(img: Image.Image, m: float, rng: random.Random) -> Image.Image:
        factor = 1.0 + _signed(0.9 * m / _MAX_LEVEL, rng)  # 0.1 .. 1.9
        return cls(img).enhance(factor)

    op.__name__ = f"_{cls.__name__.lower()}"
    return op


def _shear(axis: int) -> Callable[[Image.Image, float, random.Random], Image.Image]:
    def op(img: Image.Image, m: float, rng: random.Random) -> Image.Image:
        s = _signed(0.3 * m / _MAX_LEVEL, rng)
        matrix = (1, s, 0, 0, 1, 0) if axis == 0 else (1, 0, 0, s, 1, 0)
        return img.transform(img.size, Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR, fillcolor=_FILL)

    op.__name__ = f"_shear_{'xy'[axis]}"
    return op


def _translate(axis: int) -> Callable[[Image.Image, float, random.Random], Image.Image]:
    def op(img: Image.Image, m: float, rng: random.Random) -> Image.Image:
        shift = _signed(0.45 * m / _MAX_LEVEL, rng) * img.size[axis]  # up to 45% of the side
        matrix = (1, 0, shift, 0, 1, 0) if axis == 0 else (1, 0, 0, 0, 1, shift)
        return img.transform(img.size, Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR, fillcolor=_FILL)

    op.__name__ = f"_translate_{'xy'[axis]}"
    return op


RAND_AUGMENT_OPS: dict[str, Callable[[Image.Image, float, random.Random], Image.Image]] = {
    "auto_contrast": _auto_contrast,
    "equalize": _equalize,
    "invert": _invert,
    "rotate": _rotate,
    "posterize": _posterize,
    "solarize": _solarize,
    "solarize_add": _solarize_add,
    "color": _enhancer(ImageEnhance.Color),
    "contrast": _enhancer(ImageEnhance.Contrast),
    "brightness": _enhancer(ImageEnhance.Brightness),
    "sharpness": _enhancer(ImageEnhance.Sharpness),
    "shear_x": _shear(0),
    "shear_y": _shear(1),
    "translate_x": _translate(0),
    "translate_y": _translate(1),
}
"""The RandAugment op set: name -> op(image, magnitude 0..10, rng)."""


@dataclass(frozen=True)
class RandAugment:
    """Apply ``num_ops`` ops drawn with replacement, each with probability ``prob``, at a magnitude drawn from
    N(``magnitude``, ``magnitude_std``) clipped to [0, 10] (``magnitude_std=0``: fixed)."""

    num_ops: int = 2
    magnitude: float = 9.0
    magnitude_std: float = 0.5
    prob: float = 0.5
    ops: tuple[str, ...] = tuple(RAND_AUGMENT_OPS)

    @classmethod
    def from_string(cls, spec: str) -> RandAugment:
        """Parse ``"m9-mstd0.5"`` (also ``rand-m9-mstd0.5-inc1``, ``n3``, ``p0.5``): m magnitude, mstd its
        std, n ops, p probability; ``inc1`` is accepted (ops always grow with the magnitude)."""
        kwargs: dict[str, Any] = {}
        for token in spec.split("-"):
            if not token or token == "rand":
                continue
            match = re.fullmatch(r"(mstd|inc|m|n|p)([0-9.]+)", token)
            if match is None:
                raise ValueError(f"bad RandAugment spec {spec!r}: unknown part {token!r}")
            key, value = match.groups()
            if key == "m":
                kwargs["magnitude"] = float(value)
            elif key == "mstd":
                kwargs["magnitude_std"] = float(value)
            elif key == "n":
                kwargs["num_ops"] = int(float(value))
            elif key == "p":
                kwargs["prob"] = float(value)
            elif key == "inc" and float(value) != 1:
                raise ValueError(f"bad RandAugment spec {spec!r}: only increasing-severity ops (inc1) exist")
        return cls(**kwargs)

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        for name in rng.choices(self.ops, k=self.num_ops):
            if rng.random() >= self.prob:
                continue
            m = self.magnitude
            if self.magnitude_std > 0:
                m = rng.gauss(m, self.magnitude_std)
            m = min(_MAX_LEVEL, max(0.0, m))
            img = RAND_AUGMENT_OPS[name](img, m, rng)
        return img


def _worker_info() -> tuple[int, int] | None:
    info = torch.utils.data.get_worker_info()
    return None if info is None else (info.id, info.seed)


class TrainTransform:
    """RandomResizedCrop -> horizontal flip -> RandAugment -> tensor -> normalise. See ``build_transform``."""

    def __init__(
        self,
        size: int = 448,
        *,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        rand_augment: RandAugment | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bicubic",
        seed: int | None = None,
    ) -> None:
        self.size = size
        self.scale = scale
        self.ratio = ratio
        self.hflip = hflip
        self.rand_augment = rand_augment
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.interpolation = interpolation
        self._resample = _interpolation(interpolation)
        self.seed = seed
        self.rng = random.Random(seed)
        self._worker: tuple[int, int] | None = None

    def reseed(self, seed: int | None) -> None:
        """Restart the random stream from ``seed``."""
        self.seed = seed
        self.rng = random.Random(seed)
        self._worker = None

    def _stream(self) -> random.Random:
        worker = _worker_info()
        if worker is not None and worker != self._worker:
            # First call in this worker (this epoch): derive the stream from the worker's seed.
            self._worker = worker
            base = worker[1] if self.seed is None else worker[1] ^ (self.seed * 0x9E3779B1)
            self.rng = random.Random(base)
        return self.rng

    def augment(self, img: Image.Image, rng: random.Random | None = None) -> Image.Image:
        """The PIL part of the pipeline (crop, flip, RandAugment), for inspection."""
        rng = rng if rng is not None else self._stream()
        if img.mode != "RGB":
            img = img.convert("RGB")
        box = random_resized_crop_box(img.width, img.height, rng, self.scale, self.ratio)
        img = img.resize((self.size, self.size), self._resample, box=box)
        if rng.random() < self.hflip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.rand_augment is not None:
            img = self.rand_augment(img, rng)
        return img

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        return to_tensor(self.augment(img, rng), self.mean, self.std)


class EvalTransform:
    """Resize the short side to ``floor(size / crop_pct)``, centre-crop ``size``, tensor, normalise."""

    def __init__(
        self,
        size: int = 448,
        *,
        crop_pct: float = 448 / 512,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bicubic",
    ) -> None:
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        self.size = size
        self.crop_pct = crop_pct
        self.resize_size = math.floor(size / crop_pct + 1e-6)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self._resample = _interpolation(interpolation)

    def augment(self, img: Image.Image) -> Image.Image:
        """The PIL part (resize, crop)."""
        if img.mode != "RGB":
            img = img.convert("RGB")
        w, h, short, s = img.width, img.height, self.resize_size, self.size
        rw, rh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        if rw * rh <= _MAX_EVAL_ASPECT * short * short:
            return center_crop(resize_short_side(img, short, self._resample), s)
        # A long strip: resizing all of it could take gigabytes for a tiny file; resample only the centre crop.
        left, top = int(round((rw - s) / 2.0)), int(round((rh - s) / 2.0))
        sx, sy = w / rw, h / rh
        return img.resize((s, s), self._resample, box=(left * sx, top * sy, (left + s) * sx, (top + s) * sy))

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return to_tensor(self.augment(img), self.mean, self.std)


def build_transform(
    train: bool,
    size: int = 448,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    rand_augment: str | None = "m9-mstd0.5",
    crop_pct: float = 448 / 512,
    interpolation: str = "bicubic",
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    seed: int | None = None,
) -> TrainTransform | EvalTransform:
    """The training or evaluation transform: a callable PIL image -> float tensor (3, size, size).

    Args:
        train: training (random crop, flip, RandAugment) or evaluation (resize, centre crop).
        size: output side.
        mean, std: normalisation per channel.
        rand_augment: RandAugment spec (``"m9-mstd0.5"``, see ``RandAugment.from_string``) or ``None`` for none.
        crop_pct: evaluation crop fraction: the short side is resized to ``size / crop_pct`` first.
        interpolation: ``"bicubic"`` (default), ``"bilinear"``, ``"lanczos"`` or ``"nearest"``.
        scale, ratio: RandomResizedCrop area fraction and aspect-ratio ranges.
        hflip: horizontal flip probability.
        seed: seed of the training transform's random stream (see the module docstring for workers).
    """
    if train:
        ra = RandAugment.from_string(rand_augment) if rand_augment else None
        return TrainTransform(
            size,
            scale=scale,
            ratio=ratio,
            hflip=hflip,
            rand_augment=ra,
            mean=mean,
            std=std,
            interpolation=interpolation,
            seed=seed,
        )
    return EvalTransform(size, crop_pct=crop_pct, mean=mean, std=std, interpolation=interpolation)


@dataclass(frozen=True)
class Preprocess:
    """Evaluation preprocessing that travels with a checkpoint: ``to_dict``/``from_dict`` and ``transform()``."""

    size: int = 448
    crop_pct: float = 448 / 512
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size <= 0:
            raise ValueError(f"Preprocess.size must be a positive integer, got {self.size!r}")
        if not 0 < float(self.crop_pct) <= 1:
            raise ValueError(f"Preprocess.crop_pct must be in (0, 1], got {self.crop_pct!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3 or not all(isinstance(v, int | float) for v in value):
                raise ValueError(f"Preprocess.{name} must be three numbers, got {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if any(v <= 0 for v in self.std):
            raise ValueError(f"Preprocess.std must be positive, got {self.std!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"Preprocess.interpolation must be one of {sorted(_INTERPOLATIONS)}, got {self.interpolation!r}"
            )

    @property
    def resize_size(self) -> int:
        """The short side before the centre crop."""
        return math.floor(self.size / self.crop_pct + 1e-6)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        """Inverse of ``to_dict``; an unknown field is an error naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown Preprocess field(s) {unknown}; known: {sorted(known)}")
        values = dict(data)
        for name in ("mean", "std"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def transform(self) -> EvalTransform:
        """The evaluation transform this preprocessing describes."""
        return EvalTransform(
            self.size, crop_pct=self.crop_pct, mean=self.mean, std=self.std, interpolation=self.interpolation
        )
