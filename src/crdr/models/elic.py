"""ELIC analysis and synthesis transforms (He et al. 2022), with ICA and beta conditioning hooks.

The encoder maps an image to the latent ``y`` (stride 16); the decoder maps ``ŷ`` back. Each
encoder layer is followed by its ICA layer and each decoder layer preceded by one (spec §4, §5):
the asymmetry matters for loading the authors' weights. Feature switches (ICA, beta) are
constructor arguments so the three training stages share one class.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from crdr.models.beta_condition import BetaCondBlocks, condition_mlp, fourier_embedding
from crdr.models.blocks import bottleneck_convs
from crdr.models.ica import InterpChannelAttention
from crdr.parallel import RowLocalStep


class BottleneckBlock(nn.Module):
    """``x + 1x1(C→M) ReLU 3x3(M→M) ReLU 1x1(M→C)``: the ELIC residual bottleneck (spec §3.1)."""

    def __init__(self, channels: int, mid_channels: int) -> None:
        super().__init__()
        self.conv = bottleneck_convs(channels, mid_channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x)


class BottleneckBlocks(nn.Module):
    """Three :class:`BottleneckBlock` in series (``block0..2``), no outer skip."""

    def __init__(self, channels: int, mid_channels: int, count: int = 3) -> None:
        super().__init__()
        for index in range(count):
            self.add_module(f"block{index}", BottleneckBlock(channels, mid_channels))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.children():
            x = block(x)
        return x


class AttentionUnit(nn.Module):
    """``x + 1x1(C→C/2) ReLU 3x3 ReLU 1x1(C/2→C)``: one unit of the attention module."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.c1 = nn.Conv2d(channels, half, 1)
        self.c2 = nn.Conv2d(half, half, 3, padding=1)
        self.c3 = nn.Conv2d(half, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.c1(x))
        h = torch.relu(self.c2(h))
        return x + self.c3(h)


class AttentionBlock(nn.Module):
    """Cheng et al. 2020 simplified attention (no non-local op), spec §3.2.

    ::

        x ─► trunk (3 units) ───────────────► t ─┐
        x ─► branch (3 units) ─► 1x1 ─► sigmoid ─► a ─┤─► x + t ⊙ a
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.trunk_block = nn.Sequential(*(AttentionUnit(channels) for _ in range(3)))
        self.attention_block = nn.Sequential(*(AttentionUnit(channels) for _ in range(3)))
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        trunk = self.trunk_block(x)
        attention = torch.sigmoid(self.conv(self.attention_block(x)))
        return x + trunk * attention


def _down(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 5, stride=2, padding=2)


def _up(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(in_channels, out_channels, 5, stride=2, padding=2, output_padding=1)


class ElicEncoder(nn.Module):
    """Analysis transform ``g_a``: x (N, 3, H, W) in [-1, 1] → y (N, Y, H/16, W/16).

    ::

        conv1 blocks1 conv2 blocks2 attn2 conv3 blocks3 conv4 attn4   (each followed by ICA_k)
    """

    LAYERS = ("conv1", "block1", "conv2", "block2", "attn2", "conv3", "block3", "conv4", "attn4")

    def __init__(
        self,
        y_channels: int = 320,
        channels: int = 192,
        block_mid: int = 96,
        rate_levels: int = 5,
        variable_rate: bool = True,
    ) -> None:
        super().__init__()
        self.conv1 = _down(3, channels)
        self.block1 = BottleneckBlocks(channels, block_mid)
        self.conv2 = _down(channels, channels)
        self.block2 = BottleneckBlocks(channels, block_mid)
        self.attn2 = AttentionBlock(channels)
        self.conv3 = _down(channels, channels)
        self.block3 = BottleneckBlocks(channels, block_mid)
        self.conv4 = _down(channels, y_channels)
        self.attn4 = AttentionBlock(y_channels)
        if variable_rate:
            widths = [channels] * 7 + [y_channels] * 2
            self.interp_ca_list = nn.ModuleList(InterpChannelAttention(w, rate_levels) for w in widths)
        else:
            self.interp_ca_list = None

    def forward(self, x: Tensor, q: Tensor | None) -> Tensor:
        for index, name in enumerate(self.LAYERS):
            x = getattr(self, name)(x)
            if self.interp_ca_list is not None:
                x = self.interp_ca_list[index](x, q)
        return x


class ElicDecoder(nn.Module):
    """Synthesis transform ``g_s``: ŷ (N, Y, h, w) → x̂ (N, 3, 16h, 16w), unbounded (no tanh).

    ::

        ICA_k precedes each layer:
        attn1 conv1↑ blocks1(β) conv2↑ attn2 blocks2(β) conv3↑ blocks3(β) conv4↑
        β ─► Fourier embedding ─► MLP ─► c  (added inside every β block)

    Note ``conv2 → attn2 → block2`` here versus ``block2 → attn2`` in the encoder (spec §5).
    """

    LAYERS = ("attn1", "conv1", "block1", "conv2", "attn2", "block2", "conv3", "block3", "conv4")
    BETA_LAYERS = ("block1", "block2", "block3")
    UPSAMPLING_LAYERS = ("conv1", "conv2", "conv3", "conv4")
    # Rows of context, at its input resolution, each layer needs on either side of an output row
    # (for the banded synthesis of crdr.parallel): three 3x3 convolutions in series in the
    # residual blocks and in each attention branch; input rows a−1..b for the output rows
    # 2a..2b−1 of a 5x5 stride-2 transposed convolution. In all, 8.25 latent rows (132 pixels).
    ROW_HALO = {"attn1": 3, "conv1": 1, "block1": 3, "conv2": 1, "attn2": 3, "block2": 3, "conv3": 1,
                "block3": 3, "conv4": 1}

    def __init__(
        self,
        y_channels: int = 320,
        channels: int = 256,
        block_mid: int = 128,
        rate_levels: int = 5,
        variable_rate: bool = True,
        beta_conditioned: bool = True,
        condition_channels: int = 512,
        fourier_frequencies: int = 10,
        max_beta: float = 5.12,
    ) -> None:
        super().__init__()
        self.beta_conditioned = beta_conditioned
        self.max_beta = max_beta
        self.fourier_frequencies = fourier_frequencies
        self.attn1 = AttentionBlock(y_channels)
        self.conv1 = _up(y_channels, channels)
        self.conv2 = _up(channels, channels)
        self.attn2 = AttentionBlock(channels)
        self.conv3 = _up(channels, channels)
        self.conv4 = _up(channels, 3)
        for name in self.BETA_LAYERS:
            if beta_conditioned:
                block: nn.Module = BetaCondBlocks(channels, block_mid, condition_channels)
            else:
                block = BottleneckBlocks(channels, block_mid)
            self.add_module(name, block)
        if variable_rate:
            widths = [y_channels] * 2 + [channels] * 7
            self.interp_ca_list = nn.ModuleList(InterpChannelAttention(w, rate_levels) for w in widths)
        else:
            self.interp_ca_list = None
        if beta_conditioned:
            self.mlp = condition_mlp(condition_channels, fourier_frequencies)
            self.reset_beta_parameters(everything=True)
        else:
            self.mlp = None

    def reset_beta_parameters(self, everything: bool = False, scheme: str = "paper") -> None:
        """Initialise the β parts (``proj_*`` and the MLP), or with ``everything`` every conv/linear.

        ``paper``: the authors' ``weight_init``, weights ~ N(0, 0.02) and biases 0 (spec §3.5;
        with ``everything`` as at construction, otherwise what stage 3 starts from after loading
        the stage-2 decoder). The condition then passes three such layers on its way to the
        features and arrives weak: in the bundled model, after 4,800 stage-3 steps, the MLP weights
        were still at their initial size and what ``proj_*`` add differed between β = 0 and 5.12 by
        0.004 rms (docs/training.md, ablations of 2026-12-02).

        ``zero-projection`` (β parts only): the MLP at torch's default ``nn.Linear`` init, so that
        ``c`` is O(0.1) and varies with β, and every ``proj_*`` zero, so that the decoder starts
        exactly as the β-free one at every β and the projections' gradient ``∂L/∂h · c`` is not
        small (the zero-initialised modulation of ControlNet and DiT's adaLN-zero).
        """
        if scheme not in ("paper", "zero-projection"):
            raise ValueError(f"unknown β initialisation {scheme!r}")
        if scheme == "zero-projection" and everything:
            raise ValueError("zero-projection initialises the β parts only")
        for name, module in self.named_modules():
            if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                continue
            beta_part = "proj_" in name or name.startswith("mlp")
            if scheme == "zero-projection" and beta_part:
                if "proj_" in name:
                    nn.init.zeros_(module.weight)
                    nn.init.zeros_(module.bias)
                else:
                    module.reset_parameters()
            elif everything or beta_part:
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)

    def beta_parameters(self, prefix: str = "") -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of the β parts: the condition MLP and every ``proj_*``."""
        if not self.beta_conditioned:
            return
        dot = f"{prefix}." if prefix else ""
        yield from self.mlp.named_parameters(prefix=f"{dot}mlp")
        for name in self.BETA_LAYERS:
            yield from getattr(self, name).projection_parameters(prefix=f"{dot}{name}")

    def condition(self, beta: Tensor) -> Tensor:
        """``beta`` (N,) → condition ``c`` (N, C, 1, 1)."""
        embedding = fourier_embedding(beta, self.max_beta, self.fourier_frequencies)
        return self.mlp(embedding)[:, :, None, None]

    def steps(self, q: Tensor | None, beta: Tensor | None) -> list[RowLocalStep]:
        """The layers (each with its ICA) as row-local steps: ``forward`` runs them in order,
        the codec runs them on bands in parallel (:func:`crdr.parallel.run_steps`)."""
        condition = self.condition(beta) if self.beta_conditioned else None
        return [
            RowLocalStep(
                functools.partial(self._layer, index, name, q, condition),
                halo=self.ROW_HALO[name],
                scale=2 if name in self.UPSAMPLING_LAYERS else 1,
            )
            for index, name in enumerate(self.LAYERS)
        ]

    def _layer(self, index: int, name: str, q: Tensor | None, condition: Tensor | None, x: Tensor) -> Tensor:
        if self.interp_ca_list is not None:
            x = self.interp_ca_list[index](x, q)
        layer = getattr(self, name)
        return layer(x, condition) if condition is not None and name in self.BETA_LAYERS else layer(x)

    def forward(self, y_hat: Tensor, q: Tensor | None, beta: Tensor | None) -> Tensor:
        x = y_hat
        for step in self.steps(q, beta):
            x = step.run(x)
        return x
