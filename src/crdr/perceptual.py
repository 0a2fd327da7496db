"""The frozen perceptual networks, built offline: ST-LPIPS(alex) and LPIPS(alex) v0.1.

What: :func:`build_stlpips_alex` and :func:`build_lpips_alex` import the package, construct the
network without any download, load its weights (``weights_only=True``) and check that every layer
got them; the network comes back on the CPU, in eval mode, with ``requires_grad`` off.

Why one home: the training loss (:class:`crdr.losses.PerceptualLoss`) and the metrics
(:class:`crdr.metrics.StLpips`, :class:`crdr.metrics.Lpips`, the ``alexnet-stlpips`` FID features)
need the same networks with the same weights. Each call builds a fresh network and the callers keep
their own (the loss moves its copy to the training device, ``crdr serve`` wraps its backbone in a
cache); each caller also checks first that the weights are there, to say in its own words how to
provide them. Weights that are there but unreadable or mismatched raise
:class:`~crdr.errors.WeightsError`.

Where the weights come from::

    stlpips-alex  stlpips-pytorch wheel: weights/vST0.0/alex_shift_tolerant.pth (backbone + linear layers)
    lpips-alex    lpips wheel (linear layers) + torchvision's AlexNet backbone (ALEXNET_FILE, by
                  default in torch.hub's checkpoint folder: $TORCH_HOME/hub/checkpoints)
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
import warnings
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from crdr.errors import WeightsError

__all__ = ["ALEXNET_FILE", "build_lpips_alex", "build_stlpips_alex", "has_module", "hub_checkpoint", "stlpips_weights"]

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision AlexNet_Weights.IMAGENET1K_V1


def hub_checkpoint(file_name: str) -> Path:
    """Where torch.hub (and so torchvision and torch-fidelity) caches ``file_name``.

    ``torch.hub.get_dir()`` reads ``$TORCH_HOME`` on every call, so this follows the variable.
    A file present here is loaded by those libraries without touching the network.
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def has_module(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def stlpips_weights() -> Path | None:
    """The ST-LPIPS(alex) weights inside the stlpips-pytorch wheel (None without the package)."""
    spec = importlib.util.find_spec("stlpips_pytorch") if has_module("stlpips_pytorch") else None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "weights" / "vST0.0" / "alex_shift_tolerant.pth"


@contextlib.contextmanager
def _stub_unused_imports(stubs: dict[str, dict[str, object]]) -> Iterator[None]:
    """Provide empty modules for imports a library makes but never uses, only while importing it.

    stlpips-pytorch imports ``torchsummary.summary`` and ``IPython.embed`` at module level (left
    over from development) without declaring them as dependencies; neither is called when
    computing the metric. Stubs go in only for modules that are not installed and are removed
    afterwards, so no other code ever sees them.
    """
    added = []
    for module_name, attributes in stubs.items():
        if module_name in sys.modules or has_module(module_name):
            continue
        module = types.ModuleType(module_name)
        for attribute, value in attributes.items():
            setattr(module, attribute, value)
        sys.modules[module_name] = module
        added.append(module_name)
    try:
        yield
    finally:
        for module_name in added:
            sys.modules.pop(module_name, None)


def _unused(*args: object, **kwargs: object) -> None:
    raise RuntimeError("stub of an import stlpips-pytorch never calls")


def _import_stlpips() -> types.ModuleType:
    try:
        with _stub_unused_imports({"torchsummary": {"summary": _unused}, "IPython": {"embed": _unused}}):
            return importlib.import_module("stlpips_pytorch.stlpips")
    except ImportError as error:
        raise WeightsError(f"stlpips-pytorch is not importable ({error}); pip install stlpips-pytorch") from None


def build_stlpips_alex() -> nn.Module:
    """ST-LPIPS(alex), the shift-tolerant variant (Ghildyal & Liu 2022); ``LPIPS.net`` is its
    AlexNet backbone, ``LPIPS.scaling_layer`` its input normalisation."""
    stlpips = _import_stlpips()
    path = stlpips_weights()
    # pretrained=False: the bundled file is loaded here, strictly checked, instead of the
    # package's silent strict=False load.
    network = stlpips.LPIPS(pretrained=False, net="alex", variant="shift_tolerant", verbose=False)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as error:
        raise WeightsError(f"cannot read the ST-LPIPS weights {path}: {error}") from None
    _load_checked(network, state, str(path))
    return network.eval().requires_grad_(False)


def build_lpips_alex(backbone_path: str | Path) -> nn.Module:
    """LPIPS(net='alex') v0.1 (Zhang et al. 2018): linear layers from the lpips wheel, the AlexNet
    backbone from torchvision's ImageNet file at ``backbone_path`` (which lpips would download)."""
    path = Path(backbone_path)
    try:
        import lpips
    except ImportError as error:
        raise WeightsError(f"lpips is not importable ({error}); pip install lpips") from None
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as error:
        raise WeightsError(f"cannot read AlexNet weights {path}: {error}") from None
    with warnings.catch_warnings():
        # pnet_rand=True builds a randomly initialised backbone (no download); torchvision warns
        # that the legacy `pretrained=False` argument it receives is deprecated.
        warnings.simplefilter("ignore")
        network = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    # lpips slices torchvision's `features` Sequential keeping the indices: net.slice{s}.{i}.* is
    # features.{i}.*.
    backbone = {}
    for key in network.net.state_dict():
        _, rest = key.split(".", 1)
        name = f"features.{rest}"
        if name not in source:
            raise WeightsError(f"{path} has no {name}; is it torchvision's AlexNet file?")
        backbone[key] = source[name]
    _load_checked(network.net, backbone, str(path))
    return network.eval().requires_grad_(False)


def _load_checked(module: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load ``state`` and fail if any parameter of ``module`` stays uninitialised or has another
    shape (the libraries load with ``strict=False``, which would silently leave random layers)."""
    expected = module.state_dict()
    for key, value in state.items():
        if key in expected and expected[key].shape != value.shape:
            raise WeightsError(
                f"{origin}: {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}"
            )
    result = module.load_state_dict(state, strict=False)
    # `lins.k.*` are second names of the `lin{k}.*` parameters (the same tensors); the scaling
    # layer's constants are set by the constructor.
    missing = [key for key in result.missing_keys if not key.startswith(("lins.", "scaling_layer."))]
    if missing or result.unexpected_keys:
        raise WeightsError(
            f"{origin} does not match the network: missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )
