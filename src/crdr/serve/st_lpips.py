"""ST-LPIPS for the page: the perceptual distance of each shown image to its original, once.

What: :class:`StLpipsMeter` measures ST-LPIPS(original, shown) and keeps each value by key. Its
network is built on first use (the slowest step the page has), once, and its backbone keeps the
original's features (:class:`crdr.metrics.CachedFeatures`): every number on the page compares
something with the same original.
Why its own module: the metric may be unavailable on a machine (its weights or library missing);
that reason is found here, once, and the page shows it instead of a number.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Callable, Hashable

from crdr.serve.cache import ComputeOnce

if TYPE_CHECKING:  # imported where used: importing crdr.serve loads no numpy or torch
    import numpy as np

    from crdr import metrics


class StLpipsMeter:
    """ST-LPIPS(original, reconstruction) by key (LRU of ``capacity``), or ``None`` with :attr:`reason`."""

    def __init__(self, capacity: int = 256) -> None:
        from crdr import metrics

        self.reason = metrics.StLpips.unavailable_reason()  # "" while the metric is usable
        self._metric: metrics.StLpips | None = None
        self._lock = threading.Lock()
        self._values = ComputeOnce(capacity)

    def _network(self) -> metrics.StLpips | None:
        import torch

        from crdr import metrics

        if self.reason:
            return None
        with self._lock:  # the network is built on first use; build it once
            if self._metric is None and not self.reason:
                try:
                    metric = metrics.StLpips()
                    network = metric.network
                except metrics.MetricUnavailable as error:
                    self.reason = str(error)
                    return None
                if isinstance(getattr(network, "net", None), torch.nn.Module):
                    network.net = metrics.CachedFeatures(network.net)
                self._metric = metric
        return self._metric

    def measure(
        self, key: Hashable, original: np.ndarray, reconstruction: Callable[[], np.ndarray]
    ) -> tuple[float | None, float, bool]:
        """``(value, seconds, cached)``: ST-LPIPS of ``original`` and ``reconstruction()``
        (called only when ``key`` is not cached), ``None`` when the metric is unavailable."""

        def compute() -> tuple[float | None, float]:
            started = time.perf_counter()
            shown = reconstruction()
            metric = self._network()
            return (None if metric is None else metric(original, shown)), time.perf_counter() - started

        (value, seconds), cached = self._values.get(key, compute)
        return value, seconds, cached
