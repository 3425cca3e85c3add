"""The main job end to end on the emoji sticker dataset: build, describe offline, train, evaluate, explain, predict.

Stages (each writes under ``out``):

1. ``dataset/``: the sticker dataset (:mod:`mghft.demo.dataset`), manifest, split and attribution;
2. ``descriptions.sqlite``: four views per image from the offline interpreter (OCR and visual cues; no LLM);
3. ``train/``: ``mghft_tiny`` trained on the CPU, selected on val, evaluated once on the held-out test split
   (``train/test/report.md``, ``confusion_matrix.png``, ``metrics.json``);
4. ``gallery/``: every test prediction with its heatmap (``index.html``, a contact sheet ``gallery.png``);
5. ``example.png``: a new sticker predicted from its bare pixels (the interpreter runs on it on the fly);
6. ``summary.json`` and ``README.md``: accuracy beside chance and the majority baseline, timings, where things are.
"""

from __future__ import annotations

import html
import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from mghft.demo.dataset import (
    SIZES,
    DemoDataset,
    DemoSize,
    artworks,
    build_dataset,
    compose_sticker,
    load_captions,
    load_emoji_emotions,
    render_artwork,
)

Log = Callable[[str], None]


@dataclass
class DemoResult:
    """What a demo run measured and where it put things."""

    out: Path
    size: str
    classes: list[str]
    test_images: int
    test_emoji: int
    accuracy: float
    accuracy_ci: tuple[float, float] | None
    chance: float
    majority: float
    majority_class: str
    majority_note: str
    best_constant: float
    macro_f1: float
    views_absent_accuracy: float
    captioned: dict[str, float | int]
    uncaptioned: dict[str, float | int]
    predictor_accuracy: float
    """Test accuracy recomputed through :func:`mghft.load_predictor` (must equal ``accuracy``)."""
    example: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def _train_config(ds: DemoDataset, out: Path, size: DemoSize, epochs: int | None, seed: int, progress: bool) -> Any:
    from mghft.train.config import DataConfig, TrainConfig

    return TrainConfig(
        data=DataConfig(
            format="manifest",
            root=str(ds.manifest),
            descriptions=str(out / "descriptions.sqlite"),
            split_file=str(ds.split_file),
        ),
        output=str(out / "train"),
        model="mghft_tiny",
        pretrained=False,
        epochs=epochs or size.epochs,
        batch_size=32,
        lr=3e-3,
        warmup_epochs=1,
        min_lr=1e-4,
        workers=0,
        rand_augment=None,
        view_dropout=0.2,
        text_dropout=0.2,  # trains the bare-image path too, so "image only" is a fair number
        seed=seed,
        bootstrap=1000,
        tensorboard=False,
        progress=progress,
        feature_cache=str(out / "text-features"),
    )


def _accuracy(pairs: list[tuple[str, str]]) -> dict[str, float | int]:
    n = len(pairs)
    return {"n": n, "accuracy": sum(t == p for t, p in pairs) / n if n else float("nan")}


def run_demo(
    out: str | Path = "runs/demo",
    size: str = "full",
    *,
    seed: int = 0,
    epochs: int | None = None,
    progress: bool = True,
    log: Log = print,
) -> DemoResult:
    """Run the whole demo into ``out`` and return its numbers.

    A rerun rebuilds the dataset, reuses the descriptions and text features already computed for identical
    images, and retrains from scratch (``out/train`` and ``out/gallery`` are replaced).

    Args:
        out: output folder.
        size: ``"full"`` (the demo) or ``"small"`` (a quick check of the pipeline; its numbers mean nothing).
        seed: seed of the dataset variants and of training.
        epochs: override the size's number of epochs.
        progress: progress bars.
        log: where the stage messages go.
    """
    import mghft
    from mghft.interpret import DescriptionStore, Interpreter, build_backend, items_from_index, run_batch
    from mghft.train.loop import train

    preset = SIZES[size]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    log(f"[1/5] building the emoji sticker dataset ({preset.name}) in {out / 'dataset'}")
    t = time.perf_counter()
    ds = build_dataset(out / "dataset", preset, seed=seed)
    timings["dataset"] = time.perf_counter() - t
    n = {p: sum(c.values()) for p, c in ds.counts.items()}
    log(
        f"      train {n['train']} Twemoji images of {len(ds.emoji['train'])} emoji; val {n['val']} OpenMoji images "
        f"of the same emoji; test {n['test']} OpenMoji images of {len(ds.emoji['test'])} other emoji "
        f"({timings['dataset']:.1f} s)"
    )

    log(f"[2/5] describing every image with the offline interpreter (OCR + visual cues) into {out}/descriptions.sqlite")
    t = time.perf_counter()
    backend = build_backend("offline")
    with DescriptionStore(out / "descriptions.sqlite") as store:
        summary = run_batch(items_from_index(ds.index), backend, store, concurrency=2, progress=progress)
    timings["describe"] = time.perf_counter() - t
    if summary.failed or summary.remaining:
        raise RuntimeError(f"the offline interpreter failed on some images:\n{summary.format()}")
    log(f"      described {summary.described}, reused {summary.skipped} ({timings['describe']:.1f} s)")

    cfg = _train_config(ds, out, preset, epochs, seed, progress)
    log(f"[3/5] training {cfg.model} on the CPU for {cfg.epochs} epochs into {cfg.output}")
    t = time.perf_counter()
    for stale in (out / "train", out / "gallery"):
        if stale.is_dir():
            shutil.rmtree(stale)
    results = train(cfg)
    timings["train"] = time.perf_counter() - t
    best = Path(cfg.output) / "best"

    log("[4/5] explaining every test prediction (heatmaps of the patches the model picked)")
    t = time.perf_counter()
    store = DescriptionStore(out / "descriptions.sqlite")
    predictor = mghft.load_predictor(best, interpreter=Interpreter(build_backend("offline"), store), device="cpu")
    test = ds.split.select(ds.index, "test")
    preds = predictor.predict([s.path for s in test.samples], explain=True)
    truth = [ds.index.classes[s.label] for s in test.samples]  # type: ignore[index]
    gallery = write_gallery(out / "gallery", test.samples, truth, preds)
    timings["gallery"] = time.perf_counter() - t

    log("[5/5] predicting a new sticker from its pixels alone")
    t = time.perf_counter()
    example_path, example_truth = make_example(out / "example.png", seed)
    [ex] = predictor.predict([example_path], explain=True)
    from mghft.data.images import load_image
    from mghft.serve.predictor import heatmap_overlay

    # transparency on white, as the model saw it (a plain convert("RGB") turns it black)
    heatmap_overlay(load_image(example_path), ex.explanation).save(out / "example_heatmap.png")
    timings["predict"] = time.perf_counter() - t
    predictor.interpreter.close()
    store.close()

    # Baselines: chance over the classes the test split holds; the majority class of training.
    classes = list(ds.index.classes)
    present = sorted(set(truth), key=classes.index)
    train_counts = ds.counts["train"]
    majority_class = max(classes, key=lambda c: (train_counts.get(c, 0), -classes.index(c)))
    tied = sum(train_counts.get(c, 0) == train_counts.get(majority_class, 0) for c in classes) > 1
    majority_note = (
        "all training classes are equally frequent, the first is taken" if tied else "the most frequent training class"
    )
    metrics = results["test"]
    pairs = [(t_, p.label) for t_, p in zip(truth, preds, strict=True)]
    captioned = [pr for pr, s in zip(pairs, test.samples, strict=True) if s.meta.get("caption")]
    bare = [pr for pr, s in zip(pairs, test.samples, strict=True) if not s.meta.get("caption")]
    ci = (results.get("ci") or {}).get("accuracy")
    timings["total"] = time.perf_counter() - t_all
    result = DemoResult(
        out=out,
        size=preset.name,
        classes=classes,
        test_images=len(truth),
        test_emoji=len(ds.emoji["test"]),
        accuracy=float(metrics["accuracy"]),
        accuracy_ci=(float(ci["low"]), float(ci["high"])) if ci else None,
        chance=1.0 / len(present),
        majority=truth.count(majority_class) / len(truth),
        majority_class=majority_class,
        majority_note=majority_note,
        best_constant=max(truth.count(c) for c in present) / len(truth),
        macro_f1=float(metrics["macro"]["f1"]),
        views_absent_accuracy=float(results["test_views_absent"]["accuracy"]),
        captioned=_accuracy(captioned),
        uncaptioned=_accuracy(bare),
        predictor_accuracy=_accuracy(pairs)["accuracy"],  # type: ignore[arg-type]
        example={
            "path": str(example_path),
            "true": example_truth,
            "label": ex.label,
            "confidence": ex.confidence,
            "views": ex.views,
            "view_source": ex.view_source,
        },
        timings={k: round(v, 2) for k, v in timings.items()},
        paths={
            "dataset": str(ds.root),
            "attribution": str(ds.attribution),
            "descriptions": str(out / "descriptions.sqlite"),
            "checkpoint": str(best),
            "report": str(Path(cfg.output) / "test" / "report.md"),
            "confusion_matrix": str(Path(cfg.output) / "test" / "confusion_matrix.png"),
            "gallery": str(gallery),
            "contact_sheet": str(out / "gallery" / "gallery.png"),
            "example": str(example_path),
            "example_heatmap": str(out / "example_heatmap.png"),
        },
    )
    (out / "summary.json").write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "README.md").write_text(summary_markdown(result), encoding="utf-8")
    return result


def make_example(path: Path, seed: int) -> tuple[Path, str]:
    """A sticker that is in no split: a held-out emoji in a new variant with a held-out caption."""
    rng = random.Random(f"{seed}/example")
    emoji = rng.choice([e for e in load_emoji_emotions() if e.split == "heldout"])
    caption = rng.choice(load_captions()[(emoji.emotion, "heldout")])
    art = render_artwork(artworks()["openmoji"], emoji.codepoint)
    compose_sticker(art, rng, caption).save(path, format="PNG")
    return path, emoji.emotion


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def summary_lines(r: DemoResult) -> list[str]:
    """The result as aligned text lines: held-out accuracy beside chance and the majority baseline."""

    def row(name: str, value: float, note: str = "") -> str:
        return f"  {name:<27}{_fmt(value)}" + (f"  ({note})" if note else "")

    ci = f"95% bootstrap interval {_fmt(r.accuracy_ci[0])}-{_fmt(r.accuracy_ci[1])}" if r.accuracy_ci else ""
    lines = [
        f"held-out test: {r.test_images} OpenMoji stickers of {r.test_emoji} emoji never seen in training",
        row("accuracy", r.accuracy, ci),
        row(f"chance (1/{round(1 / r.chance)})", r.chance),
        row("majority baseline", r.majority, f"always '{r.majority_class}'; {r.majority_note}"),
    ]
    if abs(r.best_constant - r.majority) > 1e-9:
        lines.append(row("best constant guess", r.best_constant, "always the largest test class"))
    lines += [
        row("macro-F1", r.macro_f1),
        row("image only (views absent)", r.views_absent_accuracy),
        row("captioned images", float(r.captioned["accuracy"]), f"n={r.captioned['n']}"),
        row("uncaptioned images", float(r.uncaptioned["accuracy"]), f"n={r.uncaptioned['n']}"),
    ]
    return lines


def summary_markdown(r: DemoResult) -> str:
    """``README.md`` of a demo run."""
    t = r.timings
    ex = r.example
    views = "\n".join(f"  - {k}: {v}" for k, v in ex["views"].items())
    body = "\n".join(summary_lines(r))
    return f"""# MGHFT demo run ({r.size})

```
{body}
```

Chance is 1 / the number of classes in the test split; the majority baseline always answers the most frequent
training class. "Image only" is the same model with every view text removed. Captions were drawn into some images
(phrases never used in training); the interpreter read them back by OCR.

## Where things are

| what | path |
|---|---|
{chr(10).join(f"| {k} | `{v}` |" for k, v in r.paths.items())}

## The example sticker

`{ex["path"]}` (a held-out {ex["true"]} emoji): predicted **{ex["label"]}** ({ex["confidence"]:.2f}); views from the
{ex["view_source"]}:
{views}

## Time (seconds)

| dataset | descriptions | training + test | gallery | example | total |
|---|---|---|---|---|---|
| {t.get("dataset", 0):.1f} | {t.get("describe", 0):.1f} | {t.get("train", 0):.1f} | {t.get("gallery", 0):.1f} \
| {t.get("predict", 0):.1f} | {t.get("total", 0):.1f} |

The artwork is Twemoji (CC BY 4.0) and OpenMoji (CC BY-SA 4.0): see `{r.paths["attribution"]}`.
"""


# ------------------------------------------------------------------------------------------------------------------
# gallery


def write_gallery(folder: Path, samples: list[Any], truth: list[str], preds: list[Any]) -> Path:
    """``index.html`` (every prediction: sticker, heatmap, probabilities, views) and a contact sheet PNG."""
    from mghft.serve.predictor import heatmap_overlay

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "heatmaps").mkdir(exist_ok=True)
    cards, tiles = [], []
    order = sorted(range(len(samples)), key=lambda i: (truth[i], samples[i].key))
    for i in order:
        s, p = samples[i], preds[i]
        image = Image.open(s.path).convert("RGBA")
        flat = Image.new("RGBA", image.size, (255, 255, 255, 255))
        flat.alpha_composite(image)
        overlay = heatmap_overlay(flat.convert("RGB"), p.explanation)
        name = Path(s.path).stem + ".png"
        overlay.save(folder / "heatmaps" / name)
        tiles.append((flat.convert("RGB"), overlay, truth[i], p.label))
        probs = sorted(p.probabilities.items(), key=lambda kv: -kv[1])[:3]
        views = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v or '(absent)')}</dd>" for k, v in p.views.items())
        ok = "ok" if p.label == truth[i] else "wrong"
        cards.append(
            f'<figure class="{ok}"><img src="../{html.escape(_rel(s.path, folder.parent))}" alt="">'
            f'<img src="heatmaps/{html.escape(name)}" alt="heatmap">'
            f"<figcaption><b>{html.escape(p.label)}</b> {p.confidence:.2f} (true: {html.escape(truth[i])}) "
            f"{html.escape(s.meta.get('emoji', ''))}<br><small>"
            + ", ".join(f"{html.escape(c)} {v:.2f}" for c, v in probs)
            + f"</small><details><summary>views</summary><dl>{views}</dl></details></figcaption></figure>"
        )
    right = sum(t == p.label for t, p in zip(truth, preds, strict=True))
    page = f"""<!doctype html><meta charset="utf-8"><title>MGHFT demo: test predictions</title>
<style>body{{font:14px sans-serif;margin:1em}}figure{{display:inline-block;width:270px;margin:4px;padding:4px;
vertical-align:top;border:2px solid #ccc}}figure.ok{{border-color:#3a3}}figure.wrong{{border-color:#c33}}
img{{width:128px;height:128px;image-rendering:pixelated}}dt{{font-weight:bold}}dd{{margin:0 0 4px 0}}</style>
<h1>Held-out test predictions</h1>
<p>{right} of {len(preds)} right. Each card: the sticker, the patches the model's Local Re-Attention picked
(red = picked often), the prediction with its probability and the true emotion, the top three classes, and the
four view texts the offline interpreter wrote. Green border: right; red: wrong.</p>
{"".join(cards)}
"""
    (folder / "index.html").write_text(page, encoding="utf-8")
    contact_sheet(tiles, folder / "gallery.png")
    return folder / "index.html"


def _rel(path: Path, start: Path) -> str:
    try:
        return Path(path).resolve().relative_to(start.resolve()).as_posix()
    except ValueError:
        return Path(path).resolve().as_uri()


def contact_sheet(tiles: list[tuple[Image.Image, Image.Image, str, str]], path: Path, per_row: int = 4) -> Path:
    """Pairs of (sticker, heatmap) with ``true -> predicted`` under them, a few per row."""
    cell, label_h = 96, 18
    rows = (len(tiles) + per_row - 1) // per_row
    sheet = Image.new("RGB", (per_row * 2 * cell + (per_row - 1) * 8, max(1, rows) * (cell + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (image, overlay, true, pred) in enumerate(tiles):
        x = (i % per_row) * (2 * cell + 8)
        y = (i // per_row) * (cell + label_h)
        sheet.paste(image.resize((cell, cell)), (x, y))
        sheet.paste(overlay.resize((cell, cell)), (x + cell, y))
        colour = (30, 130, 30) if true == pred else (190, 30, 30)
        draw.text((x + 2, y + cell + 2), f"{true} -> {pred}", fill=colour)
    sheet.save(path)
    return path
