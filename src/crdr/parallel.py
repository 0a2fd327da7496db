"""Parallel work with results that do not depend on the thread count.

Why: a file must decode to the same pixels with 1 or N threads. A convolution split by torch
over N intra-op threads may sum in an N-dependent order, so the decoder used to run on one
thread and leave the other cores idle. Here the work is cut into pieces whose shapes depend
only on the data (never on the thread count); each piece runs single-threaded (the caller holds
torch at one intra-op thread, see ``codec.single_thread``), and the pieces run side by side on a
pool of Python threads (torch releases the GIL inside its kernels): :func:`single_thread`. One thread or eight, every
piece is computed by the same single-threaded kernel on the same input, so the joined result is
bit for bit the same.

Two kinds of pieces:

* independent tensors (the mean and scale transforms of one Charm slice): :func:`run_both`;
* horizontal bands of a row-local network (the synthesis transform): each layer is a
  :class:`RowLocalStep` that says how many input rows of context an output row needs on either
  side (``halo``) and how many output rows one input row makes (``scale``). :func:`run_steps`
  runs every step on bands of its input, each band widened by the halo and the widening cut
  from the output, so an output row sees exactly the rows it sees in the whole tensor::

      input rows   [a − halo, b + halo) ─► step ─► crop ─► output rows [a·scale, b·scale)

  Band boundaries are fixed by :func:`row_bands` from the row count and the halo alone. At the
  widths of the bundled and paper models (32 channels and more) oneDNN computes each output
  element the same way whatever the tensor's height, so the banded result also equals the
  unbanded one bit for bit (a test checks it); torch's fallback for very narrow layers (the tiny
  test model) may differ from it in the last bit, never between thread counts.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor

MAX_BANDS = 4  # bands per layer; more only adds halo work on the 2–8 cores this targets
ROWS_PER_HALO = 4  # a band has at least 4 × halo rows, so the halo adds at most half its work


@dataclass(frozen=True)
class RowLocalStep:
    """One layer of a row-local network: ``run`` maps (N, C, H, W) to (N, C', scale·H, W')."""

    run: Callable[[Tensor], Tensor]
    halo: int  # input rows of context an output row needs above and below
    scale: int = 1  # output rows per input row


def row_bands(rows: int, halo: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering ``range(rows)``: a function of ``rows`` and ``halo`` only."""
    count = max(1, min(MAX_BANDS, rows // (ROWS_PER_HALO * max(halo, 1))))
    bounds = [rows * index // count for index in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def run_band(step: RowLocalStep, x: Tensor, start: int, end: int) -> Tensor:
    """Output rows ``[start·scale, end·scale)`` of ``step.run(x)``, computed from a band of ``x``."""
    rows = x.shape[-2]
    first, last = max(0, start - step.halo), min(rows, end + step.halo)
    out = step.run(x[:, :, first:last])  # a row band: contiguous as it is in channels_last
    offset = (start - first) * step.scale
    return out[..., offset : offset + (end - start) * step.scale, :]


def run_steps(steps: list[RowLocalStep], x: Tensor, pool: Executor | None) -> Tensor:
    """``x`` through every step, each on :func:`row_bands` run on ``pool`` (or in this thread)."""
    for step in steps:
        bands = row_bands(x.shape[-2], step.halo)
        if len(bands) == 1:
            x = step.run(x)
            continue
        if pool is None:
            outputs = [run_band(step, x, start, end) for start, end in bands]
        else:
            futures = [_submit(pool, run_band, step, x, start, end) for start, end in bands]
            outputs = [future.result() for future in futures]
        x = torch.cat(outputs, dim=-2)
    return x


def run_both(pool: Executor | None, first: Callable[[], Tensor], second: Callable[[], Tensor]) -> tuple[Tensor, Tensor]:
    """``(first(), second())``, side by side when there is a pool."""
    if pool is None:
        return first(), second()
    pending = _submit(pool, second)
    return first(), pending.result()


def _submit(pool: Executor, function: Callable[..., Tensor], *args) -> Future:
    """``pool.submit`` with the caller's autograd mode (torch keeps it per thread)."""
    grad_enabled = torch.is_grad_enabled()

    def task() -> Tensor:
        with torch.set_grad_enabled(grad_enabled):
            return function(*args)

    return pool.submit(task)


@contextlib.contextmanager
def single_thread() -> Iterator[Executor | None]:
    """Hold torch at one intra-op thread inside the block, and yield a pool with one worker per
    thread the caller had (None for one) for work cut into fixed pieces."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with worker_pool(previous) as pool:
            yield pool
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def worker_pool(threads: int) -> Iterator[Executor | None]:
    """A pool of ``threads`` workers (None for one: the pieces then run in the caller's thread)."""
    if threads <= 1:
        yield None
        return
    # Each worker sets its own OpenMP thread count: oneDNN reads it from the calling thread, and a
    # fresh thread would otherwise run a convolution on every core, in a thread-dependent order.
    with ThreadPoolExecutor(
        max_workers=threads, thread_name_prefix="crdr", initializer=torch.set_num_threads, initargs=(1,)
    ) as pool:
        yield pool
