"""Argument checks shared by the commands: local paths (never URLs) and output formats chosen by extension.

Each raises :class:`mghft.errors.UsageError` (or argparse's type error) naming the flag and the fix, so a mistaken
invocation ends in one ``error:`` line before any work starts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mghft.errors import UsageError

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
