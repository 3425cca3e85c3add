"""The offline OCR on sticker-like images: emoji faces without text, faces with captions, captions in other scripts.

Images are the demo's stickers (``mghft.demo.dataset``: Twemoji and OpenMoji faces, Pillow's Aileron font for
captions); captions in Cyrillic, Greek, Hebrew and Arabic use DejaVu Sans when the system has it. Each image is read
once by ``rapidocr``; two readers are compared on the same raw lines:

* **all lines** (what the offline interpreter kept before: every line over rapidocr's default score of 0.5);
* **confident lines** (:func:`mghft.interpret.ocr.filter_readings`).

Printed side by side: faces with any text reported (should be 0), captions read exactly (ignoring case and spaces),
captions read with extra misread text, and other-script captions reported as junk text versus flagged as unreadable.

    .venv/bin/python benchmarks/bench_ocr.py               # every face emoji of the demo mapping, both artworks
    .venv/bin/python benchmarks/bench_ocr.py --limit 20    # faster
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

FOREIGN = ["ПРИВЕТ", "спасибо", "Ура!", "γεια σου", "ευχαριστώ", "שלום", "مرحبا", "Круто"]
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def _norm(text: str) -> str:
    return "".join(text.split()).casefold()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="at most this many emoji per artwork")
    parser.add_argument("--size", type=int, default=160, help="sticker side, pixels")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    from PIL import ImageDraw, ImageFont

    from mghft.data.images import to_rgb
    from mghft.demo.dataset import artworks, compose_sticker, load_captions, load_emoji_emotions, render_artwork
    from mghft.interpret.ocr import filter_readings, raw_readings

    arts, mapping, captions = artworks(), load_emoji_emotions(), load_captions()
    emoji = mapping[: args.limit] if args.limit else mapping
    rows: list[tuple[str, str, list]] = []  # (kind, expected text, raw readings)
    start = time.perf_counter()
    for i, e in enumerate(emoji):
        for name in ("twemoji", "openmoji"):
            art = render_artwork(arts[name], e.codepoint)
            face = to_rgb(compose_sticker(art, random.Random(i), None, size=args.size))
            rows.append(("face", "", raw_readings(face)))
        phrases = captions.get((e.emotion, "train"), []) + captions.get((e.emotion, "heldout"), [])
        if phrases:
            caption = phrases[i % len(phrases)]
            art = render_artwork(arts["twemoji"], e.codepoint)
            rng = random.Random(1000 + i)
            sticker = compose_sticker(art, rng, caption, size=args.size)
            rows.append(("caption", caption, raw_readings(to_rgb(sticker))))
    if DEJAVU.is_file():
        font = ImageFont.truetype(str(DEJAVU), max(12, args.size // 7))
        for i, text in enumerate(FOREIGN):
            art = render_artwork(arts["twemoji"], emoji[i % len(emoji)].codepoint)
            sticker = compose_sticker(art, random.Random(2000 + i), None, size=args.size)
            draw = ImageDraw.Draw(sticker)
            draw.text((args.size // 2, args.size - 6), text, font=font, fill=(0, 0, 0, 255), anchor="md",
                      stroke_width=2, stroke_fill=(255, 255, 255, 255))  # fmt: skip
            rows.append(("foreign", text, raw_readings(to_rgb(sticker))))
    else:
        print(f"(no {DEJAVU}: other-script captions not measured)", file=sys.stderr)
    seconds = time.perf_counter() - start

    def before(readings: list) -> str:  # every line over rapidocr's default text score
        return " ".join(r.text.strip() for r in sorted(readings, key=lambda r: r.box[1]) if r.score >= 0.5)

    figures: dict[str, dict[str, float]] = {}
    for label, read in (("all lines", before), ("confident lines", None)):
        faces = [r for r in rows if r[0] == "face"]
        caps = [r for r in rows if r[0] == "caption"]
        foreign = [r for r in rows if r[0] == "foreign"]

        def text_of(readings: list, read=read) -> tuple[str, bool]:
            if read is not None:
                return read(readings), False
            result = filter_readings(readings, args.size)
            return result.text, result.unreadable

        face_text = sum(1 for _, _, rd in faces if text_of(rd)[0])
        exact = sum(1 for _, want, rd in caps if _norm(text_of(rd)[0]) == _norm(want))
        extra = sum(1 for _, want, rd in caps if _norm(want) in _norm(text_of(rd)[0]) != _norm(want))
        junk = sum(1 for _, _, rd in foreign if text_of(rd)[0])
        flagged = sum(1 for _, _, rd in foreign if text_of(rd)[1])
        figures[label] = {
            "faces": len(faces),
            "faces_with_text": face_text,
            "captions": len(caps),
            "captions_exact": exact,
            "captions_with_extra_text": extra,
            "other_script": len(foreign),
            "other_script_junk_text": junk,
            "other_script_flagged_unreadable": flagged,
        }
    keys = list(figures["all lines"])
    print(f"{'':34s} {'all lines':>12s} {'confident':>12s}")
    for k in keys:
        a, b = figures["all lines"][k], figures["confident lines"][k]
        print(f"{k:34s} {a:12d} {b:12d}")
    print(f"{len(rows)} images read in {seconds:.1f} s ({seconds / max(1, len(rows)):.2f} s per image)")
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "images": len(rows), "seconds": seconds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
