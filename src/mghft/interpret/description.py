"""The description record: four view texts of one sticker, with their provenance, and the checks every answer passes.

Whatever an LLM (or the offline backend) returns goes through :func:`clean_text` and :func:`validate_views` before it
can become a :class:`Description`: control characters are stripped, whitespace is collapsed to one line, the public
code's section headers are removed (so an answer can never forge a section), and each field is capped in length. A
view that is empty after cleaning makes the whole answer invalid; it is never stored as an empty description.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import Any

from mghft.views import SECTION_HEADER_RE, VIEWS

VIEW_MAX_CHARS = 1000
"""Cap on one view's text after cleaning; longer answers are cut at a word boundary."""

OCR_MAX_CHARS = 500
"""Cap on the in-image text."""

_HEADER_RE = SECTION_HEADER_RE  # the four headers up to typography (case, ’, spacing)
_SPACE_RE = re.compile(r"\s+")


class InvalidAnswer(ValueError):
    """An answer that cannot become a description (missing or empty view, wrong type)."""


def image_sha256(source: str | PathLike[str] | bytes | bytearray | memoryview) -> str:
    """SHA-256 (hex) of an image file's bytes, or of the given bytes. This is the key of the description store."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    with open(Path(source), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def utc_now() -> str:
    """Current UTC time in ISO 8601, to the second, with a ``+00:00`` offset."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def clean_text(text: Any, max_chars: int) -> str:
    """Make model output safe to store and to feed a text encoder.

    Drops control and format characters (Unicode categories Cc, Cf, Cs, Co), removes the public code's section
    headers, collapses all whitespace to single spaces and cuts to ``max_chars`` at a word boundary.
    """
    if text is None:
        return ""
    if not isinstance(text, str):
        text = str(text)
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if ch in "\t\n\r\v\f" else ch for ch in text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co"))
    text = _HEADER_RE.sub(" ", text)
    text = _SPACE_RE.sub(" ", text).strip()
    if len(text) > max_chars:
        cut = text[:max_chars]
        space = cut.rfind(" ")
        text = (cut[:space] if space > max_chars // 2 else cut).rstrip()
    return text


def validate_views(views: Mapping[str, Any]) -> dict[str, str]:
    """Clean every view and check that all of :data:`mghft.views.VIEWS` are present and non-empty.

    Raises:
        InvalidAnswer: naming the missing or empty views.
    """
    cleaned = {view: clean_text(views.get(view), VIEW_MAX_CHARS) for view in VIEWS}
    empty = [view for view, text in cleaned.items() if not text]
    if empty:
        raise InvalidAnswer(f"missing or empty view(s): {', '.join(empty)}")
    return cleaned


@dataclass
class Description:
    """The four views of one image, keyed by the image's content hash.

    Attributes:
        image_sha256: SHA-256 of the image file bytes.
        views: view name (``mghft.views.VIEWS``) -> description text.
        ocr_text: text written inside the image, ``""`` when none or not read.
        backend: which backend wrote it (``openai-compatible``, ``offline``, ``official-import``, ...).
        model: the model that answered, as the server named it.
        prompt_version: version of the package prompt used (``mghft.interpret.prompts``).
        created: ISO 8601 UTC time of the answer.
        usage: token and request counts spent on this image, retries included.
    """

    image_sha256: str
    views: dict[str, str]
    ocr_text: str = ""
    backend: str = ""
    model: str = ""
    prompt_version: str = ""
    created: str = field(default_factory=utc_now)
    usage: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{64}", self.image_sha256 or ""):
            raise ValueError(f"image_sha256 must be 64 lowercase hex digits, got {self.image_sha256!r}")
        self.views = validate_views(self.views)
        self.ocr_text = clean_text(self.ocr_text, OCR_MAX_CHARS)
        self.usage = {str(k): int(v) for k, v in (self.usage or {}).items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the JSONL export format)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Description:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        return cls(
            image_sha256=str(data["image_sha256"]),
            views=dict(data["views"]),
            ocr_text=str(data.get("ocr_text") or ""),
            backend=str(data.get("backend") or ""),
            model=str(data.get("model") or ""),
            prompt_version=str(data.get("prompt_version") or ""),
            created=str(data.get("created") or utc_now()),
            usage=dict(data.get("usage") or {}),
        )
