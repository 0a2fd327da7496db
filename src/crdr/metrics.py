"""Per-image quality metrics and patch-based FID/KID, following the paper's evaluation protocol.

What: PSNR, MS-SSIM, ST-LPIPS, LPIPS, DISTS on one image pair at a time, and FID/KID on sets of
256×256 patches cut with the HiFiC protocol (spec §15).
Why: the published numbers (``rd_results/*.csv`` of the official repository) are means over images
of these per-image values, so every function here returns one number for one pair and callers
average. The patches and the feature extractors are ours; the FID/KID arithmetic on their features
is torch-fidelity's (imported when FID/KID are computed), so it is the published implementation.

Images are 8-bit RGB: a ``numpy`` array ``(H, W, 3) uint8``, or a tensor ``(3, H, W)`` /
``(1, 3, H, W)`` that is either ``uint8`` or float in ``[0, 1]``. Float tensors are rounded to
8 bits first, because the protocol measures decoded PNG files, not the network's float output.

Everything runs on CPU. Nothing here downloads: a metric whose package or weights are missing
raises :class:`MetricUnavailable` with a one-line message naming how to provide them, and
:func:`available_metrics` says which ones work on this machine.

Where the weights come from::

    st-lpips         stlpips-pytorch wheel (alex_shift_tolerant.pth: backbone + linear layers)
    lpips            lpips wheel (linear layers) + torchvision AlexNet backbone
                     (alexnet-owt-7be5be79.pth in $TORCH_HOME/hub/checkpoints, or backbone_path=)
    dists            dists-pytorch wheel (alpha/beta) + torchvision VGG16 backbone
                     (vgg16-397923af.pth in $TORCH_HOME/hub/checkpoints)
    inception-v3     torch-fidelity (weights-inception-2015-12-05-6726825d.pth: weights_path=,
                     $CRDR_INCEPTION_WEIGHTS, or $TORCH_HOME/hub/checkpoints)
    alexnet-stlpips  the ST-LPIPS AlexNet above used as an FID/KID feature extractor. An offline
                     stand-in, NOT Inception FID: its numbers are not comparable with published FID.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import os
import sys
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from crdr.errors import CrdrError, ImageError, ParameterError, WeightsError
from crdr.perceptual import (
    ALEXNET_FILE, build_lpips_alex, build_stlpips_alex, has_module, hub_checkpoint, stlpips_weights,
)

__all__ = [
    "MetricUnavailable",
    "to_rgb_uint8",
    "psnr",
    "ms_ssim",
    "MS_SSIM_MIN_SIDE",
    "StLpips",
    "CachedFeatures",
    "Lpips",
    "Dists",
    "perceptual_metric",
    "hific_patches",
    "FeatureExtractor",
    "InceptionFeatures",
    "StLpipsAlexNetFeatures",
    "FEATURE_EXTRACTORS",
    "get_feature_extractor",
    "fid_from_features",
    "kid_from_features",
    "FidKid",
    "fid_kid",
    "MetricStatus",
    "available_metrics",
]


class MetricUnavailable(CrdrError):
    """A metric needs a package or weights file that this machine does not have."""


# ---------------------------------------------------------------------------------------------
# Image conversion
# ---------------------------------------------------------------------------------------------


def to_rgb_uint8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """Return ``image`` as a ``(H, W, 3) uint8`` numpy array.

    Accepts ``(H, W, 3) uint8`` arrays unchanged, and tensors ``(3, H, W)`` or ``(1, 3, H, W)``
    that are ``uint8`` or float in ``[0, 1]`` (clamped, then rounded to 8 bits as a PNG would
    store them). Raises :class:`ImageError` for anything else.
    """
    if isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
        if tensor.dim() == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.dim() != 3 or tensor.shape[0] != 3:
            raise ImageError(f"expected a (3, H, W) or (1, 3, H, W) tensor, got {tuple(image.shape)}")
        if tensor.dtype != torch.uint8:
            if not tensor.is_floating_point():
                raise ImageError(f"expected a uint8 or float tensor, got {tensor.dtype}")
            tensor = (tensor.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        return tensor.permute(1, 2, 0).contiguous().numpy()
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ImageError(f"expected an (H, W, 3) uint8 array, got {array.dtype} {array.shape}")
    return array


def _pair(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    a8, b8 = to_rgb_uint8(a), to_rgb_uint8(b)
    if a8.shape != b8.shape:
        raise ImageError(f"images differ in size: {a8.shape} vs {b8.shape}")
    if a8.shape[0] == 0 or a8.shape[1] == 0:
        raise ImageError(f"empty image: {a8.shape}")
    return a8, b8


def _uint8_tensor(array: np.ndarray) -> torch.Tensor:
    """Copy into a tensor: decoded images are often read-only arrays, which torch refuses to share."""
    return torch.tensor(np.asarray(array), dtype=torch.uint8)


def _to_nchw(image: np.ndarray, low: float, high: float) -> torch.Tensor:
    """``(H, W, 3) uint8`` → ``(1, 3, H, W) float32`` in ``[low, high]``."""
    x = _uint8_tensor(image).permute(2, 0, 1)[None].float() / 255.0
    return x * (high - low) + low


# ---------------------------------------------------------------------------------------------
# PSNR and MS-SSIM
# ---------------------------------------------------------------------------------------------


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """PSNR in dB of one image pair, from 8-bit values (spec §15).

    ``MSE = mean over H·W·3 of (a − b)²`` in float64, ``PSNR = 20 log10 255 − 10 log10 MSE``;
    ``inf`` for identical images. This is a per-image value: the paper reports the mean of
    per-image PSNRs over a data set, not the PSNR of the pooled MSE, so callers average these.
    """
    a8, b8 = _pair(a, b)
    mse = float(np.mean((a8.astype(np.float64) - b8.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 20.0 * math.log10(255.0) - 10.0 * math.log10(mse)


MS_SSIM_MIN_SIDE = 161
"""Smallest image side MS-SSIM accepts: pytorch-msssim needs a side > (11 − 1)·2⁴ = 160 for its
4 downsamplings and checks that bound even when fewer scale weights are given, so fewer scales
are not an option."""


def ms_ssim(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """MS-SSIM of one image pair (pytorch-msssim, 5 scales, 11×11 Gaussian window, data_range 255).

    Returns NaN when either side is below :data:`MS_SSIM_MIN_SIDE` (161 px): the 5-scale
    pyramid would shrink the last scale below the window, and a value from fewer scales would
    not be MS-SSIM as published, so the image is reported as "not measurable" rather than with a
    different number. Callers averaging over a data set should use ``numpy.nanmean`` or skip NaN.
    """
    a8, b8 = _pair(a, b)
    if min(a8.shape[0], a8.shape[1]) < MS_SSIM_MIN_SIDE:
        return math.nan
    from pytorch_msssim import ms_ssim as _ms_ssim

    x = _uint8_tensor(a8).permute(2, 0, 1)[None].float()
    y = _uint8_tensor(b8).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        return float(_ms_ssim(x, y, data_range=255.0, size_average=True))


# ---------------------------------------------------------------------------------------------
# Weight files and optional packages (AlexNet's and the perceptual networks': crdr.perceptual)
# ---------------------------------------------------------------------------------------------

VGG16_FILE = "vgg16-397923af.pth"  # torchvision VGG16_Weights.IMAGENET1K_V1
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity inception-v3-compat
INCEPTION_ENV = "CRDR_INCEPTION_WEIGHTS"


# ---------------------------------------------------------------------------------------------
# Perceptual metrics
# ---------------------------------------------------------------------------------------------


class _PerceptualMetric:
    """Common shape of ST-LPIPS, LPIPS and DISTS.

    The constructor only checks availability (cheap, raises :class:`MetricUnavailable`); the
    network is built on first use and kept, so one object serves a whole evaluation.
    ``metric(a, b)`` takes ``a`` = reference, ``b`` = reconstruction (any form accepted by
    :func:`to_rgb_uint8`) and returns a float, lower = more similar.
    """

    name = ""

    def __init__(self) -> None:
        reason = self.unavailable_reason()
        if reason:
            raise MetricUnavailable(reason)
        self._network: torch.nn.Module | None = None

    @classmethod
    def unavailable_reason(cls) -> str:
        """Empty if the metric works here, else a one-line reason and how to fix it."""
        raise NotImplementedError

    def _build(self) -> torch.nn.Module:
        raise NotImplementedError

    def _distance(self, network: torch.nn.Module, real: np.ndarray, fake: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    @property
    def network(self) -> torch.nn.Module:
        if self._network is None:
            try:
                self._network = self._build().eval().requires_grad_(False)
            except WeightsError as error:  # present but unreadable or mismatched (crdr.perceptual)
                raise MetricUnavailable(f"{self.name}: {error}") from None
        return self._network

    def __call__(self, a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
        real, fake = _pair(a, b)
        with torch.no_grad():
            return float(self._distance(self.network, real, fake).reshape(()))


class StLpips(_PerceptualMetric):
    """Shift-tolerant LPIPS (Ghildyal & Liu, ECCV 2022), AlexNet variant ``shift_tolerant``.

    ::

        a, b (H, W, 3) uint8 ──► [−1, 1] ──► ST-AlexNet (5 layers) ──► unit-normalised features
             ──► squared difference ──► learned 1×1 linear weights ──► spatial mean, summed = distance

    Both the backbone and the linear layers are in the stlpips-pytorch wheel
    (``weights/vST0.0/alex_shift_tolerant.pth``), so this works offline; they are loaded by
    :func:`crdr.perceptual.build_stlpips_alex` with ``weights_only=True`` and a completeness check.
    """

    name = "st-lpips"

    @classmethod
    def unavailable_reason(cls) -> str:
        if not has_module("stlpips_pytorch"):
            return "st-lpips: package stlpips-pytorch is not installed (pip install stlpips-pytorch)"
        weights = stlpips_weights()
        if weights is None or not weights.is_file():
            return f"st-lpips: bundled weights missing at {weights}; reinstall stlpips-pytorch"
        return ""

    def _build(self) -> torch.nn.Module:
        return build_stlpips_alex()

    def _distance(self, network: torch.nn.Module, real: np.ndarray, fake: np.ndarray) -> torch.Tensor:
        return network(_to_nchw(fake, -1.0, 1.0), _to_nchw(real, -1.0, 1.0))


class CachedFeatures(torch.nn.Module):
    """A feature network that keeps its outputs for the last few distinct inputs.

    For a caller that compares many images with one reference (``crdr serve``: every ST-LPIPS on
    its page compares something with the same original). Wrapped around the ST-LPIPS backbone
    (``LPIPS.net``, which ``LPIPS.forward`` runs once per input) it computes the reference's
    features once instead of once per comparison: about half the cost of each later
    measurement. Outputs are looked up by shape and a hash of the input's bytes, so a hit is
    exactly the same computation (tests/test_serve_api.py compares with the plain metric).
    """

    def __init__(self, backbone: torch.nn.Module, capacity: int = 4) -> None:
        super().__init__()
        self.backbone = backbone
        self.capacity = capacity
        self._outputs: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    def forward(self, x: torch.Tensor):
        data = x.detach().cpu().contiguous().numpy()
        key = (tuple(x.shape), str(x.dtype), hashlib.blake2b(data.tobytes(), digest_size=16).digest())
        with self._lock:
            if key in self._outputs:
                self._outputs.move_to_end(key)
                return self._outputs[key]
        outputs = self.backbone(x)
        with self._lock:
            self._outputs[key] = outputs
            while len(self._outputs) > self.capacity:
                self._outputs.popitem(last=False)
        return outputs


class Lpips(_PerceptualMetric):
    """LPIPS v0.1 with AlexNet (Zhang et al., CVPR 2018), as in spec §15: ``lpips(fake, real)``
    on inputs in ``[−1, 1]``.

    ::

        a, b (H, W, 3) uint8 ──► [−1, 1] ──► AlexNet conv1..conv5 ──► normalise ──► (Δ)²
             ──► linear 1×1 (lpips wheel) ──► spatial mean, summed = distance

    The lpips wheel ships the linear layers; the AlexNet backbone is torchvision's ImageNet
    checkpoint, which lpips would download. Here it is read from ``backbone_path`` or, by
    default, torch.hub's cache (``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``);
    if neither exists, :class:`MetricUnavailable` is raised instead of downloading.
    """

    name = "lpips"

    def __init__(self, backbone_path: str | os.PathLike[str] | None = None) -> None:
        self.backbone_path = Path(backbone_path) if backbone_path is not None else hub_checkpoint(ALEXNET_FILE)
        reason = self.unavailable_reason(self.backbone_path)
        if reason:
            raise MetricUnavailable(reason)
        self._network = None

    @classmethod
    def unavailable_reason(cls, backbone_path: Path | None = None) -> str:
        if not has_module("lpips"):
            return "lpips: package lpips is not installed (pip install lpips)"
        path = backbone_path if backbone_path is not None else hub_checkpoint(ALEXNET_FILE)
        if not path.is_file():
            return (f"lpips: AlexNet backbone {path} not found; copy torchvision's {ALEXNET_FILE} "
                    f"there (set TORCH_HOME) or pass backbone_path=")
        return ""

    def _build(self) -> torch.nn.Module:
        return build_lpips_alex(self.backbone_path)

    def _distance(self, network: torch.nn.Module, real: np.ndarray, fake: np.ndarray) -> torch.Tensor:
        return network(_to_nchw(fake, -1.0, 1.0), _to_nchw(real, -1.0, 1.0))


class Dists(_PerceptualMetric):
    """DISTS (Ding et al., TPAMI 2020) via dists-pytorch, as in spec §15: ``dists(fake, real)``
    on inputs in ``[0, 1]``.

    ::

        a, b (H, W, 3) uint8 ──► [0, 1] ──► VGG16 (L2-pooled) stages ──► per-channel mean
             (texture) and covariance (structure) similarities ──► α/β weights = 1 − similarity

    dists-pytorch ships α/β (``weights.pt``); the VGG16 backbone is torchvision's ImageNet
    checkpoint, used only when already in torch.hub's cache
    (``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``), never downloaded.
    """

    name = "dists"

    @classmethod
    def unavailable_reason(cls) -> str:
        if not has_module("DISTS_pytorch"):
            return "dists: optional package dists-pytorch is not installed (pip install dists-pytorch)"
        path = hub_checkpoint(VGG16_FILE)
        if not path.is_file():
            return f"dists: VGG16 backbone {path} not found; copy torchvision's {VGG16_FILE} there (set TORCH_HOME)"
        if cls._alpha_beta_path() is None:
            return "dists: dists-pytorch's weights.pt is missing; reinstall dists-pytorch"
        return ""

    @staticmethod
    def _alpha_beta_path() -> Path | None:
        # The wheel installs weights.pt both inside the package and (as "data") under
        # sys.prefix, where DISTS() looks; the package copy also works for --user/--target installs.
        spec = importlib.util.find_spec("DISTS_pytorch")
        candidates = [Path(sys.prefix) / "weights.pt"]
        if spec is not None and spec.origin is not None:
            candidates.insert(0, Path(spec.origin).parent / "weights.pt")
        return next((path for path in candidates if path.is_file()), None)

    def _build(self) -> torch.nn.Module:
        from DISTS_pytorch import DISTS

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's `pretrained=` deprecation
            network = DISTS(load_weights=False)  # VGG16 comes from the hub cache checked above
        state = torch.load(self._alpha_beta_path(), map_location="cpu", weights_only=True)
        network.alpha.data = state["alpha"]
        network.beta.data = state["beta"]
        return network

    def _distance(self, network: torch.nn.Module, real: np.ndarray, fake: np.ndarray) -> torch.Tensor:
        return network(_to_nchw(fake, 0.0, 1.0), _to_nchw(real, 0.0, 1.0))


_PERCEPTUAL = {"st-lpips": StLpips, "lpips": Lpips, "dists": Dists}
_perceptual_cache: dict[str, _PerceptualMetric] = {}


def perceptual_metric(name: str) -> _PerceptualMetric:
    """The shared instance of ``"st-lpips"``, ``"lpips"`` or ``"dists"`` (built once, reused)."""
    if name not in _PERCEPTUAL:
        raise ParameterError(f"unknown perceptual metric {name!r}; choose from {sorted(_PERCEPTUAL)}")
    if name not in _perceptual_cache:
        _perceptual_cache[name] = _PERCEPTUAL[name]()
    return _perceptual_cache[name]


# ---------------------------------------------------------------------------------------------
# HiFiC patches, feature extractors, FID and KID
# ---------------------------------------------------------------------------------------------


def hific_patches(image: np.ndarray | torch.Tensor, patch: int = 256) -> np.ndarray:
    """Cut ``image`` into the FID patches of the HiFiC protocol (spec §15).

    The non-overlapping grid of ``⌊H/p⌋ × ⌊W/p⌋`` patches from the top-left, followed by the grid
    of the image shifted by ``p/2`` in both axes (``⌊(H−p/2)/p⌋ × ⌊(W−p/2)/p⌋`` patches starting
    at ``(p/2, p/2)``), both in row-major order. Returns ``(N, p, p, 3) uint8``; ``N`` may be 0
    for an image smaller than one patch. A 768×512 image gives 3·2 + 2·1 = 8 patches of 256.
    """
    rgb = to_rgb_uint8(image)
    if patch < 2 or patch % 2:
        raise ParameterError(f"patch size must be an even number ≥ 2, got {patch}")
    height, width = rgb.shape[:2]
    patches = []
    for offset in (0, patch // 2):
        for top in range(offset, height - patch + 1, patch):
            for left in range(offset, width - patch + 1, patch):
                patches.append(rgb[top:top + patch, left:left + patch])
    if not patches:
        return np.zeros((0, patch, patch, 3), np.uint8)
    return np.stack(patches)


class FeatureExtractor(Protocol):
    """Maps ``(N, h, w, 3) uint8`` patches to ``(N, D)`` float64 features; ``name`` labels results."""

    name: str

    def __call__(self, patches: np.ndarray) -> np.ndarray: ...


def _batched(patches: np.ndarray, batch_size: int, run: Callable[[np.ndarray], torch.Tensor]) -> np.ndarray:
    outputs = []
    with torch.no_grad():
        for start in range(0, len(patches), batch_size):
            outputs.append(run(patches[start:start + batch_size]).double().cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, 0))


class InceptionFeatures:
    """Inception-v3 pool3 (2048-d) features of torch-fidelity's ``inception-v3-compat``, the
    TF-FID network used for published FID (the paper used pytorch-fid with the same TF weights).

    ::

        patches (N, h, w, 3) uint8 ──► bilinear resize to 299 (TF1-compatible) ──► Inception-v3
            ──► global average pool ──► (N, 2048)

    Weights: ``weights_path``, else ``$CRDR_INCEPTION_WEIGHTS``, else torch.hub's cache
    (``$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth``); never downloaded.
    """

    name = "inception-v3"

    def __init__(self, weights_path: str | os.PathLike[str] | None = None, batch_size: int = 50) -> None:
        self.weights_path = self.resolve_weights(weights_path)
        reason = self.unavailable_reason(self.weights_path)
        if reason:
            raise MetricUnavailable(reason)
        self.batch_size = batch_size
        self._network: torch.nn.Module | None = None

    @staticmethod
    def resolve_weights(weights_path: str | os.PathLike[str] | None = None) -> Path:
        if weights_path is not None:
            return Path(weights_path)
        if os.environ.get(INCEPTION_ENV):
            return Path(os.environ[INCEPTION_ENV])
        return hub_checkpoint(INCEPTION_FILE)

    @classmethod
    def unavailable_reason(cls, weights_path: Path | None = None) -> str:
        if not has_module("torch_fidelity"):
            return "inception-v3: optional package torch-fidelity is not installed (pip install torch-fidelity)"
        path = weights_path if weights_path is not None else cls.resolve_weights()
        if not path.is_file():
            return (f"inception-v3: weights {path} not found; set {INCEPTION_ENV} to torch-fidelity's "
                    f"{INCEPTION_FILE} (or put it in $TORCH_HOME/hub/checkpoints)")
        return ""

    def _build(self) -> torch.nn.Module:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        return FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(self.weights_path)
        ).eval()

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        if self._network is None:
            self._network = self._build()
        network = self._network
        return _batched(
            patches, self.batch_size,
            lambda batch: network(_uint8_tensor(batch).permute(0, 3, 1, 2))[0],
        )


class StLpipsAlexNetFeatures:
    """Offline stand-in for Inception: spatially averaged conv5 (256-d) features of the
    shift-tolerant AlexNet bundled with stlpips-pytorch.

    ::

        patches (N, h, w, 3) uint8 ──► [−1, 1] ──► LPIPS scaling ──► ST-AlexNet ──► relu5
            ──► spatial mean ──► (N, 256)

    Its name, ``alexnet-stlpips``, travels with every result so a report can never pass it off
    as Inception FID: it ranks methods on this machine but is not comparable with published FID.
    """

    name = "alexnet-stlpips"

    def __init__(self, batch_size: int = 32) -> None:
        reason = self.unavailable_reason()
        if reason:
            raise MetricUnavailable(reason)
        self.batch_size = batch_size

    @classmethod
    def unavailable_reason(cls) -> str:
        reason = StLpips.unavailable_reason()
        return reason.replace("st-lpips:", "alexnet-stlpips:", 1) if reason else ""

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        network = perceptual_metric("st-lpips").network

        def run(batch: np.ndarray) -> torch.Tensor:
            x = _uint8_tensor(batch).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            relu5 = network.net(network.scaling_layer(x))[-1]
            return relu5.mean(dim=(2, 3))

        return _batched(patches, self.batch_size, run)


FEATURE_EXTRACTORS = {"inception-v3": InceptionFeatures, "alexnet-stlpips": StLpipsAlexNetFeatures}


def get_feature_extractor(name: str, **kwargs: object) -> FeatureExtractor:
    """Build the FID/KID feature extractor ``"inception-v3"`` or ``"alexnet-stlpips"``."""
    if name not in FEATURE_EXTRACTORS:
        raise ParameterError(f"unknown feature extractor {name!r}; choose from {sorted(FEATURE_EXTRACTORS)}")
    return FEATURE_EXTRACTORS[name](**kwargs)  # type: ignore[arg-type]


def _features(features: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
        raise ParameterError(f"{what}: expected (N ≥ 2, D) features, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ParameterError(f"{what}: features contain NaN or inf")
    return array


def _feature_pair(real: np.ndarray, fake: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Both feature sets as float64 ``(N ≥ 2, D)`` arrays of the same ``D``, or ParameterError."""
    real, fake = _features(real, f"{metric} real"), _features(fake, f"{metric} fake")
    if real.shape[1] != fake.shape[1]:
        raise ParameterError(f"{metric}: feature sizes differ ({real.shape[1]} vs {fake.shape[1]})")
    return real, fake


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two ``(N, D)`` feature sets:
    ``‖μ_r − μ_f‖² + tr(Σ_r + Σ_f − 2 (Σ_r Σ_f)^½)``, computed by torch-fidelity
    (``fid_features_to_statistics``, ``fid_statistics_to_metric``).

    torch-fidelity takes ``tr (Σ_r Σ_f)^½`` as the sum of the real parts of the square roots of the
    eigenvalues of ``Σ_r Σ_f`` (no ``sqrtm``), so the singular covariances of few patches (N ≤ D)
    give a number rather than an error; such a number is a poor estimate all the same. Added here:
    the input checks, ``D = 1`` (numpy's covariance is then 0-d) and the floor at 0 below.
    """
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    real, fake = _feature_pair(real, fake, "FID")
    statistics = []
    for features in (real, fake):
        fit = fid_features_to_statistics(torch.from_numpy(features))
        statistics.append({"mu": fit["mu"], "sigma": np.atleast_2d(fit["sigma"])})
    value = fid_statistics_to_metric(*statistics, verbose=False)[KEY_METRIC_FID]
    # FID is a squared distance; a negative value can only be rounding (identical sets).
    return float(max(value, 0.0))


def kid_from_features(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al., 2018): mean and std over random subsets of
    the unbiased MMD² with the polynomial kernel ``k(x, y) = (xᵀy / D + 1)³``, computed by
    torch-fidelity (``kid_features_to_metric``).

    Each subset draws ``min(subset_size, N_real, N_fake)`` rows of each set without replacement
    (torch-fidelity refuses a subset larger than a set, so the smaller size is passed as its
    ``kid_subset_size``), from ``numpy.random.RandomState(seed)``, so results are reproducible.
    When both sets have no more rows than that, every subset is a whole set and the result does
    not depend on the seed.
    """
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    real, fake = _feature_pair(real, fake, "KID")
    if subsets < 1:
        raise ParameterError(f"KID: subsets must be ≥ 1, got {subsets}")
    if subset_size < 2:
        raise ParameterError(f"KID: subset_size must be ≥ 2, got {subset_size}")
    result = kid_features_to_metric(
        torch.from_numpy(real), torch.from_numpy(fake), kid_subsets=subsets,
        kid_subset_size=min(subset_size, len(real), len(fake)), rng_seed=seed, verbose=False,
    )
    return float(result[KEY_METRIC_KID_MEAN]), float(result[KEY_METRIC_KID_STD])


@dataclass(frozen=True)
class FidKid:
    """FID and KID of two patch sets, labelled with the feature extractor that produced them."""

    fid: float
    kid: float
    kid_std: float
    extractor: str
    num_real: int
    num_fake: int

    @property
    def fid_label(self) -> str:
        """``"FID[inception-v3]"`` or ``"FID[alexnet-stlpips]"``: use this in reports."""
        return f"FID[{self.extractor}]"

    @property
    def kid_label(self) -> str:
        return f"KID[{self.extractor}]"


def _stack_patches(patches: np.ndarray | Sequence[np.ndarray], what: str) -> np.ndarray:
    if isinstance(patches, np.ndarray):
        stacked = patches
    else:
        parts = [np.asarray(part) for part in patches]
        stacked = np.concatenate(parts) if parts else np.zeros((0, 0, 0, 3), np.uint8)
    if stacked.dtype != np.uint8 or stacked.ndim != 4 or stacked.shape[3] != 3:
        raise ImageError(f"{what}: expected (N, h, w, 3) uint8 patches, got {stacked.dtype} {stacked.shape}")
    return stacked


def fid_kid(real_patches: np.ndarray | Sequence[np.ndarray], fake_patches: np.ndarray | Sequence[np.ndarray],
            feature_extractor: FeatureExtractor | str, *, kid_subsets: int = 100,
            kid_subset_size: int = 1000, seed: int = 0) -> FidKid:
    """FID and KID between two sets of patches (e.g. :func:`hific_patches` of all originals and of
    all reconstructions; a list of per-image patch arrays is concatenated).

    ``feature_extractor`` is an extractor object or a name from :data:`FEATURE_EXTRACTORS`. The
    result carries the extractor's name; only ``inception-v3`` matches published FID. Published
    FID used ≥ 50 images (spec §15); with fewer patches than feature dimensions FID is unreliable.
    """
    extractor = get_feature_extractor(feature_extractor) if isinstance(feature_extractor, str) else feature_extractor
    real = _stack_patches(real_patches, "real patches")
    fake = _stack_patches(fake_patches, "fake patches")
    if len(real) < 2 or len(fake) < 2:
        raise ParameterError(f"FID/KID need at least 2 patches per set, got {len(real)} and {len(fake)}")
    real_features, fake_features = extractor(real), extractor(fake)
    kid, kid_std = kid_from_features(real_features, fake_features, kid_subsets, kid_subset_size, seed)
    return FidKid(fid=fid_from_features(real_features, fake_features), kid=kid, kid_std=kid_std,
                  extractor=extractor.name, num_real=len(real), num_fake=len(fake))


# ---------------------------------------------------------------------------------------------
# Availability
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricStatus:
    """Whether one metric works on this machine; ``reason`` is empty when it does."""

    name: str
    available: bool
    reason: str


def available_metrics() -> list[MetricStatus]:
    """Every metric with whether it works here and, if not, a one-line reason (cheap: checks
    packages and weight files without importing or building networks)."""
    reasons = {
        "psnr": "",
        "ms-ssim": "" if has_module("pytorch_msssim") else "ms-ssim: package pytorch-msssim is not installed",
        "st-lpips": StLpips.unavailable_reason(),
        "lpips": Lpips.unavailable_reason(),
        "dists": Dists.unavailable_reason(),
    }
    for name, extractor in FEATURE_EXTRACTORS.items():
        reason = extractor.unavailable_reason()
        reasons[f"fid[{name}]"] = reason
        reasons[f"kid[{name}]"] = reason
    return [MetricStatus(name, not reason, reason) for name, reason in reasons.items()]
