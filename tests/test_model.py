"""Architecture: the paper preset equals the authors' model key for key; q/beta handling."""

from __future__ import annotations

import json
import math

import pytest
import torch

from crdr.config import PAPER, SMALL, TINY, ModelConfig, preset
from crdr.errors import ParameterError, WeightsError
from crdr.models.crdr import CRDR
from crdr.models.ica import InterpChannelAttention, interpolation_weights
from crdr.weights import crdr_to_official_key

from conftest import SHARED, require_shared

KEYS_JSON = SHARED / "spec" / "official-crdr-keys.json"


@pytest.fixture(scope="module")
def paper_state():
    return CRDR(PAPER).state_dict()


@pytest.mark.vectors  # the authors' key list lives beside the test vectors, in ../shared
def test_paper_preset_has_exactly_the_official_keys_and_shapes(paper_state):
    require_shared(KEYS_JSON)
    official = {e["key"]: tuple(e["shape"]) for e in json.loads(KEYS_JSON.read_text())["state_dict"]}
    ours = {crdr_to_official_key(k): tuple(v.shape) for k, v in paper_state.items()}
    assert ours == official


def test_paper_preset_parameter_counts():
    model = CRDR(PAPER)
    assert sum(p.numel() for p in model.parameters()) == 127_712_963
    assert sum(p.numel() for p in model.context_model.parameters()) == 96_989_440


def test_tiny_preset_matches_test_vector_parameter_count():
    assert sum(p.numel() for p in CRDR(TINY).parameters()) == 858_971


def test_small_preset_is_under_bundle_budget():
    # fp16 weights of the bundled model must stay <= 30 MB.
    assert sum(p.numel() for p in CRDR(SMALL).parameters()) * 2 < 30e6


def test_stage_flags_remove_ica_and_beta_parts():
    stage1 = CRDR(ModelConfig(**{**TINY.to_dict(), "variable_rate": False, "beta_conditioned": False}))
    keys = set(stage1.state_dict())
    assert not any("interp_ca_list" in k or "proj_" in k or "mlp" in k for k in keys)
    stage2 = CRDR(ModelConfig(**{**TINY.to_dict(), "beta_conditioned": False}))
    new = set(stage2.state_dict()) - keys
    assert new and all("interp_ca_list" in k for k in new)


def test_unknown_preset_and_config_field_fail():
    with pytest.raises(WeightsError):
        preset("huge")
    with pytest.raises(WeightsError):
        ModelConfig.from_dict({"y_channels": 30, "colour": 1})


def test_fresh_ica_layer_is_identity():
    layer = InterpChannelAttention(4)
    x = torch.randn(2, 4, 3, 3)
    assert torch.allclose(layer(x, torch.tensor([1.3])), x, atol=1e-6)


def test_ica_interpolates_raw_weights_between_levels():
    lower, upper, alpha = interpolation_weights(torch.tensor([0.0, 1.25, 4.0]), 5)
    assert lower.tolist() == [0, 1, 4] and upper.tolist() == [1, 2, 4]
    assert alpha.tolist() == [1.0, 0.75, 0.0]
    layer = InterpChannelAttention(1)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(5.0).view(5, 1, 1, 1, 1))
    scale, _ = layer.scale_and_bias(torch.tensor([2.5]))
    assert math.isclose(float(scale.detach()), math.log1p(math.exp(2.5)), rel_tol=1e-6)


def test_forward_accepts_per_sample_q_and_beta():
    model = CRDR(TINY).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        both = model(x, torch.tensor([0.0, 4.0]), torch.tensor([0.0, 5.12]))
        first = model(x[:1], 0.0, 0.0)
        second = model(x[1:], 4.0, 5.12)
    assert torch.allclose(both.x_hat[:1], first.x_hat, atol=1e-5)
    assert torch.allclose(both.x_hat[1:], second.x_hat, atol=1e-5)


@pytest.mark.parametrize("q, beta", [(-0.1, 0.0), (4.01, 0.0), (float("nan"), 0.0), (1.0, 5.2), (1.0, -1.0)])
def test_out_of_range_q_or_beta_raises_parameter_error(q, beta):
    model = CRDR(TINY).eval()
    with pytest.raises(ParameterError):
        model(torch.zeros(1, 3, 64, 64), q, beta)


def test_q_tensor_and_beta_tensor_are_what_the_transforms_take_or_none_without_the_feature():
    model = CRDR(TINY)
    assert model.q_tensor(1.5).tolist() == [1.5] and model.beta_tensor(None).tolist() == [0.0]
    assert model.q_tensor([0.0, 4.0], batch=2).dtype == torch.float32
    with pytest.raises(ParameterError, match=r"q must lie in \[0, 4\], got \[4.5\]"):
        model.q_tensor(4.5)
    stage1 = CRDR(ModelConfig(**{**TINY.to_dict(), "variable_rate": False, "beta_conditioned": False}))
    assert stage1.q_tensor(99.0) is None and stage1.beta_tensor(99.0) is None


def test_size_not_multiple_of_stride_raises():
    with pytest.raises(ParameterError):
        CRDR(TINY)(torch.zeros(1, 3, 60, 64), 1.0, 0.0)


def test_training_forward_is_noisy_and_unclamped_with_gradients():
    torch.manual_seed(0)
    model = CRDR(TINY).train()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    result = model(x, 2.0, 1.0)
    loss = result.bpp().mean() + ((result.x_hat - x) ** 2).mean()
    loss.backward()
    assert model.encoder.conv1.weight.grad is not None
    assert model.entropy_model_z.quantiles.grad is None or model.entropy_model_z.quantiles.grad.abs().sum() == 0
    assert not torch.equal(result.y_likelihoods, result.y_q_likelihoods)
    assert result.bpp(quantized=True).requires_grad is False
