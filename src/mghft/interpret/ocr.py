"""Offline OCR for the offline interpreter: ``rapidocr`` (models in the wheel), keeping only confident readings.

A sticker is mostly a drawn face, and a text recogniser shown a face reads its eyes and mouth as letters
(``"O-C"``, ``"00"``, ``"UXU 0.0"``, a lone ``"Q"`` for a round face). Each line the recogniser returns is kept only
when all of these hold (see :func:`judge_reading`):

* its recognition score is at least :data:`MIN_SCORE`;
* it has at least two letters or digits (one Chinese character is enough);
* it is not face-sized: a line with fewer than three letters or digits whose box is taller than
  :data:`MAX_SHORT_LINE_HEIGHT` of the image is a face, not a caption;
* it is not emoticon-like: made only of characters faces are read as (``0 O o U u X x V v W w C c D P p 3`` and
  ``. - _ ^ < > = ~ : ;``) with at least one eye or mouth mark (a digit ``0`` or punctuation);
* its script is supported: the bundled models read Latin letters, digits and Chinese characters. A line holding
  letters of another script (Greek, Cyrillic, Hebrew, Arabic, Hangul, kana ...) is dropped and the result says
  that there was text the reader could not read.

``benchmarks/bench_ocr.py`` measures these rules on rendered emoji faces with and without captions.
"""

from __future__ import annotations

import os
import threading
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MIN_SCORE = 0.9
"""Lowest recognition score kept (captions in Pillow's font score 0.94-1.0; face misreadings 0.5-0.96)."""
MAX_SHORT_LINE_HEIGHT = 0.4
"""Fraction of the image height above which a line of one or two characters is taken for a face."""
SUPPORTED_SCRIPTS = "Latin letters, digits and Chinese characters"
"""What the bundled recognition model reads."""

_FACE_CHARS = set("0OoUuXxVvWwCcDPp3.-_^<>=~:;°·' ")
_FACE_MARKS = set("0.-_^<>=~:;°·'")
_LOCK = threading.Lock()
_ENGINE: Any = None


@dataclass(frozen=True)
class Reading:
    """One text line the recogniser returned.

    Attributes:
        text: the line as read.
        score: recognition confidence in 0..1.
        box: ``(left, top, right, bottom)`` in pixels.
    """

    text: str
    score: float
    box: tuple[float, float, float, float]


@dataclass
class OcrResult:
    """What the offline reader found in one image.

    Attributes:
        text: the kept lines joined top to bottom (``""`` when none).
        kept: the kept readings.
        dropped: the other readings with the reason (``low confidence``, ``too short``, ``face-sized``,
            ``emoticon-like``, ``unsupported script``).
        unreadable: text was seen that could not be read (an unsupported script, or a caption-shaped line read
            with low confidence).
    """

    text: str = ""
    kept: list[Reading] = field(default_factory=list)
    dropped: list[tuple[Reading, str]] = field(default_factory=list)
    unreadable: bool = False


def _is_cjk(ch: str) -> bool:
    return "CJK" in unicodedata.name(ch, "") and unicodedata.category(ch) == "Lo"


def _supported_letter(ch: str) -> bool:
    """Latin (any accent), digits and Chinese characters; other letters belong to scripts the model cannot read."""
    if not ch.isalpha():
        return True
    name = unicodedata.name(ch, "")
    return name.startswith("LATIN") or name.startswith("FULLWIDTH LATIN") or _is_cjk(ch)


def judge_reading(reading: Reading, image_height: int, *, min_score: float = MIN_SCORE) -> str:
    """``""`` to keep a reading, else why it is dropped (see the module rules)."""
    text = reading.text.strip()
    if not all(_supported_letter(ch) for ch in text):
        return "unsupported script"
    if reading.score < min_score:
        return "low confidence"
    alnum = [ch for ch in text if ch.isalnum()]
    if len(alnum) < 2 and not (len(alnum) == 1 and _is_cjk(alnum[0])):
        return "too short"
    height = reading.box[3] - reading.box[1]
    if len(alnum) < 3 and height > MAX_SHORT_LINE_HEIGHT * image_height:
        return "face-sized"
    if set(text) <= _FACE_CHARS and set(text) & _FACE_MARKS:
        return "emoticon-like"
    return ""


def _caption_shaped(reading: Reading, image_height: int) -> bool:
    left, top, right, bottom = reading.box
    height = bottom - top
    return right - left >= 1.5 * height and height <= MAX_SHORT_LINE_HEIGHT * image_height


def filter_readings(readings: list[Reading], image_height: int, *, min_score: float = MIN_SCORE) -> OcrResult:
    """Keep the confident readings (module rules), in top-to-bottom order."""
    result = OcrResult()
    for r in sorted(readings, key=lambda r: (r.box[1], r.box[0])):
        reason = judge_reading(r, image_height, min_score=min_score)
        if reason:
            result.dropped.append((r, reason))
            if reason == "unsupported script" or (reason == "low confidence" and _caption_shaped(r, image_height)):
                result.unreadable = True
        else:
            result.kept.append(r)
    result.text = " ".join(r.text.strip() for r in result.kept)
    return result


def _engine() -> Any:
    global _ENGINE
    if _ENGINE is None:
        from rapidocr import RapidOCR

        # Stickers are small: detect at their own size (the default upscales the short side to 736 px), skip the
        # 180-degree text classifier, keep onnxruntime to a few threads, and return low-score lines too (they are
        # judged here, and tell that unreadable text is present).
        _ENGINE = RapidOCR(
            params={
                "Global.log_level": "error",
                "Global.use_cls": False,
                "Global.text_score": 0.3,
                "Det.limit_type": "max",
                "Det.limit_side_len": 640,
                "EngineConfig.onnxruntime.intra_op_num_threads": min(4, os.cpu_count() or 1),
            }
        )
    return _ENGINE


def raw_readings(image: Any) -> list[Reading]:
    """Every line the recogniser returns for an image (``PIL.Image``), unfiltered.

    Raises:
        ImportError: ``rapidocr`` is not installed (``pip install 'mghft[ocr]'``).
    """
    with _LOCK:  # one engine per process; onnxruntime sessions are not shared across threads here
        result = _engine()(np.asarray(image.convert("RGB"))[:, :, ::-1])  # RGB -> BGR, as OpenCV expects
    texts = getattr(result, "txts", None) or ()
    scores = getattr(result, "scores", None) or ()
    boxes = getattr(result, "boxes", None)
    out = []
    for i, (text, score) in enumerate(zip(texts, scores, strict=False)):
        if not text or not text.strip():
            continue
        pts = np.asarray(boxes[i], dtype=np.float64) if boxes is not None else np.zeros((1, 2))  # (4, 2) corners
        box = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))
        out.append(Reading(text, float(score), box))
    return out


def read_confident_text(image: Any, *, min_score: float = MIN_SCORE) -> OcrResult:
    """The confident in-image text of an image (``PIL.Image``), with what was dropped and why.

    Raises:
        ImportError: ``rapidocr`` is not installed (``pip install 'mghft[ocr]'``).
    """
    return filter_readings(raw_readings(image), image.height, min_score=min_score)
