"""Patch discriminators for the stage-3 (realism) training, one per rate level or shared.

The base network is the CLIC 2021 "GVAE" discriminator the authors use (spec §14.6): a plain stack of
3x3 convolutions that halves the resolution four times and outputs one logit per 16x16 patch. It is
not conditioned on the latent, q or beta. Because each rate level produces reconstructions with very
different artefacts, the authors train one discriminator per level ("independent", the released
config); two alternatives from their code are also provided: one discriminator told the level by a
one-hot map ("shared") and a shared backbone with per-level heads ("hybrid").

All wrappers share ``forward(x, q_index) -> logits``; ``q_index`` is the integer rate level
(``int(q)``; training only uses integer q).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from crdr.errors import ParameterError
from crdr.choices import DISCRIMINATOR_KINDS  # torch-free, for the training config

__all__ = [
    "Clic21Discriminator",
    "HybridDiscriminator",
    "IndependentDiscriminator",
    "SharedDiscriminator",
    "build_discriminator",
    "DISCRIMINATOR_KINDS",
]


def _stage_layers(in_channels: int, channels: int) -> list[nn.Module]:
    """One downscale stage: Conv(3,s1; in->c), LReLU, Conv(3,s2; c->c), LReLU."""
    return [
        nn.Conv2d(in_channels, channels, 3, stride=1, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(channels, channels, 3, stride=2, padding=1),
        nn.LeakyReLU(0.2),
    ]


def _check_level(q_index: int | float | Tensor, levels: int) -> int:
    level = int(q_index)
    if not 0 <= level < levels:
        raise ParameterError(f"rate level {q_index} is outside 0..{levels - 1}")
    return level


class Clic21Discriminator(nn.Module):
    """CLIC 2021 GVAE patch discriminator (spec §14.6; the authors' ``CLIC21GVAEDiscriminator``).

    Nine 3x3 convolutions (padding 1), LeakyReLU(0.2) after all but the last, no normalisation::

        x (N, in, H, W)
          -> [Conv s1 in->m,   LReLU, Conv s2 m->m,   LReLU]      H/2
          -> [Conv s1 m->2m,   LReLU, Conv s2 2m->2m, LReLU]      H/4
          -> [Conv s1 2m->4m,  LReLU, Conv s2 4m->4m, LReLU]      H/8
          -> [Conv s1 4m->8m,  LReLU, Conv s2 8m->8m, LReLU]      H/16
          -> Conv s1 8m->out                                      logits (N, out, H/16, W/16)

    with ``m = main_channels`` (64 in the paper: 4,689,985 parameters). ``x`` is an image in
    [-1, 1] (raw decoder output, not clamped); H and W should be multiples of 16.
    State dict keys ``model.{0,2,...,16}.{weight,bias}`` as the authors'.
    """

    def __init__(
        self,
        in_channels: int = 3,
        main_channels: int = 64,
        out_channels: int = 1,
        downscales: int = 4,
    ) -> None:
        super().__init__()
        if min(in_channels, main_channels, out_channels, downscales) < 1:
            raise ParameterError("discriminator channel counts and downscales must be positive")
        layers: list[nn.Module] = []
        channels = in_channels
        for stage in range(downscales):
            width = main_channels * 2**stage
            layers += _stage_layers(channels, width)
            channels = width
        layers.append(nn.Conv2d(channels, out_channels, 3, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``x: (N, in, H, W)`` -> logits ``(N, out, H/16, W/16)``."""
        return self.model(x)


class IndependentDiscriminator(nn.Module):
    """One CLIC21 discriminator per rate level; level ``int(q)`` uses ``subD_list[int(q)]``.

    The released stage-3 design (spec §14.6, the authors' ``ModuleListDiscriminator``; 5 x 4,689,985
    = 23,449,925 parameters at ``main_channels=64``). Keys ``subD_list.{k}.model.{0,2,...,16}``, named
    as the authors' so their discriminator checkpoints load without a key table::

        x (N,3,H,W), q -> subD_list[int(q)] -> logits (N,1,H/16,W/16)
    """

    def __init__(self, levels: int = 5, main_channels: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        if levels < 1:
            raise ParameterError(f"levels must be positive, got {levels}")
        self.levels = levels
        self.subD_list = nn.ModuleList(
            Clic21Discriminator(in_channels, main_channels) for _ in range(levels)
        )

    def forward(self, x: Tensor, q_index: int) -> Tensor:
        """``x: (N, 3, H, W) in [-1, 1]``, ``q_index`` in ``0..levels-1`` -> ``(N, 1, H/16, W/16)``."""
        return self.subD_list[_check_level(q_index, self.levels)](x)


def _one_hot_map(x: Tensor, level: int, levels: int) -> Tensor:
    """``(N, levels, H, W)`` map that is 1 in channel ``level`` and 0 elsewhere."""
    n, _, h, w = x.shape
    code = torch.zeros(n, levels, h, w, dtype=x.dtype, device=x.device)
    code[:, level] = 1
    return code


class SharedDiscriminator(nn.Module):
    """One CLIC21 discriminator for every level, told the level by a one-hot map (spec §14.6,
    the authors' ``MultirateSharedRateCondClic21GvaeDiscriminator``)::

        x (N,3,H,W) --concat-- one_hot(q) (N,levels,H,W) -> Clic21(in=3+levels) -> (N,1,H/16,W/16)
    """

    def __init__(self, levels: int = 5, main_channels: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        if levels < 1:
            raise ParameterError(f"levels must be positive, got {levels}")
        self.levels = levels
        self.discriminator = Clic21Discriminator(in_channels + levels, main_channels)

    def forward(self, x: Tensor, q_index: int) -> Tensor:
        """``x: (N, 3, H, W) in [-1, 1]``, ``q_index`` in ``0..levels-1`` -> ``(N, 1, H/16, W/16)``."""
        level = _check_level(q_index, self.levels)
        return self.discriminator(torch.cat([x, _one_hot_map(x, level, self.levels)], dim=1))


class HybridDiscriminator(nn.Module):
    """Shared backbone, one head per rate level (spec §14.6, the authors'
    ``SharedBackboneClic21GvaeDiscriminator``)::

        x (N,3,H,W) [+ one_hot(q) if condition_on_level]
          -> backbone: backbone_depth CLIC21 stages (shared)          H / 2^backbone_depth
          -> heads[int(q)]: head_depth CLIC21 stages + Conv 3x3 -> 1   H / 2^(backbone+head depth)

    Stage ``i`` (counting through backbone then head) has ``main_channels * 2^i`` channels, so the
    default depths 2 + 2 give the same layer stack as :class:`Clic21Discriminator`, with logits at
    1/16 resolution (22,409,285 parameters for 5 levels at ``main_channels=64``).
    """

    def __init__(
        self,
        levels: int = 5,
        main_channels: int = 64,
        backbone_depth: int = 2,
        head_depth: int = 2,
        condition_on_level: bool = False,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if levels < 1 or backbone_depth < 1 or head_depth < 1:
            raise ParameterError("levels, backbone_depth and head_depth must be positive")
        self.levels = levels
        self.condition_on_level = condition_on_level
        backbone: list[nn.Module] = []
        channels = in_channels + (levels if condition_on_level else 0)
        for stage in range(backbone_depth):
            width = main_channels * 2**stage
            backbone += _stage_layers(channels, width)
            channels = width
        self.backbone = nn.Sequential(*backbone)
        heads = []
        for _ in range(levels):
            head: list[nn.Module] = []
            head_channels = channels
            for stage in range(backbone_depth, backbone_depth + head_depth):
                width = main_channels * 2**stage
                head += _stage_layers(head_channels, width)
                head_channels = width
            head.append(nn.Conv2d(head_channels, 1, 3, stride=1, padding=1))
            heads.append(nn.Sequential(*head))
        self.heads = nn.ModuleList(heads)

    def forward(self, x: Tensor, q_index: int) -> Tensor:
        """``x: (N, 3, H, W) in [-1, 1]``, ``q_index`` in ``0..levels-1`` -> logits
        ``(N, 1, H/2^d, W/2^d)``, ``d = backbone_depth + head_depth`` (16 by default)."""
        level = _check_level(q_index, self.levels)
        if self.condition_on_level:
            x = torch.cat([x, _one_hot_map(x, level, self.levels)], dim=1)
        return self.heads[level](self.backbone(x))


def build_discriminator(
    kind: str,
    levels: int = 5,
    main_channels: int = 64,
    backbone_depth: int = 2,
    head_depth: int = 2,
    condition_on_level: bool = False,
) -> nn.Module:
    """Build a multi-level discriminator by name (:data:`DISCRIMINATOR_KINDS`): ``"independent"``
    (released config), ``"shared"`` or ``"hybrid"`` (``backbone_depth``, ``head_depth`` and
    ``condition_on_level`` apply only to it). Training passes its config's
    :meth:`~crdr.train.config.TrainConfig.discriminator_settings`.
    """
    if kind == "independent":
        return IndependentDiscriminator(levels, main_channels)
    if kind == "shared":
        return SharedDiscriminator(levels, main_channels)
    if kind == "hybrid":
        return HybridDiscriminator(levels, main_channels, backbone_depth, head_depth, condition_on_level)
    raise ParameterError(f"unknown discriminator {kind!r}; choose one of {', '.join(DISCRIMINATOR_KINDS)}")
