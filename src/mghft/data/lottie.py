"""Telegram animated stickers (``.tgs``): gzipped Lottie JSON, rendered with rlottie (``rlottie-python``).

A TGS is vector art: any frame can be rendered directly, at any size. The reader

* decompresses at most :data:`MAX_LOTTIE_BYTES` (a small gzip cannot expand without bound),
* reads the canvas (``w``, ``h``) and the frame range (``ip``..``op``) from the JSON and checks them against the
  pixel and frame limits before rendering anything,
* refuses animations that load image assets from files (Telegram forbids them; rlottie would read local paths),
* refuses the structures rlottie recurses on without a bound before it sees them (:func:`check_structure`): a
  precomposition that contains itself, directly or through others (rlottie recurses until the stack is gone and
  the process dies), precompositions nested deeper than :data:`MAX_PRECOMP_DEPTH` or expanding to more than
  :data:`MAX_LAYER_INSTANCES` layers, a layer whose ``parent`` chain loops, and JSON nested deeper than
  :data:`MAX_JSON_DEPTH` (rlottie's parser recurses per level). The renderer still runs in a decode worker
  (:mod:`mghft.data.decode_pool`), so a crash these checks miss costs only the file,
* renders the frames the policy picks (the middle one by default) at the declared size, scaled down so that the
  longer side is at most :data:`RENDER_MAX_SIDE`, and composites them on the background like any other image
  (rlottie's pixels are premultiplied by alpha, so half-transparent red over white is pink, not dark pink).
"""

from __future__ import annotations

import json
import math
import threading
import zlib
from typing import Any

import numpy as np
from PIL import Image

from mghft.data.images import (
    Deadline,
    DecodedImage,
    DecodeLimits,
    ImageLoadError,
    ImageTooLargeError,
    plan_frames,
)

MAX_LOTTIE_BYTES = 2 * 1024 * 1024
"""Largest decompressed Lottie JSON. Telegram's stickers are at most 64 KB gzipped, a few hundred KB unpacked;
rendering time grows with the JSON's size (its layers and shapes), so the cap also bounds the time per frame."""
MAX_JSON_DEPTH = 128
"""Deepest JSON nesting accepted (Lottie files from rlottie's and Telegram's examples nest at most 22 levels)."""
MAX_PRECOMP_DEPTH = 32
"""Deepest chain of precompositions inside precompositions."""
MAX_LAYER_INSTANCES = 20_000
"""Most layers once every precomposition is expanded (a precomposition used n times is rendered n times, so
nesting multiplies: 10 layers each using the next asset 10 times, 6 deep, are a million layers)."""
_RLOTTIE_LOCK = threading.Lock()
RENDER_MAX_SIDE = 512
"""Longer side a TGS is rendered at, pixels (Telegram's canvas is 512 × 512)."""


def _number(doc: dict[str, Any], key: str, label: str) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ImageLoadError(label, f"not a Lottie animation (field {key!r} missing or not a number)")
    return float(value)


def read_lottie(data: bytes, label: str, limits: DecodeLimits) -> tuple[str, dict[str, Any]]:
    """Decompress and check a TGS: the JSON text and its parsed header fields (``w``, ``h``, ``n_frames``).

    Raises:
        ImageTooLargeError: the JSON is too big, or the canvas or frame count is over the limits.
        ImageLoadError: not gzip, not Lottie JSON, or external image assets.
    """
    try:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        raw = inflater.decompress(data, MAX_LOTTIE_BYTES + 1)
    except zlib.error:
        raise ImageLoadError(label, "not a TGS sticker (damaged gzip data)") from None
    if len(raw) > MAX_LOTTIE_BYTES or inflater.unconsumed_tail:
        raise ImageTooLargeError(label, f"TGS expands to more than {MAX_LOTTIE_BYTES} bytes of Lottie JSON")
    try:
        text = raw.decode("utf-8")
        doc = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise ImageLoadError(label, "not a TGS sticker (gzip data that is not Lottie JSON)") from None
    except RecursionError:
        raise ImageLoadError(label, f"Lottie JSON nested deeper than {MAX_JSON_DEPTH} levels (refused)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list):
        raise ImageLoadError(label, "not a TGS sticker (JSON without Lottie layers)")
    w, h = _number(doc, "w", label), _number(doc, "h", label)
    ip, op = _number(doc, "ip", label), _number(doc, "op", label)
    if w < 1 or h < 1 or op <= ip:
        raise ImageLoadError(label, f"not a usable Lottie animation (canvas {w:g}x{h:g}, frames {ip:g}..{op:g})")
    if limits.max_pixels is not None and w * h > limits.max_pixels:
        raise ImageTooLargeError(
            label, f"{w:.0f}x{h:.0f} = {w * h:.0f} pixels exceeds the limit of {limits.max_pixels}"
        )
    n_frames = math.ceil(op - ip)
    if n_frames > limits.max_frames:
        raise ImageTooLargeError(label, f"{n_frames} frames exceeds the limit of {limits.max_frames}")
    for asset in doc.get("assets") or []:
        path = asset.get("p") if isinstance(asset, dict) else None
        if isinstance(path, str) and not path.startswith("data:"):
            raise ImageLoadError(label, "TGS refers to external image files (not allowed in stickers)")
    problem = check_structure(doc)
    if problem:
        raise ImageLoadError(label, f"Lottie animation refused before rendering: {problem}")
    return text, {"w": int(w), "h": int(h), "n_frames": n_frames}


def _json_depth(doc: object) -> int:
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))
    return deepest


def _layers(container: dict[str, Any]) -> list[dict[str, Any]]:
    layers = container.get("layers")
    return [la for la in layers if isinstance(la, dict)] if isinstance(layers, list) else []


def _parent_loop(layers: list[dict[str, Any]]) -> object | None:
    """The ``ind`` of a layer whose ``parent`` chain comes back to itself, or ``None``."""
    parent = {la.get("ind"): la.get("parent") for la in layers if "ind" in la and la.get("parent") is not None}
    for start in parent:
        seen, node = set(), start
        while node in parent:
            if node in seen:
                return start
            seen.add(node)
            node = parent[node]
    return None


def check_structure(doc: dict[str, Any]) -> str:
    """What in a parsed Lottie document rlottie would recurse on without a bound, or ``""`` (see module docstring).

    Checks the JSON depth, loops in precomposition references (``refId`` of precomp layers, ``ty`` 0) and in
    ``parent`` chains, the precomposition depth and the number of layers after expansion.
    """
    if _json_depth(doc) > MAX_JSON_DEPTH:
        return f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    assets = {a.get("id"): a for a in doc.get("assets") or [] if isinstance(a, dict) and isinstance(a.get("id"), str)}
    comps: dict[str | None, list[dict[str, Any]]] = {None: _layers(doc)}
    comps.update({k: _layers(a) for k, a in assets.items() if isinstance(a.get("layers"), list)})
    for key, layers in comps.items():
        looped = _parent_loop(layers)
        if looped is not None:
            where = "the main composition" if key is None else f"precomposition {key!r}"
            return f"the parent chain of layer {looped!r} in {where} comes back to itself"
    refs = {
        key: [la["refId"] for la in layers if la.get("ty") == 0 and la.get("refId") in comps]
        for key, layers in comps.items()
    }
    # Depth-first over the precomposition graph: a reference back into the current path is a cycle; the number of
    # layer instances is counted bottom-up (each precomp layer adds its asset's expanded layers).
    instances: dict[str | None, int] = {}
    state: dict[str | None, int] = {}  # 1: on the current path, 2: done
    stack: list[tuple[str | None, int]] = [(None, 0)]
    path: list[str | None] = []
    while stack:
        key, i = stack.pop()
        if i == 0:
            state[key] = 1
            path.append(key)
            if len(path) > MAX_PRECOMP_DEPTH + 1:
                return f"precompositions nested more than {MAX_PRECOMP_DEPTH} deep"
        if i < len(refs[key]):
            child = refs[key][i]
            stack.append((key, i + 1))
            if state.get(child) == 1:
                if child == key:
                    return f"precomposition {child!r} contains itself (rlottie would recurse until it crashes)"
                return f"precomposition {child!r} contains itself through {path[path.index(child) + 1 :]}"
            if child not in state:
                stack.append((child, 0))
            continue
        state[key] = 2
        path.pop()
        total = len(comps[key]) + sum(instances[r] for r in refs[key])
        instances[key] = total
        if total > MAX_LAYER_INSTANCES:
            return f"more than {MAX_LAYER_INSTANCES} layers once its precompositions are expanded"
    return ""


def decode_tgs(
    data: bytes, fmt: str, label: str, count: int, limits: DecodeLimits, background: tuple[int, int, int]
) -> DecodedImage:
    """Render the policy's frames of a TGS sticker (see the module docstring); arguments as ``decode_image``'s."""
    text, head = read_lottie(data, label, limits)
    try:
        from rlottie_python import LottieAnimation
    except ImportError:
        raise ImageLoadError(
            label, "TGS stickers need the rlottie-python package", hint="pip install 'mghft[stickers]'"
        ) from None
    w, h = head["w"], head["h"]
    scale = min(1.0, RENDER_MAX_SIDE / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    with _RLOTTIE_LOCK:  # one render at a time: rlottie's model cache is shared by the process
        return _render(LottieAnimation.from_data(text), head, size, fmt, label, count, limits, background)


def _over_background(premultiplied: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """rlottie renders premultiplied alpha: composite as ``rgb + background × (1 − alpha)``."""
    arr = np.asarray(premultiplied.convert("RGBA"), dtype=np.float32)  # (H, W, 4)
    alpha = arr[..., 3:4] / 255.0
    rgb = arr[..., :3] + np.asarray(background, dtype=np.float32) * (1.0 - alpha)
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), mode="RGB")


def _render(
    anim: Any,
    head: dict[str, Any],
    size: tuple[int, int],
    fmt: str,
    label: str,
    count: int,
    limits: DecodeLimits,
    background: tuple[int, int, int],
) -> DecodedImage:
    w, h = head["w"], head["h"]
    try:
        total = int(anim.lottie_animation_get_totalframe())
        n_frames = max(1, min(head["n_frames"], total) if total > 0 else head["n_frames"])
        indices, note = plan_frames(n_frames, size, count, limits, sequential=False)
        deadline = Deadline(label, limits.max_seconds)
        frames: list[Image.Image] = []
        for done, i in enumerate(indices):
            deadline.check(done)
            rgba = anim.render_pillow_frame(frame_num=i, width=size[0], height=size[1])
            frames.append(_over_background(rgba, background))
    finally:
        anim.lottie_animation_destroy()
    return DecodedImage(frames, fmt, n_frames, indices, (w, h), note, {"render_size": size})
