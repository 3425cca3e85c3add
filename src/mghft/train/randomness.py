"""Where every random draw of training comes from: a seed derived from what is drawn for, never a shared stream.

A draw for one training item (its augmentation, its view and text dropout) is seeded from
``(seed, stream, epoch, item)``, where ``item`` is the item's global id in the epoch: ``i + r * N`` for the ``r``-th
copy of dataset item ``i`` (repeated augmentation; padding copies get fresh ``r``). The id does not depend on the
process, the data-loader worker or the position in a batch, so

- a run draws the same for the same item whatever the number of processes and workers;
- two items of a batch never share a draw (their ids differ, so do their seeds);
- a run resumed at an epoch boundary draws exactly what the uninterrupted run drew.

The epoch's order (:class:`mghft.train.data.RepeatAugSampler`) is seeded from ``(seed, epoch)`` alone. Draws
inside the model (dropout, drop path) use each process's torch stream, reseeded every epoch from
``(seed, "process", epoch, rank)``: distinct per process, reproducible, but not the same across world sizes
(the per-process batch shapes differ).
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch
from torch import Tensor


def derive_seed(seed: int, *parts: int | str) -> int:
    """A 63-bit seed from ``seed`` and ``parts`` (BLAKE2b of their text): unrelated seeds for unrelated parts."""
    h = hashlib.blake2b(repr((int(seed), *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def item_uniforms(seed: int, stream: str, epoch: int, items: Tensor, n: int) -> Tensor:
    """``n`` uniform draws in [0, 1) per item: (B, n) float32 for the (B,) global item ids ``items``.

    Row ``b`` depends only on ``(seed, stream, epoch, items[b])``.
    """
    rows = []
    for item in items.tolist():
        g = torch.Generator().manual_seed(derive_seed(seed, stream, epoch, int(item)))
        rows.append(torch.rand(n, generator=g))
    return torch.stack(rows) if rows else torch.zeros(0, n)


def item_rng(seed: int, stream: str, epoch: int, item: int) -> random.Random:
    """A ``random.Random`` for one item's draws (its augmentation), seeded from ``(seed, stream, epoch, item)``."""
    return random.Random(derive_seed(seed, stream, epoch, int(item)))


def seed_process(seed: int, epoch: int, rank: int) -> None:
    """Reseed this process's torch, NumPy and Python streams for ``epoch`` (the model's own dropout draws)."""
    s = derive_seed(seed, "process", epoch, rank)
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)
