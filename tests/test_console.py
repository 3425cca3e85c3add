"""Warnings and log lines print above a running progress bar, not through it."""

from __future__ import annotations

import logging
import sys
import warnings

import pytest
from tqdm import tqdm

from mghft.console import BarSafeHandler, lines_above_bars


def _text_before(err: str, marker: str) -> str:
    """What the terminal shows before ``marker`` on its line: the part after the last carriage return."""
    line = next(x for x in err.split("\n") if marker in x)
    return line.rsplit("\r", 1)[-1].split(marker)[0]


def test_a_warning_during_a_bar_gets_its_own_line(capsys: pytest.CaptureFixture[str]) -> None:
    bar = tqdm(total=10, file=sys.stderr, mininterval=0)
    bar.update(3)
    with lines_above_bars(), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("careful now", UserWarning, stacklevel=1)
    bar.update(3)
    bar.close()
    err = capsys.readouterr().err
    assert "UserWarning: careful now" in err
    assert "it/s" not in _text_before(err, "careful now")  # the bar was cleared first, then redrawn
    assert "6/10" in err.rsplit("careful now", 1)[1]  # and the bar goes on below it


def test_a_log_record_during_a_bar_gets_its_own_line(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("mghft.test_console")
    handler = BarSafeHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    try:
        bar = tqdm(total=10, file=sys.stderr, mininterval=0)
        bar.update(2)
        logger.warning("server refused one answer")
        bar.close()
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert _text_before(err, "server refused") == "WARNING "
