"""Freed tensor memory goes back to the system: the glibc mmap threshold is fixed once, unless the user set it."""

from __future__ import annotations

import ctypes.util
import sys

import pytest

from mghft import _malloc


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_malloc, "_applied", False)


@pytest.mark.skipif(not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None, reason="glibc")
def test_applies_on_glibc_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    calls = []
    real = ctypes.CDLL

    class Libc:
        def __init__(self, name: str) -> None:
            self.lib = real(name)

        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return self.lib.mallopt(param, value)

    monkeypatch.setattr(_malloc.ctypes, "CDLL", Libc)
    assert _malloc.return_large_frees() is True
    assert _malloc.return_large_frees() is True
    assert calls == [(-3, 256 * 1024)]  # M_MMAP_THRESHOLD, set once


def test_left_alone_when_the_environment_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert _malloc.return_large_frees() is False


def test_no_libc_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)

    def missing(name: str) -> None:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(_malloc.ctypes, "CDLL", missing)
    assert _malloc.return_large_frees() is False
