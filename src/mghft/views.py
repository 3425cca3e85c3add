"""The four description views of MGHFT and the public code's text interchange format.

A view is one aspect of a sticker that the multimodal interpreter describes. Their order is the paper's and
fixes which backbone stage each view is injected into: view ``i`` goes to stage ``i + 1``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

VIEWS: tuple[str, ...] = ("intention", "style", "main_role", "posture_expression")
"""View names, in stage order (stage 1 ... stage 4)."""

VIEW_TITLES: dict[str, str] = {
    "intention": "intention",
    "style": "style",
    "main_role": "main role",
    "posture_expression": "posture and expression",
}
"""Human-readable view names."""

OFFICIAL_HEADERS: dict[str, str] = {
    "intention": "#The sticker's intention",
    "style": "#The sticker's style",
    "main_role": "#The sticker's main role",
    "posture_expression": "#The sticker's gesture",
}
"""Section headers of the public code's description text (its ``gesture`` is our ``posture_expression``)."""

_HEADER_TO_VIEW = {header: view for view, header in OFFICIAL_HEADERS.items()}
_HEADER_NAME_TO_VIEW = {
    "intention": "intention",
    "style": "style",
    "main role": "main_role",
    "gesture": "posture_expression",
}
_APOSTROPHES = "'\u2019\u2018`\u00b4\u02bc\u2032"
SECTION_HEADER_RE = re.compile(
    rf"(#[ \t]*the\s+sticker\s*[{_APOSTROPHES}]?\s*s\s+(?:intention|style|main\s+role|gesture))", re.IGNORECASE
)
"""A section header up to typography: ``#The sticker's intention``, ``# The Sticker’s main  role`` ..."""
_HEADER_LIKE_RE = re.compile(rf"#[ \t]*the\s+sticker\s*[{_APOSTROPHES}]?\s*s\b[^:\n#]{{0,40}}", re.IGNORECASE)


def _view_of(header: str) -> str:
    name = " ".join(header.lower().split()[-2:])
    return _HEADER_NAME_TO_VIEW[name] if name in _HEADER_NAME_TO_VIEW else _HEADER_NAME_TO_VIEW[name.split()[-1]]


def parse_official_text(text: str) -> dict[str, str]:
    """Split a public-code description into views.

    Headers are recognised up to typography: letter case, a typographic apostrophe (``’``) and spacing
    (``# The sticker's``). Text before the first header is dropped, as the public code does. A view whose header
    is missing is absent from the result; a header that appears twice keeps its last section. Leading ``:`` and
    whitespace after a header are stripped.
    """
    parts = SECTION_HEADER_RE.split(text)
    views: dict[str, str] = {}
    for header, body in zip(parts[1::2], parts[2::2], strict=True):
        views[_view_of(header)] = body.strip().lstrip(":").strip()
    return views


def unknown_section_headers(text: str) -> list[str]:
    """Header-like ``#The sticker's …`` phrases of ``text`` that are not one of the four sections (a typo, a
    section the public format does not have): a description holding one must not be read silently."""
    out = []
    for match in _HEADER_LIKE_RE.finditer(text):
        if not SECTION_HEADER_RE.match(text, match.start()):
            out.append(match.group(0).strip())
    return out


def format_official_text(views: Mapping[str, str]) -> str:
    """Write views in the public code's format: one ``#The sticker's ...`` section per present view, in order."""
    unknown = set(views) - set(VIEWS)
    if unknown:
        raise ValueError(f"unknown view(s) {sorted(unknown)}; expected some of {list(VIEWS)}")
    return "\n".join(f"{OFFICIAL_HEADERS[v]}: {views[v].strip()}" for v in VIEWS if views.get(v, "").strip())


def official_section_texts(text: str) -> list[str]:
    """The per-view strings the public code feeds its text encoder: header glued to the stripped section body."""
    parts = SECTION_HEADER_RE.split(text)
    return [header + body.strip() for header, body in zip(parts[1::2], parts[2::2], strict=True)]
