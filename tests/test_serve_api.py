"""The predictor: labels, probabilities, view texts, explanations, interpreter on the fly, bad inputs.

The helpers at the top (a tiny checkpoint, drawn stickers) are shared by the other ``test_serve_*`` files.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import mghft
from mghft.data import ImageLoadError, ImageTooLargeError
from mghft.data.transforms import Preprocess
from mghft.models.text import view_texts
from mghft.serve.predictor import (
    Predictor,
    combine_heatmaps,
    crop_box,
    heatmap_overlay,
    load_predictor,
    stage_heatmap,
)
from mghft.views import VIEWS, format_official_text

CLASSES = list(mghft.SER30K_CLASSES)
DESCRIPTION = {
    "intention": "The sender laughs at a joke and wants to share the fun.",
    "style": "Flat cartoon with thick outlines and pastel colours.",
    "main_role": "A round yellow face.",
    "posture_expression": "Eyes squeezed shut, mouth wide open in laughter.",
}


def make_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A random ``mghft_tiny`` checkpoint whose attention is sharp enough that top-k picks never tie."""
    torch.manual_seed(seed)
    model = mghft.create_model("mghft_tiny")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("attn.q.weight", "attn.kv.weight")):
                p.mul_(6.0)
            if "cls_token" in name:
                p.normal_(0.0, 1.0)
    return mghft.save_checkpoint(model, folder, class_names=CLASSES, metrics={"test_no_views": {"accuracy": 0.5}})


def sticker(seed: int = 0, size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A drawn sticker: a coloured face on a transparent background."""
    rng = random.Random(seed)
    im = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    w, h = size
    colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256), 255)
    d.ellipse((w * 0.1, h * 0.1, w * 0.9, h * 0.9), fill=colour, outline=(0, 0, 0, 255), width=2)
    for ex in (0.35, 0.65):
        d.ellipse((w * ex - 4, h * 0.35 - 4, w * ex + 4, h * 0.35 + 4), fill=(0, 0, 0, 255))
    d.arc((w * 0.3, h * 0.4, w * 0.7, h * 0.75), 0 if seed % 2 else 180, 180 if seed % 2 else 360, fill=(0, 0, 0, 255))
    return im


def png_bytes(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("serve-api") / "tiny")


@pytest.fixture(scope="module")
def predictor(checkpoint: Path) -> Predictor:
    return load_predictor(checkpoint, device="cpu")


def _model_probs(p: Predictor, im: Image.Image, texts: list[str | None] | None = None) -> np.ndarray:
    """Probabilities computed by hand from the model, for comparison with the predictor."""
    x = p.transform(_on_white(im.convert("RGBA")))[None]
    kwargs = {}
    if texts is not None:
        feats = torch.zeros(1, 4, p.model.cfg.text.dim)
        mask = torch.zeros(1, 4, dtype=torch.bool)
        present = [i for i, t in enumerate(texts) if t]
        enc = p.model.text_encoder.encode([texts[i] for i in present])
        for k, i in enumerate(present):
            feats[0, i], mask[0, i] = enc[k], True
        kwargs = {"text_features": feats, "view_mask": mask}
    with torch.no_grad():
        return p.model.predict_proba(x, **kwargs)[0].numpy()


def _on_white(im: Image.Image) -> Image.Image:
    canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
    canvas.alpha_composite(im)
    return canvas.convert("RGB")


def test_bare_image_matches_the_model_and_explains(predictor: Predictor, tmp_path: Path) -> None:
    im = sticker(1)
    path = tmp_path / "a.png"
    im.save(path)
    [pred] = predictor.predict([path])
    probs = np.array([pred.probabilities[c] for c in CLASSES])
    np.testing.assert_allclose(probs, _model_probs(predictor, im), atol=1e-5)
    assert pred.label == CLASSES[int(probs.argmax())]
    assert pred.view_source == "absent" and all(v is None for v in pred.views.values())
    assert pred.name == str(path) and pred.size == im.size
    ex = pred.explanation
    assert ex is not None
    assert list(ex.view_weights) == list(VIEWS)
    assert sum(ex.view_weights.values()) == pytest.approx(1.0, abs=1e-5)
    # tiny model: 64 px, alpha 1, heads (1, 1, 2, 2), sr (8, 4, 2, 1): k per head = sr^2 -> 64, 16, 8, 2 picks
    assert [len(idx) for _, idx in ex.stage_patches] == [64, 16, 8, 2]
    assert [grid for grid, _ in ex.stage_patches] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    for (h, w), idx in ex.stage_patches:
        assert all(0 <= i < h * w for i in idx)
    assert ex.heatmap.shape == (16, 16) and ex.heatmap.max() == pytest.approx(1.0) and ex.heatmap.min() >= 0
    left, top, right, bottom = ex.crop_box
    assert 0 <= left < right <= im.width and 0 <= top < bottom <= im.height
    d = pred.to_dict()
    assert d["explanation"]["heatmap"][0][0] == pytest.approx(float(ex.heatmap[0, 0]), abs=1e-3)
    assert "explanation" not in pred.to_dict(explain=False)


def test_descriptions_are_read_view_by_view(predictor: Predictor) -> None:
    im = sticker(2)
    partial = {"intention": DESCRIPTION["intention"], "style": DESCRIPTION["style"]}
    preds = predictor.predict(
        [im, im, im, im], [DESCRIPTION, format_official_text(DESCRIPTION), partial, None], batch_size=3
    )
    full, official, half, bare = preds
    assert full.view_source == official.view_source == "given" and bare.view_source == "absent"
    assert full.views == official.views and full.views["main_role"].endswith(DESCRIPTION["main_role"])
    assert full.probabilities == pytest.approx(official.probabilities, abs=1e-6)
    assert half.views["main_role"] is None and half.views["intention"] is not None
    texts = view_texts(DESCRIPTION)
    want = _model_probs(predictor, im, texts)
    np.testing.assert_allclose([full.probabilities[c] for c in CLASSES], want, atol=1e-5)
    want_half = _model_probs(predictor, im, view_texts(partial))
    np.testing.assert_allclose([half.probabilities[c] for c in CLASSES], want_half, atol=1e-5)
    # the text changes the answer (the views are not silently dropped)
    assert max(abs(full.probabilities[c] - bare.probabilities[c]) for c in CLASSES) > 1e-4


def test_interpreter_describes_bare_images_once(checkpoint: Path, tmp_path: Path) -> None:
    from mghft.interpret import DescriptionStore, Interpreter, build_backend

    store = DescriptionStore(tmp_path / "descriptions.sqlite")
    calls: list[int] = []
    interp = Interpreter(build_backend("offline", ocr=False), store)
    original = interp.describe

    def counting(image: object, **kw: object) -> object:
        calls.append(1)
        return original(image, **kw)

    interp.describe = counting  # type: ignore[method-assign]
    try:
        p = load_predictor(checkpoint, interpreter=interp, device="cpu")
        data = png_bytes(sticker(3))
        first = p.predict([data])[0]
        again = p.predict([data], [None])[0]
        given = p.predict([data], [DESCRIPTION])[0]
    finally:
        interp.close()
    assert first.view_source == again.view_source == "interpreter"
    assert all(first.views[v] for v in VIEWS)
    assert first.probabilities == again.probabilities
    assert len(calls) == 1  # the second prediction used the cache
    assert given.view_source == "given" and len(calls) == 1
    assert len(store) == 1  # and the description was stored for later runs
    store.close()


def test_store_only_lookup_falls_back_to_no_views(predictor: Predictor) -> None:
    class Missing:
        def describe(self, data: bytes) -> object:
            raise LookupError("not described")

    p = Predictor(predictor.model, class_names=CLASSES, interpreter=Missing())
    [pred] = p.predict([sticker(4)])
    assert pred.view_source == "absent"


def test_unreadable_inputs_raise_naming_the_file(predictor: Predictor, tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(png_bytes(sticker(5))[:60])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path in (bad, empty, tmp_path / "missing.png", tmp_path):
        with pytest.raises(ImageLoadError, match=path.name):
            predictor.predict([path])
    small = Predictor(predictor.model, class_names=CLASSES, max_pixels=1000)
    with pytest.raises(ImageTooLargeError, match="exceeds the limit of 1000"):
        small.predict([png_bytes(sticker(6, (100, 100)))])
    with pytest.raises(ValueError, match="2 descriptions for 1 images"):
        predictor.predict([sticker(1)], [None, None])


def test_crop_box_matches_the_eval_transform() -> None:
    pre = Preprocess(size=64)  # resize the short side to 73, centre-crop 64
    assert crop_box((200, 100), pre) == pytest.approx((41 * 200 / 146, 4 * 100 / 73, 105 * 200 / 146, 68 * 100 / 73))
    assert crop_box((73, 73), pre) == pytest.approx((4.0, 4.0, 68.0, 68.0))
    # the pixels inside the box are what the model sees: a stripe at the box's left edge survives the crop
    im = Image.new("RGB", (200, 100), (255, 255, 255))
    left = crop_box(im.size, pre)[0]
    ImageDraw.Draw(im).rectangle((0, 0, int(left) - 2, 99), fill=(0, 0, 0))
    x = pre.transform().augment(im)
    assert np.asarray(x)[:, 0].mean() > 200  # the black part is outside the crop


def test_heatmaps() -> None:
    h = stage_heatmap([0, 0, 3, 5, 5, 5], (2, 3))
    np.testing.assert_allclose(h, [[2 / 3, 0, 0], [1 / 3, 0, 1]])
    combined = combine_heatmaps([((112, 112), [0, 1, 2]), ((56, 56), [0]), ((28, 28), [783]), ((14, 14), [0])])
    assert combined.shape == (28, 28) and combined.max() == pytest.approx(1.0)
    assert combined[0, 0] == combined.max() and combined[27, 27] > 0 and combined[10, 10] == 0


def test_overlay_marks_only_the_crop(predictor: Predictor) -> None:
    im = sticker(7, (120, 60)).convert("RGB")
    [pred] = predictor.predict([im])
    out = heatmap_overlay(im, pred.explanation)
    assert out.size == im.size
    a, b = np.asarray(im, dtype=int), np.asarray(out, dtype=int)
    left, _, right, _ = (int(round(c)) for c in pred.explanation.crop_box)
    assert (a[:, : left - 1] == b[:, : left - 1]).all() and (a[:, right + 1 :] == b[:, right + 1 :]).all()
    assert (a[:, left:right] != b[:, left:right]).any()


def test_front_door_and_variant_names(checkpoint: Path) -> None:
    assert mghft.load_predictor is load_predictor
    with pytest.warns(UserWarning, match="random"):
        p = mghft.load_predictor("mghft_tiny", device="cpu")
    assert p.class_names == CLASSES and p.preprocess.size == 64
    info = load_predictor(checkpoint, device="cpu").info()
    assert info["metrics"] == {"test_no_views": {"accuracy": 0.5}} and info["classes"] == CLASSES


def test_missing_text_encoder_leaves_bare_images_working(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mghft.models import factory
    from mghft.models.text import TextEncoderUnavailable

    def unavailable(*args: object, **kwargs: object) -> None:
        raise TextEncoderUnavailable("bert-base-uncased is not in the cache")

    monkeypatch.setattr(factory.TextEncoder, "from_config", unavailable)
    with pytest.warns(UserWarning, match="without views"):
        p = load_predictor(checkpoint, device="cpu")
    assert p.model.text_encoder is None
    assert p.predict([sticker(1)])[0].view_source == "absent"
    with pytest.raises(ValueError, match="without its text encoder"):
        p.predict([sticker(1)], [DESCRIPTION])
