"""A least-recently-used cache bounded by bytes, for the predictor's view descriptions and text features.

Entries are weighed by a size function (the bytes of the key and the value); a hit moves the entry to the most
recently used end, and inserting evicts from the least recently used end until the total fits. An entry larger
than the whole budget is not kept at all. Thread-safe.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import torch

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def approx_bytes(obj: Any) -> int:
    """Rough memory of a cache key or value in bytes: tensors by their storage, strings by ``sys.getsizeof``,
    containers by their items. Used to weigh entries, not to account memory exactly."""
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement() + 64
    if isinstance(obj, (str, bytes)):
        return sys.getsizeof(obj)
    if isinstance(obj, dict):
        return sys.getsizeof(obj) + sum(approx_bytes(k) + approx_bytes(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return sys.getsizeof(obj) + sum(approx_bytes(x) for x in obj)
    return sys.getsizeof(obj)


class ByteLRU(Generic[K, V]):
    """An LRU mapping whose entries add up to at most ``max_bytes`` (weighed by ``size_of(key, value)``).

    Args:
        max_bytes: the budget; 0 keeps nothing.
        size_of: bytes of one entry (default: :func:`approx_bytes` of key plus value).
    """

    def __init__(self, max_bytes: int, size_of: Callable[[K, V], int] | None = None) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be at least 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._size_of = size_of or (lambda k, v: approx_bytes(k) + approx_bytes(v))
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        """The weight of the entries held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: K) -> V | None:
        """The value for ``key`` (and mark it most recently used), or ``None``."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            self._data.move_to_end(key)
            return item[0]

    def put(self, key: K, value: V) -> None:
        """Insert or replace ``key``, then evict least recently used entries until the budget holds."""
        size = self._size_of(key, value)
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                return
            self._data[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._data.popitem(last=False)
                self._bytes -= dropped

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._data.clear()
            self._bytes = 0
