"""Atomic, resumable training checkpoints.

What: one ``torch.save`` file per checkpoint under ``RUN_DIR/checkpoints/step_NNNNNNNNN.pt`` holding
everything a run needs to continue as if it had never stopped::

    {"format": "crdr-train-checkpoint", "version": 1, "step": int, "config": {...},
     "model": state_dict, "discriminator": state_dict | None,
     "optimizer": ..., "aux_optimizer": ..., "discriminator_optimizer": ... | None,
     "scheduler": ..., "discriminator_scheduler": ... | None,
     "rng": [per-rank RNG states], "sampling_rng": ByteTensor, "data": {...},
     "wall_time": float, "commands": [str, ...]}

Why this shape: files are read back with ``torch.load(weights_only=True)``, so a checkpoint cannot
run code. That loader accepts tensors and plain containers only, hence RNG states are stored as
tensors and plain numbers (NumPy's key array becomes an int64 tensor).

Atomicity: the file is written to a temporary name in the same folder, flushed to disk, then
renamed (:func:`crdr.files.atomic_path`); a crash leaves either the old set of checkpoints or the
new one, never a partial file under a checkpoint's name. Only the newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crdr.errors import WeightsError
from crdr.files import atomic_path

__all__ = [
    "CHECKPOINT_FORMAT",
    "capture_rng",
    "checkpoint_path",
    "find_checkpoints",
    "latest_checkpoint",
    "load_checkpoint",
    "load_latest",
    "restore_rng",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "crdr-train-checkpoint"
CHECKPOINT_VERSION = 1
_NAME = re.compile(r"^step_(\d{9})\.pt$")


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step_{step:09d}.pt"


def find_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint of a run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = find_checkpoints(run_dir)
    return found[-1][1] if found else None


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` atomically as the checkpoint of ``step``; prune all but the newest ``keep``."""
    path = checkpoint_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": int(step), **state}
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        torch.save(payload, handle)
    for _, old in find_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read one checkpoint (``weights_only=True``, onto the CPU) and check its format."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise WeightsError(f"cannot read checkpoint {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{path} is not a crdr training checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise WeightsError(f"{path}: unsupported checkpoint version {state.get('version')}")
    return state


def load_latest(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The newest readable checkpoint of a run; an unreadable newest one falls back to the previous."""
    found = find_checkpoints(run_dir)
    if not found:
        raise WeightsError(f"no checkpoint in {checkpoint_dir(run_dir)}")
    error: WeightsError | None = None
    for _, path in reversed(found):
        try:
            state = load_checkpoint(path)
        except WeightsError as failure:
            warnings.warn(f"{failure}; trying an older checkpoint", stacklevel=2)
            error = error or failure
            continue
        state["path"] = str(path)
        return state
    assert error is not None
    raise error


# -- RNG states ------------------------------------------------------------------------------------


def capture_rng(device: torch.device | None = None) -> dict[str, Any]:
    """This process's Python, NumPy, torch CPU (and CUDA device) RNG states as plain types/tensors."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Inverse of :func:`capture_rng`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
