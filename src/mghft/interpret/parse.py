"""Tolerant parsing of model answers: the view JSON (or labelled text) and a zero-shot label in free text.

Servers that honour ``response_format`` return clean JSON; others wrap it in code fences, add a sentence before it,
or ignore the format and write labelled paragraphs. All of these are accepted. What cannot be read raises
:class:`MalformedAnswer`, which the client retries and the runner finally records as a failure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mghft.interpret.description import InvalidAnswer, validate_views
from mghft.views import VIEWS, parse_official_text


class MalformedAnswer(ValueError):
    """An answer that is not a usable description (not JSON, truncated, a view missing, ...)."""


_KEY_ALIASES: dict[str, str] = {
    "intention": "intention",
    "intentions": "intention",
    "intent": "intention",
    "style": "style",
    "visual_style": "style",
    "main_role": "main_role",
    "mainrole": "main_role",
    "role": "main_role",
    "main_character": "main_role",
    "subject": "main_role",
    "posture_expression": "posture_expression",
    "posture_and_expression": "posture_expression",
    "posture": "posture_expression",
    "expression": "posture_expression",
    "gesture": "posture_expression",
    "posture_expressions": "posture_expression",
    "text": "text",
    "ocr": "text",
    "ocr_text": "text",
    "in_image_text": "text",
    "image_text": "text",
}

_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_LABEL_LINE_RE = re.compile(
    r"^[\s>*#\-\d.)]*\**\s*"
    r"(intentions?|style|main[ _]role|posture(?:\s*(?:and|&)?\s*|_(?:and_)?)expression|posture|gesture|expression|text)"
    r"\s*\**\s*[:\-–]\s*\**\s*(.*)$",
    re.IGNORECASE,
)


def _norm_key(key: str) -> str:
    return re.sub(r"[\s\-]+", "_", key.strip().lower())


@dataclass(frozen=True)
class ParsedViews:
    """Four cleaned views and the in-image text from one answer."""

    views: dict[str, str]
    ocr_text: str


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object found in ``text``: fenced blocks first, then from each ``{``."""
    candidates = [m.group(1) for m in _FENCE_RE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    for chunk in candidates:
        start = chunk.find("{")
        while start != -1:
            try:
                obj, _ = decoder.raw_decode(chunk, start)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                found.append(obj)
                break
            start = chunk.find("{", start + 1)
    return found


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_as_text(v) for v in value)
    if value is None:
        return ""
    return str(value)


def _from_mapping(obj: dict[str, Any]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for key, value in obj.items():
        name = _KEY_ALIASES.get(_norm_key(str(key)))
        if name and name not in fields:
            fields[name] = _as_text(value)
    return fields


def _from_labelled_lines(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        match = _LABEL_LINE_RE.match(line)
        if match:
            current = _KEY_ALIASES[_norm_key(match.group(1).replace("&", "and"))]
            fields[current] = match.group(2).strip()
        elif current and line.strip():
            fields[current] += " " + line.strip()
    return fields


def parse_views_answer(text: str | None, *, truncated: bool = False) -> ParsedViews:
    """Read the four views (and in-image text) from an answer.

    Accepts a JSON object (bare, fenced or surrounded by prose, with common key spellings), labelled lines
    (``Intention: ...``) or the public code's ``#The sticker's ...`` sections.

    Args:
        text: the message content.
        truncated: the server stopped on its length limit; such an answer is never accepted.

    Raises:
        MalformedAnswer: when the answer is empty, truncated, or lacks a view.
    """
    if truncated:
        raise MalformedAnswer("answer truncated at the token limit")
    if not text or not text.strip():
        raise MalformedAnswer("empty answer")
    fields: dict[str, str] = {}
    for obj in _json_objects(text):
        fields = _from_mapping(obj)
        if all(view in fields for view in VIEWS):
            break
    if not all(view in fields for view in VIEWS):
        official = parse_official_text(text)
        fallback = official if len(official) == len(VIEWS) else _from_labelled_lines(text)
        if fallback or not fields:
            fields = fallback
    try:
        views = validate_views(fields)
    except InvalidAnswer as err:
        kind = "JSON" if fields else "no JSON object or labelled views"
        raise MalformedAnswer(f"{kind}: {err}" if fields else kind) from None
    return ParsedViews(views=views, ocr_text=fields.get("text", ""))


# --- zero-shot labels ---------------------------------------------------------------------------------------------

_LABEL_SYNONYMS: dict[str, tuple[str, ...]] = {
    "anger": ("angry", "anger", "mad", "furious", "rage", "annoyed", "irritated"),
    "disgust": ("disgust", "disgusted", "disgusting", "gross", "hate", "hatred", "contempt"),
    "fear": ("fear", "afraid", "scared", "fearful", "frightened", "terrified", "anxious"),
    "happiness": ("happiness", "happy", "joy", "joyful", "glad", "cheerful", "delighted"),
    "neutral": ("neutral", "calm", "indifferent"),
    "sadness": ("sadness", "sad", "sorrow", "unhappy", "upset", "crying"),
    "surprise": ("surprise", "surprised", "astonished", "shocked", "amazed"),
    "love": ("love", "loving", "affection", "affectionate"),
    "hate": ("hate", "hatred"),
    "sorrow": ("sorrow", "sad", "sadness", "grief"),
}

_NEGATORS = frozenset({"not", "no", "never", "nor", "than", "isn", "aren", "doesn", "without"})
"""Words that, within two words before a label, mean it is not the answer ("not sad", "rather than angry")."""

_MARKER_RE = re.compile(r"(?:label|emotion|answer|category|class)\s*(?:is)?\s*[:=\-]?\s*\**\s*\"?([A-Za-z]+)", re.I)


def _label_terms(labels: Sequence[str]) -> dict[str, int]:
    """Word -> label index; the label names themselves win over synonyms, and a synonym shared by labels is dropped."""
    terms: dict[str, int] = {}
    ambiguous: set[str] = set()
    for index, label in enumerate(labels):
        for word in _LABEL_SYNONYMS.get(label.lower(), ()):
            if word in terms and terms[word] != index:
                ambiguous.add(word)
            terms.setdefault(word, index)
    for word in ambiguous:
        terms.pop(word, None)
    for index, label in enumerate(labels):
        terms[label.lower()] = index
    return terms


def parse_label(text: str | None, labels: Sequence[str]) -> int | None:
    """The label index an answer names, or ``None`` when it names none (or several, without saying which).

    Order of evidence: a JSON ``label`` field; an explicit ``label:``/``emotion:``/``answer:`` marker; the only label
    word (or common synonym) in the answer; the only one in its first sentence.
    """
    if not text:
        return None
    terms = _label_terms(labels)
    for obj in _json_objects(text):
        for key in ("label", "emotion", "answer", "class", "category"):
            value = obj.get(key)
            if isinstance(value, str) and value.strip().lower() in terms:
                return terms[value.strip().lower()]
    for match in _MARKER_RE.finditer(text):
        word = match.group(1).lower()
        if word in terms:
            return terms[word]

    def mentioned(chunk: str) -> list[int]:
        words = re.findall(r"[a-z]+", chunk.lower())
        hits = (
            terms[w] for i, w in enumerate(words) if w in terms and not _NEGATORS.intersection(words[max(0, i - 2) : i])
        )
        return list(dict.fromkeys(hits))

    found = mentioned(text)
    if len(found) == 1:
        return found[0]
    if found:
        first_sentence = re.split(r"(?<=[.!?])\s|\n", text.strip(), maxsplit=1)[0]
        first = mentioned(first_sentence)
        if len(first) == 1:
            return first[0]
    return None
