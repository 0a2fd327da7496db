"""Training losses: HiFiC rate loss, MSE, perceptual (ST-LPIPS / LPIPS), GAN losses and HRRGAN's reference.

These are the loss terms of the authors' trainers (spec §14.4-14.5), each a small function or module so
the training loop can combine them with the weights of its stage config::

    L_G = 150 * mse_loss(x_hat, x)
        + hific_rate_loss(bpp, qbpp, q, lambda_a, lambda_b, targets)
        + beta * (0.390625 * perceptual(x_hat, x) + 0.000390625 * gan.generator(d_fake, d_ref))

``x_ref`` is the image the generator's realism is measured against: ``x`` itself, or for HRRGAN
below the top levels the no-grad decode at ``q + delta`` (:func:`hrrgan_reference`); ``d_ref`` is its
stop-gradient logits under the level-``q`` discriminator (:func:`reference_logits`).

Every function returns the **unweighted** term (the rate loss includes its own lambda because the
lambda is chosen from the rate); the loop applies the config weights. All images are in [-1, 1].

GAN losses work on the discriminator's patch logits ``(N, 1, H/16, W/16)`` and use
BCE-with-logits with mean reduction over every logit, as the authors' ``VanillaGANLoss`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crdr import perceptual
from crdr.errors import ParameterError, WeightsError
from crdr.perceptual import ALEXNET_FILE
from crdr.choices import GAN_LOSS_NAMES, PERCEPTUAL_KINDS

__all__ = [
    "GanLoss",
    "PerceptualLoss",
    "gan_loss",
    "hific_rate_loss",
    "hrrgan_reference",
    "mse_loss",
    "reference_logits",
    "GAN_LOSS_NAMES",
    "PERCEPTUAL_KINDS",
]


# ---------------------------------------------------------------------------------------------------
# Rate and distortion


def hific_rate_loss(
    bpp: Tensor,
    qbpp: Tensor,
    q_index: int,
    lambda_a: Sequence[float],
    lambda_b: Sequence[float] | float,
    target_rates: Sequence[float],
) -> Tensor:
    """HiFiC-style rate loss ``lambda * mean(bpp)`` (spec §14.4; Mentzer et al. 2020).

    ``lambda = lambda_a[q] if mean(qbpp) > target_rates[q] else lambda_b[q]``: a large weight while the
    rate is above its target, a small one below it. ``qbpp`` (the bpp of the rounded latents under
    the eval likelihoods) only selects lambda and never carries gradient.

    Args:
        bpp: noisy-likelihood bits per pixel (y + z), any shape (usually ``(N,)``), with gradient.
        qbpp: eval-likelihood bits per pixel, any shape; detached here.
        q_index: integer rate level; a single-rate stage passes 0 with one-element lists.
        lambda_a: per-level weight used above the target.
        lambda_b: per-level weight used at or below the target, or one float for every level.
        target_rates: per-level target bpp.

    Returns:
        Scalar tensor. The choice is made with ``torch.where`` so no device sync is needed.
    """
    levels = len(lambda_a)
    if isinstance(lambda_b, (int, float)):
        lambda_b = [float(lambda_b)] * levels
    if len(lambda_b) != levels or len(target_rates) != levels:
        raise ParameterError(
            f"lambda_a, lambda_b and target_rates must have one entry per level, got "
            f"{levels}, {len(lambda_b)} and {len(target_rates)}"
        )
    q = int(q_index)
    if not 0 <= q < levels:
        raise ParameterError(f"rate level {q_index} is outside 0..{levels - 1}")
    above = qbpp.detach().float().mean() > target_rates[q]
    lam = torch.where(
        above,
        torch.tensor(float(lambda_a[q]), device=bpp.device),
        torch.tensor(float(lambda_b[q]), device=bpp.device),
    )
    return lam * bpp.mean()


def mse_loss(x_hat: Tensor, x: Tensor) -> Tensor:
    """Mean squared error on the [0, 1] scale: ``mean(((x_hat + 1)/2 - (x + 1)/2)^2)`` (spec §14.4).

    ``x_hat, x: (N, 3, H, W) in [-1, 1]`` (``x_hat`` is not clamped in training). Unweighted: the
    authors' weight 150 comes from the stage config and is applied by the training loop.
    """
    if x_hat.shape != x.shape:
        raise ParameterError(f"shape mismatch: x_hat {tuple(x_hat.shape)} vs x {tuple(x.shape)}")
    return torch.mean(((x_hat + 1) / 2 - (x + 1) / 2) ** 2)


# ---------------------------------------------------------------------------------------------------
# Perceptual losses (kinds: PERCEPTUAL_KINDS, crdr.choices)


class PerceptualLoss(nn.Module):
    """Learned perceptual distance, batch mean, with a frozen network.

    ``kind``:
      * ``"stlpips-alex"``: shift-tolerant LPIPS (Ghildyal & Liu 2022), AlexNet variant, from
        stlpips-pytorch; its weights are bundled in the wheel, so it works offline.
      * ``"lpips-alex"``: LPIPS v0.1 with AlexNet (Zhang et al. 2018), the authors' loss (spec §14.4).
        Needs torchvision's AlexNet file locally (``alexnet_weights``, default
        ``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``); raises WeightsError if absent.

    ::

        x_hat (N,3,H,W) [-1,1] --+
                                 +--> frozen net --> (N,1,1,1) --> mean --> scalar
        x     (N,3,H,W) [-1,1] --+

    Gradients flow to the inputs; the network's parameters have ``requires_grad=False`` and it stays
    in eval mode whatever ``train()`` is called with (LPIPS has dropout before its linear layers).
    ST-LPIPS needs H, W >= 32.
    """

    def __init__(self, kind: str, alexnet_weights: str | Path | None = None) -> None:
        super().__init__()
        if kind == "stlpips-alex":
            network = perceptual.build_stlpips_alex()
        elif kind == "lpips-alex":
            path = Path(alexnet_weights) if alexnet_weights is not None else perceptual.hub_checkpoint(ALEXNET_FILE)
            if not path.is_file():
                raise WeightsError(
                    f"LPIPS(alex) needs torchvision's AlexNet weights: put {ALEXNET_FILE} at {path} "
                    f"(or pass its path / set TORCH_HOME), or use the 'stlpips-alex' perceptual loss"
                )
            network = perceptual.build_lpips_alex(path)
        else:
            raise ParameterError(f"unknown perceptual loss {kind!r}; choose one of {PERCEPTUAL_KINDS}")
        self.kind = kind
        self.network = network  # frozen: eval mode, requires_grad off (crdr.perceptual)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.network.eval()
        return self

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        """``x_hat, x: (N, 3, H, W) in [-1, 1]`` -> scalar mean distance."""
        if x_hat.shape != x.shape:
            raise ParameterError(f"shape mismatch: x_hat {tuple(x_hat.shape)} vs x {tuple(x.shape)}")
        # Argument order as the authors: lpips(x, x_hat); the distance is symmetric anyway.
        return self.network(x, x_hat).mean()


# ---------------------------------------------------------------------------------------------------
# GAN losses


def _bce(logits: Tensor, label: float) -> Tensor:
    """BCE-with-logits against a constant label, mean over every element."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


def _sgan_generator(d_fake: Tensor, d_real: Tensor) -> Tensor:
    return _bce(d_fake, 1.0)


def _sgan_discriminator(d_real: Tensor, d_fake: Tensor) -> Tensor:
    return 0.5 * _bce(d_real, 1.0) + 0.5 * _bce(d_fake, 0.0)


def _relativistic_generator(d_fake: Tensor, d_ref: Tensor) -> Tensor:
    # 0.5 [BCE(d_ref - d_fake, 0) + BCE(d_fake - d_ref, 1)] = mean(-log sigmoid(d_fake - d_ref)).
    d_ref = d_ref.detach()
    return 0.5 * (_bce(d_ref - d_fake, 0.0) + _bce(d_fake - d_ref, 1.0))


def _relativistic_discriminator(d_real: Tensor, d_fake: Tensor) -> Tensor:
    # The authors' D step: 0.5 BCE(d_real - sg(d_fake), 1) then 0.5 BCE(d_fake - sg(d_real), 0), two
    # backward passes. Its value is mean(-log sigmoid(d_real - d_fake)) and its gradient half of that.
    return 0.5 * _bce(d_real - d_fake.detach(), 1.0) + 0.5 * _bce(d_fake - d_real.detach(), 0.0)


def _average_generator(d_fake: Tensor, d_real: Tensor) -> Tensor:
    d_real = d_real.detach()
    return 0.5 * (_bce(d_real - d_fake.mean(), 0.0) + _bce(d_fake - d_real.mean(), 1.0))


def _average_discriminator(d_real: Tensor, d_fake: Tensor) -> Tensor:
    return 0.5 * _bce(d_real - d_fake.detach().mean(), 1.0) + 0.5 * _bce(
        d_fake - d_real.detach().mean(), 0.0
    )


@dataclass(frozen=True)
class GanLoss:
    """A generator/discriminator loss pair on patch logits ``(N, 1, h, w)``.

    ``generator(d_fake, d_ref)``: ``d_fake = D_q(x_hat)`` with gradient to the codec; ``d_ref`` is
    ``D_q(x)`` (or, for HRRGAN below the top level, ``D_q(x_ref)`` of the next-higher-quality
    reconstruction) and is detached here. ``discriminator(d_real, d_fake)``: ``d_real = D_q(x)``,
    ``d_fake = D_q(sg(x_hat))``. Both return unweighted scalars (the loop applies ``0.000390625``).

    ``uses_reference`` tells the loop to compute ``d_ref`` from the higher-rate reconstruction
    (:func:`hrrgan_reference`); every loss takes ``d_ref`` from :func:`reference_logits`.
    """

    name: str
    generator: Callable[[Tensor, Tensor], Tensor]
    discriminator: Callable[[Tensor, Tensor], Tensor]
    uses_reference: bool = False


def gan_loss(name: str) -> GanLoss:
    """Select a GAN loss by name (spec §14.4-14.5).

    * ``"sgan"``: standard GAN. G: ``BCE(d_fake, 1)``; D: ``½ BCE(d_real, 1) + ½ BCE(d_fake, 0)``.
    * ``"rgan"``: relativistic (Jolicoeur-Martineau 2019), element-wise differences.
      G: ``½ [BCE(sg(d_real) - d_fake, 0) + BCE(d_fake - sg(d_real), 1)]``;
      D: ``½ BCE(d_real - sg(d_fake), 1) + ½ BCE(d_fake - sg(d_real), 0)``.
    * ``"ragan"``: relativistic average: the other side enters as its batch-and-space mean;
      G: ``½ [BCE(sg(d_real) - mean(d_fake), 0) + BCE(d_fake - mean(sg(d_real)), 1)]``;
      D: ``½ BCE(d_real - mean(sg(d_fake)), 1) + ½ BCE(d_fake - mean(sg(d_real)), 0)``.
    * ``"hrrgan"``: the paper's hierarchical relative rate GAN. G as RGAN but against the
      stop-gradient logits of the reference (the next-higher-quality reconstruction, the real image
      at the top level): value ``mean(-log σ(d_fake - sg(d_ref)))``; D is RGAN's against the real image.

    The D losses stop the gradient through the opposite side as the authors' two-pass D step does,
    so their gradient is half that of ``mean(-log σ(d_real - d_fake))`` (spec §14.5).
    """
    if name == "sgan":
        return GanLoss(name, _sgan_generator, _sgan_discriminator)
    if name == "rgan":
        return GanLoss(name, _relativistic_generator, _relativistic_discriminator)
    if name == "ragan":
        return GanLoss(name, _average_generator, _average_discriminator)
    if name == "hrrgan":
        return GanLoss(name, _relativistic_generator, _relativistic_discriminator, uses_reference=True)
    raise ParameterError(f"unknown GAN loss {name!r}; choose one of {', '.join(GAN_LOSS_NAMES)}")


def reference_logits(discriminator: nn.Module, x_ref: Tensor, q_index: int) -> Tensor:
    """``d_ref = sg(D_q(x_ref))`` as float32, for :meth:`GanLoss.generator` (spec §14.5).

    The level-``q`` discriminator judges the reference too, also when HRRGAN's ``x_ref`` is the
    decode at ``q + delta``; no graph is built (the generator loss detaches ``d_ref`` anyway).
    Run it inside the loop's autocast context, as ``D_q(x_hat)``.
    """
    with torch.no_grad():
        return discriminator(x_ref, q_index).float()


# ---------------------------------------------------------------------------------------------------
# HRRGAN reference: the "real" side of the hierarchical relative rate GAN


def hrrgan_reference(
    model: nn.Module,
    x: Tensor,
    q_index: int,
    beta: float | None,
    levels: int,
    delta: int = 1,
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
) -> Tensor:
    """The image HRRGAN's generator loss measures ``x_hat = model(x, q, beta).x_hat`` against (spec §14.5).

    ::

        q + delta <= levels - 1:  x_ref = model(x, q + delta, beta).x_hat    no_grad, train mode
        otherwise (top levels):   x_ref = x                                  plain RGAN vs the real image

    The reference is the same batch decoded at the higher-quality level ``q + delta`` (the authors'
    ``relative_score_rate_delta``, default 1) with the same β, in the model's current (train) mode
    under ``no_grad``: its noise draws consume the RNG, so the loop calls this right after the main
    forward, where the authors' trainer decodes it. The discriminator is still trained against the
    real image only (:meth:`GanLoss.discriminator`).

    Args:
        model: the codec, called as ``model(x, q, beta)`` and returning a result with ``x_hat``.
        x: ``(N, 3, H, W) in [-1, 1]``, the training batch.
        q_index: the integer rate level of this batch.
        beta: the batch's realism β (None before stage 3).
        levels: number of rate levels trained.
        delta: how many levels above ``q`` the reference is decoded.
        autocast: the loop's mixed-precision context factory (a no-op in float32).

    Returns:
        ``x_ref: (N, 3, H, W)`` float32: ``x`` itself at the top levels, else the reference decode.
    """
    level = q_index + delta
    if level > levels - 1:
        return x
    with torch.no_grad(), autocast():
        return model(x, float(level), beta).x_hat.float()
