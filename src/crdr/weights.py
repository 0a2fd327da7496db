"""Loading and saving weights: the authors' checkpoints and crdr's own safetensors files.

Two containers are accepted by :func:`load_model`:

* the authors' ``torch.save({'iter': N, 'comp_model': state_dict})`` (``crdr.pth.tar``), read with
  ``torch.load(weights_only=True)`` so a checkpoint cannot run code;
* crdr's own format: fp16 or fp32 safetensors whose metadata holds the :class:`ModelConfig` as
  JSON, with a sidecar ``.json`` (sha256, training command, metrics).

Foreign names go through one key table (:func:`official_to_crdr_key`); loading is strict (every
key and shape checked, errors name the offenders). Entropy-coder tables are never taken from a
file: they are rebuilt from the parameters after loading (spec §12–13).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from crdr.config import ModelConfig
from crdr.entropy import CONSTANT_BUFFERS, TABLE_BUFFERS
from crdr.errors import WeightsError
from crdr.models.crdr import CRDR

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
DEFAULT_MODEL = "default"
CONFIG_METADATA_KEY = "crdr_config"

# CompressAI <= 1.2.6 names of the z-density parameters (the authors' files) -> >= 1.2.7 names.
_LEGACY_BOTTLENECK = re.compile(r"^entropy_model_z\._(matrix|bias|factor)(\d+)$")
_PLURAL = {"matrix": "matrices", "bias": "biases", "factor": "factors"}


def official_to_crdr_key(key: str) -> str:
    """Map one key of the authors' state_dict to crdr's name.

    The only differences are a DataParallel ``module.`` prefix and CompressAI's renaming of the
    bottleneck parameters (``_matrix0`` → ``matrices.0`` etc.).
    """
    if key.startswith("module."):
        key = key[len("module.") :]
    match = _LEGACY_BOTTLENECK.match(key)
    if match:
        return f"entropy_model_z.{_PLURAL[match.group(1)]}.{match.group(2)}"
    return key


def crdr_to_official_key(key: str) -> str:
    """Inverse of :func:`official_to_crdr_key` (without the ``module.`` prefix)."""
    match = re.match(r"^entropy_model_z\.(matrices|biases|factors)\.(\d+)$", key)
    if match:
        singular = {v: k for k, v in _PLURAL.items()}[match.group(1)]
        return f"entropy_model_z._{singular}{match.group(2)}"
    return key


def is_table_buffer(key: str) -> bool:
    """Entropy-coder tables, rebuilt after loading and never read from a file."""
    return key.rsplit(".", 1)[-1] in TABLE_BUFFERS


def is_constant_buffer(key: str) -> bool:
    """The entropy models' lower bounds (likelihood 1e-9, scale ``config.scale_bound``).

    Architecture constants, not learned: a loaded model keeps the values its config gives, and
    files store them in float32 whatever the weights' dtype (in fp16, 1e-9 is 0, and a zero
    likelihood bound makes the estimated rate infinite).
    """
    return key.rsplit(".", 1)[-1] in CONSTANT_BUFFERS


def _shape(state: dict[str, Tensor], key: str, dim: int) -> int:
    try:
        return int(state[key].shape[dim])
    except (KeyError, IndexError):
        raise WeightsError(f"cannot infer the architecture: missing or malformed {key}") from None


def infer_config(state: dict[str, Tensor], max_beta: float = 5.12) -> ModelConfig:
    """Read every width of the architecture off the tensor shapes (crdr key names).

    ``max_beta`` is not visible in any shape; the paper's 5.12 is assumed unless given.
    """
    num_slices = 0
    while f"context_model.mean_slice_transforms.{num_slices}.model.0.weight" in state:
        num_slices += 1
    if num_slices == 0:
        raise WeightsError("cannot infer the architecture: no context-model slice transforms found")
    y_channels = _shape(state, "encoder.conv4.weight", 0)
    slice_channels = _shape(state, "context_model.mean_slice_transforms.0.model.4.weight", 0)
    widest = max(
        _shape(state, f"context_model.mean_slice_transforms.{i}.model.0.weight", 1) for i in range(num_slices)
    )
    variable_rate = "encoder.interp_ca_list.0.weight" in state
    beta_conditioned = "decoder.mlp.0.weight" in state
    values: dict[str, Any] = dict(
        y_channels=y_channels,
        z_channels=_shape(state, "hyperencoder.conv3.weight", 0),
        encoder_channels=_shape(state, "encoder.conv1.weight", 0),
        encoder_block_mid=_shape(state, "encoder.block1.block0.conv.0.weight", 0),
        decoder_channels=_shape(state, "decoder.conv1.weight", 1),
        decoder_block_mid=_shape(state, "decoder.block1.block0.conv.0.weight", 0),
        hyper_encoder_widths=(
            _shape(state, "hyperencoder.conv1.weight", 0), _shape(state, "hyperencoder.conv2.weight", 0)
        ),
        hyper_decoder_widths=(
            _shape(state, "hyperdecoder.hd_mu.conv1.weight", 1),
            _shape(state, "hyperdecoder.hd_mu.conv2.weight", 1),
        ),
        slice_transform_widths=(
            _shape(state, "context_model.mean_slice_transforms.0.model.0.weight", 0),
            _shape(state, "context_model.mean_slice_transforms.0.model.2.weight", 0),
        ),
        num_slices=num_slices,
        max_support_slices=(widest - y_channels) // max(slice_channels, 1),
        variable_rate=variable_rate,
        beta_conditioned=beta_conditioned,
        max_beta=max_beta,
    )
    if slice_channels * num_slices != y_channels:
        raise WeightsError(f"inconsistent slices: {num_slices} × {slice_channels} != {y_channels} channels")
    if variable_rate:
        values["rate_levels"] = _shape(state, "encoder.interp_ca_list.0.weight", 0)
    if beta_conditioned:
        values["beta_condition_channels"] = _shape(state, "decoder.mlp.0.weight", 0)
        values["fourier_frequencies"] = _shape(state, "decoder.mlp.0.weight", 1) // 2
    if "entropy_model_y.scale_bound" in state:
        # stored as float32 (0.10999999940395355): round back to the decimal it came from
        values["scale_bound"] = round(float(state["entropy_model_y.scale_bound"].reshape(-1)[0]), 6)
    return ModelConfig(**values)


def _summarise(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_state(model: CRDR, state: dict[str, Tensor]) -> None:
    """Strictly load crdr-named tensors into ``model`` and rebuild the coder tables.

    Every parameter and buffer except the entropy tables must be present with the right shape;
    any other key is an error. Floating tensors are cast to the model's dtype (fp16 files load).
    The constant lower bounds are not read: ``model`` keeps those of its config.
    """
    expected = {k: v for k, v in model.state_dict().items() if not is_table_buffer(k)}
    given = {k: v for k, v in state.items() if not is_table_buffer(k)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_summarise(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_summarise(unexpected)}")
        raise WeightsError("weights do not match the architecture; " + "; ".join(parts))
    wrong = [
        f"{k} {tuple(given[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(given[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise WeightsError(f"shape mismatch: {_summarise(wrong, 3)}")
    converted = {k: given[k].to(dtype=v.dtype) for k, v in expected.items() if not is_constant_buffer(k)}
    model.load_state_dict(converted, strict=False)
    model.build_tables()


def model_id(model: CRDR) -> bytes:
    """8-byte identity of a model's weights: sha256 over keys and float32 values, tables excluded.

    Files record it, so a decoder can refuse a file written by other weights. It depends only on
    the values, not on the container (fp32 ``.pth.tar`` and its fp16 export differ, as they code
    differently).
    """
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        if is_table_buffer(key):
            continue
        digest.update(key.encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return digest.digest()[:8]


def _read_official(path: Path) -> dict[str, Tensor]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
        raise WeightsError(f"cannot read checkpoint {path}: {str(error).splitlines()[0]}") from None
    if isinstance(checkpoint, dict) and "comp_model" in checkpoint:
        checkpoint = checkpoint["comp_model"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, Tensor) for v in checkpoint.values()):
        raise WeightsError(f"{path} holds no codec state_dict ('comp_model')")
    return {official_to_crdr_key(k): v for k, v in checkpoint.items()}


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Every tensor and the metadata of a safetensors file (WeightsError if unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:
        raise WeightsError(f"cannot read weights {path}: {str(error).splitlines()[0]}") from None
    return state, metadata


def resolve(path_or_name: str | os.PathLike) -> Path:
    """A bundled model name (``default``) or a path → an existing file."""
    text = str(path_or_name)
    bundled = BUNDLED_DIR / f"{text}.safetensors"
    if "/" not in text and not text.endswith((".safetensors", ".tar", ".pth", ".pt")) and bundled.exists():
        return bundled
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if text == DEFAULT_MODEL:
        raise WeightsError(f"the bundled default model is missing from this installation ({bundled})")
    raise WeightsError(f"model not found: {text} (give a bundled name or a weights file)")


def load_model(path_or_name: str | os.PathLike = DEFAULT_MODEL, config: ModelConfig | str | os.PathLike | None = None) -> CRDR:
    """Load a model ready to code: eval mode, CPU, tables built, ``model.model_id`` set.

    ``config`` overrides the architecture (a :class:`ModelConfig` or a JSON file of its fields);
    otherwise it comes from the file's metadata or is inferred from the tensor shapes.
    """
    path = resolve(path_or_name)
    metadata: dict[str, str] = {}
    if path.suffix == ".safetensors":
        state, metadata = read_safetensors(path)
    else:
        state = _read_official(path)
    if isinstance(config, (str, os.PathLike)):
        try:
            config = ModelConfig.from_dict(json.loads(Path(config).read_text()))
        except (OSError, ValueError, TypeError) as error:
            raise WeightsError(f"cannot read model config {config}: {error}") from None
    if config is None and CONFIG_METADATA_KEY in metadata:
        try:
            config = ModelConfig.from_dict(json.loads(metadata[CONFIG_METADATA_KEY]))
        except (ValueError, TypeError) as error:
            raise WeightsError(f"{path}: malformed model config in metadata: {error}") from None
    if config is None:
        config = infer_config(state)
    # CompressAI refuses such a bound with a bare "Invalid parameters" deep inside the model.
    bound = config.scale_bound
    if isinstance(bound, bool) or not isinstance(bound, numbers.Real) or not (math.isfinite(bound) and bound > 0):
        raise WeightsError(
            f"{path}: the y scale bound (entropy_model_y.scale_bound / scale_bound) is "
            f"{config.scale_bound!r}; it must be a positive number (the paper's is 0.11)"
        )
    model = CRDR.for_loading(config)
    load_state(model, state)
    model.eval()
    model.model_id = model_id(model)
    model.source = str(path)
    return model


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(
    model: CRDR, path: str | os.PathLike, *, extra: dict[str, Any] | None = None, half: bool = True
) -> dict[str, Any]:
    """Write ``model`` as (fp16) safetensors + a sidecar JSON; returns the sidecar's content.

    The sidecar holds the config, the file's sha256 and whatever ``extra`` carries (training
    command, steps, wall time, metrics). Both files are written atomically.
    """
    from safetensors.torch import save_file

    from crdr.files import atomic_path, write_json

    path = Path(path)
    dtype = torch.float16 if half else torch.float32
    state = {
        k: (v.detach().to(dtype) if v.is_floating_point() and not is_constant_buffer(k) else v.detach())
        .contiguous()
        .cpu()
        for k, v in model.state_dict().items()
        if not is_table_buffer(k)
    }
    # atomic_path gives the file the umask's permissions: safetensors alone makes it owner-only
    # (0600), and weights are meant to be shared and shipped.
    with atomic_path(path) as temporary:
        save_file(state, str(temporary), metadata={CONFIG_METADATA_KEY: model.config.to_json()})
    sidecar = {
        "config": model.config.to_dict(),
        "sha256": file_sha256(path),
        "dtype": str(dtype).replace("torch.", ""),
        **(extra or {}),
    }
    write_json(path.with_suffix(".json"), sidecar)
    return sidecar
