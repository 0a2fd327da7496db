"""How many more training steps would the bundled model need to meet its targets? An extrapolation.

What: reads the validation history that ``crdr export`` stores in a weights sidecar (every
validation row of every stage: bpp from the likelihoods, 8-bit PSNR and ST-LPIPS per q and β on
the first N centre crops of the validation set), codes the same crops with the classical codecs
over their whole quality sweeps, and computes, at every validation step, the BD-rate of crdr's
5-point curve against each anchor of the targets:

    β = 0    PSNR      vs JPEG 4:2:0  (target ≤ −30 %)   and vs WebP (target ≤ 0 %)
    β = max  ST-LPIPS  vs AVIF        (target ≤ −40 %)
    and the bpp at the highest q       (target ≥ 1.0)

It fits ``value = a + b · ln(step)`` (steps counted over all stages) to the rows of the last
stage (all stages if the last has fewer than 4 validations) and solves for the step where the fit meets the target. The crop BD-rates differ from the
full-image ones (tiny 256² files pay the classical codecs' headers; crdr's validation rate is its
estimate), so when ``--report`` names a ``crdr eval`` report of the same weights the fitted line
is shifted to pass through the measured full-Kodak value at the exported step: only the slope
comes from the crops.
Why: issue 6 asks, for every missed target, what training budget would close it. This is an
extrapolation of a short, noisy curve over a log axis — an order of magnitude, not a promise.

    python benchmarks/training_budget.py --weights src/crdr/bundled/default.json \\
        --report reports/kodak -o reports/training_budget.json
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KODAK = Path("/work/shared/data/kodak")
MIN_FIT_POINTS = 4  # fewer validations in the last stage: fit over all stages


@dataclass(frozen=True)
class Target:
    """One issue target: crdr at ``beta`` ('zero' or 'max') against ``anchor`` on ``metric``."""

    name: str
    beta: str
    anchor: str | None  # None: the bpp of the highest q
    metric: str  # "psnr" or "perceptual" (validation columns)
    goal: float  # BD-rate in percent (≤ goal) or bpp (≥ goal)
    report_metric: str | None = None  # column of the eval report's BD table
    rate_range: tuple[float, float] | None = None


TARGETS = (
    Target("PSNR BD-rate vs JPEG 4:2:0, β=0", "zero", "jpeg-420", "psnr", -30.0, "PSNR"),
    Target("PSNR BD-rate vs WebP, β=0", "zero", "webp", "psnr", 0.0, "PSNR"),
    Target("ST-LPIPS BD-rate vs AVIF, β=max", "max", "avif", "perceptual", -40.0, "ST-LPIPS", (0.1, 0.5)),
    Target("bpp at the highest q", "max", None, "bpp", 1.0),
)


def _stages(sidecar: dict) -> list[dict]:
    stages = list(sidecar.get("previous_stages") or []) + [sidecar["training"]]
    if not all(stage.get("validation_history") for stage in stages):
        raise SystemExit("the sidecar has no validation_history for every stage (export with crdr >= this version)")
    return stages


def _history(stages: list[dict]) -> tuple[list[dict], int]:
    """All validation rows with a ``total_step`` over the stages, and the first step of the last stage."""
    rows, offset, last_start = [], 0, 0
    for stage in stages:
        last_start = offset
        for row in stage["validation_history"]:
            rows.append(dict(row, total_step=offset + int(row["step"]), stage=int(stage["stage"])))
        offset += int(stage["step"])
    return rows, last_start


def _crops(config: dict, root: Path) -> list[np.ndarray]:
    from crdr.data import validation_images
    from crdr.image_io import from_model_output

    images = validation_images(root, int(config["validation_images"]), int(config["validation_crop"]))
    return [from_model_output(image[None]) for image in images]


def _anchor_curve(codec_name: str, crops: list[np.ndarray], metric: str) -> tuple[list[float], list[float]]:
    """Mean bpp (real bytes) and metric over the crops at each quality of the codec's sweep."""
    from crdr import baselines, metrics

    codec = baselines.get_codec(codec_name)
    measure = metrics.psnr if metric == "psnr" else metrics.StLpips()
    rates, values = [], []
    for quality in codec.qualities:
        bpp = value = 0.0
        for crop in crops:
            data = codec.encode(crop, quality)
            bpp += len(data) * 8 / (crop.shape[0] * crop.shape[1])
            value += measure(crop, codec.decode(data))
        rates.append(bpp / len(crops))
        values.append(value / len(crops))
    return rates, values


def _pareto(rates: list[float], values: list[float], lower_is_better: bool) -> tuple[list[float], list[float]]:
    points = sorted(zip(rates, values))
    kept: list[tuple[float, float]] = []
    for rate, value in points:
        score = -value if lower_is_better else value
        if not kept or score > (-kept[-1][1] if lower_is_better else kept[-1][1]):
            kept.append((rate, value))
    return [r for r, _ in kept], [v for _, v in kept]


def _crdr_curve(rows: list[dict], step: int, beta: float | None, metric: str) -> tuple[list[float], list[float]]:
    chosen = [r for r in rows if r["total_step"] == step and (beta is None or r["beta"] in (None, beta))]
    chosen.sort(key=lambda r: r["q"])
    return [r["bpp"] for r in chosen], [r[metric] for r in chosen]


def _fit(steps: list[int], values: list[float]) -> tuple[float, float] | None:
    if len(steps) < 2:
        return None
    slope, intercept = np.polyfit(np.log(np.asarray(steps, float)), np.asarray(values, float), 1)
    return float(intercept), float(slope)


def _report_value(report: Path | None, target: Target, beta_value: float) -> float | None:
    """The full-image value of a target in a ``crdr eval`` report (points.csv), or None."""
    if report is None:
        return None
    from crdr.bd_rate import bd_rate
    from crdr.errors import CrdrError

    with (report / "points.csv").open(newline="") as handle:
        points = list(csv.DictReader(handle))
    crdr_rows = [p for p in points if p["codec"] == "crdr" and math.isclose(float(p["beta"]), beta_value)]
    if not crdr_rows:
        return None
    crdr_rows.sort(key=lambda p: float(p["q"]))
    if target.anchor is None:
        return float(crdr_rows[-1]["bpp"])
    anchor_rows = [p for p in points if p["codec"] == target.anchor]
    column = target.report_metric
    lower = column != "PSNR"
    try:
        anchor = _pareto([float(p["bpp"]) for p in anchor_rows], [float(p[column]) for p in anchor_rows], lower)
        test = _pareto([float(p["bpp"]) for p in crdr_rows], [float(p[column]) for p in crdr_rows], lower)
        return bd_rate(*anchor, *test, lower_is_better=lower, rate_range=target.rate_range)
    except (CrdrError, KeyError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="src/crdr/bundled/default.json", help="weights sidecar JSON")
    parser.add_argument("--report", default=None, help="crdr eval report folder of the same weights (calibration)")
    parser.add_argument("--validation-root", default=None, help="validation images (default: the run's, else Kodak)")
    parser.add_argument("-o", "--output", default="reports/training_budget.json", help="JSON output (.md beside it)")
    args = parser.parse_args(argv)

    import torch

    from crdr.bd_rate import bd_rate
    from crdr.errors import CrdrError

    torch.set_num_threads(1)
    sidecar = json.loads(Path(args.weights).read_text())
    stages = _stages(sidecar)
    rows, last_start = _history(stages)
    last = stages[-1]
    config = last["config"]
    root = Path(args.validation_root or config.get("validation_root") or KODAK)
    if not root.is_dir():
        root = KODAK
    max_beta = float(sidecar["config"]["max_beta"])
    crops = _crops(config, root)
    report = Path(args.report) if args.report else None
    exported_step = max(r["total_step"] for r in rows)

    anchors: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    results = []
    for target in TARGETS:
        beta = 0.0 if target.beta == "zero" else max_beta
        lower = target.metric == "perceptual"
        if target.anchor is not None and (target.anchor, target.metric) not in anchors:
            anchors[(target.anchor, target.metric)] = _pareto(*_anchor_curve(target.anchor, crops, target.metric), lower)
        series = []
        for step in sorted({r["total_step"] for r in rows}):
            # Stage-2 rows have no β (the model had none): they count as β = 0 only.
            stage_rows = [r for r in rows if r["total_step"] == step]
            if target.beta == "max" and all(r["beta"] is None for r in stage_rows):
                continue
            rates, values = _crdr_curve(rows, step, None if target.beta == "zero" else beta, target.metric)
            if target.beta == "zero":
                rates, values = _crdr_curve([r for r in rows if r["beta"] in (None, 0.0)], step, None, target.metric)
            if target.anchor is None:
                series.append((step, max(rates)))
                continue
            try:
                series.append((step, bd_rate(*anchors[(target.anchor, target.metric)],
                                             *_pareto(rates, values, lower), lower_is_better=lower,
                                             rate_range=target.rate_range)))
            except CrdrError:
                continue
        fitted = [(s, v) for s, v in series if s > last_start]
        if len(fitted) < MIN_FIT_POINTS:
            fitted = series
        fit = _fit([s for s, _ in fitted], [v for _, v in fitted])
        measured = _report_value(report, target, beta)
        entry = {"target": target.name, "goal": target.goal, "crop_series": series,
                 "fit_steps": [s for s, _ in fitted],
                 "fit_points": len(fitted), "full_image_value": measured}
        if fit is not None:
            intercept, slope = fit
            at_export = intercept + slope * math.log(exported_step)
            shift = (measured - at_export) if measured is not None else 0.0
            entry.update(slope_per_ln_step=slope, crop_value_at_export=at_export, shift=shift)
            improving = slope > 0 if target.anchor is None else slope < 0
            if not improving:
                entry["steps_needed"] = None
                entry["verdict"] = "no improvement trend in the fitted rows: cannot extrapolate"
            else:
                needed = math.exp((target.goal - shift - intercept) / slope)
                entry["steps_needed"] = max(needed, exported_step)
                entry["verdict"] = (
                    "met" if needed <= exported_step else f"about {needed:,.0f} steps in total ({needed / exported_step:,.0f}× the current {exported_step:,})"
                )
        else:
            entry["verdict"] = "too few validation rows to fit"
        results.append(entry)

    lines = [
        f"# Training budget extrapolation: {Path(args.weights).name}",
        "",
        f"{datetime.date.today()}; {exported_step:,} steps over {len(stages)} stage(s); fit over the "
        f"validations of the last stage (all stages where it has < {MIN_FIT_POINTS}) on {len(crops)} "
        f"centre crops of {root}; "
        + ("shifted to the full-image values of " + str(report) if report else "crop values, not calibrated") + ".",
        "",
        "| target | goal | full-image value now | crop value now (fit) | slope per ln(step) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for entry in results:
        def fmt(value, form="{:+.1f}"):
            return "n/a" if value is None else form.format(value)
        form = "{:.3f}" if "bpp" in entry["target"] else "{:+.1f} %"
        lines.append(
            f"| {entry['target']} | {fmt(entry['goal'], form)} | {fmt(entry['full_image_value'], form)} | "
            f"{fmt(entry.get('crop_value_at_export'), form)} | {fmt(entry.get('slope_per_ln_step'), '{:+.3f}')} | "
            f"{entry['verdict']} |"
        )
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"date": str(datetime.date.today()), "weights": args.weights,
                                  "exported_step": exported_step, "results": results}, indent=1))
    output.with_suffix(".md").write_text(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
