"""Hyper-encoder and hyper-decoder (Minnen et al. 2020 layout, spec §6).

The hyperprior compresses side information ``z`` about ``y``; the hyper-decoder turns ``ẑ`` into
two feature maps (for means and for scales) that seed the channel-wise context model. The inner
widths are literals in the authors' code; here they are arguments so narrow models stay narrow.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class HyperEncoder(nn.Module):
    """``h_a``: y (N, Y, h, w) → z (N, Z, h/4, w/4).

    ::

        conv1 3x3 (Y→w1) ReLU  conv2 5x5/2 (w1→w2) ReLU  conv3 5x5/2 (w2→Z)
    """

    def __init__(self, y_channels: int = 320, z_channels: int = 192, widths=(320, 256)) -> None:
        super().__init__()
        first, second = widths
        self.conv1 = nn.Conv2d(y_channels, first, 3, padding=1)
        self.conv2 = nn.Conv2d(first, second, 5, stride=2, padding=2)
        self.conv3 = nn.Conv2d(second, z_channels, 5, stride=2, padding=2)

    def forward(self, y: Tensor) -> Tensor:
        h = torch.relu(self.conv1(y))
        h = torch.relu(self.conv2(h))
        return self.conv3(h)


class HyperDecoderBranch(nn.Module):
    """One branch of ``h_s``: ẑ (N, Z, h, w) → (N, Y, 4h, 4w).

    ::

        conv1 5x5↑2 (Z→w1) ReLU  conv2 5x5↑2 (w1→w2) ReLU  conv3 3x3 transposed, stride 1 (w2→Y)
    """

    def __init__(self, z_channels: int, out_channels: int, widths=(192, 256)) -> None:
        super().__init__()
        first, second = widths
        self.conv1 = nn.ConvTranspose2d(z_channels, first, 5, 2, 2, output_padding=1)
        self.conv2 = nn.ConvTranspose2d(first, second, 5, 2, 2, output_padding=1)
        self.conv3 = nn.ConvTranspose2d(second, out_channels, 3, 1, 1)

    def forward(self, z_hat: Tensor) -> Tensor:
        h = torch.relu(self.conv1(z_hat))
        h = torch.relu(self.conv2(h))
        return self.conv3(h)


class HyperDecoder(nn.Module):
    """``h_s``: ẑ → ``cat(hd_mu(ẑ), hd_std(ẑ))`` (N, 2Y, 4h, 4w): mean features, then scale features."""

    def __init__(self, z_channels: int = 192, y_channels: int = 320, widths=(192, 256)) -> None:
        super().__init__()
        self.hd_mu = HyperDecoderBranch(z_channels, y_channels, widths)
        self.hd_std = HyperDecoderBranch(z_channels, y_channels, widths)

    def forward(self, z_hat: Tensor) -> Tensor:
        return torch.cat([self.hd_mu(z_hat), self.hd_std(z_hat)], dim=1)
