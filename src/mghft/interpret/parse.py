"""Model answers: one normaliser for every server's message shape, then tolerant parsing of views and labels.

**Normalising** (:func:`normalise_message`, then :func:`check_answer`; the client runs both on every answer, so
``mghft interpret`` and ``mghft zeroshot`` agree on what a valid answer is). Servers put the answer in
different places: ``content`` as a string, or as a list of parts (text parts are joined in order; ``thinking`` /
``reasoning`` parts are set aside); reasoning models add ``reasoning_content`` or ``reasoning`` fields, or a
``<think>…</think>`` block (sometimes only its closing tag) before the answer, or an unparsed gpt-oss
``analysis`` channel. Reasoning is kept apart from the answer and **never parsed as the answer**: it drafts and
weighs several candidates, so reading a label or a view from it would score the model's doubts. An answer is
*malformed* (retried, then recorded as a failure that stays out of metrics and is retried by the next run) when
the server says it stopped on its token limit (``finish_reason: length``), on an error (``error``) or on a content
filter; when it refused; or when nothing is left once the reasoning is set aside, including the case where
``content`` is null and the whole answer sits in a reasoning field (that model ran out of tokens while thinking,
or the server's reasoning parser misplaced the answer: raise ``--max-tokens`` or fix the parser).

**Parsing**. Servers that honour ``response_format`` return clean JSON; others wrap it in code fences, add a
sentence before it, or ignore the format and write labelled paragraphs. All of these are accepted. What cannot be
read raises :class:`MalformedAnswer`, which the client retries and the runner finally records as a failure.
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


# --- normalising what the server sent -----------------------------------------------------------------------------

REASONING_FIELDS: tuple[str, ...] = ("reasoning_content", "reasoning", "thinking")
"""Message fields in which servers return a reasoning model's thoughts (vLLM, SGLang, DeepSeek, OpenRouter, Ollama)."""

_TEXT_PART_TYPES = frozenset({"text", "output_text"})
_REASONING_PART_TYPES = frozenset({"thinking", "reasoning", "reasoning_text", "redacted_thinking", "summary_text"})
_THINK_TAGS = ("think", "thinking", "reasoning", "thought")
_TAGS = "|".join(_THINK_TAGS)
_THINK_BLOCK_RE = re.compile(rf"<({_TAGS})>(.*?)</\1>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN_RE = re.compile(rf"<({_TAGS})>", re.IGNORECASE)
_THINK_CLOSE_RE = re.compile(rf"</({_TAGS})>", re.IGNORECASE)
_HARMONY_FINAL = "<|channel|>final<|message|>"
_HARMONY_END_RE = re.compile(r"<\|(?:end|return|call)\|>.*\Z", re.DOTALL)

MALFORMED_FINISH_REASONS: dict[str, str] = {
    "length": "answer cut at the token limit (finish_reason length); raise --max-tokens",
    "max_tokens": "answer cut at the token limit (finish_reason max_tokens); raise --max-tokens",
    "error": "the server reported an error instead of an answer (finish_reason error)",
    "content_filter": "the server's content filter stopped the answer (finish_reason content_filter)",
}
"""Finish reasons that make an answer malformed whatever its content."""


@dataclass(frozen=True)
class NormalisedAnswer:
    """One message, reduced to the answer text and what was set aside.

    Attributes:
        text: the answer: text parts joined, reasoning blocks removed, stripped.
        reasoning: what the model thought before answering (reasoning fields, parts and think blocks), joined.
        refusal: the server's ``refusal`` text, if any.
    """

    text: str
    reasoning: str
    refusal: str


def _part_text(part: Any) -> tuple[str, str]:
    """``(answer text, reasoning text)`` of one content part."""
    if isinstance(part, str):
        return part, ""
    if not isinstance(part, dict):
        return "", ""
    kind = str(part.get("type", "text")).lower()
    if kind in _REASONING_PART_TYPES:
        for key in ("thinking", "reasoning", "text", "summary"):
            if isinstance(part.get(key), str):
                return "", part[key]
        return "", ""
    if kind in _TEXT_PART_TYPES and isinstance(part.get("text"), str):
        return part["text"], ""
    if kind in _TEXT_PART_TYPES and isinstance(part.get("text"), dict):  # {"text": {"value": ...}}
        value = part["text"].get("value")
        return (value, "") if isinstance(value, str) else ("", "")
    return "", ""  # images, audio, tool calls: not an answer


def split_reasoning(text: str) -> tuple[str, str]:
    """``(answer, reasoning)`` of a content string: think blocks, an orphan closing tag and harmony channels."""
    reasoning: list[str] = []
    if _HARMONY_FINAL in text:  # gpt-oss output whose channels the server did not parse
        before, _, after = text.rpartition(_HARMONY_FINAL)
        reasoning.extend(re.findall(r"<\|message\|>(.*?)(?=<\|[a-z]+\|>|\Z)", before, re.DOTALL))
        text = _HARMONY_END_RE.sub("", after)

    def keep(match: re.Match[str]) -> str:
        reasoning.append(match.group(2))
        return " "

    text = _THINK_BLOCK_RE.sub(keep, text)
    close = _THINK_CLOSE_RE.search(text)
    if close is not None:  # "…</think> answer": the opening tag was in the chat template
        reasoning.append(text[: close.start()])
        text = text[close.end() :]
    opened = _THINK_OPEN_RE.search(text)
    if opened is not None:  # "<think> …" never closed: the model stopped while thinking
        reasoning.append(text[opened.end() :])
        text = text[: opened.start()]
    return text.strip(), "\n".join(r.strip() for r in reasoning if r.strip())


def normalise_message(message: Any) -> NormalisedAnswer:
    """Reduce a chat-completions ``message`` (a dict as sent by the server) to its answer and its reasoning.

    ``content`` may be a string, ``None`` or a list of parts (strings or ``{"type": ..., ...}`` dicts); reasoning
    comes from :data:`REASONING_FIELDS`, reasoning parts, and think blocks inside the text.
    """
    if not isinstance(message, dict):
        return NormalisedAnswer("", "", "")
    content = message.get("content")
    texts: list[str] = []
    reasoning: list[str] = []
    for name in REASONING_FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value.strip():
            reasoning.append(value)
    details = message.get("reasoning_details")
    if isinstance(details, list):
        for item in details:
            _, thought = _part_text({**item, "type": "reasoning"} if isinstance(item, dict) else item)
            if thought.strip():
                reasoning.append(thought)
    parts = content if isinstance(content, list) else [content] if isinstance(content, str) else []
    for part in parts:
        answer, thought = _part_text(part)
        texts.append(answer)
        if thought.strip():
            reasoning.append(thought)
    answer, thoughts = split_reasoning("".join(texts))
    if thoughts:
        reasoning.append(thoughts)
    refusal = message.get("refusal")
    return NormalisedAnswer(
        text=answer,
        reasoning="\n".join(r.strip() for r in reasoning),
        refusal=refusal.strip() if isinstance(refusal, str) else "",
    )


def check_answer(text: str, reasoning: str, refusal: str, finish_reason: str) -> None:
    """Raise :class:`MalformedAnswer` unless the normalised answer can be parsed at all.

    Malformed: a finish reason in :data:`MALFORMED_FINISH_REASONS`, a refusal, or no text outside the reasoning.
    """
    reason = MALFORMED_FINISH_REASONS.get(finish_reason.strip().lower())
    if reason:
        raise MalformedAnswer(reason)
    if refusal:
        raise MalformedAnswer(f"the model refused: {refusal[:200]}")
    if not text.strip():
        if reasoning.strip():
            raise MalformedAnswer(
                "no answer outside the reasoning (content empty, the reasoning is not read as an answer); "
                "raise --max-tokens or check the server's reasoning parser"
            )
        raise MalformedAnswer("empty answer")


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
