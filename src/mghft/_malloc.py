"""Give freed tensor memory back to the system on Linux (glibc), so a long CPU run's resident size stays flat.

glibc serves large allocations by ``mmap`` and returns them to the system when freed, but each such free raises
its threshold (up to 32 MiB on 64-bit), after which a training step's activation buffers come from the heap
instead: freed, fragmented and never returned, so the resident size creeps up over the first steps (by a third
for ``mghft_pvt_small`` at 224 px, batch 4, on CPU). A fixed threshold keeps every large buffer mapped.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_MMAP_THRESHOLD = -3  # mallopt parameter, glibc's malloc.h
_applied = False


def return_large_frees(threshold: int = 256 * 1024) -> bool:
    """Serve allocations of at least ``threshold`` bytes by ``mmap`` from now on (glibc only; once per process).

    Returns whether the setting is in force: False off Linux/glibc, and left alone when the user set
    ``MALLOC_MMAP_THRESHOLD_`` in the environment.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        _applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return _applied
