"""Interpolation channel attention (ICA): the variable-rate mechanism of the model.

Sun et al. 2022, as used by Iwai et al. 2024 (spec §3.3). Each ICA layer holds one per-channel
weight and bias for each of the R rate levels; a continuous quality ``q`` in [0, R-1] linearly
interpolates the raw weights of its two neighbouring levels *before* the softplus, and the biases
after. This is what lets one model code at any rate between its trained levels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# softplus(ln(e - 1)) == 1: a freshly created ICA layer is the identity.
IDENTITY_RAW_WEIGHT = math.log(math.e - 1.0)


def interpolation_weights(q: Tensor, levels: int) -> tuple[Tensor, Tensor, Tensor]:
    """Split ``q`` into its lower level ``l``, upper level ``r`` and the weight ``alpha`` of ``l``.

    ``q``: float32 tensor of shape (N,) or (1,), values in [0, levels - 1].
    Returns ``l``, ``r`` (int64) and ``alpha = r - q`` (float32), so that ``q == alpha*l + (1-alpha)*r``
    and integer ``q`` selects its own level exactly (alpha = 1, or l = r at the top level).
    """
    lower = torch.floor(q).long()
    upper = torch.clamp(lower + 1, max=levels - 1)
    alpha = upper.to(q.dtype) - q
    return lower, upper, alpha


class InterpChannelAttention(nn.Module):
    """Per-channel scale and bias interpolated between rate levels.

    ::

        x (N, C, H, W) ──► softplus(w(q)) ⊙ x + b(q) ──► (N, C, H, W)
        w(q) = α·W[l] + (1-α)·W[r],  b(q) = α·B[l] + (1-α)·B[r]

    Parameters ``weight`` and ``bias`` have shape (levels, 1, C, 1, 1) (the authors' layout, so
    their checkpoints load unchanged).
    """

    def __init__(self, channels: int, levels: int = 5) -> None:
        super().__init__()
        self.levels = levels
        self.weight = nn.Parameter(torch.full((levels, 1, channels, 1, 1), IDENTITY_RAW_WEIGHT))
        self.bias = nn.Parameter(torch.zeros(levels, 1, channels, 1, 1))

    def scale_and_bias(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """Effective ``softplus(w(q))`` and ``b(q)``, each (N or 1, C, 1, 1)."""
        lower, upper, alpha = interpolation_weights(q, self.levels)
        alpha = alpha.view(-1, 1, 1, 1)
        weight = alpha * self.weight[lower, 0] + (1 - alpha) * self.weight[upper, 0]
        bias = alpha * self.bias[lower, 0] + (1 - alpha) * self.bias[upper, 0]
        return F.softplus(weight), bias

    def forward(self, x: Tensor, q: Tensor) -> Tensor:
        scale, bias = self.scale_and_bias(q)
        return scale * x + bias
