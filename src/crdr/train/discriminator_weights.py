"""The discriminators' weights outside a run directory: written beside an export, read to start a run.

What: :func:`save_discriminator` writes the discriminator state of a checkpoint as safetensors,
with the settings it was built with (:meth:`TrainConfig.discriminator_settings`) and the step in the
file's metadata; :func:`load_discriminator` loads such a file, or the newest checkpoint of a run
directory, into a freshly built discriminator after checking that the settings, the keys and the
shapes all match. ``crdr export RUN -o W --discriminator D`` writes the file; ``--set
discriminator_init_from=D`` starts a run from it.

Why: an export alone carries only the codec, so a GAN stage continued from it on a fresh machine
(every session that does not get its previous machine back) restarts its discriminators from
random weights, and the generator trains against critics that know nothing until they catch up
(all-parameter restarts of the small model at lr 1e-4 lost about 1 dB at β = 0 meanwhile, the
fresh critics being one suspect beside Adam's restart: docs/training.md). Shipping the
discriminators (fp16, 12 MB for the small preset) lets the next run continue the game where it
stopped. Their Adam moments stay behind (they are rebuilt in a few
hundred steps, and twice the size).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from crdr.errors import WeightsError
from crdr.files import atomic_path
from crdr.train import checkpoint as checkpoints
from crdr.train.config import TrainConfig
from crdr.weights import read_safetensors

__all__ = ["load_discriminator", "save_discriminator"]

# The safetensors metadata key of the settings (a JSON object) and the step.
SETTINGS_KEY = "crdr_discriminator"
STEP_KEY = "crdr_step"


def save_discriminator(
    state: dict[str, Tensor], config: TrainConfig, step: int, path: str | os.PathLike, *, half: bool = True
) -> None:
    """Write a discriminator ``state`` (of a run with ``config``, at ``step``) to ``path``, atomically."""
    from safetensors.torch import save_file

    dtype = torch.float16 if half else torch.float32
    tensors = {
        key: (value.detach().to(dtype) if value.is_floating_point() else value.detach()).contiguous().cpu()
        for key, value in state.items()
    }
    settings = json.dumps(config.discriminator_settings(), sort_keys=True)
    metadata = {SETTINGS_KEY: settings, STEP_KEY: str(step)}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)


def load_discriminator(discriminator: nn.Module, source: str | os.PathLike, config: TrainConfig) -> None:
    """Load the weights ``source`` holds into ``discriminator`` (built from ``config``). Raises
    :class:`WeightsError` if they are unreadable or were made for another discriminator."""
    state, settings = _read(Path(source))
    differing = [
        f"{name} {settings.get(name)!r} != {value!r}"
        for name, value in config.discriminator_settings().items()
        if settings.get(name) != value
    ]
    if differing:
        raise WeightsError(f"{source}: discriminator built differently: {'; '.join(differing)}")
    expected = discriminator.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"{source}: discriminator keys differ (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    wrong = [key for key, value in state.items() if tuple(value.shape) != tuple(expected[key].shape)]
    if wrong:
        raise WeightsError(f"{source}: shape mismatch for {', '.join(wrong[:3])}")
    discriminator.load_state_dict({key: value.to(expected[key].dtype) for key, value in state.items()})


def _read(source: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """State and settings of a run directory's newest checkpoint or of a discriminator file."""
    if source.is_dir():
        state = checkpoints.load_latest(source)
        if not state.get("discriminator"):
            raise WeightsError(f"{source}: its checkpoint has no discriminator")
        settings = TrainConfig.from_dict(state["config"]).discriminator_settings()
        return state["discriminator"], settings
    state, metadata = read_safetensors(source)
    try:
        settings = json.loads(metadata[SETTINGS_KEY])
    except (KeyError, ValueError):
        raise WeightsError(
            f"{source} is not a discriminator file of crdr export (no settings in its metadata)"
        ) from None
    if not isinstance(settings, dict):
        raise WeightsError(f"{source}: malformed discriminator settings in its metadata")
    return state, settings
