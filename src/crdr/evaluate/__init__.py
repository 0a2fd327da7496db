"""Evaluation of crdr and classical codecs on an image folder, following the paper's protocol.

What: ``crdr eval DATASET_DIR`` (and :func:`evaluate`) codes every image at every grid point to
real bytes, decodes, and measures: crdr at every ``q``, each file decoded at every ``beta``;
each baseline (:mod:`crdr.baselines`) at every quality of its sweep. It writes

    REPORT_DIR/per_image.csv     one row per (image, codec, point): bytes, bpp, metrics, seconds
    REPORT_DIR/points.csv|json   means over images per point (+ FID/KID per point, if asked)
    REPORT_DIR/bd_rate.md        BD-rate of crdr at each β against each baseline (PSNR, ST-LPIPS)
    REPORT_DIR/plots/*.png|svg   bpp–metric curves and the distortion–realism plane at fixed q

Why: published numbers are means of per-image values with the rate taken from real files
(spec §15); estimating the rate from likelihoods or pooling MSE over a data set gives different
numbers. The likelihood estimate is still reported beside crdr's real bpp, because the gap
between the two is the entropy coder's overhead.

Data flow for one image::

    image ──load (RGB, alpha dropped)──► rgb (H, W, 3) u8
      crdr:     rgb ─encode_at(q)─► .crdr bytes ─┬─ decode(β₁) ─► metrics(rgb, x̂) ─► row
                                                 └─ decode(β₂) ─► metrics(rgb, x̂) ─► row
      baseline: rgb ─encode(quality)─► bytes ─decode─► metrics ─► row
      FID/KID:  hific_patches(x̂) ─► features (cached .npy) ─► per point, over all images

Resumable: rows already in ``per_image.csv`` (with every requested metric filled in) are not
computed again, so an interrupted run continues where it stopped and a rerun with an extra
metric or baseline only does the missing work. The CSV is rewritten atomically after each image.

Layout (one job per module)::

    plan.py      the checked arguments: metric and codec names, q/β grids, images, point labels
    store.py     the resumable store: per_image.csv rows and the cached FID/KID feature files
    run.py       evaluate(): load the model and codecs, code and measure what the store lacks
    report.py    means and FID/KID per point, BD-rate table, plots, points.csv|json, bd_rate.md
    command.py   ``crdr eval``: register(subparsers) and run_eval(args)

``import crdr.evaluate`` loads no torch or numpy (``crdr eval --help`` imports it): the names
defined in run.py and report.py are imported on first use (PEP 562).
"""

from __future__ import annotations

from crdr.lazy import lazy_attributes

from crdr.evaluate.command import register, run_eval
from crdr.evaluate.plan import IMAGE_SUFFIXES, baseline_point, crdr_point, list_images, parse_grid, parse_metrics
from crdr.evaluate.store import PER_IMAGE_CSV  # with IMAGE_SUFFIXES: read by tests and callers

__all__ = [
    "EvaluationReport",
    "estimated_bits",
    "evaluate",
    "parse_grid",
    "parse_metrics",
    "list_images",
    "crdr_point",
    "baseline_point",
    "register",
    "run_eval",
]

# Public name -> module that defines it (it imports numpy or torch); imported when first read.
_LAZY = {
    "evaluate": "crdr.evaluate.run",
    "estimated_bits": "crdr.evaluate.run",
    "EvaluationReport": "crdr.evaluate.report",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
