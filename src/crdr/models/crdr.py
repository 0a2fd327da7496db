"""The whole CRDR model: one network for every rate and every realism (Iwai et al. 2024).

::

    x ─► g_a(·, q) ─► y ─► h_a ─► z ─► Q ─► ẑ ─► h_s ─► [hm | hs]
                      │                                   │
                      └────────► Charm context model ◄────┘  (μ, σ per slice; LRP)
                                        │
                                        ŷ ─► g_s(·, q, β) ─► x̂

    x: (N, 3, H, W) in [-1, 1], H and W multiples of 64 (the codec pads);
    q: continuous quality in [0, levels-1] (ICA in g_a and g_s); β in [0, max_beta] (decoder only).

The feature flags of :class:`~crdr.config.ModelConfig` give the stage-1 (no ICA, no β), stage-2
(ICA) and stage-3 (ICA + β, the paper model) networks from this one class.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from crdr.config import PAPER, ModelConfig
from crdr.entropy import ScaleRule, YGaussian, ZBottleneck
from crdr.errors import ParameterError
from crdr.models.charm import CharmContextModel
from crdr.models.elic import ElicDecoder, ElicEncoder
from crdr.models.hyperprior import HyperDecoder, HyperEncoder

STRIDE = 64


@dataclass
class ForwardResult:
    """Everything a training step or an equivalence test needs from one forward pass."""

    x_hat: Tensor  # (N, 3, H, W): raw in training, clamped to [-1, 1] in eval
    x_hat_raw: Tensor  # decoder output before any clamp
    y: Tensor
    z: Tensor
    y_hat: Tensor
    z_hat: Tensor
    y_likelihoods: Tensor  # current mode: noisy in training, rounded in eval
    z_likelihoods: Tensor
    y_q_likelihoods: Tensor  # eval-mode likelihoods, no gradient (for the HiFiC rate target)
    z_q_likelihoods: Tensor
    hyper_out: Tensor
    mu: Tensor
    sigma: Tensor
    y_hat_before_lrp: Tensor
    lrp: Tensor

    def bits(self, quantized: bool = False) -> Tensor:
        """Estimated bits per image, (N,): ``−Σ log2 p`` over y and z."""
        y_lik = self.y_q_likelihoods if quantized else self.y_likelihoods
        z_lik = self.z_q_likelihoods if quantized else self.z_likelihoods
        total = torch.log(y_lik).sum(dim=(1, 2, 3)) + torch.log(z_lik).sum(dim=(1, 2, 3))
        return -total / math.log(2)

    def bpp(self, num_pixels: int | None = None, quantized: bool = False) -> Tensor:
        """Bits per pixel, (N,); ``num_pixels`` defaults to the input's H·W (use the unpadded size)."""
        if num_pixels is None:
            num_pixels = self.x_hat.shape[-2] * self.x_hat.shape[-1]
        return self.bits(quantized) / num_pixels


@dataclass
class CodedLatents:
    """One image's entropy-coded latents, and the ``ŷ`` the decoder will reconstruct."""

    z_string: bytes
    y_string: bytes
    z_size: tuple[int, int]
    y_hat: Tensor


def batch_parameter(value, name: str, high: float, batch: int) -> Tensor:
    """``q`` or ``beta`` as a float32 tensor of shape (1,) or (N,), range-checked.

    Raises :class:`ParameterError` (not an assert) for NaN, out-of-range values or a wrong length.
    """
    tensor = torch.as_tensor(value, dtype=torch.float32).detach().reshape(-1).cpu()
    if tensor.numel() not in (1, batch):
        raise ParameterError(f"{name} must be a scalar or have one value per image ({batch}), got {tensor.numel()}")
    if not bool(torch.isfinite(tensor).all()) or bool((tensor < 0).any()) or bool((tensor > high).any()):
        raise ParameterError(f"{name} must lie in [0, {high:g}], got {tensor.tolist()}")
    return tensor


def _entropy_models(config: ModelConfig) -> tuple[ZBottleneck, YGaussian]:
    return ZBottleneck(config.z_channels), YGaussian(config.scale_bound)


class CRDR(nn.Module):
    """Comprehensive rate–distortion–realism codec network (WACV 2024, spec §1–§9).

    Sub-module names equal the authors' (``encoder``, ``decoder``, ``hyperencoder``,
    ``hyperdecoder``, ``context_model``, ``entropy_model_z``, ``entropy_model_y``) so their
    state_dict maps onto ours through one small key table (``crdr.weights``).
    """

    # Where the weights came from, set by crdr.weights.load_model on the model it builds. None for
    # a model made in code: the codec then derives the id from the weights (codec.model_identity).
    model_id: bytes | None = None
    source: str | None = None

    def __init__(self, config: ModelConfig = PAPER) -> None:
        super().__init__()
        self.config = config
        c = config
        self.encoder = ElicEncoder(
            c.y_channels, c.encoder_channels, c.encoder_block_mid, c.rate_levels, c.variable_rate
        )
        self.decoder = ElicDecoder(
            c.y_channels, c.decoder_channels, c.decoder_block_mid, c.rate_levels, c.variable_rate,
            c.beta_conditioned, c.beta_condition_channels, c.fourier_frequencies, c.max_beta,
        )
        self.hyperencoder = HyperEncoder(c.y_channels, c.z_channels, c.hyper_encoder_widths)
        self.hyperdecoder = HyperDecoder(c.z_channels, c.y_channels, c.hyper_decoder_widths)
        self.context_model = CharmContextModel(
            c.y_channels, c.num_slices, c.max_support_slices, c.slice_transform_widths
        )
        self.entropy_model_z, self.entropy_model_y = _entropy_models(c)

    @classmethod
    def for_loading(cls, config: ModelConfig) -> "CRDR":
        """A model whose parameters are left uninitialised, for weights that overwrite every one
        of them (``crdr.weights.load_model``): randomly initialising the paper model's 127 M
        parameters takes about a second. The entropy models, whose constant lower bounds no
        file holds, are built as usual."""
        with torch.device("meta"):
            model = cls(config)
        model = model.to_empty(device="cpu")
        model.entropy_model_z, model.entropy_model_y = _entropy_models(config)
        return model

    # -- parameters -------------------------------------------------------------------------
    @property
    def max_q(self) -> float:
        return float(self.config.rate_levels - 1)

    def q_tensor(self, q, batch: int = 1) -> Tensor | None:
        """``q`` as the (1,) or (N,) float32 tensor g_a and g_s take, or ``None`` for a
        single-rate (stage-1) model. Refuses (:class:`ParameterError`) a q outside [0, max_q]."""
        if not self.config.variable_rate:
            return None
        if q is None:
            raise ParameterError("q is required for a variable-rate model")
        return batch_parameter(q, "q", self.max_q, batch)

    def beta_tensor(self, beta, batch: int = 1) -> Tensor | None:
        """``beta`` (default 0) as the (1,) or (N,) float32 tensor g_s takes, or ``None`` for a
        model without β conditioning. Refuses a beta outside [0, max_beta]."""
        if not self.config.beta_conditioned:
            return None
        return batch_parameter(0.0 if beta is None else beta, "beta", self.config.max_beta, batch)

    @staticmethod
    def check_size(x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ParameterError(f"x must have shape (N, 3, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % STRIDE or x.shape[-1] % STRIDE:
            raise ParameterError(f"H and W must be multiples of {STRIDE} (pad first), got {tuple(x.shape[-2:])}")

    # -- transforms -------------------------------------------------------------------------
    def analysis(self, x: Tensor, q) -> Tensor:
        """``y = g_a(x, q)``."""
        self.check_size(x)
        return self.encoder(x, self.q_tensor(q, x.shape[0]))

    def synthesis(self, y_hat: Tensor, q, beta) -> Tensor:
        """Raw ``x̂ = g_s(ŷ, q, β)`` (not clamped)."""
        n = y_hat.shape[0]
        return self.decoder(y_hat, self.q_tensor(q, n), self.beta_tensor(beta, n))

    def forward(self, x: Tensor, q=None, beta=None) -> ForwardResult:
        """Training (``self.training``) or evaluation forward pass (spec §9)."""
        y = self.analysis(x, q)
        # Under a mixed-precision autocast (training's bf16 option) only g_a and g_s run in low
        # precision: everything the rate and the entropy coder depend on (hyperprior, bottleneck,
        # context model, scale bounds, likelihoods) stays float32.
        with torch.autocast(y.device.type, enabled=False):
            y = y.float()
            z = self.hyperencoder(y)
            z_hat, z_lik, z_qlik = self.entropy_model_z(z, self.training)
            hyper_out = self.hyperdecoder(z_hat)
            context = self.context_model(y, hyper_out, self.entropy_model_y, self.training)
        x_hat_raw = self.synthesis(context.y_hat, q, beta)
        x_hat = x_hat_raw if self.training else torch.clamp(x_hat_raw, -1, 1)
        return ForwardResult(
            x_hat=x_hat, x_hat_raw=x_hat_raw, y=y, z=z, y_hat=context.y_hat, z_hat=z_hat,
            y_likelihoods=context.likelihoods, z_likelihoods=z_lik,
            y_q_likelihoods=context.q_likelihoods, z_q_likelihoods=z_qlik, hyper_out=hyper_out,
            mu=context.mu, sigma=context.sigma, y_hat_before_lrp=context.y_hat_before_lrp,
            lrp=context.lrp,
        )

    def aux_loss(self) -> Tensor:
        """Quantile loss of the z bottleneck (only ``quantiles`` learn from it)."""
        return self.entropy_model_z.loss()

    def aux_parameters(self) -> list[nn.Parameter]:
        return [self.entropy_model_z.quantiles]

    def main_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.endswith("quantiles")]

    def rate_parameters(self) -> dict[str, nn.Parameter]:
        """Name → parameter of what variable rate (stage 2) adds: the ICA layers of g_a and g_s.

        Empty for a single-rate model. The model owns this list so that no caller has to
        recognise ICA parameters by their names.
        """
        found: dict[str, nn.Parameter] = {}
        for part in ("encoder", "decoder"):
            layers = getattr(self, part).interp_ca_list
            if layers is not None:
                found.update(layers.named_parameters(prefix=f"{part}.interp_ca_list"))
        return found

    def beta_parameters(self) -> dict[str, nn.Parameter]:
        """Name → parameter of what β conditioning (stage 3) adds: the decoder's condition MLP
        and the ``proj_*`` 1x1 projections inside its β blocks. Empty without β conditioning."""
        return dict(self.decoder.beta_parameters(prefix="decoder"))

    # -- entropy coding ---------------------------------------------------------------------
    def build_tables(self) -> None:
        """(Re)build both entropy coders' tables from the current parameters."""
        self.entropy_model_z.build_tables()
        self.entropy_model_y.build_tables()

    @torch.no_grad()
    def compress(self, x: Tensor, q, rule: ScaleRule = ScaleRule.NEXT_LARGER) -> CodedLatents:
        """Code one padded image (1, 3, H, W) at quality ``q`` (spec §10.2); ``rule``: how y
        elements pick their table scale (the authors' next-larger by default)."""
        if x.shape[0] != 1:
            raise ParameterError("compress codes one image at a time")
        return self.compress_latents(self.analysis(x, q), rule)

    @torch.no_grad()
    def compress_latents(
        self, y: Tensor, rule: ScaleRule = ScaleRule.NEXT_LARGER, pool: Executor | None = None
    ) -> CodedLatents:
        """Entropy-code ``y`` (1, Y, h, w): everything after the analysis transform.

        Split from :meth:`compress` so the codec can run this part, which the decoder must
        mirror bit for bit, under a fixed thread count (``pool``: see :mod:`crdr.parallel`).
        """
        z = self.hyperencoder(y)
        z_string, z_hat = self.entropy_model_z.compress(z)
        hyper_out = self.hyperdecoder(z_hat)
        y_string, y_hat = self.context_model.compress(y, hyper_out, self.entropy_model_y, rule, pool)
        return CodedLatents(z_string, y_string, tuple(z.shape[-2:]), y_hat)

    @torch.no_grad()
    def decompress_latents(
        self, z_string: bytes, y_string: bytes, z_size: tuple[int, int], rule: ScaleRule = ScaleRule.NEXT_LARGER,
        pool: Executor | None = None,
    ) -> Tensor:
        """Decode ``ŷ`` (1, Y, 4h, 4w) from the two strings (spec §10.6) with the encoder's ``rule``."""
        z_hat = self.entropy_model_z.decompress(z_string, z_size)
        hyper_out = self.hyperdecoder(z_hat)
        return self.context_model.decompress(y_string, hyper_out, self.entropy_model_y, rule, pool)

    @torch.no_grad()
    def decompress(
        self, z_string: bytes, y_string: bytes, z_size: tuple[int, int], q, beta,
        rule: ScaleRule = ScaleRule.NEXT_LARGER,
    ) -> Tensor:
        """Decode a padded reconstruction (1, 3, 64h, 64w) in [-1, 1] at realism ``beta``."""
        y_hat = self.decompress_latents(z_string, y_string, z_size, rule)
        return torch.clamp(self.synthesis(y_hat, q, beta), -1, 1)
