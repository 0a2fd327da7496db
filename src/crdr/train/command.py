"""The ``train`` and ``export`` subcommands.

What: :func:`register` adds them to the main CLI's subparsers (``crdr train ...``); :func:`main`
runs them on their own (``python -m crdr.train.command train ...``), which is also what
``torchrun -m crdr.train.command`` starts on every rank::

    crdr train CONFIG [--set field=value ...] [--run-dir DIR]
    crdr train --resume RUN_DIR [--set steps=N ...]
    crdr export RUN_DIR -o model.safetensors [--force] [--fp32] [--discriminator FILE]

``CONFIG`` is a preset name (``stage1``, ``small-stage2``, ``tiny-stage3``, ...) or a JSON file of
:class:`~crdr.train.config.TrainConfig` fields (a run's ``config.json`` works too). Bad input raises
:class:`~crdr.errors.CrdrError` subclasses; the CLI prints one line and exits non-zero.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from crdr.cli import run_handler
from crdr.errors import ParameterError
from crdr.train.rundir import command_line

__all__ = ["main", "register", "run_export", "run_train"]

SET_HELP = "override a config field, e.g. --set steps=1000 --set lambda_a=3.6,1.8,0.8,0.4,0.1"


def _recorded(args: argparse.Namespace) -> str:
    """The command to record: the argv given to :func:`main`, else this process's."""
    return getattr(args, "command_line", None) or command_line()


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``train``: resolve the config (preset + ``--set``, or the run's own), then train."""
    from crdr.train.config import RESUME_OVERRIDABLE, TrainConfig, apply_overrides, load_config, parse_overrides
    from crdr.train.loop import train
    from crdr.train.rundir import read_run_record

    overrides = list(args.set or [])
    if args.resume:
        if args.run_dir and Path(args.run_dir) != Path(args.resume):
            raise ParameterError("--run-dir and --resume name different directories")
        record = read_run_record(args.resume)
        config = TrainConfig.from_dict(record["config"])
        if args.config and args.config != config.name and load_config(args.config).name != config.name:
            raise ParameterError(f"{args.resume} is a {config.name!r} run, not {args.config!r}")
        values = parse_overrides(overrides)
        refused = sorted(set(values) - RESUME_OVERRIDABLE)
        if refused:
            raise ParameterError(
                f"cannot change {', '.join(refused)} when resuming (allowed: {', '.join(sorted(RESUME_OVERRIDABLE))})"
            )
        config = dataclasses.replace(config, **values) if values else config
        result = train(config, run_dir=args.resume, resume=True, command=_recorded(args))
    else:
        if not args.config:
            raise ParameterError("train needs a CONFIG (preset name or JSON file) or --resume RUN_DIR")
        config = apply_overrides(load_config(args.config), overrides)
        result = train(config, run_dir=args.run_dir, command=_recorded(args))
    if not result.ranks_identical:
        return 1
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Handler of ``export``: the newest checkpoint of a run → safetensors + sidecar JSON."""
    from crdr.train.export import export

    sidecar = export(
        args.run_dir, args.output, force=args.force, half=not args.fp32, command=_recorded(args),
        discriminator_path=args.discriminator,
    )
    print(f"{args.output}: step {sidecar['training']['step']}, sha256 {sidecar['sha256']}")
    if args.discriminator:
        print(f"{args.discriminator}: sha256 {sidecar['training']['discriminator']['sha256']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``export`` to a CLI's subparsers (each sets ``handler``)."""
    train = subparsers.add_parser(
        "train",
        help="train one stage (presets: stage1-3, small-stage1-3, tiny-stage1-3)",
        description="Train one stage of CRDR. Under torchrun every rank runs this same command.",
    )
    train.add_argument("config", nargs="?", help="preset name or JSON file of config fields")
    train.add_argument("--set", action="append", metavar="FIELD=VALUE", help=SET_HELP)
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    train.add_argument("--run-dir", metavar="DIR", help="run directory (default: LOG_DIR/NAME-TIMESTAMP)")
    train.set_defaults(handler=run_train)

    export = subparsers.add_parser("export", help="export a training run's weights for coding")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("-o", "--output", required=True, help="output .safetensors file")
    export.add_argument("--force", action="store_true", help="overwrite an existing output")
    export.add_argument("--fp32", action="store_true", help="store float32 instead of float16")
    export.add_argument(
        "--discriminator", metavar="FILE",
        help="also write the discriminators (stage 3) to FILE; continue training elsewhere with "
        "--set init_from=OUTPUT --set discriminator_init_from=FILE",
    )
    export.set_defaults(handler=run_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crdr", description="crdr training commands")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m crdr.train.command``); errors print one line
    (:func:`crdr.cli.run_handler`)."""
    args = build_parser().parse_args(argv)
    if argv is not None:
        args.command_line = command_line(["python -m crdr.train.command", *argv])
    return run_handler(args)


if __name__ == "__main__":
    sys.exit(main())
