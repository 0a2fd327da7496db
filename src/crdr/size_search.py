"""Size bisection: the largest position on a grid whose file fits in a byte budget.

What: :func:`largest_fitting` bisects a monotone integer grid (qualities, slider positions) for
the largest position whose size is not above a target, measuring as few positions as it can.
Why: "the largest quality whose file fits in N bytes" is asked in several places: ``crdr serve``
(over the slider's ``q`` grid), :func:`crdr.baselines.encode_to_size` (over a codec's integer
qualities), and the target-size encode of :mod:`crdr.codec` (continuous ``q``: the same bisection
on a grid of ``2**SEARCH_STEPS`` positions, with an early stop). One bisection, written once,
keeps them in agreement: the same end checks, the same probes, and never a result above the
budget. Pure Python, no torch or numpy, so any module can import it.
"""

from __future__ import annotations

from typing import Callable

from crdr.errors import ParameterError

__all__ = ["largest_fitting"]


def largest_fitting(
    size_of: Callable[[int], int], low: int, high: int, target: int, *, good_enough: int | None = None
) -> int | None:
    """The largest ``position`` in ``low..high`` with ``size_of(position) <= target``, or
    ``None`` when even ``size_of(low)`` is above ``target``.

    ``size_of`` (a file's size in bytes at a grid position) is assumed to grow with the position.
    It is called on ``low`` first, then on ``high`` (returned at once if it fits), then on the
    middles of the remaining interval: at most ``2 + ceil(log2(high - low))`` calls, each
    position once. Where sizes are not monotone the result may be below the best position that
    fits, but it is always one measured to fit: the target is never exceeded.

    ``good_enough``: stop as soon as the largest position known to fit has a size of at least
    this many bytes (a file close enough below the target), before the interval is exhausted.
    """
    if low > high:
        raise ParameterError(f"empty search range {low}..{high}")
    size = size_of(low)
    if size > target:
        return None
    if high == low or size_of(high) <= target:
        return high
    # Invariant: `low` fits (its size is `size`), `high` does not.
    while high - low > 1 and (good_enough is None or size < good_enough):
        middle = (low + high) // 2
        middle_size = size_of(middle)
        if middle_size <= target:
            low, size = middle, middle_size
        else:
            high = middle
    return low
