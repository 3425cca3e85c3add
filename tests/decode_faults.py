"""Files that make a decoder misbehave: the self-referencing Lottie precomposition (a real rlottie crash) and
files that trigger the decode pool's test hook (``MGHFT_DECODE_FAULTS=1``: abort, hang, spin, memory)."""

from __future__ import annotations

import gzip
import json

from mghft.data import decode_pool


def self_referencing_tgs() -> bytes:
    """A TGS whose precomposition asset has a layer that refers to the asset itself (about 120 bytes).

    rlottie recurses on it until the stack is gone (SIGSEGV); the loader refuses it before rendering.
    """
    layer = {"ty": 0, "refId": "a", "ind": 1, "ip": 0, "op": 10, "st": 0, "ks": {}}
    doc = {"v": "5.5.2", "fr": 30, "ip": 0, "op": 10, "w": 64, "h": 64, "assets": [{"id": "a", "layers": [layer]}]}
    doc["layers"] = [{**layer, "w": 64, "h": 64}]
    return gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), mtime=0)


def fault_tgs(kind: str) -> bytes:
    """A valid-looking TGS (stored, not compressed, so the marker is in the bytes) asking the worker to misbehave."""
    doc = {"v": "5.5.2", "fr": 30, "ip": 0, "op": 10, "w": 64, "h": 64, "layers": [], "nm": ""}
    doc["nm"] = decode_pool._FAULT_MARK.decode() + kind
    return gzip.compress(json.dumps(doc).encode(), compresslevel=0, mtime=0)
