"""Losses: HiFiC rate loss, MSE, perceptual losses and the GAN loss pairs (spec §14.4-14.5)."""

import contextlib
import math
import types

import pytest
import torch

from crdr.errors import ParameterError, WeightsError
from crdr.losses import PerceptualLoss, gan_loss, hific_rate_loss, hrrgan_reference, mse_loss, reference_logits

LAMBDA_A = [3.6, 1.8, 0.8, 0.4, 0.1]
TARGETS = [0.08, 0.16, 0.36, 0.72, 1.2]


def softplus(t: float) -> float:
    return math.log1p(math.exp(t))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


# --- rate loss ---------------------------------------------------------------------------------------


def test_rate_loss_uses_lambda_a_when_qbpp_above_target():
    bpp = torch.tensor([0.2, 0.4])
    qbpp = torch.tensor([0.15, 0.25])  # mean 0.2 > 0.16
    loss = hific_rate_loss(bpp, qbpp, 1, LAMBDA_A, 2**-6, TARGETS)
    assert loss.item() == pytest.approx(1.8 * 0.3)


def test_rate_loss_uses_lambda_b_when_qbpp_below_target():
    bpp = torch.tensor([0.2, 0.4])
    qbpp = torch.tensor([0.1, 0.1])  # mean 0.1 < 0.16
    loss = hific_rate_loss(bpp, qbpp, 1, LAMBDA_A, [2**-6] * 5, TARGETS)
    assert loss.item() == pytest.approx(2**-6 * 0.3)


def test_rate_loss_with_zero_targets_always_uses_lambda_a():
    # Stage 3 sets every target to 0, so lambda_A applies whatever the rate.
    loss = hific_rate_loss(torch.tensor([0.01]), torch.tensor([0.01]), 4, [3.4, 1.3, 0.4, 0.12, 0.05],
                           2**-6, [0.0] * 5)
    assert loss.item() == pytest.approx(0.05 * 0.01)


def test_rate_loss_single_rate_stage_with_one_element_lists():
    loss = hific_rate_loss(torch.tensor([2.0]), torch.tensor([2.0]), 0, [0.05], [2**-6], [1.5])
    assert loss.item() == pytest.approx(0.05 * 2.0)


def test_rate_loss_gradient_reaches_bpp_but_not_qbpp():
    bpp = torch.tensor([0.2, 0.4], requires_grad=True)
    qbpp = torch.tensor([1.0, 1.0], requires_grad=True)
    hific_rate_loss(bpp, qbpp, 0, LAMBDA_A, 2**-6, TARGETS).backward()
    assert torch.allclose(bpp.grad, torch.tensor([3.6 / 2, 3.6 / 2]))
    assert qbpp.grad is None


def test_rate_loss_rejects_level_outside_the_lists():
    with pytest.raises(ParameterError):
        hific_rate_loss(torch.ones(1), torch.ones(1), 5, LAMBDA_A, 2**-6, TARGETS)


# --- MSE ---------------------------------------------------------------------------------------------


def test_mse_is_measured_on_the_zero_one_scale():
    x = torch.tensor([-1.0, 0.0, 1.0, 0.5]).view(1, 1, 2, 2)
    x_hat = torch.tensor([1.0, 0.0, 0.0, 0.5]).view(1, 1, 2, 2)
    # [0,1] differences: 1.0, 0, 0.5, 0 -> mean of squares (1 + 0.25) / 4
    assert mse_loss(x_hat, x).item() == pytest.approx(1.25 / 4)


def test_mse_rejects_shape_mismatch():
    with pytest.raises(ParameterError):
        mse_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


# --- perceptual ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stlpips():
    loss = PerceptualLoss("stlpips-alex")
    # Warm-up (oneDNN kernel creation) in the fixture, so the tests time only their own work.
    x = torch.zeros(2, 3, 32, 32, requires_grad=True)
    loss(x, torch.ones(2, 3, 32, 32)).backward()
    return loss


def test_stlpips_of_identical_images_is_zero(stlpips):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert stlpips(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_stlpips_of_different_images_is_positive(stlpips):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1
    y = torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1
    assert stlpips(y, x).item() > 0.05


def test_stlpips_gradient_reaches_the_input(stlpips):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x_hat = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_(True)
    stlpips(x_hat, x).backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0


def test_stlpips_network_is_frozen_and_stays_in_eval_mode(stlpips):
    stlpips.train()
    assert not stlpips.network.training
    assert all(not m.training for m in stlpips.network.modules())
    assert all(not p.requires_grad for p in stlpips.parameters())


def test_stlpips_loads_the_bundled_linear_weights(stlpips):
    # Freshly initialised LPIPS linear layers are zero-mean random; the calibrated ones are >= 0.
    weight = stlpips.network.lin0.model[-1].weight
    assert (weight >= 0).all() and weight.abs().sum() > 0


def test_lpips_without_alexnet_weights_raises_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="alexnet-owt-7be5be79.pth"):
        PerceptualLoss("lpips-alex", alexnet_weights=tmp_path / "missing.pth")


def test_lpips_reads_the_alexnet_backbone_from_a_local_file(tmp_path):
    # A torchvision-layout file holding only `features.*` (random values) stands in for the real one.
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3),
              10: (256, 256, 3, 3)}
    state = {}
    for index, shape in shapes.items():
        state[f"features.{index}.weight"] = torch.randn(shape) * 0.01
        state[f"features.{index}.bias"] = torch.randn(shape[0]) * 0.01
    torch.save(state, tmp_path / "alexnet.pth")
    loss = PerceptualLoss("lpips-alex", alexnet_weights=tmp_path / "alexnet.pth")
    assert torch.equal(loss.network.state_dict()["net.slice3.6.weight"], state["features.6.weight"])
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_unknown_perceptual_kind_raises_parameter_error():
    with pytest.raises(ParameterError):
        PerceptualLoss("vgg")


# --- GAN losses ----------------------------------------------------------------------------------------

FAKE = [0.5, -1.0, 0.25, 2.0]
REAL = [2.0, 0.3, -0.5, 1.0]


def logits(values, grad=True):
    return torch.tensor(values).view(2, 1, 1, 2).requires_grad_(grad)


def test_sgan_losses_match_hand_computed_values():
    loss = gan_loss("sgan")
    d_fake, d_real = logits(FAKE), logits(REAL)
    assert loss.generator(d_fake, d_real).item() == pytest.approx(mean(softplus(-f) for f in FAKE))
    expected = 0.5 * mean(softplus(-r) for r in REAL) + 0.5 * mean(softplus(f) for f in FAKE)
    assert loss.discriminator(d_real, d_fake).item() == pytest.approx(expected)


def test_rgan_generator_is_elementwise_relativistic_and_ignores_real_gradient():
    d_fake, d_real = logits(FAKE), logits(REAL)
    value = gan_loss("rgan").generator(d_fake, d_real)
    value.backward()
    assert value.item() == pytest.approx(mean(softplus(r - f) for f, r in zip(FAKE, REAL)))
    assert d_real.grad is None


def test_rgan_discriminator_value_and_half_gradient():
    d_fake, d_real = logits(FAKE), logits(REAL)
    value = gan_loss("rgan").discriminator(d_real, d_fake)
    value.backward()
    assert value.item() == pytest.approx(mean(softplus(f - r) for f, r in zip(FAKE, REAL)))
    # Half of the gradient of mean(-log sigmoid(d_real - d_fake)) (the authors' two-pass D step).
    sigma = [1 / (1 + math.exp(-(f - r))) for f, r in zip(FAKE, REAL)]
    assert d_real.grad.flatten().tolist() == pytest.approx([-0.5 * s / 4 for s in sigma])
    assert d_fake.grad.flatten().tolist() == pytest.approx([0.5 * s / 4 for s in sigma])


def test_ragan_compares_against_batch_and_space_means():
    d_fake, d_real = logits(FAKE), logits(REAL)
    loss = gan_loss("ragan")
    fake_mean, real_mean = mean(FAKE), mean(REAL)
    expected_g = 0.5 * (mean(softplus(r - fake_mean) for r in REAL)
                        + mean(softplus(-(f - real_mean)) for f in FAKE))
    expected_d = 0.5 * (mean(softplus(-(r - fake_mean)) for r in REAL)
                        + mean(softplus(f - real_mean) for f in FAKE))
    assert loss.generator(d_fake, d_real).item() == pytest.approx(expected_g)
    assert loss.discriminator(d_real, d_fake).item() == pytest.approx(expected_d)
    assert expected_g != pytest.approx(gan_loss("rgan").generator(d_fake, d_real).item())


def test_hrrgan_generator_is_minus_log_sigmoid_of_difference_to_reference():
    d_fake, d_ref = logits(FAKE), logits(REAL)
    value = gan_loss("hrrgan").generator(d_fake, d_ref)
    value.backward()
    expected = mean(-math.log(1 / (1 + math.exp(-(f - r)))) for f, r in zip(FAKE, REAL))
    assert value.item() == pytest.approx(expected)
    assert d_ref.grad is None
    sigma = [1 / (1 + math.exp(-(f - r))) for f, r in zip(FAKE, REAL)]
    assert d_fake.grad.flatten().tolist() == pytest.approx([-(1 - s) / 4 for s in sigma])


def test_hrrgan_asks_for_a_reference_and_trains_d_against_the_real_image():
    hrrgan, rgan = gan_loss("hrrgan"), gan_loss("rgan")
    assert hrrgan.uses_reference and not rgan.uses_reference
    d_fake, d_real = logits(FAKE), logits(REAL)
    assert hrrgan.discriminator(d_real, d_fake).item() == pytest.approx(
        rgan.discriminator(d_real, d_fake).item()
    )


class RecordingCodec(torch.nn.Module):
    """Stands in for CRDR: records each call and decodes x as x * (1 + q) with a grad-carrying weight."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.calls = []

    def forward(self, x, q, beta):
        self.calls.append((q, beta, torch.is_grad_enabled()))
        return types.SimpleNamespace(x_hat=(x * (1 + q) * self.weight).double())


def test_hrrgan_reference_decodes_at_q_plus_delta_without_gradient_and_is_x_at_the_top():
    codec, x = RecordingCodec(), torch.rand(2, 3, 4, 4) * 2 - 1
    x_ref = hrrgan_reference(codec, x, 2, 1.28, levels=5)
    assert codec.calls == [(3.0, 1.28, False)]
    assert x_ref.dtype == torch.float32 and not x_ref.requires_grad
    assert torch.allclose(x_ref, 4 * x)
    assert hrrgan_reference(codec, x, 1, 0.5, levels=5, delta=2).equal(4 * x)  # q + delta = 3
    codec.calls.clear()
    for q_index, delta in ((4, 1), (3, 2)):  # q + delta above the top level: the real image itself
        assert hrrgan_reference(codec, x, q_index, 1.28, levels=5, delta=delta) is x
    assert codec.calls == []


def test_hrrgan_reference_runs_inside_the_given_autocast_context():
    entered = []

    @contextlib.contextmanager
    def autocast():
        entered.append(torch.is_grad_enabled())
        yield

    hrrgan_reference(RecordingCodec(), torch.zeros(1, 3, 4, 4), 0, None, levels=2, autocast=autocast)
    assert entered == [False]


def test_reference_logits_are_the_level_q_discriminator_without_a_graph():
    calls = []

    def discriminator(x, q_index):
        calls.append(q_index)
        return (x * weight).sum(dim=1, keepdim=True).half()

    weight = torch.ones((), requires_grad=True)
    d_ref = reference_logits(discriminator, torch.ones(1, 3, 2, 2), 3)
    assert calls == [3] and d_ref.dtype == torch.float32 and not d_ref.requires_grad
    assert d_ref.flatten().tolist() == [3.0] * 4


def test_unknown_gan_loss_raises_parameter_error():
    with pytest.raises(ParameterError):
        gan_loss("wgan")
