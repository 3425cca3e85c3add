"""Argument checks shared by the commands: local paths (never URLs) and output formats chosen by extension.

Each raises :class:`mghft.errors.UsageError` (or argparse's type error) naming the flag and the fix, so a mistaken
invocation ends in one ``error:`` line before any work starts.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from mghft.errors import UsageError
from mghft.filekinds import jsonl_problem, sqlite_problem

_URL_SCHEMES = ("http://", "https://", "ftp://", "s3://", "gs://", "hf://", "file://")


def is_url(text: str) -> bool:
    """True for ``http://…``, ``https://…`` and the other URL schemes a user might paste instead of a path."""
    return text.strip().lower().startswith(_URL_SCHEMES)


def local_path(text: str) -> Path:
    """An argparse type for a local file or folder: a URL is refused (nothing is downloaded behind the user's back).

    Raises:
        argparse.ArgumentTypeError: for a URL, saying to download it first.
    """
    if is_url(text):
        raise argparse.ArgumentTypeError(
            f"{text} is a URL; mghft reads and writes local files only (download it first, e.g. curl -LO '{text}', "
            "and give the file's path)"
        )
    return Path(text)


def output_format(out: Path, fmt: str | None, formats: dict[str, str], flag: str = "--out") -> str:
    """The output format: ``fmt`` when given, else the one ``out``'s extension names in ``formats`` (suffix -> name).

    Raises:
        UsageError: the extension names no known format and ``--format`` was not given.
    """
    if fmt:
        return fmt
    suffix = out.suffix.lower()
    if suffix in formats:
        return formats[suffix]
    known = ", ".join(sorted(formats))
    raise UsageError(
        f"{flag} {out}: " + (f"{suffix} is not an output format" if suffix else "no file extension") + f" ({known})",
        hint=f"name the file with one of {known}, or give --format {{{','.join(sorted(set(formats.values())))}}}",
    )


def number(
    kind: type, *, minimum: float | None = None, above: float | None = None, maximum: float | None = None
) -> Any:
    """An argparse type for an int or a finite float in a range (``minimum <= x``, ``above < x``, ``x <= maximum``).

    argparse names the flag in front of the message: ``argument --batch-size: must be an integer >= 1, got 0``.
    NaN and infinities are refused for floats (a comparison with NaN is always false: it would pass every check).
    """
    noun = "an integer" if kind is int else "a number"
    bounds = [f">= {minimum:g}" if minimum is not None else "", f"> {above:g}" if above is not None else ""]
    bounds.append(f"<= {maximum:g}" if maximum is not None else "")
    wanted = f"{noun} {' and '.join(b for b in bounds if b)}".strip()

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        if (
            (minimum is not None and value < minimum)
            or (above is not None and value <= above)
            or (maximum is not None and value > maximum)
        ):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value

    parse.__name__ = f"{kind.__name__} ({wanted})"
    return parse


COUNT = number(int, minimum=1)
"""An argparse type for a count that must be at least 1 (batch sizes, limits, attempts, workers)."""
COUNT_OR_ZERO = number(int, minimum=0)
"""An argparse type for a count where 0 has a meaning its help states (e.g. ``--bootstrap 0``: no intervals)."""
POSITIVE = number(float, above=0)
"""An argparse type for a finite float > 0 (seconds, MiB, tolerances)."""
NON_NEGATIVE = number(float, minimum=0)
"""An argparse type for a finite float >= 0 where 0 has a meaning its help states."""
FINITE = number(float)
"""An argparse type for any finite float (NaN and infinities refused)."""


def sqlite_file(text: str) -> Path:
    """An argparse type for a local SQLite file (existing or to create): a file of another kind is refused by name.

    Raises:
        argparse.ArgumentTypeError: a URL, a folder, or a file whose content is not SQLite.
    """
    path = local_path(text)
    problem = sqlite_problem(path)
    if problem:
        raise argparse.ArgumentTypeError(f"{problem}; a description store is the SQLite file `mghft interpret` writes")
    return path


def jsonl_file(text: str) -> Path:
    """An argparse type for a local JSON Lines file; another kind (a CSV, a JSON array) is refused by name."""
    path = local_path(text)
    problem = jsonl_problem(path)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return path


def check_device(text: str | None, flag: str = "--device") -> None:
    """Refuse a ``--device`` this machine does not have (``cuda`` without a GPU, ``cuda:3`` of two, a typo) before
    any work starts.

    Raises:
        UsageError: naming the flag, what the machine has and the fix.
    """
    if text is None:
        return
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"{flag} {text}: not a device", hint=f"e.g. {flag} cpu or {flag} cuda:0") from None
    if device.type == "cpu":
        return
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(
                f"{flag} {text}: this machine has no CUDA GPU that torch can use",
                hint=f"{flag} cpu, or leave {flag} out (cuda when available)",
            )
        if device.index is not None and device.index >= count:
            raise UsageError(f"{flag} {text}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})")
        return
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"{flag} {text}: MPS is not available here", hint=f"{flag} cpu")
