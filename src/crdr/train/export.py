"""Export a training run as crdr weights: fp16 safetensors + a sidecar JSON telling how they were made.

What: :func:`export` takes the newest checkpoint of a run directory, loads its codec weights into a
fresh :class:`~crdr.models.crdr.CRDR` of the run's architecture (strictly), and writes them with
:func:`crdr.weights.save_weights`. The sidecar carries, under ``training``, the commands that
produced the run, the stage, the step reached, the training wall time, the last validation metrics,
every validation row up to the exported step (so the learning curve travels with the weights) and
the resolved training config, next to the file's sha256 and model config.

Why: a weights file must say where it came from, and must load with
:func:`crdr.weights.load_model` like any other model (entropy tables are rebuilt there, never
shipped). The optimiser states stay in the run directory; the discriminators stay there too
unless asked for (``discriminator_path``: a second file, to continue training on another machine).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from crdr.errors import CrdrError, ParameterError
from crdr.files import refuse_existing
from crdr.models.crdr import CRDR
from crdr.train import checkpoint as checkpoints
from crdr.train.config import TrainConfig
from crdr.weights import file_sha256, load_state, save_weights

__all__ = ["export"]


def export(
    run_dir: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    force: bool = False,
    half: bool = True,
    command: str | None = None,
    discriminator_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Write the newest checkpoint of ``run_dir`` to ``output_path``; return the sidecar's content.

    With ``discriminator_path``, the checkpoint's discriminators go there too
    (:mod:`crdr.train.discriminator_weights`), so that training can continue from the export.
    Raises :class:`~crdr.errors.OutputExistsError` if an output exists and ``force`` is false,
    :class:`~crdr.errors.WeightsError` if the run has no readable checkpoint,
    :class:`~crdr.errors.ParameterError` if a discriminator is asked of a run that has none.
    """
    run_dir = Path(run_dir)
    output_path = Path(output_path)
    if not run_dir.is_dir():
        raise ParameterError(f"run directory {run_dir} does not exist")
    outputs = [output_path] + ([Path(discriminator_path)] if discriminator_path else [])
    if len(set(outputs)) < len(outputs):
        raise ParameterError(f"the weights and the discriminator would both be written to {output_path}")
    if not force:
        for path in outputs:
            refuse_existing(path)
    state = checkpoints.load_latest(run_dir)
    config = TrainConfig.from_dict(state["config"])
    if discriminator_path and not state.get("discriminator"):
        raise ParameterError(
            f"{run_dir} trains no discriminator (stage {config.stage}): there is none to export"
        )
    model = CRDR(config.model_config())
    load_state(model, state["model"])
    training = dict(_run_record(run_dir, state, config), export_command=command)
    commands = training["commands"]
    extra = {"training": training, "command": commands}
    previous = _previous_stages(config.init_from)
    if previous:
        # Weights of a later stage carry the record of the stages they grew from, so the exported
        # file alone says how to re-run the whole recipe.
        extra["previous_stages"] = previous
    output_path.parent.mkdir(parents=True, exist_ok=True)
    if discriminator_path:
        from crdr.train.discriminator_weights import save_discriminator

        Path(discriminator_path).parent.mkdir(parents=True, exist_ok=True)
        save_discriminator(state["discriminator"], config, int(state["step"]), discriminator_path, half=half)
        training["discriminator"] = {
            "file": Path(discriminator_path).name,
            "sha256": file_sha256(discriminator_path),
            "continue_with": f"--set discriminator_init_from={discriminator_path}",
        }
    return save_weights(model, output_path, extra=extra, half=half)


def _run_record(run_dir: Path, state: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    """How the checkpoint ``state`` of ``run_dir`` was made: commands, step, wall time, curve."""
    record = _read_json(run_dir / "config.json") or {}
    return {
        "commands": list(record.get("commands") or state.get("commands") or []),
        "stage": config.stage,
        "step": int(state["step"]),
        "steps": config.steps,
        "wall_time_s": round(float(state.get("wall_time", 0.0)), 1),
        "world_size": state.get("world_size", 1),
        "validation": _read_json(run_dir / "validation.json"),
        "validation_history": _validation_history(run_dir / "validation.csv", int(state["step"])),
        "config": config.to_dict(),
        "checkpoint": Path(state["path"]).name,
    }


def _previous_stages(init_from: str) -> list[dict[str, Any]]:
    """Training records of the export or run directory ``init_from`` names, oldest first (a run
    directory's record is read from its newest checkpoint, then its own ``init_from`` is followed)."""
    if not init_from:
        return []
    source = Path(init_from)
    if source.is_dir():
        try:
            state = checkpoints.load_latest(source)
        except CrdrError:
            return []
        config = TrainConfig.from_dict(state["config"])
        record = dict(_run_record(source, state, config), run_dir=str(source))
        return _previous_stages(config.init_from) + [record]
    sidecar = _read_json(source.with_suffix(".json")) if source.suffix == ".safetensors" else None
    if not sidecar or "training" not in sidecar:
        return []
    record = dict(sidecar["training"], sha256=sidecar.get("sha256"), file=source.name)
    return list(sidecar.get("previous_stages") or []) + [record]


def _validation_history(path: Path, last_step: int) -> list[dict[str, float | None]]:
    """Rows of a run's ``validation.csv`` up to ``last_step`` (a resumed run may have validated
    past the checkpoint it was exported from), numbers parsed; empty cells become ``None``."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return []
    history = []
    for row in rows:
        try:
            parsed = {key: (float(value) if value not in ("", None) else None) for key, value in row.items()}
        except ValueError:
            continue
        if parsed.get("step") is not None and parsed["step"] <= last_step:
            parsed["step"] = int(parsed["step"])
            history.append(parsed)
    return history


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
