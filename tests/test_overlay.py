"""Explanation overlays: legible on dark and transparent stickers, labelled with the prediction and a legend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mghft.cli import main
from mghft.serve.overlay import heat_colours, heatmap_overlay, labelled_overlay


class _Explanation:
    crop_box = (0.0, 0.0, 64.0, 64.0)
    heatmap = np.zeros((8, 8))
    heatmap[2:4, 2:4] = 1.0  # pixels 16..32: the hottest patch


def _sticker(colour: tuple[int, int, int, int]) -> Image.Image:
    """A disc on a transparent background, flattened on white as the image loader does."""
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse((4, 4, 60, 60), fill=colour)
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, (0, 0), rgba)
    return flat


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def test_the_hot_patch_is_bright_and_coloured_on_a_black_sticker() -> None:
    out = np.asarray(heatmap_overlay(_sticker((0, 0, 0, 255)), _Explanation()), dtype=float)
    hot, cold = out[24, 24], out[44, 44]
    assert _luminance(hot) > 150  # the old red tint over black stayed below 80
    assert hot[0] - hot[2] > 100  # yellow/orange, not grey
    assert 60 < _luminance(cold) < 100  # the sticker stays visible, lifted to a mid grey


def test_the_hot_patch_stands_out_from_a_transparent_stickers_white() -> None:
    out = np.asarray(heatmap_overlay(_sticker((0, 0, 0, 0)), _Explanation()), dtype=float)
    hot, background = out[24, 24], out[2, 2]
    assert hot[0] - hot[2] > 100 and abs(_luminance(hot) - _luminance(background)) > 20
    assert (background < 200).all()  # white compressed to grey, so the colours read against it


def test_colour_scale_runs_from_violet_to_yellow() -> None:
    low, mid, high = heat_colours(np.array([0.0, 0.5, 1.0])).astype(float)
    assert _luminance(low) < _luminance(mid) < _luminance(high)
    assert high[0] > 200 and high[1] > 200 and high[2] < 100


def test_labelled_overlay_has_a_caption_with_label_and_legend() -> None:
    out = labelled_overlay(_sticker((20, 20, 20, 255)), _Explanation(), "sadness 82%")
    assert out.width == 320 and out.height > 320  # scaled up for a readable caption, strip below
    strip = np.asarray(out, dtype=int)[320:]
    assert (strip.min(axis=2) > 230).sum() > 50  # white caption text on the dark strip
    legend = heat_colours(np.array([1.0]))[0]
    assert (np.abs(strip - legend).sum(axis=2) < 30).sum() >= 6  # the colour bar's hot end


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_serve_api import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("overlay") / "tiny")


def test_predict_explain_writes_labelled_overlays(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _sticker((0, 0, 0, 255)).save(folder / "dark.png")
    out = tmp_path / "labels.csv"
    rc = main(["predict", str(folder), "--model", str(checkpoint), "--out", str(out), "--explain", "--no-progress",
               "--workers", "64"])  # fmt: skip
    assert rc == 0
    [png] = (tmp_path / "labels_explain").glob("*.png")
    image = Image.open(png)
    assert image.width == 320 and image.height > 330
    assert png.name.endswith("_dark.png")
