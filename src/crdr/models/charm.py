"""Channel-wise autoregressive context model ("Charm", Minnen & Singh 2020), spec §7.

``y`` is split into S slices coded in order; the mean and scale of slice i are predicted from the
hyper-decoder features and the already decoded slices (the *first* ``min(i, max_support)`` of
them), and a latent residual prediction (LRP) refines each dequantised slice. ``forward``,
``compress`` and ``decompress`` share :meth:`slice_parameters` and :meth:`residual`, so training,
encoding and decoding cannot drift apart.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from crdr.entropy import ScaleRule, YGaussian, ste_round
from crdr.parallel import run_both


class SliceTransform(nn.Module):
    """``Conv5(a→w1) ReLU Conv5(w1→w2) ReLU Conv3(w2→out)`` (keys ``model.0/2/4``)."""

    def __init__(self, in_channels: int, out_channels: int, widths=(224, 128)) -> None:
        super().__init__()
        first, second = widths
        self.model = nn.Sequential(
            nn.Conv2d(in_channels, first, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(first, second, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(second, out_channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


@dataclass
class ContextResult:
    """Output of the context model's forward pass; all tensors (N, Y, h, w)."""

    y_hat: Tensor  # decoder input: dequantised y plus LRP
    likelihoods: Tensor  # current mode (noisy in training)
    q_likelihoods: Tensor  # eval-mode likelihoods, no gradient
    mu: Tensor
    sigma: Tensor  # raw scale (the 0.11 bound is applied by the Gaussian model)
    y_hat_before_lrp: Tensor
    lrp: Tensor


class CharmContextModel(nn.Module):
    """Predicts per-slice Gaussian parameters of ``y`` and refines ``ŷ`` (spec §7).

    ::

        hyper_out = [hm | hs]  (N, 2Y, h, w)
        for slice i:  support = ŷ_0..ŷ_{m-1}, m = min(i, max_support)
            μ_i = MeanT_i([hm, support])      σ_i = ScaleT_i([hs, support])
            ŷ'_i = round(y_i − μ_i) + μ_i
            ŷ_i  = ŷ'_i + ½ tanh(LrpT_i([hm, support, ŷ'_i]))
    """

    def __init__(
        self,
        y_channels: int = 320,
        num_slices: int = 10,
        max_support_slices: int = 5,
        widths=(224, 128),
    ) -> None:
        super().__init__()
        self.num_slices = num_slices
        self.max_support_slices = max_support_slices
        self.slice_channels = y_channels // num_slices
        supports = [self.slice_channels * min(i, max_support_slices) for i in range(num_slices)]
        c = self.slice_channels
        self.mean_slice_transforms = nn.ModuleList(
            SliceTransform(y_channels + s, c, widths) for s in supports
        )
        self.scale_slice_transforms = nn.ModuleList(
            SliceTransform(y_channels + s, c, widths) for s in supports
        )
        self.lrp_slice_transforms = nn.ModuleList(
            SliceTransform(y_channels + s + c, c, widths) for s in supports
        )

    def slice_parameters(self, index: int, hyper_out: Tensor, decoded: list[Tensor], pool: Executor | None = None):
        """``(μ_i, σ_i, mean_input_i)`` for slice ``index`` given the slices decoded so far.

        With a ``pool`` the mean and scale transforms run side by side (each single-threaded
        under the codec, so the values do not depend on the pool, see :mod:`crdr.parallel`)."""
        hyper_mean, hyper_scale = hyper_out.chunk(2, dim=1)
        support = decoded[: min(index, self.max_support_slices)]
        mean_input = torch.cat([hyper_mean, *support], dim=1)
        scale_input = torch.cat([hyper_scale, *support], dim=1)
        mu, sigma = run_both(
            pool,
            lambda: self.mean_slice_transforms[index](mean_input),
            lambda: self.scale_slice_transforms[index](scale_input),
        )
        return mu, sigma, mean_input

    def residual(self, index: int, mean_input: Tensor, y_hat_slice: Tensor) -> Tensor:
        """Latent residual prediction ``½ tanh(LrpT_i([mean_input, ŷ'_i]))``."""
        return 0.5 * torch.tanh(self.lrp_slice_transforms[index](torch.cat([mean_input, y_hat_slice], 1)))

    def forward(
        self, y: Tensor, hyper_out: Tensor, gaussian: YGaussian, training: bool | None = None
    ) -> ContextResult:
        training = self.training if training is None else training
        parts: dict[str, list[Tensor]] = {k: [] for k in ("y_hat", "lik", "qlik", "mu", "sigma", "pre", "lrp")}
        for index, y_slice in enumerate(y.chunk(self.num_slices, dim=1)):
            mu, sigma, mean_input = self.slice_parameters(index, hyper_out, parts["y_hat"])
            with torch.no_grad():
                rounded = torch.round(y_slice - mu) + mu
                q_likelihood = gaussian.likelihood(rounded, sigma, mu)
            if training:
                noisy = y_slice + torch.empty_like(y_slice).uniform_(-0.5, 0.5)
                likelihood = gaussian.likelihood(noisy, sigma, mu)
                y_hat_slice = ste_round(y_slice - mu) + mu
            else:
                likelihood = gaussian.likelihood(rounded, sigma, mu)
                y_hat_slice = rounded
            lrp = self.residual(index, mean_input, y_hat_slice)
            for key, value in zip(
                parts, (y_hat_slice + lrp, likelihood, q_likelihood, mu, sigma, y_hat_slice, lrp)
            ):
                parts[key].append(value)
        cat = {key: torch.cat(values, dim=1) for key, values in parts.items()}
        return ContextResult(
            y_hat=cat["y_hat"], likelihoods=cat["lik"], q_likelihoods=cat["qlik"], mu=cat["mu"],
            sigma=cat["sigma"], y_hat_before_lrp=cat["pre"], lrp=cat["lrp"],
        )

    @torch.no_grad()
    def compress(
        self, y: Tensor, hyper_out: Tensor, gaussian: YGaussian, rule: ScaleRule = ScaleRule.NEXT_LARGER,
        pool: Executor | None = None,
    ) -> tuple[bytes, Tensor]:
        """Code one image's ``y`` (1, Y, h, w) → ``(string, ŷ)``; one string, slices in order.
        ``rule`` picks each element's table scale (the decoder must use the same)."""
        decoded: list[Tensor] = []
        symbols, indexes = [], []
        for index, y_slice in enumerate(y.chunk(self.num_slices, dim=1)):
            mu, sigma, mean_input = self.slice_parameters(index, hyper_out, decoded, pool)
            slice_symbols = torch.round(y_slice - mu).int()
            symbols.append(slice_symbols)
            indexes.append(gaussian.indexes(sigma, rule))
            y_hat_slice = slice_symbols.to(mu.dtype) + mu
            decoded.append(y_hat_slice + self.residual(index, mean_input, y_hat_slice))
        return gaussian.encode(symbols, indexes), torch.cat(decoded, dim=1)

    @torch.no_grad()
    def decompress(
        self, string: bytes, hyper_out: Tensor, gaussian: YGaussian, rule: ScaleRule = ScaleRule.NEXT_LARGER,
        pool: Executor | None = None,
    ) -> Tensor:
        """Decode ``ŷ`` (1, Y, h, w) from its string; ``hyper_out`` fixes the spatial size."""
        n, _, h, w = hyper_out.shape
        stream = gaussian.decoder(string, n * self.slice_channels * self.num_slices * h * w)
        decoded: list[Tensor] = []
        for index in range(self.num_slices):
            mu, sigma, mean_input = self.slice_parameters(index, hyper_out, decoded, pool)
            slice_symbols = stream.decode(gaussian.indexes(sigma, rule))
            y_hat_slice = slice_symbols.to(mu.dtype) + mu
            decoded.append(y_hat_slice + self.residual(index, mean_input, y_hat_slice))
        return torch.cat(decoded, dim=1)
