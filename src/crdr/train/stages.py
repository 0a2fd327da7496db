"""The three training stages: what each one adds, trains, freezes and starts from (spec §14.2).

| stage | model | new parameters (initialised) | trains |
|---|---|---|---|
| 1 | ELIC + Charm, no ICA, no β | everything (seeded) | all |
| 2 | + ICA (variable rate) | ICA gains/biases (identity) | all (ICA at ``lr × ica_lr_scale``) |
| 3 | + β conditioning | ``decoder.mlp``, ``proj_*`` (N(0, 0.02)) | all (β at ``lr × beta_lr_scale``) |

Which parameters are new is asked of the model (:meth:`CRDR.rate_parameters`,
:meth:`CRDR.beta_parameters`); nothing here matches parameter names. The paper trains every
parameter in every stage, so :data:`STAGE_FROZEN` is empty; the ``frozen`` config field adds name
prefixes to freeze for experiments (:func:`trainable_parameters`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from crdr.choices import TRAINABLE_PARTS
from crdr.config import ModelConfig
from crdr.errors import ParameterError, WeightsError
from crdr.models.crdr import CRDR
from crdr.train import checkpoint as checkpoints
from crdr.train.config import TrainConfig
from crdr.weights import is_table_buffer

__all__ = [
    "STAGE_FROZEN", "init_from_previous", "is_beta_parameter", "is_rate_parameter", "parameter_groups",
    "trainable_parameters",
]


# Parameter-name prefixes each stage's recipe keeps fixed. The authors train every parameter in
# every stage (their trainers optimise `comp_model.parameters()`), hence nothing here.
STAGE_FROZEN: dict[int, tuple[str, ...]] = {1: (), 2: (), 3: ()}


def is_rate_parameter(name: str) -> bool:
    """Whether ``name`` is an ICA parameter (what stage 2 adds); see :meth:`CRDR.rate_parameters`."""
    return name in _stage_parameter_names()[0]


def is_beta_parameter(name: str) -> bool:
    """Whether ``name`` is a β-conditioning parameter (what stage 3 adds); see :meth:`CRDR.beta_parameters`."""
    return name in _stage_parameter_names()[1]


@functools.cache
def _stage_parameter_names() -> tuple[frozenset[str], frozenset[str]]:
    """The names the stage-3 model gives its rate and β parameters, asked of the model itself.
    Names do not depend on the widths, so the tiny preset answers for every preset."""
    from crdr.config import preset

    with torch.random.fork_rng(devices=[]):  # building it must not shift the training RNG
        model = CRDR(preset("tiny"))
    return frozenset(model.rate_parameters()), frozenset(model.beta_parameters())


def trainable_parameters(
    model: nn.Module, stage: int, frozen: Sequence[str] = (), part: str = "all"
) -> dict[str, nn.Parameter]:
    """Name → parameter of everything that trains in ``stage``.

    ``part`` narrows the codec to one part: ``all`` (the paper), ``decoder`` (g_s with its β
    layers: the bitstream of every q stays the loaded model's) or ``beta`` (only what stage 3
    adds, :func:`is_beta_parameter`: the β = 0 decode can only change through the condition).
    Of those, every parameter trains except the ones whose name starts with a prefix of
    ``STAGE_FROZEN[stage]`` (empty for every stage of the paper) or of ``frozen``. A prefix matching
    no parameter is an error (a typo would otherwise silently train everything).
    """
    if part not in TRAINABLE_PARTS:
        raise ParameterError(f"trainable must be one of {', '.join(TRAINABLE_PARTS)}, got {part!r}")
    if stage not in STAGE_FROZEN:
        raise ParameterError(f"stage must be one of {sorted(STAGE_FROZEN)}, got {stage}")
    prefixes = tuple(STAGE_FROZEN[stage]) + tuple(frozen)
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in names):
            raise ParameterError(f"frozen prefix {prefix!r} matches no parameter of the model")
    in_part = {
        "all": lambda name: True,
        "decoder": lambda name: name.startswith("decoder."),
        "beta": is_beta_parameter,
    }[part]
    return {
        name: p for name, p in model.named_parameters() if in_part(name) and not name.startswith(prefixes)
    }


def _read_previous(source: str) -> tuple[dict[str, Tensor], ModelConfig]:
    """State and architecture of a previous stage: a run directory (its newest checkpoint, fp32)
    or a weights file (crdr safetensors or the authors' .pth.tar)."""
    path = Path(source)
    if path.is_dir():
        state = checkpoints.load_latest(path)
        previous = TrainConfig.from_dict(state["config"]).model_config()
        return state["model"], previous
    from crdr.weights import load_model

    model = load_model(path)
    return model.state_dict(), model.config


def parameter_groups(
    model: CRDR, trainable: dict[str, torch.nn.Parameter], aux_ids: set[int], config: TrainConfig
) -> list[dict[str, Any]]:
    """Adam groups of the codec parameters: all at ``lr``, the ICA ones at ``lr × ica_lr_scale``
    and the β-conditioning ones at ``lr × beta_lr_scale``.

    A group exists only when its scale is not 1, so with the paper's scales there is one group, as
    in the authors' trainer (and checkpoints written before a scale existed resume unchanged).
    The order is fixed (rest, ICA, β): optimiser states are matched to groups by position.
    """
    main = {name: p for name, p in trainable.items() if id(p) not in aux_ids}
    scaled = [
        (config.ica_lr_scale, model.rate_parameters()),
        (config.beta_lr_scale, model.beta_parameters()),
    ]
    groups, taken = [], set()
    for scale, named in scaled:
        chosen = [p for name, p in named.items() if name in main]
        if scale != 1.0 and chosen:
            groups.append({"params": chosen, "lr": config.lr * scale})
            taken.update(id(p) for p in chosen)
    rest = [p for p in main.values() if id(p) not in taken]
    return [{"params": rest}] + groups


def init_from_previous(model: CRDR, source: str) -> list[str]:
    """Load every tensor of the previous stage into ``model``; return the names left new.

    The previous model must have the same widths; the only keys it may lack are those of the
    features this stage adds (ICA when it was not variable-rate, ``proj_*``/``mlp`` when it was not
    β-conditioned), and it must have every other key. The new β parts are re-initialised with
    ``reset_beta_parameters`` (N(0, 0.02), spec §3.5); new ICA layers keep their identity init.
    """
    state, previous = _read_previous(source)
    current = model.config
    comparable = dataclasses.replace(
        previous, variable_rate=current.variable_rate, beta_conditioned=current.beta_conditioned
    )
    if comparable != current:
        differing = [
            f"{f.name} {getattr(previous, f.name)} != {getattr(current, f.name)}"
            for f in dataclasses.fields(current)
            if getattr(comparable, f.name) != getattr(current, f.name)
        ]
        raise WeightsError(f"{source}: previous stage has another architecture: {'; '.join(differing)}")
    expected = {k: v for k, v in model.state_dict().items() if not is_table_buffer(k)}
    given = {k: v for k, v in state.items() if not is_table_buffer(k)}
    unexpected = sorted(set(given) - set(expected))
    if unexpected:
        raise WeightsError(f"{source}: keys this stage's model does not have: {', '.join(unexpected[:5])}")
    new = sorted(set(expected) - set(given))
    allowed = {
        k for k in expected
        if (current.variable_rate and not previous.variable_rate and is_rate_parameter(k))
        or (current.beta_conditioned and not previous.beta_conditioned and is_beta_parameter(k))
    }
    if set(new) != allowed:
        missing = sorted(set(new) - allowed)
        raise WeightsError(f"{source}: previous stage lacks keys it should have: {', '.join(missing[:5])}")
    wrong = [k for k, v in given.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise WeightsError(f"{source}: shape mismatch for {', '.join(wrong[:3])}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in given.items()}, strict=False)
    if any(is_beta_parameter(k) for k in new):
        model.decoder.reset_beta_parameters()
    return new
