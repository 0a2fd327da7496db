"""The ``crdr eval`` subcommand: :func:`register` adds it to the main CLI's subparsers (see
:data:`crdr.cli.EXTRA_COMMANDS`), :func:`run_eval` runs it and prints the summary and BD table.

Why apart from the run: the CLI builds this parser for ``crdr eval --help`` and for argument
errors, which must not load torch or numpy; the run is imported only by :func:`run_eval`.
"""

from __future__ import annotations

import argparse

from crdr.errors import WeightsError
from crdr.evaluate.plan import (
    DEFAULT_BASELINES,
    DEFAULT_BETAS,
    DEFAULT_FID_FEATURES,
    DEFAULT_METRICS,
    DEFAULT_Q,
    FID_FEATURES,
)

__all__ = ["register", "run_eval"]


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``crdr eval``."""
    from crdr.evaluate.run import evaluate

    model_name = args.model
    if args.no_crdr or (model_name is not None and str(model_name).lower() == "none"):
        model_name = None
    elif model_name is None:
        model_name = "default"
    try:
        report = evaluate(
            args.dataset_dir, model_name, q_values=args.q, betas=args.beta, baselines=args.baselines,
            metrics=args.metrics, fid_features=args.fid_features, report_dir=args.output, limit=args.limit,
            paper=args.paper, tile_size=args.tile_size, keep_files=args.keep_files, progress=not args.quiet,
            threads=args.threads, plots=not args.no_plots, device=args.device,
        )
    except WeightsError as error:
        if args.model is None:
            raise WeightsError(f"{error}; pass --model WEIGHTS, or --no-crdr for baselines only") from None
        raise
    print(f"{len(report.images)} images: {report.encoded} files encoded, {report.decoded} decoded, "
          f"{report.skipped} rows reused, {report.seconds:.1f} s")
    print()
    print(report.bd_table)
    if report.bd_notes:
        print(f"({len(report.bd_notes)} BD rows n/a: reasons in {report.files['bd_table']})")
    print()
    for path in list(report.files.values()):
        print(f"wrote {path}")
    if report.plots:
        print(f"wrote {len(report.plots)} plot files in {report.report_dir / 'plots'}")
    return 0


def register(subparsers) -> None:
    """Add ``crdr eval`` to the CLI (see :data:`crdr.cli.EXTRA_COMMANDS`)."""
    from crdr import cli

    parser = subparsers.add_parser(
        "eval", help="RD / realism evaluation of crdr and classical codecs on an image folder",
        description="Code every image at every grid point to real files, decode, measure, and write "
                    "per-image CSV, per-point means (CSV, JSON), BD-rate table and plots. Resumable.",
    )
    parser.add_argument("dataset_dir", help="folder of images (searched recursively)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", default=None,
                       help="crdr weights file or bundled name (default: bundled 'default'; 'none' = no crdr)")
    which.add_argument("--no-crdr", action="store_true", help="evaluate the baselines only")
    parser.add_argument("--q", default=DEFAULT_Q, help=f"q grid: start:stop:step and/or list (default {DEFAULT_Q})")
    parser.add_argument("--beta", default=DEFAULT_BETAS, help=f"β values decoded from each file (default {DEFAULT_BETAS})")
    parser.add_argument("--baselines", default=DEFAULT_BASELINES,
                        help=f"classical codecs, comma-separated, or 'none' (default {DEFAULT_BASELINES}; "
                             f"also jpeg-444)")
    parser.add_argument("--metrics", default=DEFAULT_METRICS,
                        help=f"comma-separated from psnr, ms-ssim, stlpips, lpips, dists, fid, kid "
                             f"(default {DEFAULT_METRICS})")
    parser.add_argument("--fid-features", choices=FID_FEATURES, default=DEFAULT_FID_FEATURES,
                        help="FID/KID feature extractor: inception-v3 (published FID) or alexnet-stlpips "
                             "(offline stand-in, not comparable with published FID)")
    parser.add_argument("-o", "--output", default=None, help="report folder (default reports/<dataset name>)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (sorted by name)")
    parser.add_argument("--paper", choices=("auto", "kodak", "clic", "div2k", "none"), default="auto",
                        help="overlay the published CRDR points of this data set (auto: Kodak is detected)")
    parser.add_argument("--tile-size", type=int, default=None, help="crdr tile size (default: the codec's)")
    parser.add_argument("--keep-files", action="store_true", help="also keep every coded file under REPORT_DIR/files")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's; 1 is often fastest on a busy machine)")
    parser.add_argument("--no-plots", action="store_true", help="skip the figures")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    cli.add_device(parser)
    parser.set_defaults(handler=run_eval)
