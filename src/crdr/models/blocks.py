"""The convolution stack shared by ELIC's residual bottleneck blocks, plain and beta-conditioned."""

from __future__ import annotations

from torch import nn


def bottleneck_convs(channels: int, mid_channels: int) -> nn.Sequential:
    """``1x1(C→M) ReLU 3x3(M→M) ReLU 1x1(M→C)``; indices 0/2/4 match the authors' ``conv.{0,2,4}``."""
    return nn.Sequential(
        nn.Conv2d(channels, mid_channels, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid_channels, mid_channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid_channels, channels, 1),
    )
