"""Scale-index rules of the y coder: CompressAI's next-larger rule and crdr's nearest-on-log rule."""

from __future__ import annotations

import math

import pytest
import torch

from crdr.entropy import ScaleRule, TablesMissingError, YGaussian, gaussian_scale_table


@pytest.fixture(scope="module")
def gaussian() -> YGaussian:
    model = YGaussian()
    model.build_tables()
    return model


def _random_scales() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    log_scales = torch.empty(4000).uniform_(math.log(0.01), math.log(400), generator=generator)
    table = gaussian_scale_table()
    # Also the table scales themselves and their geometric midpoints (ties go to the smaller scale).
    midpoints = torch.sqrt(table[:-1].double() * table[1:].double()).float()
    return torch.cat([log_scales.exp(), table, midpoints, torch.tensor([0.0, 0.11, 1e6])]).view(2, -1, 1, 1)


def test_next_larger_rule_is_compressai_build_indexes(gaussian):
    scales = _random_scales()
    assert torch.equal(gaussian.indexes(scales, ScaleRule.NEXT_LARGER), gaussian.build_indexes(scales))


def test_nearest_rule_picks_the_nearest_table_scale_on_a_log_axis(gaussian):
    scales = _random_scales()
    indexes = gaussian.indexes(scales, ScaleRule.NEAREST)
    assert indexes.dtype == torch.int32 and indexes.shape == scales.shape
    log_table = torch.log(gaussian_scale_table().double())
    # Scales beyond the table's ends are coded with its first or last scale.
    log_scales = torch.log(scales.double().clamp(0.11, 256.0)).reshape(-1, 1)
    distance = (log_scales - log_table).abs()
    chosen = distance.gather(1, indexes.reshape(-1, 1).long()).squeeze(1)
    # Nearest up to float32 rounding of the thresholds (a tie may go either way).
    assert torch.all(chosen <= distance.min(dim=1).values + 1e-6)
    # And never further than half a table step.
    step = (log_table[1] - log_table[0]).item()
    assert chosen.max().item() <= step / 2 + 1e-6


def test_rules_differ_and_tables_are_required():
    model = YGaussian()
    with pytest.raises(TablesMissingError):
        model.indexes(torch.ones(1, 1, 1, 1), ScaleRule.NEAREST)
    model.build_tables()
    scales = torch.full((1, 1, 1, 1), 0.121)  # between table scales 0.11 and 0.1244, nearer the second
    assert model.indexes(scales, ScaleRule.NEAREST).item() == 1
    scales = torch.full((1, 1, 1, 1), 0.112)
    assert model.indexes(scales, ScaleRule.NEAREST).item() == 0
    assert model.indexes(scales, ScaleRule.NEXT_LARGER).item() == 1
