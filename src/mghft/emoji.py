"""Emoji tags for predictions, and the sticker-pack metadata files that carry them.

Chat platforms attach one to three emoji to every sticker of a pack and search stickers by them: WhatsApp's
sticker-pack ``contents.json`` (``sticker_packs[].stickers[].emojis``, at most 3) and Telegram's Bot API
``InputSticker`` (``emoji_list``, 1 to 20; packs made by hand usually carry 1 to 3). A prediction's tags are the
emoji of its most probable emotion and of the other emotions that are nearly as likely (:func:`emoji_tags`).

The emotion -> emoji mapping is per label set (:data:`DEFAULT_EMOJI` covers SER30K's and MET-MEME's classes),
stored in a checkpoint's ``config.json`` as ``emoji`` and overridable with a JSON file of ``{label: emoji}``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mghft.errors import MghftError, UsageError

DEFAULT_EMOJI: dict[str, str] = {
    # SER30K (anger, disgust, fear, happiness, neutral, sadness, surprise)
    "anger": "\U0001f620",  # 😠 angry face
    "disgust": "\U0001f922",  # 🤢 nauseated face
    "fear": "\U0001f628",  # 😨 fearful face
    "happiness": "\U0001f604",  # 😄 grinning face with smiling eyes
    "neutral": "\U0001f610",  # 😐 neutral face
    "sadness": "\U0001f622",  # 😢 crying face
    "surprise": "\U0001f632",  # 😲 astonished face
    # MET-MEME's sentiments beyond those (happiness, love, anger, sorrow, fear, hate, surprise)
    "love": "\u2764\ufe0f",  # ❤️ red heart
    "sorrow": "\U0001f62d",  # 😭 loudly crying face
    "hate": "\U0001f621",  # 😡 pouting face
}
"""Emotion name -> emoji for the label sets this package reads (SER30K, MET-MEME)."""

MAX_TAGS = 3
"""Most emoji per sticker (WhatsApp's limit)."""

PLATFORM_LIMITS: dict[str, tuple[int, int]] = {"whatsapp": (1, 3), "telegram": (1, 20)}
"""Emoji per sticker each platform accepts: WhatsApp's ``contents.json`` validator (1 to 3 ``emojis``) and Telegram
Bot API ``InputSticker.emoji_list`` (1 to 20)."""

SECONDARY_RATIO = 0.5
"""Another emotion is tagged too when its probability is at least this fraction of the top one's..."""

SECONDARY_MIN = 0.15
"""...and at least this probability."""


class PackFormatError(MghftError):
    """A sticker-pack metadata file that is not what its platform defines; the message names the field."""


class InvalidPackError(MghftError):
    """A sticker pack its platform would refuse after tagging (a sticker without emoji, too many, or an entry that
    is not one emoji); the message names each sticker and the rule."""


def is_one_emoji(text: str) -> bool:
    """Whether ``text`` is exactly one emoji: one grapheme cluster of emoji code points as Unicode's emoji data
    (UTS #51) defines them, ZWJ sequences, skin-tone modifiers, keycaps and flags included (the ``emoji`` library's
    tables)."""
    import emoji

    return isinstance(text, str) and bool(text) and emoji.is_emoji(text)


def sticker_problems(kind: str, emojis: Any) -> list[str]:
    """What ``kind`` (``whatsapp`` or ``telegram``) would refuse in one sticker's emoji list (empty: valid)."""
    low, high = PLATFORM_LIMITS[kind]
    field = "emojis" if kind == "whatsapp" else "emoji_list"
    if not isinstance(emojis, list) or not emojis:
        return [f"no {field} ({kind} requires {low} to {high} emoji per sticker)"]
    out = []
    if len(emojis) > high:
        out.append(f"{len(emojis)} emoji in {field} ({kind} allows {low} to {high})")
    out += [f"{field} entry {e!r} is not one emoji" for e in emojis if not is_one_emoji(e)]
    return out


def emoji_map(class_names: Sequence[str], override: Mapping[str, str] | None = None) -> dict[str, str]:
    """The emoji of each class: ``override`` first, then :data:`DEFAULT_EMOJI` (by lower-case name).

    Raises:
        UsageError: a class has no emoji (name it in an override), or the override names an unknown class or
            gives something that is not a short text.
    """
    override = dict(override or {})
    unknown = sorted(set(override) - set(class_names))
    if unknown:
        raise UsageError(
            f"emoji map names {unknown}, which are not classes of this model ({list(class_names)})",
            hint="use the model's class names as keys",
        )
    out: dict[str, str] = {}
    for c in class_names:
        e = override.get(c, DEFAULT_EMOJI.get(c.lower()))
        if e is None:
            raise UsageError(f"no emoji for class {c!r}", hint='give one with an emoji map file: {"' + c + '": "🙂"}')
        if not is_one_emoji(e):  # WhatsApp and Telegram refuse a pack whose sticker emoji are words or several
            raise UsageError(
                f"emoji map entry {c!r}: {e!r} is not one emoji (sticker packs take single emoji: a ZWJ sequence, "
                "skin tone or keycap counts as one)",
                hint='give one emoji per class, e.g. {"' + c + '": "🙂"}',
            )
        out[c] = e
    return out


def read_emoji_map(path: str | Path) -> dict[str, str]:
    """A ``{label: emoji}`` JSON file.

    Raises:
        UsageError: the file is missing, not JSON, or not an object of strings.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"emoji map {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"emoji map {path} is not JSON: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise UsageError(f'emoji map {path} must be a JSON object of label -> emoji, like {{"happiness": "😄"}}')
    return data


def emoji_tags(
    probabilities: Mapping[str, float],
    mapping: Mapping[str, str],
    *,
    max_tags: int = MAX_TAGS,
    ratio: float = SECONDARY_RATIO,
    minimum: float = SECONDARY_MIN,
) -> list[str]:
    """Emoji for one prediction: the top class's, then those of other classes with probability at least
    ``ratio`` x the top one's and at least ``minimum``, most probable first, distinct, at most ``max_tags``."""
    ranked = sorted(probabilities.items(), key=lambda kv: -kv[1])
    if not ranked:
        return []
    top = ranked[0][1]
    tags: list[str] = []
    for i, (label, p) in enumerate(ranked):
        if i and (p < ratio * top or p < minimum):
            break
        e = mapping.get(label)
        if e and e not in tags:
            tags.append(e)
        if len(tags) >= max_tags:
            break
    return tags


# ------------------------------------------------------------------------------------------------------------
# sticker-pack metadata


def _atomic_write_json(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackFormatError(f"{what} {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PackFormatError(f"{path}: not JSON ({e})") from None


def whatsapp_stickers(pack: str | Path) -> tuple[Path, Any, list[tuple[str, Path]]]:
    """Read a WhatsApp sticker-pack folder's ``contents.json``.

    Args:
        pack: the folder holding ``contents.json`` (or that file itself) and, per pack identifier, the sticker
            files (``<folder>/<identifier>/<image_file>``, WhatsApp's sample layout, or ``<folder>/<image_file>``).

    Returns:
        (the ``contents.json`` path, its parsed content, [(field path, sticker file)] for every sticker).

    Raises:
        PackFormatError: naming the field that is missing or of the wrong type, or a sticker file that is absent.
    """
    path = Path(pack)
    path = path / "contents.json" if path.is_dir() else path
    data = _load_json(path, "WhatsApp contents.json")
    if not isinstance(data, dict) or not isinstance(data.get("sticker_packs"), list):
        raise PackFormatError(f"{path}: field 'sticker_packs' must be a list of packs")
    stickers: list[tuple[str, Path]] = []
    for i, sp in enumerate(data["sticker_packs"]):
        where = f"sticker_packs[{i}]"
        if not isinstance(sp, dict):
            raise PackFormatError(f"{path}: {where} must be an object")
        if not isinstance(sp.get("stickers"), list):
            raise PackFormatError(f"{path}: {where}.stickers must be a list")
        ident = sp.get("identifier")
        for j, st in enumerate(sp["stickers"]):
            w = f"{where}.stickers[{j}]"
            if not isinstance(st, dict) or not isinstance(st.get("image_file"), str) or not st["image_file"]:
                raise PackFormatError(f"{path}: {w}.image_file must be a file name")
            if "emojis" in st and not (
                isinstance(st["emojis"], list) and all(isinstance(e, str) for e in st["emojis"])
            ):
                raise PackFormatError(f"{path}: {w}.emojis must be a list of emoji")
            name = Path(st["image_file"])
            if name.is_absolute() or ".." in name.parts:
                raise PackFormatError(f"{path}: {w}.image_file {st['image_file']!r} must name a file inside the pack")
            candidates = ([path.parent / str(ident) / name] if isinstance(ident, (str, int)) else []) + [
                path.parent / name
            ]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise PackFormatError(f"{path}: {w}.image_file {st['image_file']!r} not found beside contents.json")
            stickers.append((w, found))
    return path, data, stickers


def fill_whatsapp(pack: str | Path, tags: Mapping[Path, Sequence[str]]) -> tuple[Path, int]:
    """Write ``emojis`` (at most 3) for every sticker of a WhatsApp pack whose file has tags; every other field
    is kept as it was. Returns (the file written, stickers filled)."""
    path, data, stickers = whatsapp_stickers(pack)
    by_field = dict(stickers)
    filled = 0
    for i, sp in enumerate(data["sticker_packs"]):
        for j, st in enumerate(sp["stickers"]):
            file = by_field[f"sticker_packs[{i}].stickers[{j}]"]
            if file in tags and tags[file]:
                st["emojis"] = list(tags[file])[: PLATFORM_LIMITS["whatsapp"][1]]
                filled += 1
    _atomic_write_json(path, data)
    return path, filled


def telegram_stickers(path: str | Path) -> tuple[Path, Any, list[tuple[str, Path]]]:
    """Read a Telegram sticker list: a JSON array of Bot API ``InputSticker`` objects, or an object whose
    ``stickers`` field is one (as ``createNewStickerSet`` takes it).

    ``sticker`` is a local file path (relative to the list's folder) for the stickers to tag; entries that
    refer to a Telegram ``file_id`` or an ``http(s)``/``attach://`` address are kept and not tagged.

    Returns:
        (the path, its parsed content, [(field path, sticker file)] for the local stickers).

    Raises:
        PackFormatError: naming the field that is missing or of the wrong type, or a local file that is absent.
    """
    path = Path(path)
    data = _load_json(path, "Telegram sticker list")
    items = data.get("stickers") if isinstance(data, dict) else data
    prefix = "stickers" if isinstance(data, dict) else ""
    if not isinstance(items, list):
        raise PackFormatError(f"{path}: must be a JSON array of InputSticker objects or an object with 'stickers'")
    out: list[tuple[str, Path]] = []
    for i, st in enumerate(items):
        w = f"{prefix}[{i}]"
        if not isinstance(st, dict) or not isinstance(st.get("sticker"), str) or not st["sticker"]:
            raise PackFormatError(f"{path}: {w}.sticker must be a file path, file_id or URL")
        if "format" in st and st["format"] not in ("static", "animated", "video"):
            raise PackFormatError(f"{path}: {w}.format must be static, animated or video, got {st['format']!r}")
        if "emoji_list" in st and not (
            isinstance(st["emoji_list"], list) and all(isinstance(e, str) for e in st["emoji_list"])
        ):
            raise PackFormatError(f"{path}: {w}.emoji_list must be a list of emoji")
        ref = st["sticker"]
        if ref.startswith(("http://", "https://", "attach://")):
            continue
        file = Path(ref) if Path(ref).is_absolute() else path.parent / ref
        if file.is_file():
            out.append((w, file))
        elif "/" in ref or "." in ref:
            raise PackFormatError(f"{path}: {w}.sticker {ref!r} is not a file beside the list")
        # else a Telegram file_id: nothing local to tag
    return path, data, out


def fill_telegram(path: str | Path, tags: Mapping[Path, Sequence[str]]) -> tuple[Path, int]:
    """Write ``emoji_list`` for every local sticker of a Telegram list that has tags (other fields kept);
    a sticker keeps its existing list when no tag was found. Returns (the file written, stickers filled)."""
    path, data, stickers = telegram_stickers(path)
    items = data["stickers"] if isinstance(data, dict) else data
    by_index = {int(w.rsplit("[", 1)[1].rstrip("]")): f for w, f in stickers}
    filled = 0
    for i, st in enumerate(items):
        file = by_index.get(i)
        if file is not None and tags.get(file):
            st["emoji_list"] = list(tags[file])[: PLATFORM_LIMITS["telegram"][1]]
            filled += 1
    _atomic_write_json(path, data)
    return path, filled


def pack_problems(kind: str, path: str | Path) -> list[str]:
    """Each sticker of a WhatsApp pack or Telegram list (as written) that its platform would refuse, with the rule:
    ``"<file>: <field> (<sticker file or reference>): <rule>"``."""
    out = []
    if kind == "whatsapp":
        file, data, stickers = whatsapp_stickers(path)
        by_field = dict(stickers)
        for i, sp in enumerate(data["sticker_packs"]):
            for j, st in enumerate(sp["stickers"]):
                w = f"sticker_packs[{i}].stickers[{j}]"
                out += [f"{file}: {w} ({by_field[w].name}): {p}" for p in sticker_problems(kind, st.get("emojis"))]
    else:
        file, data, _ = telegram_stickers(path)
        items = data["stickers"] if isinstance(data, dict) else data
        prefix = "stickers" if isinstance(data, dict) else ""
        for i, st in enumerate(items):
            w = f"{prefix}[{i}]"
            out += [f"{file}: {w} ({st['sticker']}): {p}" for p in sticker_problems(kind, st.get("emoji_list"))]
    return out


def unique_files(groups: Iterable[Sequence[tuple[str, Path]]]) -> list[Path]:
    """The distinct sticker files of several packs, in order."""
    seen: dict[Path, None] = {}
    for group in groups:
        for _, f in group:
            seen.setdefault(f, None)
    return list(seen)


__all__ = [
    "DEFAULT_EMOJI",
    "MAX_TAGS",
    "PLATFORM_LIMITS",
    "InvalidPackError",
    "PackFormatError",
    "emoji_map",
    "emoji_tags",
    "fill_telegram",
    "is_one_emoji",
    "pack_problems",
    "sticker_problems",
    "fill_whatsapp",
    "read_emoji_map",
    "telegram_stickers",
    "unique_files",
    "whatsapp_stickers",
]
