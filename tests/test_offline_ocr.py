"""The offline OCR keeps confident readings only: faces are not text, other scripts are said to be unreadable."""

from __future__ import annotations

import random

import pytest

from mghft.interpret.ocr import Reading, filter_readings, judge_reading

H = 160  # image height of the synthetic readings


def _r(text: str, score: float, top: float, bottom: float, left: float = 20, right: float = 140) -> Reading:
    return Reading(text, score, (left, top, right, bottom))


@pytest.mark.parametrize(
    ("reading", "reason"),
    [
        (_r("O-C", 0.97, 30, 110, 20, 120), "face-sized"),
        (_r("O-C", 0.97, 60, 90, 40, 100), "emoticon-like"),
        (_r("00", 0.99, 40, 80, 40, 110), "emoticon-like"),
        (_r("UXU 0.0", 0.95, 30, 100), "emoticon-like"),
        (_r("Q", 0.96, 10, 150), "too short"),
        (_r("3", 0.98, 50, 120, 40, 80), "too short"),
        (_r("Se", 0.93, 20, 150), "face-sized"),
        (_r("香", 0.75, 20, 150), "low confidence"),
        (_r("YELα σOU", 0.95, 120, 150), "unsupported script"),
        (_r("ПРИВЕТ", 0.99, 120, 150), "unsupported script"),
        (_r("SO HAPPY!", 0.99, 125, 150), ""),
        (_r("wow", 0.97, 125, 150), ""),
        (_r("OK", 0.99, 125, 150), ""),
        (_r("好", 0.97, 120, 150, 60, 90), ""),
        (_r("哈哈", 0.99, 120, 150), ""),
    ],
)
def test_each_reading_is_judged(reading: Reading, reason: str) -> None:
    assert judge_reading(reading, H) == reason


def test_unreadable_text_is_reported_not_kept() -> None:
    result = filter_readings([_r("DI7U", 0.6, 120, 148, 30, 100), _r("3", 0.9, 40, 120, 40, 80)], H)
    assert result.text == "" and result.unreadable
    faces_only = filter_readings([_r("O-C", 0.97, 30, 110, 20, 120), _r("Q", 0.6, 10, 150)], H)
    assert faces_only.text == "" and not faces_only.unreadable
    both = filter_readings([_r("love it", 0.99, 130, 150), _r("LOL", 0.99, 2, 25), _r("00", 0.9, 50, 90)], H)
    assert both.text == "LOL love it"  # top to bottom
    assert [reason for _, reason in both.dropped] == ["emoticon-like"]


def test_rendered_faces_read_no_text_and_captions_read_exactly() -> None:
    pytest.importorskip("rapidocr", reason="the offline OCR is the optional 'ocr' extra")
    from mghft.data.images import to_rgb
    from mghft.demo.dataset import artworks, compose_sticker, load_emoji_emotions, render_artwork
    from mghft.interpret.backends import OfflineBackend
    from mghft.interpret.imaging import prepare_image
    from mghft.interpret.ocr import raw_readings

    arts, mapping = artworks(), {e.name: e for e in load_emoji_emotions()}
    # Faces the recogniser reads letters in ("Q", "3", "w", "G"): the raw lines have text, the kept ones none.
    raw_text = 0
    for i, name, art in [(17, "face savoring food", "openmoji"), (16, "kissing face with smiling eyes", "openmoji"),
                         (13, "kissing face with closed eyes", "twemoji")]:  # fmt: skip
        face = to_rgb(compose_sticker(render_artwork(arts[art], mapping[name].codepoint), random.Random(i), None))
        readings = raw_readings(face)
        raw_text += any(r.score >= 0.5 for r in readings)
        assert filter_readings(readings, face.height).text == "", (name, readings)
    assert raw_text >= 2  # what the interpreter used to report as the sticker's text
    art = render_artwork(arts["twemoji"], mapping["grinning face with big eyes"].codepoint)
    sticker = to_rgb(compose_sticker(art, random.Random(1), "so happy"))
    import io

    buf = io.BytesIO()
    sticker.save(buf, "PNG")
    desc = OfflineBackend().describe_sync(prepare_image(buf.getvalue()))
    assert desc.ocr_text.casefold() == "so happy"
    assert desc.views["intention"] == f'The sticker\'s written message reads: "{desc.ocr_text}".'
