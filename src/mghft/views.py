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
_SECTION_RE = re.compile("(" + "|".join(re.escape(h) for h in OFFICIAL_HEADERS.values()) + ")")


def parse_official_text(text: str) -> dict[str, str]:
    """Split a public-code description into views.

    Text before the first header is dropped, as the public code does. A view whose header is missing is absent
    from the result; a header that appears twice keeps its last section. Leading ``:`` and whitespace after a
    header are stripped.
    """
    parts = _SECTION_RE.split(text)
    views: dict[str, str] = {}
    for header, body in zip(parts[1::2], parts[2::2], strict=True):
        views[_HEADER_TO_VIEW[header]] = body.strip().lstrip(":").strip()
    return views


def format_official_text(views: Mapping[str, str]) -> str:
    """Write views in the public code's format: one ``#The sticker's ...`` section per present view, in order."""
    unknown = set(views) - set(VIEWS)
    if unknown:
        raise ValueError(f"unknown view(s) {sorted(unknown)}; expected some of {list(VIEWS)}")
    return "\n".join(f"{OFFICIAL_HEADERS[v]}: {views[v].strip()}" for v in VIEWS if views.get(v, "").strip())


def official_section_texts(text: str) -> list[str]:
    """The per-view strings the public code feeds its text encoder: header glued to the stripped section body."""
    parts = _SECTION_RE.split(text)
    return [header + body.strip() for header, body in zip(parts[1::2], parts[2::2], strict=True)]
