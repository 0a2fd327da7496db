"""Tests of BD-rate / BD-metric: known shifts, overlap, rate intervals, errors, table."""

from __future__ import annotations

import math

import pytest

from crdr.bd_rate import BdRow, bd_metric, bd_rate, bd_row, format_bd_table
from crdr.errors import CrdrError

RATES = [0.1, 0.2, 0.4, 0.8, 1.6]
PSNR = [28.0, 30.5, 32.6, 34.4, 36.0]
LPIPS = [0.20, 0.14, 0.09, 0.06, 0.04]


def test_bd_rate_of_rate_times_0_8_at_equal_quality_is_minus_20_percent():
    assert bd_rate(RATES, PSNR, [r * 0.8 for r in RATES], PSNR) == pytest.approx(-20.0, abs=0.02)


def test_bd_rate_of_lower_is_better_metric_shifted_by_1_25_is_plus_25_percent():
    value = bd_rate(RATES, LPIPS, [r * 1.25 for r in RATES], LPIPS, lower_is_better=True)
    assert value == pytest.approx(25.0, abs=0.03)


def test_bd_rate_averages_a_log_rate_gap_that_varies_linearly_over_the_overlap():
    # log R_anchor = 0.2·m; log R_test = 0.2·m − 0.01·(m − 30): PCHIP reproduces both lines
    # exactly, so the mean gap over the common range m ∈ [30, 36] is −0.01·3 = −0.03.
    anchor_metric = [28.0, 30.0, 32.0, 34.0, 36.0]
    test_metric = [30.0, 32.0, 34.0, 36.0, 38.0]
    anchor_rate = [math.exp(0.2 * m) for m in anchor_metric]
    test_rate = [math.exp(0.2 * m - 0.01 * (m - 30.0)) for m in test_metric]
    expected = (math.exp(-0.03) - 1.0) * 100.0
    assert bd_rate(anchor_rate, anchor_metric, test_rate, test_metric) == pytest.approx(expected, abs=1e-9)


def test_bd_rate_restricted_to_a_rate_interval_averages_only_that_interval():
    anchor_metric = [28.0, 30.0, 32.0, 34.0, 36.0]
    anchor_rate = [math.exp(0.2 * m) for m in anchor_metric]
    test_rate = [math.exp(0.2 * m - 0.01 * (m - 30.0)) for m in anchor_metric]
    # Rates e^6.2 .. e^6.6 map to m ∈ [31, 33] on the anchor: mean gap −0.01·2 = −0.02.
    value = bd_rate(anchor_rate, anchor_metric, test_rate, anchor_metric, rate_range=(math.exp(6.2), math.exp(6.6)))
    assert value == pytest.approx((math.exp(-0.02) - 1.0) * 100.0, abs=1e-9)


def test_bd_psnr_of_rate_times_0_8_is_the_psnr_gained_on_a_2_db_per_octave_curve():
    rates = [0.1, 0.2, 0.4, 0.8, 1.6]
    psnr = [30.0, 32.0, 34.0, 36.0, 38.0]  # 2 dB per doubling of rate: exact under PCHIP on log-rate
    gain = bd_metric(rates, psnr, [r * 0.8 for r in rates], psnr)
    assert gain == pytest.approx(2.0 * math.log2(1 / 0.8), abs=1e-9)


def test_bd_metric_of_lower_is_better_metric_is_reported_in_its_own_units():
    better = [value - 0.01 for value in LPIPS]
    assert bd_metric(RATES, LPIPS, RATES, better, lower_is_better=True) == pytest.approx(-0.01, abs=1e-12)


def test_bd_rate_rejects_curves_with_fewer_than_4_points():
    with pytest.raises(CrdrError, match="at least 4"):
        bd_rate(RATES[:3], PSNR[:3], RATES, PSNR)


def test_bd_rate_rejects_curves_that_do_not_overlap():
    with pytest.raises(CrdrError, match="overlap"):
        bd_rate(RATES, PSNR, RATES, [value + 20.0 for value in PSNR])


def test_bd_rate_rejects_a_non_monotonic_curve_and_the_wrong_direction_flag():
    with pytest.raises(CrdrError, match="increase"):
        bd_rate(RATES, [28.0, 31.0, 30.0, 34.0, 36.0], RATES, PSNR)
    with pytest.raises(CrdrError, match="increase"):
        bd_rate(RATES, LPIPS, RATES, LPIPS)  # LPIPS without lower_is_better


def test_format_bd_table_shows_rows_with_signs_units_and_missing_values():
    row = bd_row("crdr β=0", "jpeg-420", "PSNR", RATES, PSNR, [r * 0.8 for r in RATES], PSNR, rate_range=(0.1, 0.5))
    table = format_bd_table([row, {"test": "x", "anchor": "y", "metric": "FID", "bd_rate": float("nan")}])
    lines = table.splitlines()
    assert len(lines) == 4
    assert "-20.00 %" in lines[2] and "crdr β=0" in lines[2] and "0.1–0.5" in lines[2]
    assert "n/a" in lines[3]
    assert isinstance(row, BdRow)
