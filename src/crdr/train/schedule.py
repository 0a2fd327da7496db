"""Learning-rate schedule of a training run: an optional linear warm-up, then the paper's step decay.

The paper decays the learning rates ×``lr_gamma`` at each of ``lr_milestones`` (spec §14). A run that
starts from trained weights (``init_from``) starts Adam without its moment estimates: its first
updates move every parameter by about the full learning rate in the sign of one batch's gradient,
larger than the steady state's noisy updates, and knock a trained codec off its optimum (measured
in docs/training.md: −1 to −2 dB within 250 steps). ``lr_warmup_steps`` ramps the codec's learning
rates linearly from ``1/N`` of their value to the full value over the first N iterations while the
moments settle. The discriminator starts from random weights in every run and has nothing to
protect, so its rate only decays.

The schedule is a pure function of the iteration (:func:`lr_factor`), so a checkpoint needs only the
iteration count to restore it, whatever milestones the resumed config names, and checkpoints written
with torch's ``MultiStepLR`` (before the warm-up existed) restore the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR


def lr_factor(step: int, milestones: Sequence[int], gamma: float, warmup_steps: int = 0) -> float:
    """The learning rate at iteration ``step`` (0-based) as a fraction of the configured one."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    return warm * gamma ** sum(1 for milestone in milestones if int(milestone) <= step)


def build_scheduler(
    optimizer: torch.optim.Optimizer, milestones: Sequence[int], gamma: float, warmup_steps: int = 0
) -> LambdaLR:
    """A scheduler applying :func:`lr_factor` to every parameter group of ``optimizer``."""
    factor = functools.partial(
        lr_factor, milestones=tuple(int(m) for m in milestones), gamma=gamma, warmup_steps=warmup_steps
    )
    return LambdaLR(optimizer, factor)


def restore_scheduler(scheduler: LambdaLR | None, state: dict[str, Any] | None) -> None:
    """Set ``scheduler`` to the iteration saved in ``state`` and every group's learning rate to what
    the scheduler's own schedule gives there.

    Why not ``load_state_dict``: the saved state would bring back the schedule the run started with,
    so a run whose ``lr_milestones`` is changed on resume (shortened with ``--set steps=N
    --set lr_milestones=M``) would never reach its decay; a milestone at or before the restored
    iteration applies at once.
    """
    if scheduler is None or state is None:
        return
    scheduler.last_epoch = int(state["last_epoch"])
    scheduler._last_lr = []
    groups = scheduler.optimizer.param_groups
    for group, base, factor in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
        scheduler._last_lr.append(group["lr"])
