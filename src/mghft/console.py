"""Warnings and log lines that print above a running progress bar instead of through it.

A ``tqdm`` bar redraws its line with carriage returns; a warning or log record written to the same terminal
in between lands in the middle of the bar and the next redraw overwrites it. :func:`lines_above_bars` routes
Python warnings, and :class:`BarSafeHandler` log records, through ``tqdm.write``, which clears the bar, prints
the line and redraws the bar below it. Outside a bar ``tqdm.write`` prints the line as is.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from typing import TextIO


class BarSafeHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``logging.StreamHandler`` whose records print above any running progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging must never raise; the standard handler reports it the standard way
            self.handleError(record)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    from tqdm import tqdm

    text = warnings.formatwarning(message, category, filename, lineno, line).rstrip("\n")
    tqdm.write(text, file=file or sys.stderr)


@contextlib.contextmanager
def lines_above_bars() -> Iterator[None]:
    """Within the block, Python warnings print above any running progress bar (log records: :class:`BarSafeHandler`)."""
    old_show = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        yield
    finally:
        warnings.showwarning = old_show
