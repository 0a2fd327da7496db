"""The page's bounded caches: an LRU map whose values are computed once per key.

Why its own module: every cache of ``crdr serve`` (images, bitstreams, ŷ, reconstructions,
baseline files, ST-LPIPS values) needs the same two things, a size bound and one computation per
key however many requests wait for it; this is the one place that does both, under its own test.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable


class ComputeOnce:
    """A bounded LRU map whose values are computed on first use, once per key.

    Concurrent requests for the same missing key wait for the one computation instead of
    repeating it (two tabs, or the page's parallel baseline requests all needing one bitstream).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._values: OrderedDict[Hashable, object] = OrderedDict()
        self._pending: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def peek(self, key: Hashable) -> object | None:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        return None

    def put(self, key: Hashable, value: object) -> None:
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.capacity:
                self._values.popitem(last=False)

    def get(self, key: Hashable, compute: Callable[[], object]) -> tuple[object, bool]:
        """``(value, cached)``: the stored value, else ``compute()`` stored and returned."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key], True
            key_lock = self._pending.setdefault(key, threading.Lock())
        with key_lock:
            value = self.peek(key)
            if value is not None:
                return value, True
            try:
                value = compute()
                self.put(key, value)
            finally:
                with self._lock:
                    self._pending.pop(key, None)
        return value, False
