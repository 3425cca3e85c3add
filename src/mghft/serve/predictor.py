"""Predict the emotion of stickers with a trained MGHFT checkpoint, and explain each prediction.

Front door::

    import mghft
    predictor = mghft.load_predictor("runs/ser30k/best")              # a checkpoint folder or a Hub repo id
    [p] = predictor.predict(["sticker.png"])                          # bare image: views absent
    [p] = predictor.predict(["sticker.png"], [{"intention": "...", "style": "...", ...}])
    p.label, p.probabilities, p.views, p.explanation.view_weights, p.explanation.heatmap

Where the four view texts come from, per image: the ``descriptions`` argument when it gives one; otherwise the
configured interpreter (a multimodal LLM or the offline backend, results cached by image hash); otherwise none,
and the model runs with every view absent (the learned missing-view embedding it was trained with through view
dropout). ``Prediction.view_source`` says which.

The explanation has two parts: the patches Local Re-Attention picked at every stage, as a heatmap over the
model's input crop (with the crop's box in the original image), and the share of the fused token's attention
that went to each view's text tokens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from mghft.calibration import Calibration, CalibrationRecord, check_finite, checkpoint_calibration, input_condition
from mghft.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image, read_regular_file
from mghft.data.transforms import Preprocess
from mghft.emoji import emoji_tags
from mghft.errors import MghftError
from mghft.models.mghft import MGHFT
from mghft.models.text import view_texts
from mghft.precision import precision_context
from mghft.provenance import training_views, view_keep
from mghft.serve.cache import ByteLRU
from mghft.serve.overlay import heatmap_overlay, labelled_overlay
from mghft.views import VIEWS, parse_official_text

ImageInput = str | PathLike[str] | bytes | bytearray | memoryview | Image.Image
"""What ``predict`` accepts per image: a path, the file's bytes, a PIL image, or a :class:`LoadedImage`."""

DescriptionInput = Mapping[str, str] | str | Any | None
"""Per image: a view -> text mapping, the public code's ``#The sticker's ...`` text, a
:class:`mghft.interpret.Description`, or ``None`` (ask the interpreter, else run without views)."""

HEATMAP_MAX_SIDE = 28
"""The combined heatmap is pooled to at most this many cells a side (the paper model's finest grid is 112)."""

MAX_VIEW_CHARS = 4000
"""Longest view text read, in characters (the encoders truncate far below this: BERT reads 512 tokens)."""

TEXT_CACHE_BYTES = 64 << 20
"""Memory budget of the predictor's cache of encoded view texts (text and features), bytes."""

DESCRIPTION_CACHE_BYTES = 16 << 20
"""Memory budget of the predictor's cache of the interpreter's descriptions, bytes."""


class ViewTextTooLong(MghftError, ValueError):
    """A view text longer than the predictor's ``max_view_chars``; refused before anything is tokenised.

    Attributes:
        view: the view's name (``description`` for a whole text before it is split).
        length: its length in characters.
        limit: the limit in characters.
    """

    def __init__(self, view: str, length: int, limit: int) -> None:
        super().__init__(
            f"the {view} view text has {length} characters, over the limit of {limit}",
            hint="shorten it; the text encoder reads only its first few hundred tokens",
        )
        self.view, self.length, self.limit = view, length, limit


@dataclass
class LoadedImage:
    """A decoded image ready for the model.

    Attributes:
        name: the path, or a name given by the caller (``<bytes>`` by default).
        tensor: the preprocessed input (3, S, S).
        size: (width, height) of the original image.
        sha256: hash of the file bytes (the description cache key); of the pixels for a PIL input.
        image: the RGB image itself, kept only when asked (overlays).
        data: the file's bytes, kept only when an interpreter may need them.
    """

    name: str
    tensor: torch.Tensor
    size: tuple[int, int]
    sha256: str
    image: Image.Image | None = None
    data: bytes | None = None


@dataclass
class Explanation:
    """Why the model said what it said.

    Attributes:
        view_weights: view -> share of the fused token's attention over the text tokens (sums to 1).
        stage_patches: per backbone stage, ``(grid (H, W), picked patch indices in row-major order)``;
            a patch picked by several heads appears several times.
        heatmap: (h, w) float32 in [0, 1]: how often each region of the model's input crop was picked, averaged
            over stages (each stage normalised to its maximum).
        crop_box: (left, top, right, bottom) of the model's input crop in original-image pixels.
    """

    view_weights: dict[str, float]
    stage_patches: list[tuple[tuple[int, int], list[int]]]
    heatmap: np.ndarray
    crop_box: tuple[float, float, float, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the heatmap as nested lists rounded to 3 decimals."""
        return {
            "view_weights": {k: round(v, 6) for k, v in self.view_weights.items()},
            "heatmap": np.round(self.heatmap, 3).tolist(),
            "crop_box": [round(c, 2) for c in self.crop_box],
            "stages": [{"grid": list(grid), "patches": idx} for grid, idx in self.stage_patches],
        }


@dataclass
class Prediction:
    """One image's prediction.

    Attributes:
        name: the image's path or name.
        label: the most probable class.
        probabilities: class -> probability, in the checkpoint's class order.
        views: view -> the text the model read (``None`` where the view was absent).
        view_source: ``given`` (from ``descriptions``), ``interpreter`` (generated or cached), or ``absent``.
        explanation: present when asked for.
        calibrated: whether a fitted temperature was applied to this prediction's probabilities.
        temperature: the temperature applied (1 when uncalibrated).
        calibration: which temperature and input condition (``calibrated (bare): T = 1.3, fitted on 84 val items
            with every view absent``), or ``uncalibrated (<condition>): <why>``.
        input_condition: ``views`` (at least one view the model was trained with was read) or ``bare``.
    """

    name: str
    label: str
    probabilities: dict[str, float]
    views: dict[str, str | None]
    view_source: str
    explanation: Explanation | None = None
    sha256: str = ""
    size: tuple[int, int] = (0, 0)
    emoji: list[str] = dataclasses.field(default_factory=list)
    calibrated: bool = False
    temperature: float = 1.0
    calibration: str = ""
    input_condition: str = ""

    @property
    def confidence(self) -> float:
        """Probability of the predicted class."""
        return self.probabilities[self.label]

    def to_dict(self, explain: bool = True) -> dict[str, Any]:
        """A JSON-ready dict."""
        out: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
            "views": dict(self.views),
            "view_source": self.view_source,
            "sha256": self.sha256,
            "size": list(self.size),
            "emoji": list(self.emoji),
            "calibrated": self.calibrated,
            "calibration": self.calibration,
            "temperature": self.temperature,
            "input_condition": self.input_condition,
        }
        if explain and self.explanation is not None:
            out["explanation"] = self.explanation.to_dict()
        return out


def crop_box(size: tuple[int, int], preprocess: Preprocess) -> tuple[float, float, float, float]:
    """The region of an original image of ``size`` (w, h) that the evaluation transform keeps, in its pixels."""
    w, h = size
    short = preprocess.resize_size
    rw, rh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    s = preprocess.size
    if rw < s or rh < s:  # the transform pads: the crop covers the whole image
        return (0.0, 0.0, float(w), float(h))
    left, top = int(round((rw - s) / 2.0)), int(round((rh - s) / 2.0))
    sx, sy = w / rw, h / rh  # exact per-axis factors (the resize truncates one side)
    return (left * sx, top * sy, (left + s) * sx, (top + s) * sy)


def stage_heatmap(idx: Sequence[int], grid: tuple[int, int]) -> np.ndarray:
    """How often each patch of a (H, W) grid was picked, normalised to a maximum of 1."""
    H, W = grid
    counts = np.bincount(np.asarray(idx, dtype=np.int64), minlength=H * W)[: H * W].astype(np.float32)
    peak = counts.max()
    return (counts / peak if peak > 0 else counts).reshape(H, W)


def combine_heatmaps(
    stages: Sequence[tuple[tuple[int, int], Sequence[int]]], max_side: int = HEATMAP_MAX_SIDE
) -> np.ndarray:
    """Average of the stage heatmaps on the finest grid, area-pooled to at most ``max_side`` cells a side."""
    if not stages:
        return np.zeros((1, 1), dtype=np.float32)
    fine = max((grid for grid, _ in stages), key=lambda g: g[0] * g[1])
    maps = []
    for grid, idx in stages:
        m = torch.from_numpy(stage_heatmap(idx, grid))[None, None]  # (1, 1, H, W)
        maps.append(torch.nn.functional.interpolate(m, size=fine, mode="nearest"))
    avg = torch.cat(maps).mean(dim=0, keepdim=True)  # (1, 1, Hf, Wf)
    out = (min(fine[0], max_side), min(fine[1], max_side))
    pooled = torch.nn.functional.adaptive_avg_pool2d(avg, out)[0, 0]
    peak = float(pooled.max())
    return (pooled / peak if peak > 0 else pooled).numpy().astype(np.float32)


class Predictor:
    """A loaded model with its preprocessing, labels and (optionally) an interpreter.

    Args:
        model: an :class:`~mghft.models.mghft.MGHFT` (its text encoder is needed to read view texts).
        class_names: label names in output order.
        preprocess: the checkpoint's evaluation preprocessing.
        interpreter: an :class:`mghft.interpret.Interpreter` to describe bare images, or ``None``.
        device: where the model runs.
        max_pixels: largest image accepted (width x height, checked before decoding).
        batch_size: images per forward pass in :meth:`predict`.
        metrics: the checkpoint's evaluation metrics (shown by the service).
        name: the model's name in predictions and the service (default: the config's).
        max_view_chars: longest view text accepted, in characters (checked before tokenising; ``None``: any).
        text_cache_bytes: memory budget of the cache of encoded view texts (least recently used evicted).
        description_cache_bytes: memory budget of the cache of the interpreter's descriptions.
        calibration: the checkpoint's calibration record (:func:`mghft.calibration.checkpoint_calibration`): one
            temperature per input condition, picked per image by :meth:`calibration_for`; ``None``: every
            probability as the model gives it (uncalibrated, and every prediction says so).
        emoji: class -> emoji for :attr:`Prediction.emoji` (default: :data:`mghft.emoji.DEFAULT_EMOJI`, where
            every class has one).
        precision: ``fp32``, ``bf16`` or ``int8`` (:mod:`mghft.precision`): the forward runs under its context;
            an ONNX model carries its own. Shown by :meth:`info` as the :attr:`precision` attribute.
    """

    def __init__(
        self,
        model: MGHFT,
        *,
        class_names: Sequence[str],
        preprocess: Preprocess | None = None,
        interpreter: Any = None,
        device: str | torch.device = "cpu",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        batch_size: int = 16,
        metrics: Mapping[str, Any] | None = None,
        name: str = "",
        max_view_chars: int | None = MAX_VIEW_CHARS,
        text_cache_bytes: int = TEXT_CACHE_BYTES,
        description_cache_bytes: int = DESCRIPTION_CACHE_BYTES,
        calibration: CalibrationRecord | None = None,
        emoji: Mapping[str, str] | None = None,
        precision: str = "fp32",
    ) -> None:
        if len(class_names) != model.cfg.num_classes:
            raise ValueError(f"{len(class_names)} class names for a model with {model.cfg.num_classes} classes")
        self.calibration = calibration or CalibrationRecord.uncalibrated(
            "no calibration record was given to this Predictor (load_predictor reads the checkpoint's)"
        )
        self.emoji = _emoji_or_none(class_names, emoji)
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.class_names = list(class_names)
        self.preprocess = preprocess or Preprocess(size=model.cfg.image_size)
        self.transform = self.preprocess.transform()
        self.interpreter = interpreter
        self.max_pixels = max_pixels
        self.batch_size = batch_size
        self.metrics = dict(metrics or {})
        self.name = name or model.cfg.name or "mghft"
        self.max_view_chars = max_view_chars
        self._lock = threading.Lock()  # one forward at a time; torch uses the cores itself
        # both caches are thread-safe (views are resolved from several request threads) and bounded by bytes
        self._desc_cache: ByteLRU[str, dict[str, str]] = ByteLRU(description_cache_bytes)
        self._feat_cache: ByteLRU[str, torch.Tensor] = ByteLRU(text_cache_bytes)
        # The views the model was trained with (its provenance); the others are never fed to it.
        self.view_keep = view_keep(training_views(getattr(model, "checkpoint_meta", None)))
        # the precision the forward runs in, its measured agreement with fp32 and why it was chosen
        # (set by mghft.serve.precision_setup.setup_precision; fp32 needs no agreement)
        self.precision = precision
        self.agreement: dict[str, Any] | None = None
        self.precision_reason = "asked for" if precision != "fp32" else "the default"

    # ------------------------------------------------------------------------------------------------------
    # inputs

    def load(
        self,
        source: ImageInput | LoadedImage,
        *,
        name: str | None = None,
        keep_image: bool = False,
        max_pixels: int | None | Literal["default"] = "default",
    ) -> LoadedImage:
        """Decode and preprocess one image (keeping its bytes when an interpreter is configured).

        Raises:
            mghft.data.ImageLoadError: not a readable image (``ImageTooLargeError`` over ``max_pixels``);
                the message starts with the file's name.
        """
        if isinstance(source, LoadedImage):
            return source
        if isinstance(source, Image.Image):  # through PNG, so transparency follows the file rules
            source, name = _png_bytes(source), name or "<image>"
        if isinstance(source, (bytes, bytearray, memoryview)):
            data, label = bytes(source), name or "<bytes>"
        else:
            label = name or str(source)
            data = read_regular_file(source, label=label)  # FIFOs and devices refused before opening
        if not data:
            raise ImageLoadError(label, "empty file")
        sha = hashlib.sha256(data).hexdigest()
        limit = self.max_pixels if max_pixels == "default" else max_pixels
        img = load_image(data, max_pixels=limit, name=label)
        keep_data = data if self.interpreter is not None and data else None
        return LoadedImage(label, self.transform(img), img.size, sha, img if keep_image else None, keep_data)

    def resolve_views(self, image: LoadedImage, description: DescriptionInput = None) -> tuple[list[str | None], str]:
        """The four texts the model will read for ``image`` and where they came from.

        Asks the interpreter (through a cache keyed by the image hash) when no description is given; may block
        on the network. Raises what the interpreter raises.

        Raises:
            ViewTextTooLong: a given (or interpreted) view text is longer than ``max_view_chars``; checked before
                anything is tokenised.
            ValueError: a description of the wrong shape (unknown view, text without sections).
        """
        identical = self.model.cfg.text.identical_views
        if description is not None:
            views = getattr(description, "views", description)
            self.check_view_lengths(views)
            return view_texts(views, identical_views=identical), "given"
        if self.interpreter is None:
            return [None] * len(VIEWS), "absent"
        cached = self._desc_cache.get(image.sha256)
        if cached is None:
            if image.data is None:
                raise ValueError(f"{image.name}: loaded without its bytes; load it with this predictor's load()")
            try:
                cached = dict(self.interpreter.describe(image.data).views)
            except LookupError:  # a store-only lookup without an entry: run without views
                return [None] * len(VIEWS), "absent"
            self.check_view_lengths(cached)
            self._desc_cache.put(image.sha256, cached)
        return view_texts(cached, identical_views=identical), "interpreter"

    def check_view_lengths(self, views: Mapping[str, Any] | str | None) -> None:
        """Refuse view texts over ``max_view_chars`` (a mapping's values, or the sections of a whole text).

        Raises:
            ViewTextTooLong: naming the view, its length and the limit.
        """
        limit = self.max_view_chars
        if limit is None or views is None:
            return
        if isinstance(views, str):
            # a whole text: bounded first (four views and their headers), then split into its sections
            whole = len(VIEWS) * (limit + 64)
            if len(views) > whole:
                raise ViewTextTooLong("description", len(views), whole)
            views = parse_official_text(views)
        for view, text in views.items():
            if isinstance(text, str) and len(text) > limit:
                raise ViewTextTooLong(str(view), len(text), limit)

    def _text_features(self, texts: Sequence[Sequence[str | None]]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(B, V, dim) features and (B, V) mask for per-image view texts, or None when no text at all.

        The batch's features are gathered before the cache is touched again, so inserting new texts can never
        evict a text this batch is about to read.
        """
        wanted = list(dict.fromkeys(t for row in texts for t in row if t))
        if not wanted:
            return None
        enc = self.model.text_encoder
        if enc is None:
            raise ValueError("this model was loaded without its text encoder and cannot read view texts")
        if self.max_view_chars is not None:  # texts given to run() directly; view_texts() adds a short prefix
            limit = (self.max_view_chars + 64) * (len(VIEWS) if self.model.cfg.text.identical_views else 1)
            for row in texts:
                for view, t in zip(VIEWS, row, strict=True):
                    if t and len(t) > limit:
                        raise ViewTextTooLong(view, len(t), limit)
        found: dict[str, torch.Tensor] = {}
        new = []
        for t in wanted:
            f = self._feat_cache.get(t)
            if f is None:
                new.append(t)
            else:
                found[t] = f
        if new:
            for t, f in zip(new, enc.encode(new), strict=True):
                found[t] = f
                self._feat_cache.put(t, f)
        B, V = len(texts), len(VIEWS)
        feats = torch.zeros(B, V, self.model.cfg.text.dim)
        mask = torch.zeros(B, V, dtype=torch.bool)
        for b, row in enumerate(texts):
            for v, t in enumerate(row):
                if t:
                    feats[b, v] = found[t]
                    mask[b, v] = True
        return feats, mask

    # ------------------------------------------------------------------------------------------------------
    # the model

    @torch.inference_mode()
    def run(
        self,
        images: Sequence[LoadedImage],
        texts: Sequence[Sequence[str | None]],
        sources: Sequence[str],
        *,
        explain: bool = True,
    ) -> list[Prediction]:
        """One forward pass over already loaded images with resolved view texts (the service's batch step)."""
        if not images:
            return []
        texts = [[t if keep else None for t, keep in zip(row, self.view_keep, strict=True)] for row in texts]
        with self._lock:
            x = torch.stack([im.tensor for im in images]).to(self.device)  # (B, 3, S, S)
            tf = self._text_features(texts)
            kwargs: dict[str, Any] = {"explain": explain}
            if tf is not None:
                kwargs["text_features"] = tf[0].to(self.device)
                kwargs["view_mask"] = tf[1].to(self.device)
            with precision_context(self.precision):
                out = self.model(x, **kwargs)
            logits = out["logits"].float()  # (B, C)
            check_finite(logits, f"model {self.name} on {', '.join(im.name for im in images)}")
            cals = self.calibration_for(kwargs.get("view_mask"), len(images))
            t = torch.tensor([c.applied_temperature for c in cals], dtype=logits.dtype, device=logits.device)
            probs = torch.softmax(logits / t[:, None], dim=-1).cpu().numpy()  # (B, C)
            attn = out.get("view_attention")
            attn = attn.float().cpu().numpy() if attn is not None else None
            patches = [(i.cpu().numpy(), tuple(int(s) for s in size)) for i, size in out.get("local_patches", [])]
        preds = []
        for b, im in enumerate(images):
            p = {c: float(probs[b, k]) for k, c in enumerate(self.class_names)}
            expl = None
            if explain:
                stages = [(grid, idx[b].tolist()) for idx, grid in patches]
                weights = attn[b] if attn is not None else np.full(len(VIEWS), 1.0 / len(VIEWS))
                expl = Explanation(
                    view_weights={v: float(w) for v, w in zip(VIEWS, weights, strict=True)},
                    stage_patches=stages,
                    heatmap=combine_heatmaps(stages),
                    crop_box=crop_box(im.size, self.preprocess),
                )
            preds.append(
                Prediction(
                    name=im.name,
                    label=self.class_names[int(probs[b].argmax())],
                    probabilities=p,
                    views=dict(zip(VIEWS, texts[b], strict=True)),
                    view_source=sources[b],
                    explanation=expl,
                    sha256=im.sha256,
                    size=im.size,
                    emoji=emoji_tags(p, self.emoji) if self.emoji else [],
                    calibrated=cals[b].applied,
                    temperature=cals[b].applied_temperature,
                    calibration=cals[b].status,
                    input_condition=cals[b].condition,
                )
            )
        return preds

    def calibration_for(self, view_mask: torch.Tensor | None, batch: int) -> list[Calibration]:
        """Per image, the calibration its request gets: ``bare`` when no view the model reads is present (its row
        of ``view_mask`` (B, 4), already masked to the trained views, is all False, or there is no text at all:
        ``view_mask`` None), else ``views``."""
        if view_mask is None:
            return [self.calibration["bare"]] * batch
        return [self.calibration[input_condition(row)] for row in view_mask.cpu().numpy()]

    def predict(
        self,
        images: Sequence[ImageInput | LoadedImage] | ImageInput | LoadedImage,
        descriptions: Sequence[DescriptionInput] | None = None,
        *,
        explain: bool = True,
        batch_size: int | None = None,
    ) -> list[Prediction]:
        """Predict a list of images (a single image is a list of one).

        Args:
            images: paths, file bytes, PIL images or :class:`LoadedImage`.
            descriptions: per image, view texts (see :data:`DescriptionInput`) or ``None``.
            explain: add the explanation (picked patches, heatmap, view weights).
            batch_size: images per forward pass (default: the predictor's).

        Raises:
            mghft.data.ImageLoadError: an image could not be read (the message names it).
        """
        if isinstance(images, (str, PathLike, bytes, bytearray, memoryview, Image.Image, LoadedImage)):
            images = [images]
        images = list(images)
        if descriptions is None:
            descriptions = [None] * len(images)
        if len(descriptions) != len(images):
            raise ValueError(f"{len(descriptions)} descriptions for {len(images)} images")
        bs = batch_size or self.batch_size
        out: list[Prediction] = []
        for i in range(0, len(images), bs):
            loaded = [self.load(im) for im in images[i : i + bs]]
            resolved = [self.resolve_views(im, d) for im, d in zip(loaded, descriptions[i : i + bs], strict=True)]
            out += self.run(loaded, [r[0] for r in resolved], [r[1] for r in resolved], explain=explain)
        return out

    def info(self) -> dict[str, Any]:
        """What the service shows about the model."""
        cfg = self.model.cfg
        return {
            "name": self.name,
            "classes": self.class_names,
            "views": list(VIEWS),
            "image_size": self.preprocess.size,
            "text_encoder": cfg.text.encoder,
            "interpreter": _interpreter_name(self.interpreter),
            "metrics": self.metrics,
            "calibration": self.calibration.summary(),
            "calibration_note": self.calibration.note or None,
            "emoji": self.emoji,
            **self.precision_info(),
        }

    def precision_info(self) -> dict[str, Any]:
        """The precision, the backend that runs it, why it was chosen and its agreement with fp32 (or None)."""
        return {
            "precision": self.precision,
            "backend": getattr(self.model, "backend", "pytorch"),
            "precision_reason": self.precision_reason,
            "agreement": self.agreement,
        }


def checkpoint_name(folder: Path) -> str:
    """``<run>/<checkpoint>`` (e.g. ``mghft_tiny/best``): a checkpoint's own name says only best or last."""
    folder = folder.resolve()
    return f"{folder.parent.name}/{folder.name}" if folder.parent.name else folder.name


class StoreOnlyInterpreter:
    """An "interpreter" that only looks views up in a description store (``mghft predict --store`` without
    ``--interpreter``): an image without a description raises ``LookupError``, and the predictor runs it without
    views."""

    backend = None

    def __init__(self, store: Any) -> None:
        self.store = store

    def describe(self, data: bytes) -> Any:
        from mghft.interpret import image_sha256

        desc = self.store.get(image_sha256(data))
        if desc is None:
            raise LookupError("no description in the store")
        return desc

    def close(self) -> None:
        self.store.close()


def _emoji_or_none(class_names: Sequence[str], emoji: Mapping[str, str] | None) -> dict[str, str] | None:
    """The class -> emoji map: the given one (checked), else the defaults where they cover every class."""
    from mghft.emoji import emoji_map
    from mghft.errors import UsageError

    try:
        return emoji_map(class_names, emoji)
    except UsageError:
        if emoji:
            raise
        return None  # classes outside the default mapping and no map given: no tags


def _interpreter_name(interpreter: Any) -> str | None:
    if interpreter is None:
        return None
    backend = getattr(interpreter, "backend", None)
    name = getattr(backend, "name", type(backend).__name__)
    model = getattr(backend, "model", "") or getattr(getattr(backend, "client", None), "model", "")
    return f"{name}:{model}" if model else str(name)


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def build_interpreter(
    spec: str, *, store: str | Path | None = None, base_urls: Sequence[str] = (), **kwargs: Any
) -> Any:
    """An :class:`mghft.interpret.Interpreter` from a backend spec (``offline`` or ``<provider>:<model>``),
    caching descriptions in a description store when ``store`` is given."""
    from mghft.interpret import DescriptionStore, Interpreter, build_backend

    backend = build_backend(spec, base_urls=base_urls, **kwargs)
    return Interpreter(backend, DescriptionStore(store) if store else None)


def load_predictor(
    path_or_name: str | Path,
    *,
    interpreter: Any = None,
    store: str | Path | None = None,
    device: str | torch.device | None = None,
    offline: bool | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    batch_size: int = 16,
    text_encoder: bool = True,
    calibrated: bool = True,
    emoji: Mapping[str, str] | None = None,
    precision: str = "fp32",
    agreement_set: Sequence[str | Path] | str | Path | None = None,
) -> Predictor:
    """A :class:`Predictor` for a checkpoint folder, an exported ``.onnx`` file, a Hugging Face Hub repo id, or a
    registered variant name.

    Args:
        path_or_name: a folder written by :func:`mghft.save_checkpoint`, a ``.onnx`` file written by
            ``mghft export`` (run through ONNX Runtime on the CPU), a Hub repo id (``user/repo``), or a
            variant from :func:`mghft.list_models` (random weights: for demos and benchmarks only; warns).
        interpreter: an :class:`mghft.interpret.Interpreter`, or a backend spec (``offline``,
            ``openai:gpt-4o``, ...) to describe bare images on the fly; ``None``: bare images run without views.
        store: a description store (SQLite) caching the interpreter's descriptions (with a spec).
        device: default ``cuda`` when available, else ``cpu``.
        offline: never touch the network (default: ``MGHFT_OFFLINE``/``HF_HUB_OFFLINE``).
        max_pixels: largest image accepted.
        batch_size: images per forward pass.
        text_encoder: load the text encoder (needed for view texts). When its files are not available offline,
            the predictor warns and runs bare images only.
        calibrated: apply the checkpoint's fitted temperatures (``config.json["calibration"]``, one per input
            condition) where they are reliable.
        emoji: class -> emoji overriding the checkpoint's mapping (``config.json["emoji"]``) and the defaults.
        precision: ``fp32`` (default), ``bf16``, ``int8`` or ``auto`` (:mod:`mghft.precision`); a precision this
            CPU cannot run well, or one the file does not hold, raises
            :class:`~mghft.precision.PrecisionRefused` (naming why).
        agreement_set: image files or folders to measure a non-fp32 precision's agreement with fp32 on (default:
            the checkpoint's validation split, when its ``train.yaml`` is beside it).
    """
    from mghft.models.factory import create_model, load_model
    from mghft.registry import list_models

    name = str(path_or_name)
    on_cpu = name.lower().endswith(".onnx")  # ONNX Runtime's CPU provider
    device = device or ("cuda" if torch.cuda.is_available() and not on_cpu else "cpu")
    if not Path(name).exists() and name in list_models():
        warnings.warn(f"{name} is a variant name, not a checkpoint: its weights are random", stacklevel=2)
        model = create_model(name, offline=offline, text_encoder=text_encoder)
        from mghft.registry import SER30K_CLASSES

        classes: list[str] = list(SER30K_CLASSES)[: model.cfg.num_classes]
        if len(classes) != model.cfg.num_classes:
            classes = [f"class_{i}" for i in range(model.cfg.num_classes)]
        preprocess, metrics = Preprocess(size=model.cfg.image_size), {}
        calibration, ck_emoji = CalibrationRecord.uncalibrated(f"{name} has random weights: nothing fitted"), None
    else:
        from mghft.models.text import TextEncoderUnavailable
        from mghft.serve.onnx_model import OnnxModel, is_onnx_file

        load: Any = OnnxModel if is_onnx_file(name) else load_model
        try:
            model = load(path_or_name, text_encoder=text_encoder, offline=offline)
        except TextEncoderUnavailable as e:  # bare images still work; view texts will not
            warnings.warn(f"running without the text encoder, so without views: {e}", stacklevel=2)
            model = load(path_or_name, text_encoder=False, offline=offline)
        meta = model.checkpoint_meta
        classes = list(meta["class_names"])
        preprocess = Preprocess.from_dict(meta["preprocess"]) if meta.get("preprocess") else None
        metrics = meta.get("metrics") or {}
        name = checkpoint_name(Path(name)) if Path(name).exists() else name
        calibration = checkpoint_calibration(meta, calibrated=calibrated)
        ck_emoji = meta.get("emoji")
    if isinstance(interpreter, str):
        interpreter = build_interpreter(interpreter, store=store)
    predictor = Predictor(
        model,
        class_names=classes,
        preprocess=preprocess,
        interpreter=interpreter,
        device=device,
        max_pixels=max_pixels,
        batch_size=batch_size,
        metrics=metrics,
        name=name,
        calibration=calibration,
        emoji={**(ck_emoji or {}), **(emoji or {})} or None,
    )
    from mghft.serve.precision_setup import setup_precision

    setup_precision(predictor, precision, source=path_or_name, agreement_set=agreement_set)
    return predictor


__all__ = [
    "Explanation",
    "LoadedImage",
    "Prediction",
    "Predictor",
    "StoreOnlyInterpreter",
    "ViewTextTooLong",
    "build_interpreter",
    "combine_heatmaps",
    "crop_box",
    "heatmap_overlay",
    "labelled_overlay",
    "load_predictor",
]
