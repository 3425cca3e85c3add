"""Machine resources: how many cores this process may use, and worker counts capped to them."""

from __future__ import annotations

import os
import sys


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity set where the system reports one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_NOTED: set[tuple[str, int, int]] = set()


def cap_workers(requested: int, what: str = "workers", asked: bool = True) -> int:
    """``requested`` worker processes/threads, at most the machine's cores (0 stays 0: load in the main process).

    A count the user ``asked`` for and that is capped is said once per process on stderr (what was asked, what is
    used, why), never silently; a default (``asked=False``) is simply fitted to the machine.
    """
    if requested <= 0:
        return 0
    cores = available_cpus()
    if requested <= cores:
        return requested
    key = (what, requested, cores)
    if asked and key not in _NOTED:
        _NOTED.add(key)
        print(f"{what}: {requested} asked, {cores} used (this machine has {cores} cores)", file=sys.stderr)
    return cores
