"""The run directory: what rank 0 writes while training, and the record of how the run was made.

::

    RUN_DIR/config.json        resolved config, model config, every command that ran on it
    RUN_DIR/train.csv          losses averaged over log_every steps
    RUN_DIR/validation.csv     per validation: bpp, PSNR, perceptual distance at each (q, β)
    RUN_DIR/validation.json    the latest validation;  RUN_DIR/validation/step_*.png  its grid
    RUN_DIR/tensorboard/       the same scalars and grids (if tensorboard is installed)
    RUN_DIR/summary.json       status, step, wall time, rank checksums (written by the loop)

Why its own module: the loop reads top to bottom as the training iteration; logging, CSV resume
bookkeeping and the command record are kept here. Every file is replaced atomically
(:mod:`crdr.files`); on resume, CSV rows logged after the restored checkpoint are dropped.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crdr.errors import ParameterError
from crdr.files import atomic_path, write_atomic, write_json
from crdr.train.config import TrainConfig

if TYPE_CHECKING:  # numpy only for annotations: `crdr train --help` stays light
    import numpy as np

__all__ = [
    "LOG_COLUMNS", "METRIC_NAMES", "RunLogger", "VALIDATION_COLUMNS", "command_line", "default_run_dir",
    "prepare_run_dir", "read_run_record", "write_png",
]


def command_line(argv: list[str] | None = None) -> str:
    """This process's command as a shell line, with ``python -m`` entry points spelled out."""
    argv = list(sys.argv if argv is None else argv)
    program = Path(argv[0]).name if argv else "crdr"
    program = {"__main__.py": "python -m crdr", "command.py": "python -m crdr.train.command"}.get(program, program)
    return " ".join([program, *(shlex.quote(a) for a in argv[1:])])


METRIC_NAMES = (
    "loss", "mse", "rate", "bpp", "qbpp", "perceptual", "adversarial", "aux", "d_loss",
    "q", "beta", "lr", "skipped",
)


LOG_COLUMNS = ("step", "wall_time") + METRIC_NAMES


VALIDATION_COLUMNS = ("step", "q", "beta", "bpp", "psnr", "perceptual")


def write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        Image.fromarray(image).save(temporary, format="PNG")


def _truncate_csv(path: Path, last_step: int) -> None:
    """Drop rows logged after ``last_step`` (written after the checkpoint a resume starts from)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if line.split(",", 1)[0].isdigit() and int(line.split(",", 1)[0]) <= last_step]
    if len(kept) != len(lines):
        write_atomic(path, "".join(kept).encode("utf-8"))


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class RunLogger:
    """Rank 0's outputs: ``train.csv``, ``validation.csv``, TensorBoard (optional) and a tqdm bar."""

    def __init__(self, run_dir: Path, config: TrainConfig, start_step: int) -> None:
        self.config = config
        self.train_csv = run_dir / "train.csv"
        self.validation_csv = run_dir / "validation.csv"
        for path, columns in ((self.train_csv, LOG_COLUMNS), (self.validation_csv, VALIDATION_COLUMNS)):
            _truncate_csv(path, start_step)
            if not path.exists():
                path.write_text(",".join(columns) + "\n")
        self.writer = None
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn("tensorboard is not installed; logging to CSV only", stacklevel=2)
            else:
                self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        from tqdm import tqdm

        self.bar = tqdm(
            total=config.steps, initial=start_step, disable=not config.progress, desc=config.name,
            unit="step", dynamic_ncols=True, file=sys.stderr,
        )
        self.window: list[dict[str, float]] = []

    def log_step(self, step: int, metrics: dict[str, float], wall_time: float) -> None:
        self.window.append(metrics)
        self.bar.update(1)
        if self.config.log_every and step % self.config.log_every == 0:
            self.flush(step, wall_time)

    def flush(self, step: int, wall_time: float) -> None:
        if not self.window:
            return
        means = {}
        for name in METRIC_NAMES:
            values = [m[name] for m in self.window if not math.isnan(m[name])]
            if name == "skipped":
                means[name] = float(sum(values))
            else:
                means[name] = sum(values) / len(values) if values else float("nan")
        self.window = []
        row = {"step": step, "wall_time": round(wall_time, 3), **means}
        with open(self.train_csv, "a") as handle:
            handle.write(",".join(_format(row[c]) for c in LOG_COLUMNS) + "\n")
        if self.writer is not None:
            for name, value in means.items():
                if not math.isnan(value):
                    self.writer.add_scalar(f"train/{name}", value, step)
        shown = {k: f"{means[k]:.4g}" for k in ("loss", "bpp", "mse") if not math.isnan(means[k])}
        self.bar.set_postfix(shown, refresh=False)

    def log_validation(self, step: int, results: list[dict[str, Any]], grid: np.ndarray) -> None:
        with open(self.validation_csv, "a") as handle:
            for result in results:
                handle.write(",".join(_format(step if c == "step" else result[c]) for c in VALIDATION_COLUMNS) + "\n")
        if self.writer is not None:
            for result in results:
                label = "" if result["q"] is None else f"q{result['q']:g}"
                label += "" if result["beta"] is None else f"_beta{result['beta']:g}"
                for metric in ("bpp", "psnr", "perceptual"):
                    if result[metric] is not None:
                        self.writer.add_scalar(f"validation/{label or 'model'}/{metric}", result[metric], step)
            self.writer.add_image("validation/reconstructions", grid, step, dataformats="HWC")
        psnr_mean = sum(r["psnr"] for r in results) / len(results)
        bpp_mean = sum(r["bpp"] for r in results) / len(results)
        self.bar.write(f"step {step}: validation bpp {bpp_mean:.4f}, PSNR {psnr_mean:.2f} dB (means over q, β)")

    def close(self, step: int, wall_time: float) -> None:
        self.flush(step, wall_time)
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def default_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(config.log_dir) / f"{config.name}-{stamp}"


def prepare_run_dir(run_dir: Path, config: TrainConfig, resume: bool, command: str, world_size: int) -> None:
    """Create (or, resuming, update) ``config.json``: the resolved config and every command used."""
    record_path = run_dir / "config.json"
    if resume:
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError) as error:
            raise ParameterError(f"{run_dir} is not a training run directory ({error})") from None
    else:
        if record_path.exists():
            raise ParameterError(
                f"{run_dir} already holds a run: continue it with --resume {run_dir} or choose another --run-dir"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        record = {"commands": [], "created": datetime.datetime.now().isoformat(timespec="seconds")}
    record["config"] = config.to_dict()
    record["model_config"] = config.model_config().to_dict()
    record["world_size"] = world_size
    record.setdefault("commands", []).append(command)
    write_json(record_path, record)


def read_run_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``RUN_DIR/config.json``: ``{"config", "model_config", "commands", ...}``."""
    path = Path(run_dir) / "config.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ParameterError(f"{run_dir} is not a training run directory (cannot read {path.name}: {error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise ParameterError(f"{path} holds no training config")
    return record
