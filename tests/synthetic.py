"""Small generated sticker datasets in every supported format, for training tests."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

CLASSES = ("anger", "happiness", "sadness")
_COLOURS = {"anger": (220, 30, 30), "happiness": (240, 200, 20), "sadness": (30, 60, 220)}
_WORDS = {
    "anger": ("furious", "shouting", "red face"),
    "happiness": ("cheerful", "laughing", "bright smile"),
    "sadness": ("gloomy", "crying", "tears"),
}


def sticker(label: str, rng: random.Random, size: int = 64) -> Image.Image:
    """A transparent sticker: a coloured blob whose shape and colour follow the class, at a random place."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    r = rng.randint(size // 5, size // 3)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    col = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in _COLOURS[label]) + (255,)
    box = (cx - r, cy - r, cx + r, cy + r)
    if label == "anger":
        d.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=col)
    elif label == "happiness":
        d.ellipse(box, fill=col)
    else:
        d.rectangle(box, fill=col)
    return img


def descriptions(label: str, rng: random.Random) -> dict[str, str]:
    w = rng.choice(_WORDS[label])
    return {
        "intention": f"the sender feels {w}",
        "style": rng.choice(["flat cartoon", "pixel art", "sketch"]),
        "main_role": rng.choice(["a blob", "a shape", "a little figure"]),
        "posture_expression": f"{w}, {rng.choice(['still', 'jumping', 'waving'])}",
    }


def write_images(root: Path, n_per_class: int, seed: int = 0) -> list[tuple[Path, str, dict[str, str]]]:
    rng = random.Random(seed)
    rows = []
    for label in CLASSES:
        for i in range(n_per_class):
            p = root / "images" / label / f"{label}_{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            sticker(label, rng).save(p)
            rows.append((p, label, descriptions(label, rng)))
    return rows


def write_manifest(root: Path, n_per_class: int, fmt: str = "csv", seed: int = 0) -> Path:
    rows = write_images(root, n_per_class, seed)
    if fmt == "jsonl":
        path = root / "manifest.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for p, label, desc in rows:
                f.write(json.dumps({"path": str(p.relative_to(root)), "label": label, "descriptions": desc}) + "\n")
        return path
    path = root / "manifest.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "intention", "style", "main_role", "posture_expression"])
        for p, label, desc in rows:
            w.writerow([str(p.relative_to(root)), label, *desc.values()])
    return path


def write_ser30k(root: Path, n_per_class: int, seed: int = 0) -> Path:
    """SER30K layout; the ``text`` field holds descriptions in the public code's format."""
    rng = random.Random(seed)
    cats = [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for label in CLASSES:
        for i in range(n_per_class):
            topic = f"{label}_pack{i % 3}"
            name = f"{i}.png"
            p = root / "Images" / topic / name
            p.parent.mkdir(parents=True, exist_ok=True)
            sticker(label, rng).save(p)
            desc = descriptions(label, rng)
            text = "\n".join(
                f"#The sticker's {h}: {desc[v]}"
                for h, v in (
                    ("intention", "intention"),
                    ("style", "style"),
                    ("main role", "main_role"),
                    ("gesture", "posture_expression"),
                )
            )
            part = "test" if i % 5 == 0 else "val" if i % 5 == 1 else "train"
            rec = {"topic": topic, "file_name": name, "text": text, "anno1": 1, "anno2": 1, "anno3": 1}
            splits[part].append({**rec, "anno": CLASSES.index(label) + 1})
    ann = root / "Annotations" / "image-level"
    ann.mkdir(parents=True, exist_ok=True)
    for part, recs in splits.items():
        (ann / f"{part}.json").write_text(json.dumps({"annotations": recs, "categories": cats}), encoding="utf-8")
    return root


def write_metmeme(root: Path, n_per_class: int, seed: int = 0) -> Path:
    """MET-MEME English files, GBK-encoded, with an empty trailing column and a quoted newline in a text."""
    rng = random.Random(seed)
    img_dir = root / "English"
    img_dir.mkdir(parents=True, exist_ok=True)
    codes = {"happiness": "1(happiness)", "anger": "3(anger)", "sadness": "4(sorrow)"}
    labels, texts = [["file_name", "sentiment category", "sentiment degree", ""]], [["file_name", "text", ""]]
    k = 0
    for label in CLASSES:
        for _ in range(n_per_class):
            name = f"image_ ({k}).jpg"
            sticker(label, rng).convert("RGB").save(img_dir / name)
            labels.append([name, codes[label], "1(slightly)", ""])
            texts.append([name, f"so\n{rng.choice(_WORDS[label])}", ""])
            k += 1
    for fname, rows in (("label_E.csv", labels), ("E_text.csv", texts)):
        with open(root / fname, "w", newline="", encoding="gbk") as f:
            csv.writer(f).writerows(rows)
    return root
