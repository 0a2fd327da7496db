"""Processes and devices of a training run: ``torchrun`` ranks, gradient averaging, seeds.

What: where this process sits in a ``torchrun`` job (:class:`Distributed`), which device it trains
on, and the collective operations the loop needs — averaging gradients before each optimiser step,
broadcasting rank 0's weights, taking decisions every rank must share (:func:`sync_max`).

Why explicit ``all_reduce`` instead of ``DistributedDataParallel``: the discriminator runs several
times per iteration, G and D train in alternation and only one of the five per-level
discriminators is used per iteration, all of which DDP's hooks handle badly. q and β come from a
generator seeded alike on every rank, so every rank uses the same parameters in an iteration and
the averaged gradients match what one process would compute on the global batch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from crdr.errors import ParameterError

__all__ = [
    "Distributed", "average_gradients", "broadcast_module", "gather", "mix_seed", "select_device",
    "setup_distributed", "sync_max",
]


@dataclass(frozen=True)
class Distributed:
    """Where this process sits in a ``torchrun`` job (world size 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``; ``cuda`` → ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ParameterError(f"unknown device {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError("device cuda was requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def setup_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the ``torchrun`` process group if there is one (nccl on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(device_name, local_rank)
    info = Distributed(rank, world_size, local_rank)
    if info.enabled and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return info, device


def mix_seed(*parts: object) -> int:
    """A 63-bit seed from labelled parts, so seeds drawn for different purposes never coincide."""
    digest = hashlib.sha256(":".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sync_max(values: Sequence[float], distributed: Distributed, device: torch.device) -> list[float]:
    """Element-wise maximum over ranks (decisions every rank must take together)."""
    if not distributed.enabled:
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return tensor.tolist()


def average_gradients(parameters: Sequence[nn.Parameter], distributed: Distributed, bucket: int = 1 << 24) -> None:
    """Replace each existing gradient by its mean over ranks (parameters without one are left alone).

    Gradients are flattened into buckets of about ``bucket`` elements, one ``all_reduce`` each.
    """
    if not distributed.enabled:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    start = 0
    while start < len(grads):
        end, size = start, 0
        while end < len(grads) and (size == 0 or size + grads[end].numel() <= bucket):
            size += grads[end].numel()
            end += 1
        group = grads[start:end]
        flat = torch.cat([g.reshape(-1) for g in group])
        torch.distributed.all_reduce(flat)
        flat.div_(distributed.world_size)
        offset = 0
        for g in group:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        start = end


def broadcast_module(module: nn.Module | None, distributed: Distributed) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if module is None or not distributed.enabled:
        return
    for tensor in module.state_dict().values():
        if tensor.numel():
            torch.distributed.broadcast(tensor, 0)


def gather(value: Any, distributed: Distributed) -> list[Any]:
    if not distributed.enabled:
        return [value]
    values: list[Any] = [None] * distributed.world_size
    torch.distributed.all_gather_object(values, value)
    return values
