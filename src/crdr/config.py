"""Architecture configuration: one frozen dataclass of widths, with the paper's values as defaults.

Every width of the network is a field, including the three groups the authors' code hard-codes
(hyper-encoder 320/256, hyper-decoder branches 192/256, slice transforms 224/128), because narrow
models need them lowered and they hold most of a narrow model's parameters. The two feature flags
select the training stage's model (stage 1: neither, stage 2: ``variable_rate``, stage 3: both);
they are arguments, not subclasses. Presets are plain instances; training configs live in
``crdr.train.config``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from crdr.errors import WeightsError


@dataclass(frozen=True)
class ModelConfig:
    """Widths and switches of the CRDR network (defaults = the paper model, 127.7M parameters)."""

    y_channels: int = 320
    z_channels: int = 192
    encoder_channels: int = 192
    encoder_block_mid: int = 96
    decoder_channels: int = 256
    decoder_block_mid: int = 128
    hyper_encoder_widths: tuple[int, int] = (320, 256)
    hyper_decoder_widths: tuple[int, int] = (192, 256)
    slice_transform_widths: tuple[int, int] = (224, 128)
    num_slices: int = 10
    max_support_slices: int = 5
    rate_levels: int = 5
    variable_rate: bool = True
    beta_conditioned: bool = True
    beta_condition_channels: int = 512
    fourier_frequencies: int = 10
    max_beta: float = 5.12
    scale_bound: float = 0.11

    def __post_init__(self) -> None:
        if self.y_channels % self.num_slices:
            raise WeightsError(
                f"y_channels={self.y_channels} is not divisible by num_slices={self.num_slices}"
            )
        for name in ("hyper_encoder_widths", "hyper_decoder_widths", "slice_transform_widths"):
            value = tuple(int(v) for v in getattr(self, name))
            if len(value) != 2:
                raise WeightsError(f"{name} must hold two widths, got {value}")
            object.__setattr__(self, name, value)

    @property
    def slice_channels(self) -> int:
        return self.y_channels // self.num_slices

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise WeightsError(f"unknown model config fields: {', '.join(unknown)}")
        return cls(**values)


# The authors' paper model (spec §1.1): 127,712,963 parameters, 96,989,440 in the context model.
PAPER = ModelConfig()

# The CPU model: same structure, narrower. Chosen so that a stage-2 training step at batch 8 of
# 128x128 crops takes about a second on 2 CPU cores (benchmarks/train_step.py measures it).
SMALL = ModelConfig(
    y_channels=120,
    z_channels=48,
    encoder_channels=64,
    encoder_block_mid=32,
    decoder_channels=64,
    decoder_block_mid=32,
    hyper_encoder_widths=(96, 64),
    hyper_decoder_widths=(48, 64),
    slice_transform_widths=(48, 32),
    beta_condition_channels=128,
)

# The authors' tiny test-vector model (shared/testvectors/official-tiny).
TINY = ModelConfig(
    y_channels=30,
    z_channels=12,
    encoder_channels=16,
    encoder_block_mid=8,
    decoder_channels=20,
    decoder_block_mid=10,
    hyper_encoder_widths=(24, 20),
    hyper_decoder_widths=(16, 20),
    slice_transform_widths=(16, 12),
    beta_condition_channels=16,
)

PRESETS: dict[str, ModelConfig] = {"paper": PAPER, "small": SMALL, "tiny": TINY}


def preset(name: str) -> ModelConfig:
    """Return a named architecture preset (``paper``, ``small`` or ``tiny``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise WeightsError(f"unknown model preset {name!r}; choose from {', '.join(PRESETS)}") from None


__all__ = ["ModelConfig", "PAPER", "SMALL", "TINY", "PRESETS", "preset"]
