"""Patch discriminators (spec §14.6): shapes, parameter counts, key names and level routing."""

import pytest
import torch
from torch import nn

from crdr.errors import ParameterError
from crdr.models.discriminator import (
    Clic21Discriminator,
    HybridDiscriminator,
    IndependentDiscriminator,
    build_discriminator,
)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def image(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_paper_size_clic21_discriminator_has_4689985_parameters():
    with torch.device("meta"):
        assert count(Clic21Discriminator(main_channels=64)) == 4_689_985


def test_paper_size_independent_and_hybrid_parameter_counts():
    with torch.device("meta"):
        assert count(build_discriminator("independent", levels=5, main_channels=64)) == 23_449_925
        assert count(build_discriminator("hybrid", levels=5, main_channels=64)) == 22_409_285


def test_clic21_has_nine_convs_with_leaky_relu_after_all_but_the_last():
    layers = list(Clic21Discriminator(main_channels=4).model)
    convs = [layer for layer in layers if isinstance(layer, nn.Conv2d)]
    assert len(convs) == 9 and len(layers) == 17
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2, 1]
    assert all(isinstance(layers[i], nn.LeakyReLU) and layers[i].negative_slope == 0.2
               for i in range(1, 17, 2))
    assert isinstance(layers[-1], nn.Conv2d)


def test_independent_state_dict_keys_match_the_authors():
    keys = set(IndependentDiscriminator(levels=2, main_channels=4).state_dict())
    expected = {f"subD_list.{k}.model.{i}.{p}" for k in range(2) for i in range(0, 17, 2)
                for p in ("weight", "bias")}
    assert keys == expected


@pytest.mark.parametrize("kind", ["independent", "shared", "hybrid"])
def test_every_kind_returns_logits_at_one_sixteenth_resolution(kind):
    discriminator = build_discriminator(kind, levels=3, main_channels=4)
    assert discriminator(image(2, 32), 2).shape == (2, 1, 2, 2)
    assert discriminator(image(1, 48), 0).shape == (1, 1, 3, 3)


def test_independent_routes_level_k_to_sub_discriminator_k():
    discriminator = IndependentDiscriminator(levels=3, main_channels=4)
    x = image()
    for k in range(3):
        assert torch.equal(discriminator(x, k), discriminator.subD_list[k](x))
    assert not torch.allclose(discriminator(x, 0), discriminator(x, 1))


def test_independent_level_is_the_integer_part_of_q():
    discriminator = IndependentDiscriminator(levels=3, main_channels=4)
    x = image()
    assert torch.equal(discriminator(x, 1.75), discriminator.subD_list[1](x))


def test_shared_discriminator_output_depends_on_the_level():
    discriminator = build_discriminator("shared", levels=3, main_channels=4)
    x = image()
    assert discriminator.discriminator.model[0].in_channels == 3 + 3
    assert not torch.allclose(discriminator(x, 0), discriminator(x, 2))


def test_hybrid_shares_the_backbone_and_trains_only_the_levels_head():
    discriminator = HybridDiscriminator(levels=3, main_channels=4)
    discriminator(image(), 1).sum().backward()
    assert all(p.grad is not None for p in discriminator.backbone.parameters())
    assert all(p.grad is not None for p in discriminator.heads[1].parameters())
    assert all(p.grad is None for k in (0, 2) for p in discriminator.heads[k].parameters())


def test_hybrid_with_level_conditioning_adds_one_hot_input_channels():
    discriminator = HybridDiscriminator(levels=3, main_channels=4, condition_on_level=True)
    assert discriminator.backbone[0].in_channels == 6
    assert discriminator(image(), 2).shape == (2, 1, 2, 2)


@pytest.mark.parametrize("kind", ["independent", "shared", "hybrid"])
def test_level_outside_range_raises_parameter_error(kind):
    discriminator = build_discriminator(kind, levels=2, main_channels=4)
    with pytest.raises(ParameterError):
        discriminator(image(), 2)


def test_unknown_discriminator_kind_raises_parameter_error():
    with pytest.raises(ParameterError):
        build_discriminator("patchgan")
