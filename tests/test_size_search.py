"""The size bisection (crdr.size_search): the largest grid position whose size fits a target."""

from __future__ import annotations

import math

import pytest

from crdr.errors import ParameterError
from crdr.size_search import largest_fitting


class Sizes:
    """``size_of`` for the bisection: looks sizes up in a table and records every position asked."""

    def __init__(self, sizes: dict[int, int]) -> None:
        self.sizes = sizes
        self.calls: list[int] = []

    def __call__(self, position: int) -> int:
        self.calls.append(position)
        return self.sizes[position]


def _growing(low: int, high: int) -> dict[int, int]:
    """Strictly growing sizes with uneven steps, like a codec's file sizes over its qualities."""
    return {position: 100 + 7 * (position - low) + (position - low) ** 2 for position in range(low, high + 1)}


def test_finds_the_largest_position_that_fits_for_every_target_on_monotone_sizes():
    sizes = _growing(1, 100)
    for target in range(sizes[1], sizes[100]):
        expected = max(position for position, size in sizes.items() if size <= target)
        assert largest_fitting(Sizes(sizes), 1, 100, target) == expected, target


def test_a_target_below_the_smallest_size_gives_none_after_one_measurement():
    size_of = Sizes(_growing(0, 80))
    assert largest_fitting(size_of, 0, 80, 99) is None
    assert size_of.calls == [0]


def test_a_target_above_the_largest_size_gives_the_top_after_measuring_the_two_ends():
    size_of = Sizes(_growing(0, 80))
    assert largest_fitting(size_of, 0, 80, 10**9) == 80
    assert size_of.calls == [0, 80]


def test_a_target_equal_to_a_size_fits_it():
    sizes = _growing(0, 80)
    assert largest_fitting(Sizes(sizes), 0, 80, sizes[37]) == 37
    assert largest_fitting(Sizes(sizes), 0, 80, sizes[0]) == 0


@pytest.mark.parametrize("low, high", [(0, 1), (0, 2), (1, 100), (0, 80), (5, 99), (0, 2**14)])
def test_measurements_are_bounded_by_two_ends_plus_log2_of_the_range_each_position_once(low, high):
    sizes = _growing(low, high)
    bound = 2 + math.ceil(math.log2(high - low))
    for target in (sizes[low], (sizes[low] + sizes[high]) // 2, sizes[high] - 1, sizes[low + 1]):
        size_of = Sizes(sizes)
        largest_fitting(size_of, low, high, target)
        assert len(size_of.calls) <= bound, (target, size_of.calls)
        assert len(set(size_of.calls)) == len(size_of.calls)
        assert size_of.calls[:2] == [low, high]  # the ends first: neighbouring targets share them


def test_a_single_position_range_is_measured_once():
    size_of = Sizes({7: 500})
    assert largest_fitting(size_of, 7, 7, 500) == 7
    assert largest_fitting(size_of, 7, 7, 499) is None
    assert size_of.calls == [7, 7]


def test_the_result_always_fits_even_where_sizes_are_not_monotone():
    sizes = _growing(0, 64)
    sizes[20], sizes[40] = sizes[50], sizes[10]  # dips and bumps, as some encoders have
    for target in range(sizes[0], sizes[64], 37):
        position = largest_fitting(Sizes(sizes), 0, 64, target)
        assert position is not None and sizes[position] <= target


def test_good_enough_stops_at_the_first_fitting_size_that_reaches_it():
    sizes = _growing(0, 2**10)
    target = sizes[700]
    full = Sizes(sizes)
    assert largest_fitting(full, 0, 2**10, target) == 700
    early = Sizes(sizes)
    position = largest_fitting(early, 0, 2**10, target, good_enough=math.ceil(0.97 * target))
    assert position is not None and 0.97 * target <= sizes[position] <= target
    assert len(early.calls) < len(full.calls)


def test_an_empty_range_is_refused():
    with pytest.raises(ParameterError, match="empty search range 5..4"):
        largest_fitting(Sizes({}), 5, 4, 100)
