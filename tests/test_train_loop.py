"""One training iteration: losses, GAN variants, discriminators, freezing, stage initialisation."""

import dataclasses
import math

import pytest
import torch

from crdr.data import SyntheticImageDataset
from crdr.errors import ParameterError, WeightsError
from crdr.models.crdr import CRDR
from crdr.train import loop
from crdr.train.config import apply_overrides, train_preset
from crdr.train import stages
from crdr.train.loop import build_training, training_step
from crdr.train.stages import init_from_previous, is_beta_parameter, is_rate_parameter, trainable_parameters
from crdr.weights import is_constant_buffer, save_weights


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny(stage, **changes):
    return dataclasses.replace(train_preset(f"tiny-stage{stage}"), **changes)


def batch():
    images = SyntheticImageDataset(2, 64, seed=3)
    return torch.stack([images[0], images[1]])


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module, prefix=""):
    after = module.state_dict()
    return {k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])}


def test_loss_goes_down_when_overfitting_one_batch():
    training = build_training(tiny(1, lr=3e-3, perceptual_weight=0.0))
    x = batch()
    losses = [training_step(training, x)["loss"] for _ in range(10)]
    assert losses[-1] < 0.8 * losses[0]
    assert sum(losses[-3:]) < sum(losses[1:4])


def test_paper_stages_train_every_parameter():
    for stage in (1, 2, 3):
        model = CRDR(tiny(stage).model_config())
        assert set(trainable_parameters(model, stage)) == {name for name, _ in model.named_parameters()}
        assert stages.STAGE_FROZEN[stage] == ()


def test_frozen_parameters_do_not_change_after_a_step():
    training = build_training(tiny(3, frozen=("encoder.", "hyperencoder.")))
    before = snapshot(training.model)
    metrics = training_step(training, batch())
    assert metrics["skipped"] == 0
    moved = changed(before, training.model)
    assert moved and not any(k.startswith(("encoder.", "hyperencoder.")) for k in moved)
    assert any(k.startswith("decoder.") for k in moved)
    optimised = {id(p) for group in training.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in training.model.encoder.parameters())


@pytest.mark.parametrize("part", ["decoder", "beta"])
def test_trainable_part_moves_only_that_part(part):
    training = build_training(tiny(3, trainable=part, perceptual_weight=0.0))
    beta_names = set(training.model.beta_parameters())
    inside = (lambda k: k.startswith("decoder.")) if part == "decoder" else (lambda k: k in beta_names)
    before = snapshot(training.model)
    assert training_step(training, batch())["skipped"] == 0
    moved = changed(before, training.model)
    assert moved and all(inside(k) for k in moved)
    assert training.aux_optimizer is None  # the z quantiles belong to the entropy model: fixed
    optimised = {id(p) for group in training.optimizer.param_groups for p in group["params"]}
    named = dict(training.model.named_parameters())
    assert optimised == {id(p) for name, p in named.items() if inside(name)}


def test_unknown_trainable_part_is_refused():
    with pytest.raises(ParameterError, match="trainable"):
        tiny(3, trainable="encoder")


def test_zero_projection_init_starts_from_the_beta_free_decoder(tmp_path):
    source = build_training(tiny(3)).model
    for parameter in source.beta_parameters().values():  # a loaded model with trained β layers
        parameter.data.normal_(0.0, 0.5)
    weights = tmp_path / "stage3.safetensors"
    save_weights(source, weights)
    x = batch()
    keep = build_training(tiny(3, init_from=str(weights))).model.eval()
    zero = build_training(tiny(3, init_from=str(weights), beta_init="zero-projection")).model.eval()
    with torch.no_grad():
        assert not torch.equal(keep(x, 1.0, 0.0).x_hat, keep(x, 1.0, 5.12).x_hat)
        assert torch.equal(zero(x, 1.0, 0.0).x_hat, zero(x, 1.0, 5.12).x_hat)
    projections = {k: v for k, v in zero.beta_parameters().items() if ".proj_" in k}
    assert projections and all(not v.any() for v in projections.values())
    first = zero.decoder.mlp[0].weight.detach()
    assert 0.05 < float(first.std()) < 0.3  # torch's Linear init for 20 inputs, not N(0, 0.02)
    with torch.no_grad():
        condition = zero.decoder.condition(torch.tensor([0.0, 5.12]))
    assert float((condition[0] - condition[1]).abs().mean()) > 0.02  # c depends on β from the start
    rest = {k for k in keep.state_dict() if k not in zero.beta_parameters()}
    assert all(torch.equal(keep.state_dict()[k], zero.state_dict()[k]) for k in rest)


def test_beta_init_outside_stage_3_is_refused():
    with pytest.raises(ParameterError, match="beta_init"):
        tiny(2, beta_init="zero-projection")
    with pytest.raises(ParameterError, match="beta_init"):
        tiny(3, beta_init="xavier")


def test_frozen_prefix_matching_nothing_fails():
    with pytest.raises(ParameterError, match="encoderr"):
        trainable_parameters(CRDR(tiny(1).model_config()), 1, ("encoderr",))


@pytest.mark.parametrize("gan", ["sgan", "rgan", "ragan", "hrrgan"])
def test_each_gan_loss_runs_one_stage3_step(gan):
    training = build_training(tiny(3, gan_loss=gan, perceptual_weight=0.0))
    before_g, before_d = snapshot(training.model), snapshot(training.discriminator)
    metrics = training_step(training, batch())
    assert metrics["skipped"] == 0
    for name in ("loss", "adversarial", "d_loss", "aux"):
        assert torch.isfinite(torch.tensor(metrics[name])), name
    assert changed(before_g, training.model) and changed(before_d, training.discriminator)


@pytest.mark.parametrize("kind", ["independent", "shared", "hybrid"])
def test_each_discriminator_kind_runs_one_stage3_step(kind):
    training = build_training(tiny(3, discriminator=kind, perceptual_weight=0.0))
    before = snapshot(training.discriminator)
    metrics = training_step(training, batch())
    assert metrics["skipped"] == 0 and changed(before, training.discriminator)
    if kind == "independent":  # only the sampled level's discriminator learns
        levels = {k.split(".")[1] for k in changed(before, training.discriminator)}
        assert levels == {str(int(metrics["q"]))}


def test_hybrid_discriminator_options_from_the_config_reach_the_built_discriminator():
    config = apply_overrides(
        tiny(3, perceptual_weight=0.0),
        ["discriminator=hybrid", "discriminator_backbone_depth=1", "discriminator_head_depth=3",
         "discriminator_condition_on_level=true"],
    )
    discriminator = build_training(config).discriminator
    convolutions = lambda module: [m for m in module if isinstance(m, torch.nn.Conv2d)]  # noqa: E731
    backbone = convolutions(discriminator.backbone)
    assert len(backbone) == 2 and backbone[0].in_channels == 3 + config.rate_levels  # one stage, one-hot q
    assert len(discriminator.heads) == config.rate_levels
    assert all(len(convolutions(head)) == 3 * 2 + 1 for head in discriminator.heads)
    channels = config.discriminator_channels
    assert [m.out_channels for m in convolutions(discriminator.heads[0])] == [
        2 * channels, 2 * channels, 4 * channels, 4 * channels, 8 * channels, 8 * channels, 1
    ]
    assert discriminator(batch(), 1).shape == (2, 1, 4, 4)  # 64 / 2^(1 + 3)


def test_hrrgan_reference_is_the_next_rate_and_the_real_image_at_the_top(monkeypatch):
    calls = []
    for q_index, expected in ((2, [(2.0, 1.28), (3.0, 1.28)]), (4, [(4.0, 1.28)])):
        training = build_training(tiny(3, perceptual_weight=0.0))
        monkeypatch.setattr(loop, "_sample_q_beta", lambda _t, q=q_index: (q, float(q), 1.28))
        hook = training.model.register_forward_pre_hook(lambda _m, args: calls.append(args[1:3]))
        training_step(training, batch())
        hook.remove()
        assert calls == expected
        calls.clear()


class CountingPerceptual(torch.nn.Module):
    """A stand-in perceptual network (L1) that counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x_hat, x):
        self.calls += 1
        return (x_hat - x).abs().mean()


@pytest.mark.parametrize("beta", [0.0, 1.28])
def test_a_beta_zero_batch_runs_no_realism_network_under_beta_weighting(beta, monkeypatch):
    training = build_training(tiny(3, perceptual_weight=0.0))
    training.perceptual = CountingPerceptual()
    calls = {"codec": 0, "discriminator": 0}
    training.model.register_forward_pre_hook(lambda *_: calls.__setitem__("codec", calls["codec"] + 1))
    training.discriminator.register_forward_pre_hook(
        lambda *_: calls.__setitem__("discriminator", calls["discriminator"] + 1)
    )
    monkeypatch.setattr(loop, "_sample_q_beta", lambda _t: (1, 1.0, beta))
    metrics = training_step(training, batch())
    realistic = beta > 0
    # G side: the decode, HRRGAN's reference decode at q + 1, D on both; D side: D on x and x̂.
    assert calls == {"codec": 2 if realistic else 1, "discriminator": 4 if realistic else 2}
    assert training.perceptual.calls == (1 if realistic else 0)
    assert math.isnan(metrics["adversarial"]) != realistic and math.isfinite(metrics["d_loss"])


def test_a_beta_zero_batch_updates_the_codec_as_distortion_and_rate_alone(monkeypatch):
    monkeypatch.setattr(loop, "_sample_q_beta", lambda _t: (1, 1.0, 0.0))
    models = []
    for changes in ({}, {"adversarial_weight": 0.0}):  # with and without the GAN
        training = build_training(tiny(3, perceptual_weight=0.0, **changes))
        torch.manual_seed(7)  # the same quantisation noise in both
        training_step(training, batch())
        models.append(training.model.state_dict())
    assert all(torch.equal(value, models[1][key]) for key, value in models[0].items())


def test_realism_level_weights_scale_the_realism_terms_of_their_level_only(monkeypatch):
    monkeypatch.setattr(loop, "_sample_q_beta", lambda _t: (1, 1.0, 1.28))
    metrics = []
    for weights in ((), (1.0, 3.0, 1.0, 1.0, 1.0), (3.0, 1.0, 1.0, 1.0, 1.0)):
        training = build_training(tiny(3, perceptual_weight=0.0, realism_level_weights=weights))
        torch.manual_seed(7)  # the same quantisation noise in each
        metrics.append(training_step(training, batch()))
    plain, tripled, other_level = metrics
    assert plain["adversarial"] == tripled["adversarial"] and plain["mse"] == tripled["mse"]
    weight = tiny(3).adversarial_weight
    assert tripled["loss"] - plain["loss"] == pytest.approx(2 * 1.28 * weight * plain["adversarial"], rel=1e-2)
    assert other_level["loss"] == pytest.approx(plain["loss"], rel=1e-6)


def test_a_level_weight_of_zero_runs_no_realism_network(monkeypatch):
    training = build_training(tiny(3, perceptual_weight=0.0, realism_level_weights=(1, 0, 1, 1, 1)))
    training.perceptual = CountingPerceptual()
    monkeypatch.setattr(loop, "_sample_q_beta", lambda _t: (1, 1.0, 5.12))
    metrics = training_step(training, batch())
    assert training.perceptual.calls == 0 and math.isnan(metrics["adversarial"])


@pytest.mark.parametrize("weights, message", [((1.0, 2.0), "one per rate level"), ((1, 1, -1, 1, 1), ">= 0")])
def test_realism_level_weights_are_checked(weights, message):
    with pytest.raises(ParameterError, match=message):
        tiny(3, realism_level_weights=weights)


def test_q_and_beta_are_drawn_on_the_paper_grid():
    training = build_training(tiny(3, perceptual_weight=0.0))
    draws = [loop._sample_q_beta(training) for _ in range(300)]
    assert {q for q, _, _ in draws} == {0, 1, 2, 3, 4}
    assert all(q == q_value for q, q_value, _ in draws)
    for _, _, beta in draws:
        k = round(beta / 0.0512)
        assert 0 <= k <= 100 and beta == 5.12 * k / 100
    assert loop._sample_q_beta(build_training(tiny(1, perceptual_weight=0.0))) == (0, None, None)


def test_beta_endpoint_fraction_puts_batches_at_both_ends_of_the_dial():
    always = build_training(tiny(3, perceptual_weight=0.0, beta_endpoint_fraction=1.0))
    betas = [loop._sample_q_beta(always)[2] for _ in range(200)]
    assert set(betas) == {0.0, 5.12}
    half = build_training(tiny(3, perceptual_weight=0.0, beta_endpoint_fraction=0.5))
    betas = [loop._sample_q_beta(half)[2] for _ in range(400)]
    ends = sum(beta in (0.0, 5.12) for beta in betas)
    assert 150 < ends < 260  # about half, plus the uniform draws' 2 %
    assert len(set(betas)) > 20


def test_beta_endpoint_fraction_zero_draws_the_papers_sequence():
    paper = build_training(tiny(3, perceptual_weight=0.0))
    explicit = build_training(tiny(3, perceptual_weight=0.0, beta_endpoint_fraction=0.0))
    assert [loop._sample_q_beta(paper) for _ in range(50)] == [loop._sample_q_beta(explicit) for _ in range(50)]


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_beta_endpoint_fraction_outside_0_1_is_refused(fraction):
    with pytest.raises(ParameterError, match="beta_endpoint_fraction"):
        tiny(3, beta_endpoint_fraction=fraction)


def test_a_bad_loss_skips_every_update():
    training = build_training(tiny(3, max_loss=1e-9, perceptual_weight=0.0))
    before_g, before_d = snapshot(training.model), snapshot(training.discriminator)
    metrics = training_step(training, batch())
    assert metrics["skipped"] == 1
    assert not changed(before_g, training.model) and not changed(before_d, training.discriminator)
    assert training.scheduler.last_epoch == 1  # the schedule still counts the iteration


def _stage_model(stage, seed=0):
    torch.manual_seed(seed)
    return CRDR(tiny(stage).model_config())


def test_stage2_init_from_a_stage1_export_leaves_only_ica_new(tmp_path):
    previous = _stage_model(1, seed=1)
    save_weights(previous, tmp_path / "stage1.safetensors")
    model = _stage_model(2)
    new = init_from_previous(model, str(tmp_path / "stage1.safetensors"))
    assert new and all(is_rate_parameter(k) for k in new)
    assert {k for k in model.state_dict() if is_rate_parameter(k)} == set(new)
    loaded = model.state_dict()
    for key, value in previous.state_dict().items():
        if not key.endswith(("_quantized_cdf", "_offset", "_cdf_length", "scale_table")):
            expected = value if is_constant_buffer(key) else value.half().float()  # bounds stay exact
            assert torch.equal(loaded[key], expected), key


def test_stage3_init_from_stage2_leaves_only_beta_parts_new_and_resets_them(tmp_path):
    previous = _stage_model(2, seed=2)
    save_weights(previous, tmp_path / "stage2.safetensors", half=False)
    model = _stage_model(3)
    new = init_from_previous(model, str(tmp_path / "stage2.safetensors"))
    assert new and all(is_beta_parameter(k) for k in new)
    assert any(k.startswith("decoder.mlp.") for k in new) and any(".proj_" in k for k in new)
    state = model.state_dict()
    assert torch.equal(state["decoder.conv1.weight"], previous.state_dict()["decoder.conv1.weight"])
    weights = torch.cat([state[k].flatten() for k in new if k.endswith("weight")])
    assert 0.01 < float(weights.std()) < 0.03
    assert all(float(state[k].abs().max()) == 0 for k in new if k.endswith("bias"))


def test_init_from_another_architecture_or_a_later_stage_fails(tmp_path):
    save_weights(_stage_model(3), tmp_path / "stage3.safetensors")
    with pytest.raises(WeightsError, match="does not have"):
        init_from_previous(_stage_model(2), str(tmp_path / "stage3.safetensors"))
    small = CRDR(dataclasses.replace(tiny(1).model_config(), encoder_channels=8))
    save_weights(small, tmp_path / "narrow.safetensors")
    with pytest.raises(WeightsError, match="encoder_channels"):
        init_from_previous(_stage_model(2), str(tmp_path / "narrow.safetensors"))


def test_bf16_autocast_runs_one_stage3_step():
    training = build_training(tiny(3, bf16=True, perceptual_weight=0.1))
    metrics = training_step(training, batch())
    assert metrics["skipped"] == 0 and all(
        torch.isfinite(torch.tensor(metrics[name])) for name in ("loss", "bpp", "d_loss")
    )


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_ica_lr_scale_speeds_up_only_the_ica_parameters(scale):
    # Adam's first step moves every parameter with a gradient by almost exactly its group's lr.
    config = tiny(2, ica_lr_scale=scale, perceptual_weight=0.0)
    training = build_training(config)
    assert [group["lr"] for group in training.optimizer.param_groups] == (
        [config.lr] if scale == 1.0 else [config.lr, config.lr * scale]
    )
    before = snapshot(training.model)
    training_step(training, batch())
    after = training.model.state_dict()

    def largest_step(keep):
        return max(float((after[k] - before[k]).abs().max()) for k in before if keep(k))

    ica = largest_step(lambda k: ".interp_ca_list." in k)
    other = largest_step(lambda k: k.startswith(("encoder.", "decoder.")) and ".interp_ca_list." not in k)
    assert ica == pytest.approx(config.lr * scale, rel=0.02)
    assert other == pytest.approx(config.lr, rel=0.02)


def test_ica_lr_scale_must_be_positive():
    with pytest.raises(ParameterError, match="ica_lr_scale"):
        tiny(2, ica_lr_scale=0.0)


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_beta_lr_scale_speeds_up_only_the_beta_parameters(scale, monkeypatch):
    config = tiny(3, beta_lr_scale=scale, perceptual_weight=0.0)
    training = build_training(config)
    beta_names = set(training.model.beta_parameters())
    before = snapshot(training.model)
    monkeypatch.setattr(loop, "_sample_q_beta", lambda _training: (1, 1.0, 2.56))
    training_step(training, batch())
    after = training.model.state_dict()

    def largest_step(keep):
        return max(float((after[k] - before[k]).abs().max()) for k in before if keep(k))

    beta = largest_step(lambda k: k in beta_names)
    other = largest_step(lambda k: k.startswith(("encoder.", "decoder.")) and k not in beta_names)
    assert beta == pytest.approx(config.lr * scale, rel=0.02)
    assert other == pytest.approx(config.lr, rel=0.02)


def test_model_names_its_rate_and_beta_parameters():
    model = CRDR(tiny(3).model_config())
    rate, beta = model.rate_parameters(), model.beta_parameters()
    assert rate and all(".interp_ca_list." in name for name in rate)
    assert beta and all(name.startswith("decoder.") and (".proj_" in name or ".mlp." in f".{name}") for name in beta)
    named = dict(model.named_parameters())
    assert all(named[name] is p for name, p in {**rate, **beta}.items())
    stage2 = CRDR(tiny(2).model_config())
    assert stage2.rate_parameters() and not stage2.beta_parameters()
    assert not CRDR(tiny(1).model_config()).rate_parameters()


def test_bf16_autocast_keeps_the_entropy_model_in_float32():
    model = CRDR(tiny(3).model_config()).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = model(batch(), 1.0, 2.56)
    assert result.x_hat.dtype == torch.bfloat16  # the transforms did run in bf16
    for name in ("z", "z_hat", "hyper_out", "mu", "sigma", "y_likelihoods", "z_likelihoods", "y_q_likelihoods"):
        assert getattr(result, name).dtype == torch.float32, name


def test_channels_last_computes_the_default_layouts_outputs():
    # The layout changes which kernels run, not the maths: eval outputs (no likelihood noise, whose
    # draw follows the memory order) agree, and a training step keeps the weights NHWC.
    plain = build_training(tiny(3, perceptual_weight=0.1))
    nhwc = build_training(tiny(3, channels_last=True, perceptual_weight=0.1))
    assert nhwc.model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = batch()
    with torch.no_grad():
        a = plain.model.eval()(x, 1.0, 2.56)
        b = nhwc.model.eval()(x.contiguous(memory_format=torch.channels_last), 1.0, 2.56)
    assert torch.allclose(a.x_hat, b.x_hat, atol=1e-4)
    assert torch.allclose(a.bpp(), b.bpp(), rtol=1e-4)
    nhwc.model.train()
    assert training_step(nhwc, x)["skipped"] == 0
    assert nhwc.model.decoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
