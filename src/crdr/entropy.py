"""Entropy models and the rANS coder: the only module that imports CompressAI.

Two models, both CompressAI classes with the authors' semantics (spec §8, §10):

* :class:`ZBottleneck` — the factorised density of the hyper-latent ``z``. CompressAI >= 1.2.5
  computes the bin probability as ``σ(up) − σ(lo)``; the authors' pinned 1.2.4 used the "sign
  trick" ``|σ(s·up) − σ(s·lo)|, s = −sign(lo + up)``. The two differ in the last bits, enough to
  change 239 of 5171 z-CDF entries of the tiny test model and make their files decode to wrong
  images. crdr always uses the 1.2.4 formula, for likelihoods and tables, so files are
  byte-compatible with the authors' pipeline.
* :class:`YGaussian` — the mean-scale Gaussian conditional for ``y`` with CompressAI's 64-entry
  scale table. Which table entry codes an element is a :class:`ScaleRule`: CompressAI (and the
  authors' ``.bin``) take the next larger scale, which costs about 3 % of the y bits at the low
  rates of a small model; ``.crdr`` version 2 takes the nearest scale on a log axis, within 0.1 %
  of the model's estimate on Kodak (``benchmarks/rate_efficiency.py``).

Tables are never trusted from a checkpoint: :meth:`build_tables` recomputes them from the
parameters (weights loading calls it). Everything here runs on CPU in float32.
"""

from __future__ import annotations

import enum
import math
import warnings

import torch
from torch import Tensor

with warnings.catch_warnings():
    # compressai imports torch.jit.script, deprecated in recent torch; harmless here.
    warnings.simplefilter("ignore", FutureWarning)
    from compressai.ans import RansDecoder, RansEncoder
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional

from crdr.errors import CrdrError, FormatError

TABLE_BUFFERS = ("_offset", "_quantized_cdf", "_cdf_length", "scale_table")
# Buffers holding CompressAI's lower bounds (likelihood 1e-9, Gaussian scale): constants, not learned.
CONSTANT_BUFFERS = ("bound", "scale_bound")
SCALE_TABLE_SIZE = 64


class TablesMissingError(CrdrError):
    """Entropy-coder tables were not built (call ``model.build_tables()``)."""


def ste_round(t: Tensor) -> Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return t + (torch.round(t) - t).detach()


def gaussian_scale_table() -> Tensor:
    """The 64 scales ``exp(linspace(ln 0.11, ln 256, 64))`` of the y coder (float32)."""
    return torch.exp(torch.linspace(math.log(0.11), math.log(256), SCALE_TABLE_SIZE))


class ScaleRule(str, enum.Enum):
    """How a predicted scale ``σ`` picks the table scale its element is coded with.

    ``NEXT_LARGER``: the smallest table scale ``>= σ`` (CompressAI's ``build_indexes``; the
    authors' ``.bin`` files need it). ``NEAREST``: the table scale nearest ``σ`` on a log axis,
    i.e. compare ``σ`` with the geometric means of neighbouring scales. Coding with a scale up to
    13 % too large (the table's step) wastes about 3 % of the bits when most symbols are
    near-certain zeros; the nearest scale wastes about 0.1 %. Both rules are plain comparisons
    against fixed thresholds, so encoder and decoder agree exactly.
    """

    NEXT_LARGER = "next-larger"
    NEAREST = "nearest"


def scale_thresholds(table: Tensor, rule: ScaleRule) -> Tensor:
    """Thresholds ``t_j`` (j < len − 1) such that the index of ``σ`` is ``#{j : t_j < σ}``."""
    rule = ScaleRule(rule)
    if rule is ScaleRule.NEXT_LARGER:
        return table[:-1].clone()
    pairs = table.double()
    return torch.sqrt(pairs[:-1] * pairs[1:]).float()


def _coder_lists(model) -> tuple[list[list[int]], list[int], list[int]]:
    return (
        model._quantized_cdf.tolist(),
        model._cdf_length.reshape(-1).int().tolist(),
        model._offset.reshape(-1).int().tolist(),
    )


def stream_padding(string: bytes, symbols: int) -> bytes:
    """Zero bytes appended before decoding a stream.

    CompressAI's rANS decoder reads 32-bit words without checking the end of the buffer. A
    truncated or hostile stream would make it read past its end; with this padding such reads
    land on zeros inside our buffer, which decode to ordinary symbols and end every escape
    sequence. Bounds: one word per symbol, plus the longest escape a stream of this length can
    announce (15 four-bit groups per group read).
    """
    return string + bytes(16 * len(string) + 8 * symbols + 64)


class ZBottleneck(EntropyBottleneck):
    """Factorised entropy model of ``z`` (Ballé et al. 2018) with CompressAI 1.2.4 numerics.

    ``z``: (N, Z, h, w). Symbols are ``round(z − median_c)`` coded with one CDF per channel.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.legacy_pmf = True
        self._lists = None

    def _likelihood(self, inputs: Tensor, stop_gradient: bool = False):
        lower = self._logits_cumulative(inputs - 0.5, stop_gradient=stop_gradient)
        upper = self._logits_cumulative(inputs + 0.5, stop_gradient=stop_gradient)
        if not self.legacy_pmf:
            return torch.sigmoid(upper) - torch.sigmoid(lower), lower, upper
        sign = -torch.sign(lower + upper).detach()
        likelihood = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return likelihood, lower, upper

    def medians(self) -> Tensor:
        """Per-channel medians, shape (1, Z, 1, 1)."""
        return self.quantiles[:, 0, 1].view(1, -1, 1, 1)

    def likelihood(self, values: Tensor) -> Tensor:
        """Bin probability of each value, lower-bounded by 1e-9; (N, Z, h, w) → same shape."""
        n, c, h, w = values.shape
        flat = values.permute(1, 0, 2, 3).reshape(c, 1, -1)
        likelihood, _, _ = self._likelihood(flat)
        likelihood = self.likelihood_lower_bound(likelihood)
        return likelihood.reshape(c, n, h, w).permute(1, 0, 2, 3)

    def forward(self, z: Tensor, training: bool | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Returns ``(ẑ, likelihoods, eval-mode likelihoods)``.

        Training: likelihood at ``z + U(−½, ½)``, ``ẑ = STE(z − m) + m``. Eval: ``ẑ = round(z − m) + m``.
        """
        training = self.training if training is None else training
        medians = self.medians().detach()
        with torch.no_grad():
            rounded = torch.round(z - medians) + medians
            q_likelihood = self.likelihood(rounded)
        if training:
            noisy = z + torch.empty_like(z).uniform_(-0.5, 0.5)
            return ste_round(z - medians) + medians, self.likelihood(noisy), q_likelihood
        return rounded, self.likelihood(rounded), q_likelihood

    def build_tables(self) -> None:
        """Recompute the quantised CDFs from the current parameters (spec §10.5)."""
        with torch.no_grad():
            self.update(force=True)
        self._lists = _coder_lists(self)

    def _tables(self):
        if self._lists is None:
            raise TablesMissingError("entropy-coder tables are missing: call model.build_tables()")
        return self._lists

    def compress(self, z: Tensor) -> tuple[bytes, Tensor]:
        """Code one image's ``z`` (1, Z, h, w) → ``(string, ẑ)``."""
        cdfs, lengths, offsets = self._tables()
        medians = self.medians().detach()
        symbols = torch.round(z - medians).int()
        indexes = torch.arange(z.shape[1], dtype=torch.int32).view(1, -1, 1, 1).expand_as(symbols)
        string = RansEncoder().encode_with_indexes(
            symbols.reshape(-1).tolist(), indexes.reshape(-1).tolist(), cdfs, lengths, offsets
        )
        return string, symbols.to(z.dtype) + medians

    def decompress(self, string: bytes, size: tuple[int, int]) -> Tensor:
        """Decode ``ẑ`` (1, Z, h, w) from its string."""
        cdfs, lengths, offsets = self._tables()
        channels = len(cdfs)
        count = channels * size[0] * size[1]
        indexes = torch.arange(channels, dtype=torch.int32).view(-1, 1).expand(channels, count // channels)
        decoder = RansDecoder()
        decoder.set_stream(stream_padding(string, count))
        values = decoder.decode_stream(indexes.reshape(-1).tolist(), cdfs, lengths, offsets)
        symbols = torch.tensor(values, dtype=torch.float32).view(1, channels, *size)
        return symbols + self.medians().detach()


class YGaussian(GaussianConditional):
    """Mean-scale Gaussian conditional of ``y`` (spec §8.2), scales lower-bounded at 0.11."""

    def __init__(self, scale_bound: float = 0.11) -> None:
        super().__init__(None, scale_bound=scale_bound)
        self._lists = None
        self._thresholds: dict[ScaleRule, Tensor] = {}

    def likelihood(self, values: Tensor, scales: Tensor, means: Tensor) -> Tensor:
        """``Φ((½−v)/σ') − Φ((−½−v)/σ')``, ``v = |values − means|``, lower-bounded by 1e-9."""
        return self.likelihood_lower_bound(self._likelihood(values, scales, means))

    def build_tables(self) -> None:
        """Build the 64 Gaussian CDFs (model-independent, spec §10.5)."""
        with torch.no_grad():
            self.update_scale_table(gaussian_scale_table(), force=True)
        self._lists = _coder_lists(self)
        self._thresholds = {rule: scale_thresholds(self.scale_table, rule) for rule in ScaleRule}

    def tables(self):
        if self._lists is None:
            raise TablesMissingError("entropy-coder tables are missing: call model.build_tables()")
        return self._lists

    def indexes(self, scales: Tensor, rule: ScaleRule = ScaleRule.NEXT_LARGER) -> Tensor:
        """Scale-table index of each element, ``#{j < 63 : t_j < max(σ, 0.11)}`` (int32), with
        the thresholds ``t_j`` of ``rule`` (:func:`scale_thresholds`)."""
        if not self._thresholds:
            raise TablesMissingError("entropy-coder tables are missing: call model.build_tables()")
        thresholds = self._thresholds[ScaleRule(rule)]
        bounded = self.lower_bound_scale(scales).contiguous()
        return torch.searchsorted(thresholds, bounded.reshape(-1)).view(scales.shape).int()

    def encode(self, symbols: list[Tensor], indexes: list[Tensor]) -> bytes:
        """Code the symbols of all slices, in order, as one rANS string."""
        cdfs, lengths, offsets = self.tables()
        flat_symbols = torch.cat([s.reshape(-1) for s in symbols]).tolist()
        flat_indexes = torch.cat([i.reshape(-1) for i in indexes]).tolist()
        return RansEncoder().encode_with_indexes(flat_symbols, flat_indexes, cdfs, lengths, offsets)

    def decoder(self, string: bytes, symbols: int) -> "YStreamDecoder":
        """A decoder reading slices one after another from one string."""
        return YStreamDecoder(self.tables(), string, symbols)


class YStreamDecoder:
    """Decodes the y string slice by slice (the context model needs slice i before slice i+1)."""

    def __init__(self, tables, string: bytes, symbols: int) -> None:
        self._cdfs, self._lengths, self._offsets = tables
        self._decoder = RansDecoder()
        self._decoder.set_stream(stream_padding(string, symbols))

    def decode(self, indexes: Tensor) -> Tensor:
        """Symbols (int32, shape of ``indexes``) for the given scale indexes."""
        values = self._decoder.decode_stream(
            indexes.reshape(-1).int().tolist(), self._cdfs, self._lengths, self._offsets
        )
        if len(values) != indexes.numel():
            raise FormatError("corrupt y stream")
        return torch.tensor(values, dtype=torch.int32).view(indexes.shape)
