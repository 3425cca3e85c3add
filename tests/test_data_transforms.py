"""Training/evaluation transforms without torchvision: shapes, exact eval geometry, seeding, workers, Preprocess."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from mghft.data import IMAGENET_MEAN, IMAGENET_STD, Preprocess, RandAugment, build_transform
from mghft.data.transforms import (
    RAND_AUGMENT_OPS,
    EvalTransform,
    TrainTransform,
    random_resized_crop_box,
)


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_eval_normalises_a_constant_image_exactly() -> None:
    t = build_transform(False, 32)
    x = t(Image.new("RGB", (50, 40), (255, 0, 128)))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    expected = [(1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], -IMAGENET_MEAN[1] / IMAGENET_STD[1]]
    expected.append((128 / 255 - IMAGENET_MEAN[2]) / IMAGENET_STD[2])
    assert torch.allclose(x.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-5)


def test_eval_geometry_is_resize_short_side_then_centre_crop() -> None:
    t = build_transform(False, 448)
    assert isinstance(t, EvalTransform) and t.resize_size == 512
    img = _noise(300, 600)  # portrait: short side 300 -> 512, long 1024
    resized = img.resize((512, 1024), Image.Resampling.BICUBIC)
    expected = resized.crop((32, 288, 480, 736))
    out = t.augment(img)
    assert out.size == (448, 448)
    assert np.array_equal(np.asarray(out), np.asarray(expected))
    # Landscape with a non-integer long side: truncated, as in torchvision's Resize.
    assert build_transform(False, 224).augment(_noise(333, 250)).size == (224, 224)
    assert build_transform(False, 224, crop_pct=1.0).resize_size == 224


def test_eval_of_an_extreme_aspect_ratio_never_materialises_the_resized_strip() -> None:
    # A 1-pixel-high strip of a million pixels is 3 kB as PNG; resized to a short side of 73 the whole strip
    # would be 73 million pixels wide (16 GB). Only the centre crop is kept, so only the crop is computed.
    t = build_transform(False, 64)
    strip = Image.new("RGB", (1_000_000, 1), (200, 10, 10))
    out = t.augment(strip)
    assert out.size == (64, 64)
    assert np.asarray(out).reshape(-1, 3).tolist()[0] == [200, 10, 10]
    # A long but moderate strip gives (almost) the pixels of resize-then-crop.
    img = _noise(2000, 90, seed=3)
    ref = img.resize((int(73 * 2000 / 90), 73), Image.Resampling.BICUBIC)
    left = int(round((ref.width - 64) / 2.0))
    expected = np.asarray(ref.crop((left, 4, left + 64, 68)), dtype=np.int64)
    assert np.abs(np.asarray(t.augment(img), dtype=np.int64) - expected).mean() < 1.0


def test_eval_converts_non_rgb() -> None:
    assert build_transform(False, 16)(Image.new("L", (20, 20), 10)).shape == (3, 16, 16)


def test_train_shape_and_seed_reproducibility() -> None:
    img = _noise(120, 90)
    a = build_transform(True, 64, seed=5)
    b = build_transform(True, 64, seed=5)
    c = build_transform(True, 64, seed=6)
    assert isinstance(a, TrainTransform)
    xa = [a(img) for _ in range(3)]
    xb = [b(img) for _ in range(3)]
    xc = [c(img) for _ in range(3)]
    assert all(x.shape == (3, 64, 64) for x in xa)
    assert all(torch.equal(p, q) for p, q in zip(xa, xb, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(xa, xc, strict=True))
    assert not torch.equal(xa[0], xa[1])  # the stream advances
    # An explicit rng overrides the transform's own stream.
    assert torch.equal(a(img, rng=random.Random(1)), b(img, rng=random.Random(1)))


def test_random_resized_crop_box_stays_inside_and_in_range() -> None:
    rng = random.Random(0)
    for _ in range(200):
        left, top, right, bottom = random_resized_crop_box(200, 100, rng)
        assert 0 <= left < right <= 200 and 0 <= top < bottom <= 100
        area = (right - left) * (bottom - top) / (200 * 100)
        aspect = (right - left) / (bottom - top)
        assert 0.07 <= area <= 1.0
        assert 0.7 <= aspect <= 1.4 or (right - left, bottom - top) == (133, 100)  # the fallback
    # A very thin image falls back to the largest central crop with a clamped ratio.
    assert random_resized_crop_box(1000, 10, random.Random(0), scale=(0.99, 1.0)) == (493, 0, 506, 10)


def test_rand_augment_spec_parsing() -> None:
    ra = RandAugment.from_string("m9-mstd0.5")
    assert (ra.num_ops, ra.magnitude, ra.magnitude_std, ra.prob) == (2, 9.0, 0.5, 0.5)
    ra = RandAugment.from_string("rand-m7-n3-mstd0-inc1-p1.0")
    assert (ra.num_ops, ra.magnitude, ra.magnitude_std, ra.prob) == (3, 7.0, 0.0, 1.0)
    for bad in ("m9-foo", "rand-m9-inc0"):
        with pytest.raises(ValueError, match="bad RandAugment spec"):
            RandAugment.from_string(bad)


@pytest.mark.parametrize("name", sorted(RAND_AUGMENT_OPS))
def test_every_op_changes_the_image_at_magnitude_9(name: str) -> None:
    img = Image.fromarray((np.asarray(_noise(32, 32, seed=3)) // 2 + 40).astype(np.uint8))  # low contrast
    out = RAND_AUGMENT_OPS[name](img, 9.0, random.Random(0))
    assert out.size == img.size and out.mode == "RGB"
    assert not np.array_equal(np.asarray(out), np.asarray(img))
    # Magnitude 0 leaves the magnitude-driven ops (not the fixed ones) untouched.
    if name not in ("auto_contrast", "equalize", "invert"):
        still = RAND_AUGMENT_OPS[name](img, 0.0, random.Random(0))
        assert np.array_equal(np.asarray(still), np.asarray(img))


def test_rand_augment_applies_ops_with_probability() -> None:
    img = _noise(16, 16)
    never = RandAugment(prob=0.0)
    assert np.array_equal(np.asarray(never(img, random.Random(0))), np.asarray(img))
    always = RandAugment(ops=("invert",), num_ops=1, prob=1.0)
    assert np.array_equal(np.asarray(always(img, random.Random(0))), 255 - np.asarray(img))


class _Images(torch.utils.data.Dataset):
    def __init__(self, transform: TrainTransform) -> None:
        self.transform = transform
        self.img = _noise(40, 40, seed=9)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.img)


def _run_loader(seed: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    transform = build_transform(True, 16, rand_augment=None)
    loader = torch.utils.data.DataLoader(_Images(transform), batch_size=1, num_workers=2)  # type: ignore[arg-type]
    return [batch[0] for batch in loader]


def test_workers_get_different_reproducible_streams() -> None:
    first = _run_loader(0)
    again = _run_loader(0)
    other = _run_loader(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    # Items 0 and 1 are each the first call in workers 0 and 1: without reseeding they would be identical.
    assert not torch.equal(first[0], first[1])
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_preprocess_round_trip_and_checks() -> None:
    pre = Preprocess(size=224, crop_pct=0.9)
    data = pre.to_dict()
    assert data == {
        "size": 224,
        "crop_pct": 0.9,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "interpolation": "bicubic",
    }
    assert Preprocess.from_dict(data) == pre
    t = pre.transform()
    assert t.resize_size == pre.resize_size == 248
    assert t(_noise(300, 260)).shape == (3, 224, 224)
    assert Preprocess().resize_size == 512
    with pytest.raises(ValueError, match="unknown Preprocess field"):
        Preprocess.from_dict({**data, "colour": 1})
    with pytest.raises(ValueError, match=r"Preprocess\.crop_pct"):
        Preprocess(crop_pct=1.5)
    with pytest.raises(ValueError, match=r"Preprocess\.mean"):
        Preprocess(mean=(0.5, 0.5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Preprocess\.interpolation"):
        Preprocess(interpolation="cubic")
