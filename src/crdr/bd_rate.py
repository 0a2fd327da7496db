"""Bjøntegaard delta rate and delta metric between two rate–quality curves.

What: the average rate difference at equal quality (BD-rate, in percent) and the average quality
difference at equal rate (BD-metric), computed as in current practice (JVET common test
conditions, the "bjontegaard" reference): each curve is interpolated piecewise-cubically with
PCHIP (monotone, no overshoot, unlike VCEG-M33's single cubic polynomial) on log-rate, and the
gap between the two interpolants is averaged over the range both curves cover.
Why: one number per (codec, metric) pair summarises an RD plot, e.g. "crdr β=0 needs 30 % fewer
bits than AVIF for the same PSNR".

::

    BD-rate:   log R_anchor(m), log R_test(m)  (PCHIP over the metric m)
               Δ = mean over the common m-range of (log R_test − log R_anchor)
               BD-rate = (e^Δ − 1) · 100 %      (negative: the test codec needs fewer bits)
    BD-metric: m_anchor(log R), m_test(log R)  (PCHIP over log-rate)
               BD-metric = mean over the common log-rate range of (m_test − m_anchor)

Each curve needs ≥ 4 points with positive rates and a metric that improves strictly with rate;
for metrics where lower is better (LPIPS, DISTS, FID) pass ``lower_is_better=True``: the metric
is negated internally so "improves" means "decreases". BD-rate itself does not depend on the
direction; BD-metric is always reported in the metric's own units as test − anchor (so a negative
BD-LPIPS means the test codec is better). ``rate_range=(0.1, 0.5)`` restricts the average to
that rate interval (for BD-rate it is mapped to a quality interval on the anchor curve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from crdr.errors import CrdrError, ParameterError

__all__ = ["MIN_POINTS", "bd_rate", "bd_metric", "BdRow", "bd_row", "format_bd_table"]

MIN_POINTS = 4


@dataclass(frozen=True)
class _Curve:
    log_rate: np.ndarray  # strictly increasing
    signed_metric: np.ndarray  # strictly increasing (negated if lower is better)


def _curve(rate: Sequence[float], metric: Sequence[float], lower_is_better: bool, what: str) -> _Curve:
    rate_array = np.asarray(rate, dtype=np.float64).ravel()
    metric_array = np.asarray(metric, dtype=np.float64).ravel()
    if rate_array.shape != metric_array.shape:
        raise CrdrError(f"{what} curve: {rate_array.size} rates but {metric_array.size} metric values")
    if rate_array.size < MIN_POINTS:
        raise CrdrError(f"{what} curve: BD needs at least {MIN_POINTS} points, got {rate_array.size}")
    if not (np.all(np.isfinite(rate_array)) and np.all(np.isfinite(metric_array))):
        raise CrdrError(f"{what} curve: rates and metric values must be finite")
    if np.any(rate_array <= 0):
        raise CrdrError(f"{what} curve: rates must be positive")
    order = np.argsort(rate_array, kind="stable")
    rate_array, metric_array = rate_array[order], metric_array[order]
    signed = -metric_array if lower_is_better else metric_array
    if np.any(np.diff(rate_array) <= 0) or np.any(np.diff(signed) <= 0):
        direction = "decrease" if lower_is_better else "increase"
        bad = int(np.flatnonzero((np.diff(rate_array) <= 0) | (np.diff(signed) <= 0))[0])
        raise CrdrError(
            f"{what} curve: the metric must strictly {direction} with rate "
            f"(points at rate {rate_array[bad]:.6g} and {rate_array[bad + 1]:.6g} break it)")
    return _Curve(np.log(rate_array), signed)


def _rate_interval(rate_range: tuple[float, float] | None) -> tuple[float, float]:
    if rate_range is None:
        return -math.inf, math.inf
    low, high = (float(value) for value in rate_range)
    if not (0 < low < high):
        raise ParameterError(f"rate_range must be (low, high) with 0 < low < high, got {rate_range}")
    return math.log(low), math.log(high)


def _mean_gap(anchor_x: np.ndarray, anchor_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
              low: float, high: float, what: str) -> float:
    """Mean of (PCHIP(test) − PCHIP(anchor)) over [low, high] ∩ both x-ranges."""
    from scipy.interpolate import PchipInterpolator

    low = max(low, anchor_x[0], test_x[0])
    high = min(high, anchor_x[-1], test_x[-1])
    if not high > low:
        raise CrdrError(f"the two curves do not overlap in {what}")
    anchor = PchipInterpolator(anchor_x, anchor_y, extrapolate=False)
    test = PchipInterpolator(test_x, test_y, extrapolate=False)
    return float((test.integrate(low, high) - anchor.integrate(low, high)) / (high - low))


def bd_rate(anchor_rate: Sequence[float], anchor_metric: Sequence[float],
            test_rate: Sequence[float], test_metric: Sequence[float], *,
            lower_is_better: bool = False, rate_range: tuple[float, float] | None = None) -> float:
    """BD-rate of the test curve against the anchor, in percent (negative = test needs fewer bits).

    ``rate_range`` (e.g. ``(0.1, 0.5)`` bpp) limits the average to the qualities the anchor
    reaches at those rates. Raises :class:`CrdrError` for curves with < 4 points, non-monotonic
    curves, or curves whose quality ranges do not overlap.
    """
    anchor = _curve(anchor_rate, anchor_metric, lower_is_better, "anchor")
    test = _curve(test_rate, test_metric, lower_is_better, "test")
    low, high = -math.inf, math.inf
    if rate_range is not None:
        from scipy.interpolate import PchipInterpolator

        log_low, log_high = _rate_interval(rate_range)
        log_low = max(log_low, anchor.log_rate[0])
        log_high = min(log_high, anchor.log_rate[-1])
        if not log_high > log_low:
            raise CrdrError(f"rate_range {rate_range} lies outside the anchor curve's rates")
        metric_of_rate = PchipInterpolator(anchor.log_rate, anchor.signed_metric)
        low, high = float(metric_of_rate(log_low)), float(metric_of_rate(log_high))
    gap = _mean_gap(anchor.signed_metric, anchor.log_rate, test.signed_metric, test.log_rate,
                    low, high, "quality")
    return (math.exp(gap) - 1.0) * 100.0


def bd_metric(anchor_rate: Sequence[float], anchor_metric: Sequence[float],
              test_rate: Sequence[float], test_metric: Sequence[float], *,
              lower_is_better: bool = False, rate_range: tuple[float, float] | None = None) -> float:
    """BD-metric (e.g. BD-PSNR in dB): mean of test − anchor over the common log-rate range, in
    the metric's own units. ``lower_is_better`` only sets which direction counts as monotonic."""
    anchor = _curve(anchor_rate, anchor_metric, lower_is_better, "anchor")
    test = _curve(test_rate, test_metric, lower_is_better, "test")
    low, high = _rate_interval(rate_range)
    sign = -1.0 if lower_is_better else 1.0
    gap = _mean_gap(anchor.log_rate, anchor.signed_metric, test.log_rate, test.signed_metric,
                    low, high, "rate")
    return sign * gap


@dataclass(frozen=True)
class BdRow:
    """One line of a BD table: ``test`` against ``anchor`` on ``metric``."""

    test: str
    anchor: str
    metric: str
    bd_rate: float
    bd_metric: float | None = None
    rate_range: tuple[float, float] | None = None


def bd_row(test: str, anchor: str, metric: str,
           anchor_rate: Sequence[float], anchor_metric: Sequence[float],
           test_rate: Sequence[float], test_metric: Sequence[float], *,
           lower_is_better: bool = False, rate_range: tuple[float, float] | None = None) -> BdRow:
    """BD-rate and BD-metric of one pair of curves, as a :class:`BdRow`."""
    options = {"lower_is_better": lower_is_better, "rate_range": rate_range}
    return BdRow(
        test=test, anchor=anchor, metric=metric,
        bd_rate=bd_rate(anchor_rate, anchor_metric, test_rate, test_metric, **options),
        bd_metric=bd_metric(anchor_rate, anchor_metric, test_rate, test_metric, **options),
        rate_range=tuple(rate_range) if rate_range is not None else None,
    )


def _cell(value: float | None, form: str, unit: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return format(value, form) + unit


def format_bd_table(rows: Iterable[BdRow | Mapping[str, object]]) -> str:
    """A Markdown table (readable as plain text) of BD rows; mappings need BdRow's field names."""
    table = [["test", "anchor", "metric", "BD-rate", "BD-metric", "rate range"]]
    for row in rows:
        if not isinstance(row, BdRow):
            row = BdRow(**row)  # type: ignore[arg-type]
        rate_range = f"{row.rate_range[0]:g}–{row.rate_range[1]:g}" if row.rate_range else "all"
        table.append([row.test, row.anchor, row.metric, _cell(row.bd_rate, "+.2f", " %"),
                      _cell(row.bd_metric, "+.4g"), rate_range])
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]))]

    def render(line: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths)) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([render(table[0]), separator, *(render(line) for line in table[1:])])
