"""The learning-rate schedule: the paper's step decay, the optional warm-up, and how it restores."""

import dataclasses

import pytest
import torch

from crdr.data import SyntheticImageDataset
from crdr.errors import ParameterError
from crdr.train.config import apply_overrides, train_preset
from crdr.train.loop import build_training, training_step
from crdr.train.schedule import build_scheduler, lr_factor, restore_scheduler


def test_the_factor_ramps_over_the_warm_up_then_decays_at_each_milestone():
    factors = [lr_factor(step, milestones=(5, 7), gamma=0.1, warmup_steps=4) for step in range(9)]
    assert factors == pytest.approx([0.25, 0.5, 0.75, 1, 1, 0.1, 0.1, 0.01, 0.01])
    assert [lr_factor(step, (2,), 0.5) for step in range(4)] == [1, 1, 0.5, 0.5]  # the paper: no warm-up


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_warm_up_ramps_the_codec_learning_rates_and_not_the_discriminators(one_thread):
    config = dataclasses.replace(
        train_preset("tiny-stage3"), lr_warmup_steps=4, ica_lr_scale=10.0, lr_milestones=(100,)
    )
    training = build_training(config)
    groups = training.optimizer.param_groups
    assert len({group["initial_lr"] for group in groups}) > 1  # the ICA group has its own rate
    assert [group["lr"] for group in groups] == pytest.approx([group["initial_lr"] / 4 for group in groups])
    assert training.discriminator_optimizer.param_groups[0]["lr"] == config.discriminator_lr
    images = SyntheticImageDataset(2, 64, seed=3)
    x = torch.stack([images[0], images[1]])
    for expected in (0.5, 0.75, 1.0, 1.0):
        training_step(training, x)
        wanted = [group["initial_lr"] * expected for group in groups]
        assert [group["lr"] for group in groups] == pytest.approx(wanted)
    assert training.discriminator_optimizer.param_groups[0]["lr"] == config.discriminator_lr


def test_lr_warmup_steps_must_not_be_negative():
    with pytest.raises(ParameterError, match="lr_warmup_steps"):
        apply_overrides(train_preset("tiny-stage1"), ["lr_warmup_steps=-1"])


def test_a_checkpoint_written_with_torchs_multisteplr_restores_at_its_iteration():
    parameter = torch.nn.Parameter(torch.zeros(1))
    old = torch.optim.SGD([parameter], lr=1.0)
    old_scheduler = torch.optim.lr_scheduler.MultiStepLR(old, [2], 0.1)
    for _ in range(3):
        old.step()
        old_scheduler.step()
    new = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(new, milestones=(2, 5), gamma=0.1, warmup_steps=0)
    restore_scheduler(scheduler, old_scheduler.state_dict())
    assert scheduler.last_epoch == 3
    assert new.param_groups[0]["lr"] == pytest.approx(0.1)
    for _ in range(2):
        new.step()
        scheduler.step()
    assert new.param_groups[0]["lr"] == pytest.approx(0.01)  # the new milestone at 5
