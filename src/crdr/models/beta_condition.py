"""Realism conditioning: how the decoder is told the distortion–realism weight ``beta``.

Agustsson et al. 2023 ("multi-realism"), as re-implemented by Iwai et al. 2024 (spec §3.4).
``beta`` is normalised to [-1, 1], expanded into sines and cosines of L octave frequencies (a
Fourier embedding, no parameters), mapped by a two-layer MLP to a condition vector ``c``, and ``c``
is added through 1x1 projections inside every residual block of the decoder. ``beta`` is chosen at
decode time, so one bitstream can be decoded faithful (beta = 0) or realistic (beta = max).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from crdr.models.blocks import bottleneck_convs


def fourier_embedding(beta: Tensor, max_beta: float, frequencies: int) -> Tensor:
    """``beta`` (N,) -> (N, 2L): [sin(n·2^k) for k < L, cos(n·2^k) for k < L], n = 2·beta/max − 1.

    Frequencies are *not* multiplied by pi (the paper config has ``use_pi = false``).
    """
    freqs = 2.0 ** torch.arange(frequencies, dtype=torch.float32, device=beta.device)
    normalised = (beta.to(torch.float32) / max_beta - 0.5) * 2
    angles = normalised.view(-1, 1) * freqs.view(1, -1)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def condition_mlp(channels: int, frequencies: int = 10) -> nn.Sequential:
    """``Linear(2L→C) ReLU Linear(C→C)``: maps the Fourier embedding to the condition ``c``.

    Indices ``0`` and ``2`` match the authors' keys ``decoder.mlp.{0,2}``.
    """
    return nn.Sequential(
        nn.Linear(2 * frequencies, channels), nn.ReLU(inplace=True), nn.Linear(channels, channels)
    )


class BetaCondBottleneckBlock(nn.Module):
    """ELIC residual bottleneck block with the realism condition added inside (spec §3.4).

    ::

        x ─► 1x1 ─► ReLU ─(+P1 c)─► 3x3 ─► ReLU ─(+P2 c)─► 1x1 ─(+P3 c)─► (+x) ─► out
        x: (N, C, H, W);  c: (N or 1, cond, 1, 1)
    """

    def __init__(self, channels: int, mid_channels: int, condition_channels: int) -> None:
        super().__init__()
        self.conv = bottleneck_convs(channels, mid_channels)
        self.proj_1 = nn.Conv2d(condition_channels, mid_channels, 1)
        self.proj_2 = nn.Conv2d(condition_channels, mid_channels, 1)
        self.proj_3 = nn.Conv2d(condition_channels, channels, 1)

    def projection_parameters(self, prefix: str) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of the three condition projections (what β conditioning adds)."""
        for name in ("proj_1", "proj_2", "proj_3"):
            yield from getattr(self, name).named_parameters(prefix=f"{prefix}.{name}")

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        h = torch.relu(self.conv[0](x)) + self.proj_1(condition)
        h = torch.relu(self.conv[2](h)) + self.proj_2(condition)
        h = self.conv[4](h) + self.proj_3(condition)
        return x + h


class BetaCondBlocks(nn.Module):
    """Three :class:`BetaCondBottleneckBlock` in series (``block0..2``), no outer skip."""

    def __init__(self, channels: int, mid_channels: int, condition_channels: int, count: int = 3):
        super().__init__()
        for index in range(count):
            self.add_module(
                f"block{index}", BetaCondBottleneckBlock(channels, mid_channels, condition_channels)
            )

    def projection_parameters(self, prefix: str) -> Iterator[tuple[str, nn.Parameter]]:
        for name, block in self.named_children():
            yield from block.projection_parameters(f"{prefix}.{name}")

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        for block in self.children():
            x = block(x, condition)
        return x
