"""The training loop: one plain loop with a labelled G step, aux step and D step (spec §14).

What: :func:`train` runs one stage of the authors' three-stage recipe for a resolved
:class:`~crdr.train.config.TrainConfig`, in one process or under ``torchrun`` (one process per
device), writing logs, validation grids and atomic checkpoints into a run directory, and resuming
from the newest checkpoint exactly where the run stopped.

One iteration (every stage; the D step only when ``adversarial_weight > 0``, i.e. stage 3)::

    q ~ U{0..levels-1}, β = max_beta · U{0..100}/100      one per batch, the same on every rank
    ---- G step (D frozen) ----
    x̂ = G(x; q, β)                          train mode: noisy likelihoods, raw (unclamped) x̂
    x_ref = x  if q + δ > top level  else  G(x; q+δ, β) under no_grad      (HRRGAN: losses.hrrgan_reference)
    L_G = 150·MSE + λ(q)·bpp + w(q)·β·(w_P·P(x, x̂) + w_A·GAN_G(D_q(x̂), sg(D_q(x_ref))))
    skip the whole iteration (no update of G, aux or D) if L_G is NaN, ±inf or > max_loss
    backward → [all-reduce] → clip 1.0 → G step
    ---- aux step ----
    aux loss (z quantiles) backward → [all-reduce] → aux step;  G LR schedule step
    ---- D step ----
    L_D = GAN_D(D_q(x), D_q(sg(x̂)))  backward → [all-reduce] → D step;  D LR schedule step

Why these choices:

* Gradients are averaged over ``torchrun`` ranks explicitly right before each optimiser step
  (:mod:`crdr.train.distributed` says why not ``DistributedDataParallel``); ranks end with
  identical weights, checked at the end of every run and written to ``summary.json``.
* The D loss is computed in one pass (``D(x)`` and ``D(sg(x̂))`` once each, the opposite side
  detached inside the loss) rather than the authors' two backward passes; the gradient is the same.
* Resume is exact on CPU: the checkpoint holds the model, the three optimisers, the schedulers, the
  step, every rank's Python/NumPy/torch RNG states and the q/β generator; the data order and the
  augmentation of every sample are functions of ``(seed, epoch, index)`` (``crdr.data``), so a run
  killed and resumed performs the same floating-point operations as one that never stopped (given
  the same number of CPU threads). On CUDA, cuDNN's algorithm choice makes runs non-bit-exact
  whether or not they are interrupted.

What each stage trains, freezes and starts from is :mod:`crdr.train.stages`; what a run writes is
:mod:`crdr.train.rundir`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from crdr.errors import ParameterError, WeightsError
from crdr.files import write_json
from crdr.models.crdr import CRDR
from crdr.train import checkpoint as checkpoints
from crdr.train.config import TrainConfig
from crdr.train.distributed import (
    Distributed, average_gradients, broadcast_module, gather, mix_seed, setup_distributed, sync_max,
)
from crdr.train.rundir import RunLogger, default_run_dir, prepare_run_dir, read_run_record, write_png
from crdr.train.schedule import build_scheduler, restore_scheduler
from crdr.train.stages import init_from_previous, parameter_groups, trainable_parameters
from crdr.weights import is_table_buffer

__all__ = ["RunResult", "Training", "build_training", "parameter_checksum", "train", "training_step", "validate"]


# ---------------------------------------------------------------------------------------------------
# The training state and one iteration


_PERCEPTUAL_CACHE: dict[str, nn.Module] = {}


def _perceptual_network(kind: str) -> nn.Module:
    """The frozen perceptual network, built once per process (it never changes)."""
    if kind not in _PERCEPTUAL_CACHE:
        from crdr.losses import PerceptualLoss

        with torch.random.fork_rng(devices=[]):  # its random init (overwritten) must not shift our RNG
            _PERCEPTUAL_CACHE[kind] = PerceptualLoss(kind)
    return _PERCEPTUAL_CACHE[kind]


@dataclass
class Training:
    """Everything one iteration touches; built by :func:`build_training`."""

    config: TrainConfig
    model: CRDR
    optimizer: torch.optim.Optimizer
    aux_optimizer: torch.optim.Optimizer | None
    scheduler: LambdaLR
    main_parameters: list[nn.Parameter]
    aux_parameters: list[nn.Parameter]
    sampling: torch.Generator  # q and β: seeded alike on every rank
    device: torch.device
    distributed: Distributed = field(default_factory=Distributed)
    perceptual: nn.Module | None = None
    discriminator: nn.Module | None = None
    discriminator_optimizer: torch.optim.Optimizer | None = None
    discriminator_scheduler: LambdaLR | None = None
    gan: Any = None  # crdr.losses.GanLoss
    step: int = 0
    wall_time: float = 0.0  # seconds of training before this process started

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.config.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def state_dict(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        """The checkpoint payload (see :mod:`crdr.train.checkpoint`)."""

        def optional(item):
            return None if item is None else item.state_dict()

        return {
            "config": self.config.to_dict(),
            "model": {k: v for k, v in self.model.state_dict().items() if not is_table_buffer(k)},
            "discriminator": optional(self.discriminator),
            "optimizer": self.optimizer.state_dict(),
            "aux_optimizer": optional(self.aux_optimizer),
            "discriminator_optimizer": optional(self.discriminator_optimizer),
            "scheduler": self.scheduler.state_dict(),
            "discriminator_scheduler": optional(self.discriminator_scheduler),
            "rng": rng,
            "sampling_rng": self.sampling.get_state(),
            "world_size": self.distributed.world_size,
            "data": {"samples_per_rank": self.step * self.config.batch_size, "seed": self.config.seed},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint written by :meth:`state_dict` (RNG states excepted)."""
        _load_model_state(self.model, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        pairs = (
            (self.aux_optimizer, "aux_optimizer"),
            (self.discriminator, "discriminator"),
            (self.discriminator_optimizer, "discriminator_optimizer"),
        )
        for item, key in pairs:
            if (item is None) != (state.get(key) is None):
                raise WeightsError(f"checkpoint and config disagree about {key}")
            if item is not None:
                item.load_state_dict(state[key])
        # After the optimisers: the schedules set the learning rates of the restored groups.
        restore_scheduler(self.scheduler, state["scheduler"])
        restore_scheduler(self.discriminator_scheduler, state.get("discriminator_scheduler"))
        self.sampling.set_state(state["sampling_rng"])
        self.step = int(state["step"])
        self.wall_time = float(state.get("wall_time", 0.0))


def _load_model_state(model: CRDR, state: dict[str, Tensor]) -> None:
    """Strictly load a checkpoint's codec tensors (coder tables are not part of training)."""
    expected = {k for k in model.state_dict() if not is_table_buffer(k)}
    given = {k for k in state if not is_table_buffer(k)}
    if expected != given:
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        raise WeightsError(f"checkpoint does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.load_state_dict({k: state[k] for k in given}, strict=False)


def build_training(
    config: TrainConfig,
    device: torch.device | str = "cpu",
    distributed: Distributed = Distributed(),
    init: bool = True,
) -> Training:
    """Model, discriminator, losses, optimisers and schedulers of ``config``, on ``device``.

    Weights are drawn from ``config.seed`` (the same on every rank). ``init`` loads
    ``config.init_from`` and ``config.discriminator_init_from`` (a fresh run; a resumed run takes
    its weights from the checkpoint).
    """
    device = torch.device(device)
    if config.bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ParameterError("bf16 autocast is not supported on this GPU")
    torch.manual_seed(config.seed)
    model = CRDR(config.model_config())
    if init and config.init_from:
        init_from_previous(model, config.init_from)
    if init and config.beta_init != "keep":
        model.decoder.reset_beta_parameters(scheme=config.beta_init)
    model.to(device).train()
    if config.channels_last:
        _use_channels_last(model)
    trainable = trainable_parameters(model, config.stage, config.frozen, config.trainable)
    aux_ids = {id(p) for p in model.aux_parameters()}
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in trainable.values():
        parameter.requires_grad_(True)
    main_parameters = [p for p in trainable.values() if id(p) not in aux_ids]
    aux_parameters = [p for p in trainable.values() if id(p) in aux_ids]
    if not main_parameters:
        raise ParameterError("every codec parameter is frozen: nothing to train")
    optimizer = torch.optim.Adam(parameter_groups(model, trainable, aux_ids, config), lr=config.lr)
    aux_optimizer = torch.optim.Adam(aux_parameters, lr=config.aux_lr) if aux_parameters else None
    scheduler = build_scheduler(optimizer, config.lr_milestones, config.lr_gamma, config.lr_warmup_steps)
    perceptual = _perceptual_network(config.perceptual).to(device) if config.perceptual_weight > 0 else None
    training = Training(
        config=config, model=model, optimizer=optimizer, aux_optimizer=aux_optimizer,
        scheduler=scheduler, main_parameters=main_parameters, aux_parameters=aux_parameters,
        sampling=torch.Generator().manual_seed(mix_seed(config.seed, "q-beta")),
        device=device, distributed=distributed, perceptual=perceptual,
    )
    if config.uses_discriminator:
        from crdr.losses import gan_loss
        from crdr.models.discriminator import build_discriminator

        torch.manual_seed(mix_seed(config.seed, "discriminator"))
        discriminator = build_discriminator(**config.discriminator_settings())
        if init and config.discriminator_init_from:
            from crdr.train.discriminator_weights import load_discriminator

            load_discriminator(discriminator, config.discriminator_init_from, config)
        discriminator.to(device).train()
        if config.channels_last:
            _use_channels_last(discriminator)
        training.discriminator = discriminator
        training.discriminator_optimizer = torch.optim.Adam(discriminator.parameters(), lr=config.discriminator_lr)
        training.discriminator_scheduler = build_scheduler(
            training.discriminator_optimizer, config.lr_milestones, config.lr_gamma
        )
        training.gan = gan_loss(config.gan_loss)
    return training


def _use_channels_last(module: nn.Module) -> None:
    """Store every convolution weight NHWC, in place (the convolutions' fastest layout on CPU with
    oneDNN and on tensor-core GPUs). Only 4-d weights have the layout, hence per convolution."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            layer.to(memory_format=torch.channels_last)


def _sample_q_beta(training: Training) -> tuple[int, float | None, float | None]:
    """``(q_index, q, β)`` for one batch (spec §14.3): q uniform in 0..levels-1 (None in stage 1),
    β = max_beta · k/100 with k uniform in 0..100 (None before stage 3). With a
    ``beta_endpoint_fraction`` p > 0, a batch takes k = 0 or 100 (even odds) with probability p
    first; at p = 0 the draws are the paper's, number for number."""
    config = training.config
    if config.stage == 1:
        return 0, None, None
    q_index = int(torch.randint(config.rate_levels, (1,), generator=training.sampling))
    beta = None
    if config.stage == 3:
        k = int(torch.randint(0, 101, (1,), generator=training.sampling))
        fraction = config.beta_endpoint_fraction
        if fraction > 0 and float(torch.rand((), generator=training.sampling)) < fraction:
            k = 100 * int(torch.randint(0, 2, (1,), generator=training.sampling))
        beta = training.model.config.max_beta * k / 100
    return q_index, float(q_index), beta


def training_step(training: Training, x: Tensor) -> dict[str, float]:
    """One iteration on the batch ``x: (N, 3, crop, crop) in [-1, 1]`` (on the device).

    Returns the logged numbers (:data:`METRIC_NAMES`; NaN where a term does not apply).
    """
    from crdr.losses import hific_rate_loss, hrrgan_reference, mse_loss, reference_logits

    config, model, discriminator = training.config, training.model, training.discriminator
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    q_index, q, beta = _sample_q_beta(training)
    realism = (beta if config.beta_weighted else 1.0) * config.realism_level_weight(q_index)
    # At β = 0 under β weighting (or a level weight of 0) the perceptual and adversarial terms weigh
    # nothing, so neither network, nor HRRGAN's reference decode, is run: the G gradient is the same,
    # and a quarter of the small recipe's batches (beta_endpoint_fraction 0.5) get cheaper.
    realistic = realism != 0
    nan = torch.tensor(float("nan"), device=training.device)
    terms: dict[str, Tensor] = {}

    # ---- G step (D frozen) -------------------------------------------------------------------
    training.optimizer.zero_grad(set_to_none=True)
    if training.aux_optimizer is not None:
        training.aux_optimizer.zero_grad(set_to_none=True)
    if discriminator is not None:
        discriminator.requires_grad_(False)
    with training.autocast():
        result = model(x, q, beta)
    x_hat = result.x_hat.float()
    x_ref = x
    # Right after the main forward, where the authors' trainer decodes it (its noise uses the RNG).
    if realistic and training.gan is not None and training.gan.uses_reference:
        x_ref = hrrgan_reference(
            model, x, q_index, beta, config.rate_levels, config.reference_delta, training.autocast
        )
    bpp = result.bpp()
    qbpp = result.bpp(quantized=True)
    terms["mse"] = mse_loss(x_hat, x)
    terms["rate"] = hific_rate_loss(
        bpp, qbpp, q_index, config.lambda_a, config.lambda_b, config.target_rates
    )
    loss = config.mse_weight * terms["mse"] + terms["rate"]
    if realistic and training.perceptual is not None:
        with training.autocast():
            terms["perceptual"] = training.perceptual(x_hat, x).float()
        loss = loss + realism * config.perceptual_weight * terms["perceptual"]
    if realistic and discriminator is not None:
        with training.autocast():
            d_fake = discriminator(x_hat, q_index).float()
            d_ref = reference_logits(discriminator, x_ref, q_index)
        terms["adversarial"] = training.gan.generator(d_fake, d_ref)
        loss = loss + realism * config.adversarial_weight * terms["adversarial"]
    value = float(loss.detach())
    bad = not math.isfinite(value) or value > config.max_loss
    skipped = sync_max([float(bad)], training.distributed, training.device)[0] > 0
    if not skipped:
        loss.backward()
        average_gradients(training.main_parameters, training.distributed)
        torch.nn.utils.clip_grad_norm_(training.main_parameters, config.clip_norm)
        training.optimizer.step()

        # ---- aux step (z quantiles) ----------------------------------------------------------
        if training.aux_optimizer is not None:
            terms["aux"] = model.aux_loss()
            terms["aux"].backward()
            average_gradients(training.aux_parameters, training.distributed)
            training.aux_optimizer.step()
    lr = training.optimizer.param_groups[0]["lr"]
    with warnings.catch_warnings():
        # The schedule counts iterations, skipped ones included; torch warns if the very first
        # iteration skipped its optimiser step.
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
        training.scheduler.step()
        if training.discriminator_scheduler is not None and skipped:
            training.discriminator_scheduler.step()

    # ---- D step --------------------------------------------------------------------------------
    if discriminator is not None:
        discriminator.requires_grad_(True)
        if not skipped:
            training.discriminator_optimizer.zero_grad(set_to_none=True)
            with training.autocast():
                d_real = discriminator(x, q_index).float()
                d_fake = discriminator(x_hat.detach(), q_index).float()
            terms["d_loss"] = training.gan.discriminator(d_real, d_fake)
            terms["d_loss"].backward()
            average_gradients(list(discriminator.parameters()), training.distributed)
            training.discriminator_optimizer.step()
            training.discriminator_scheduler.step()

    numbers = torch.stack(
        [terms.get(name, nan).detach().float() for name in ("mse", "rate", "perceptual", "adversarial", "aux", "d_loss")]
        + [bpp.detach().mean(), qbpp.detach().mean()]
    ).tolist()
    mse, rate, perceptual, adversarial, aux, d_loss, bpp_mean, qbpp_mean = numbers
    return {
        "loss": value, "mse": mse, "rate": rate, "bpp": bpp_mean, "qbpp": qbpp_mean,
        "perceptual": perceptual, "adversarial": adversarial, "aux": aux, "d_loss": d_loss,
        "q": float(q_index) if q is not None else float("nan"),
        "beta": float("nan") if beta is None else beta, "lr": lr, "skipped": float(skipped),
    }


# ---------------------------------------------------------------------------------------------------
# Data


def make_datasets(config: TrainConfig) -> tuple[Any, Tensor]:
    """Training dataset and validation images ``(V, 3, H, W) in [-1, 1]`` of ``config``."""
    from crdr.data import ImageFolderDataset, SyntheticImageDataset, validation_images

    if config.synthetic_images > 0:
        dataset = SyntheticImageDataset(config.synthetic_images, config.crop, seed=config.seed)
    elif config.data_root:
        dataset = ImageFolderDataset(config.data_root, crop=config.crop, exclude=config.validation_root or None)
    else:
        raise ParameterError("no training data: --set data_root=DIR (or synthetic_images=N)")
    root = config.validation_root or (config.data_root if config.synthetic_images == 0 else "")
    if root:
        images = validation_images(root, config.validation_images, config.validation_crop)
    else:
        held_out = SyntheticImageDataset(config.validation_images, config.validation_crop, seed=config.seed + 1)
        images = torch.stack([held_out[i] for i in range(len(held_out))])
    return dataset, images


def _quiet_worker(initialise: Any, worker_id: int) -> None:
    """Loader workers ignore Ctrl-C: the main process finishes its iteration and checkpoints,
    which needs the workers alive (a terminal sends SIGINT to the whole process group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initialise is not None:
        initialise(worker_id)


def iterate_batches(loader: Any, start_step: int, batch_size: int) -> Iterator[Tensor]:
    """Endless batches starting after ``start_step`` finished iterations, epoch after epoch."""
    epoch, skip = loader.sampler.locate(start_step, batch_size)
    while True:
        loader.sampler.set_epoch(epoch, skip)
        yield from loader
        epoch, skip = epoch + 1, 0


# ---------------------------------------------------------------------------------------------------
# Validation


@torch.no_grad()
def validate(
    model: CRDR, images: Tensor, config: TrainConfig, perceptual: nn.Module | None, device: torch.device
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Eval-mode metrics at every (q, β) of the config and a grid of reconstructions.

    Per (q, β): mean over images of bpp (eval likelihoods, rounded latents), PSNR (8-bit, rounded)
    and the perceptual distance of the training loss. The grid (uint8, HWC) shows the first image:
    one row per q; the original, then one column per β.
    """
    from crdr.image_io import from_model_output
    from crdr.metrics import psnr

    qs: Sequence[float | None] = config.validation_q if config.stage >= 2 else (None,)
    betas: Sequence[float | None] = config.validation_beta if config.stage == 3 else (None,)
    was_training = model.training
    model.eval()
    results, rows = [], []
    original = from_model_output(images[:1])
    try:
        for q in qs:
            row = [original]
            for beta in betas:
                bpp_sum = psnr_sum = perceptual_sum = 0.0
                for start, chunk in enumerate(images.split(max(1, config.batch_size))):
                    chunk = chunk.to(device)
                    result = model(chunk, q, beta)
                    bpp_sum += float(result.bpp().sum())
                    for i in range(chunk.shape[0]):
                        x_hat, x = result.x_hat[i : i + 1], chunk[i : i + 1]
                        psnr_sum += psnr(from_model_output(x_hat), from_model_output(x))
                        if perceptual is not None:
                            perceptual_sum += float(perceptual(x_hat, x))
                    if start == 0:
                        row.append(from_model_output(result.x_hat[:1]))
                n = images.shape[0]
                results.append(
                    {
                        "q": q, "beta": beta, "bpp": bpp_sum / n, "psnr": psnr_sum / n,
                        "perceptual": perceptual_sum / n if perceptual is not None else None,
                    }
                )
            rows.append(row)
    finally:
        model.train(was_training)
    return results, _grid(rows)


def _grid(rows: list[list[np.ndarray]], gap: int = 2) -> np.ndarray:
    height, width = rows[0][0].shape[:2]
    columns = max(len(row) for row in rows)
    grid = np.full(
        (len(rows) * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, dtype=np.uint8
    )
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            grid[r * (height + gap) : r * (height + gap) + height, c * (width + gap) : c * (width + gap) + width] = cell
    return grid


# ---------------------------------------------------------------------------------------------------
# Signals, checksums, schedules


class _StopSignals:
    """SIGTERM / SIGINT set a flag; the loop checkpoints after the current iteration and exits.
    A second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)

    def _handle(self, number: int, frame: Any) -> None:
        if self.received is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = number

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()


def parameter_checksum(*modules: nn.Module | None) -> str:
    """sha256 over the float32 values of every tensor of the modules (coder tables excluded)."""
    digest = hashlib.sha256()
    for index, module in enumerate(modules):
        if module is None:
            continue
        for key, tensor in sorted(module.state_dict().items()):
            if is_table_buffer(key):
                continue
            digest.update(f"{index}.{key}".encode())
            digest.update(tensor.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------
# The loop


@dataclass
class RunResult:
    run_dir: Path
    step: int
    status: str  # "finished" or "interrupted"
    validation: list[dict[str, Any]] | None = None
    ranks_identical: bool = True


def train(
    config: TrainConfig,
    run_dir: str | os.PathLike | None = None,
    resume: bool = False,
    command: str | None = None,
) -> RunResult:
    """Run (or, with ``resume``, continue) one training stage; see the module docstring.

    ``run_dir`` defaults to ``LOG_DIR/NAME-YYYYmmdd-HHMMSS`` for a new run and is required to
    resume. ``command`` is recorded in ``config.json`` (default: this process's argv).
    """
    if resume and run_dir is None:
        raise ParameterError("resuming needs the run directory")
    if command is None:
        from crdr.train.rundir import command_line

        command = command_line()
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    distributed, device = setup_distributed(config.device)
    stop = _StopSignals()
    stop.install()
    try:
        return _run(config, run_dir, resume, command, distributed, device, stop)
    finally:
        stop.uninstall()
        torch.set_num_threads(previous_threads)
        if distributed.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _run(
    config: TrainConfig,
    run_dir: str | os.PathLike | None,
    resume: bool,
    command: str,
    distributed: Distributed,
    device: torch.device,
    stop: _StopSignals,
) -> RunResult:
    from crdr.data import make_loader

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    chosen = [str(run_dir if run_dir is not None else default_run_dir(config))]
    if distributed.enabled:
        torch.distributed.broadcast_object_list(chosen, 0)
    run_dir = Path(chosen[0])
    if resume and checkpoints.latest_checkpoint(run_dir) is None:
        warnings.warn(f"{run_dir} has no checkpoint yet: starting it from step 0", stacklevel=3)
    state = checkpoints.load_latest(run_dir) if resume and checkpoints.latest_checkpoint(run_dir) else None
    if state is not None:
        saved = TrainConfig.from_dict(state["config"])
        from crdr.train.config import RESUME_OVERRIDABLE

        changed = [
            f.name for f in dataclasses.fields(config)
            if f.name not in RESUME_OVERRIDABLE and getattr(config, f.name) != getattr(saved, f.name)
        ]
        if changed:
            raise ParameterError(f"cannot change {', '.join(changed)} when resuming (only {', '.join(sorted(RESUME_OVERRIDABLE))})")
    if distributed.is_main:
        prepare_run_dir(run_dir, config, resume, command, distributed.world_size)
    if distributed.enabled:
        torch.distributed.barrier()

    dataset, images = make_datasets(config)
    loader = make_loader(
        dataset, config.batch_size, config.workers, config.seed, distributed=distributed.enabled,
        rank=distributed.rank, world_size=distributed.world_size,
    )
    loader.worker_init_fn = functools.partial(_quiet_worker, loader.worker_init_fn)
    training = build_training(config, device, distributed, init=state is None)
    if state is not None:
        training.load_state_dict(state)
        ranks = state.get("rng") or []
        if state.get("world_size") == distributed.world_size and len(ranks) == distributed.world_size:
            checkpoints.restore_rng(ranks[distributed.rank], device)
        else:
            warnings.warn("checkpoint written with another world size: RNG streams restart", stacklevel=3)
            _seed_process(config.seed, distributed.rank, training.step)
    else:
        _seed_process(config.seed, distributed.rank, 0)
    broadcast_module(training.model, distributed)
    broadcast_module(training.discriminator, distributed)
    commands = read_run_record(run_dir)["commands"] if distributed.is_main else []

    logger = RunLogger(run_dir, config, training.step) if distributed.is_main else None
    started = time.monotonic()
    last_checkpoint = started
    saved_step = training.step if state is not None else -1
    status = "finished"
    latest_validation: list[dict[str, Any]] | None = None

    def wall_time() -> float:
        return training.wall_time + time.monotonic() - started

    def save() -> None:
        nonlocal last_checkpoint, saved_step
        rng = gather(checkpoints.capture_rng(device), distributed)
        if distributed.is_main:
            payload = training.state_dict(rng)
            payload.update(wall_time=wall_time(), commands=commands)
            checkpoints.save_checkpoint(run_dir, training.step, payload, config.keep_checkpoints)
        last_checkpoint = time.monotonic()
        saved_step = training.step

    batches = iterate_batches(loader, training.step, config.batch_size)
    try:
        while training.step < config.steps:
            try:
                x = next(batches)
            except Exception:
                if stop.received is None:
                    raise
                status = "interrupted"  # the signal also stopped the data workers
                break
            metrics = training_step(training, x.to(device, non_blocking=True))
            training.step += 1
            step = training.step
            if logger is not None:
                logger.log_step(step, metrics, wall_time())
            time_due = bool(config.checkpoint_minutes) and (
                time.monotonic() - last_checkpoint >= 60 * config.checkpoint_minutes
            )
            stop_now, time_due = (v > 0 for v in sync_max([stop.received is not None, time_due], distributed, device))
            final = step == config.steps
            if config.validate_every and (step % config.validate_every == 0 or final):
                if distributed.is_main:
                    latest_validation = _validation_pass(training, images, run_dir, logger)
            periodic = bool(config.checkpoint_every) and step % config.checkpoint_every == 0
            if stop_now or final or time_due or periodic:
                save()
            if stop_now:
                status = "interrupted"
                break
        if status == "interrupted" and saved_step != training.step:
            save()
    finally:
        if logger is not None:
            logger.close(training.step, wall_time())

    checksums = gather(parameter_checksum(training.model, training.discriminator), distributed)
    identical = len(set(checksums)) == 1
    if distributed.is_main:
        if latest_validation is None and (run_dir / "validation.json").exists():
            latest_validation = json.loads((run_dir / "validation.json").read_text()).get("results")
        write_json(
            run_dir / "summary.json",
            {
                "status": status, "step": training.step, "steps": config.steps, "wall_time": wall_time(),
                "world_size": distributed.world_size, "rank_checksums": checksums,
                "ranks_identical": identical, "validation": latest_validation,
            },
        )
        if not identical:
            warnings.warn(f"ranks ended with different weights: {checksums}", stacklevel=2)
        if status == "interrupted":
            name = signal.Signals(stop.received).name if stop.received else "a signal"
            print(
                f"crdr: interrupted by {name} at step {training.step}; checkpoint in {run_dir}; "
                f"continue with: crdr train --resume {run_dir}",
                file=sys.stderr,
            )
    return RunResult(run_dir, training.step, status, latest_validation, identical)


def _seed_process(seed: int, rank: int, step: int) -> None:
    """Per-rank streams for the likelihood noise (and anything else drawing from global RNGs)."""
    value = mix_seed(seed, "noise", rank, step)
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    import random

    random.seed(value)


def _validation_pass(
    training: Training, images: Tensor, run_dir: Path, logger: RunLogger | None
) -> list[dict[str, Any]]:
    results, grid = validate(training.model, images, training.config, training.perceptual, training.device)
    step = training.step
    write_png(run_dir / "validation" / f"step_{step:09d}.png", grid)
    write_json(run_dir / "validation.json", {"step": step, "results": results})
    if logger is not None:
        logger.log_validation(step, results, grid)
    return results
