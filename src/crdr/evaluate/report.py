"""The report of one evaluation run, from the per-image rows: means per point, FID/KID per point,
the BD-rate table, the plots, and the files that hold them.

What it writes (besides ``per_image.csv``, which the store keeps)::

    REPORT_DIR/points.csv|json   means over images per point (+ FID/KID per point, if asked)
    REPORT_DIR/bd_rate.md        BD-rate of crdr at each β against each baseline (PSNR, ST-LPIPS)
    REPORT_DIR/plots/*.png|svg   bpp–metric curves and the distortion–realism plane at fixed q

Why: published numbers are means of per-image values (spec §15), so a point's value is the mean
over the images of this run of the stored per-image values; FID and KID are not per-image values,
so they are computed once per point from the cached features of all images' HiFiC patches. A NaN
per-image value (MS-SSIM of an image too small for it) is left out of its mean.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from crdr.errors import CrdrError
from crdr.evaluate.plan import CRDR, IMAGE_METRICS, BaselinePoint, CrdrPoint, Request, slug, value_text
from crdr.evaluate.store import Store, cell, csv_text, write_text

POINTS_CSV = "points.csv"
POINTS_JSON = "points.json"
BD_TABLE = "bd_rate.md"

BD_METRICS = (("PSNR", False), ("ST-LPIPS", True))  # (metric, lower is better)
BD_RESTRICTED_RANGE = (0.1, 0.5)  # bpp: the low-rate range the paper focuses on
DR_MAX_LINES = 5  # q values drawn in the distortion–realism plane


@dataclass
class EvaluationReport:
    """What :func:`crdr.evaluate.evaluate` did and wrote.

    ``points``: one dict per grid point (``codec``, ``label``, ``q``, ``beta``, ``quality``,
    ``images``, ``bpp``, ``bpp_estimated``, metric columns, ``FID[extractor]``…), means over the
    images; ``encoded``/``decoded``: files coded in this run (0 when everything was reused);
    ``skipped``: rows taken from an earlier run; ``bd_notes``: why a BD row is n/a.
    """

    report_dir: Path
    images: list[str]
    files: dict[str, Path]
    plots: list[Path]
    points: list[dict]
    bd_rows: list
    bd_table: str
    notices: list[str]
    encoded: int = 0
    decoded: int = 0
    skipped: int = 0
    seconds: float = 0.0
    bd_notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunFacts:
    """What a run measured and how: the settings and counts the report states.

    ``q_grid``/``beta_grid``: as coded (a single-rate model reduces them), empty without crdr;
    ``extractor``: the FID/KID feature extractor's name, ``""`` when no set metric is measured.
    """

    request: Request
    has_crdr: bool
    model_source: str | None
    model_hex: str
    q_grid: tuple[float, ...]
    beta_grid: tuple[float, ...]
    codecs: list
    image_columns: list[str]
    set_columns: list[str]
    extractor: str
    paper_name: str | None
    paper_points: dict[float, list[dict]]
    notices: list[str]
    encoded: int
    decoded: int
    skipped: int
    started: float  # time.perf_counter() at the start of the run

    @property
    def set_labels(self) -> list[str]:
        """``FID[inception-v3]``-style column names: a set metric is named with its extractor."""
        return [f"{column}[{self.extractor}]" for column in self.set_columns]


# ---------------------------------------------------------------------------------------------
# Means and FID/KID per point
# ---------------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float | None:
    if not values:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN (e.g. MS-SSIM of tiny images)
        return float(np.nanmean(np.asarray(values, dtype=np.float64)))


def curve_label(point: dict) -> str:
    """The curve a point belongs to: crdr at one β, or one baseline."""
    return f"crdr β={value_text(point['beta'])}" if point["codec"] == CRDR else point["codec"]


def summarise_points(crdr_points: Sequence[CrdrPoint], baseline_points: Sequence[BaselinePoint], store: Store,
                     names: Sequence[str], *, image_columns: Sequence[str], set_columns: Sequence[str],
                     extractor: str, note: Callable[[str], None]) -> list[dict]:
    """One summary per grid point: the means over ``names`` of the stored rows, and FID/KID of
    the cached features of all their patches against the originals'."""
    grid = [(CRDR, point.label, {"q": point.q, "beta": point.beta}) for point in crdr_points]
    grid += [(point.codec.name, point.label, {"quality": point.quality}) for point in baseline_points]
    reference = [np.load(store.reference_path(image)) for image in names] if set_columns else []
    too_few = False
    points: list[dict] = []
    for codec_name, label, settings in grid:
        members = [store.rows[(image, codec_name, label)] for image in names]
        summary = {"codec": codec_name, "point": label, "q": None, "beta": None, "quality": None, **settings,
                   "images": len(members)}
        summary["label"] = curve_label(summary)
        summary["bpp"] = _mean([float(row["bpp"]) for row in members])
        if codec_name == CRDR:
            summary["bpp_estimated"] = _mean([float(row["bpp_estimated"]) for row in members])
        for column in image_columns:
            summary[column] = _mean([float(row[column]) for row in members])
        if set_columns:
            decoded = [np.load(store.feature_path(codec_name, label, image)) for image in names]
            values = _set_metrics(reference, decoded, set_columns, extractor)
            if values is not None:
                summary.update(values)
            elif not too_few:
                too_few = True
                note(f"{'/'.join(set_columns)} need ≥ 2 patches of 256×256 per set; these images "
                     f"give {sum(len(f) for f in reference)}: skipped")
        points.append(summary)
    return points


def _set_metrics(reference: list[np.ndarray], decoded: list[np.ndarray], set_columns: Sequence[str],
                 extractor: str) -> dict[str, float] | None:
    """FID/KID of one point (``FID[extractor]``, ``KID[…]``, ``KID_std[…]``, ``patches``), or None
    if there are too few patches."""
    from crdr import metrics

    real = [features for features in reference if len(features)]
    fake = [features for features in decoded if len(features)]
    if sum(len(f) for f in real) < 2 or sum(len(f) for f in fake) < 2:
        return None
    real_all, fake_all = np.concatenate(real), np.concatenate(fake)
    values: dict[str, float] = {}
    if "FID" in set_columns:
        values[f"FID[{extractor}]"] = metrics.fid_from_features(real_all, fake_all)
    if "KID" in set_columns:
        values[f"KID[{extractor}]"], values[f"KID_std[{extractor}]"] = metrics.kid_from_features(real_all, fake_all)
    values["patches"] = len(fake_all)
    return values


# ---------------------------------------------------------------------------------------------
# BD-rate
# ---------------------------------------------------------------------------------------------


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def pareto(points: Sequence[dict], metric: str, lower_is_better: bool) -> list[dict]:
    """The points of a curve that are better than every cheaper point (sorted by bpp).

    BD-rate needs a metric that strictly improves with rate; a sweep point that is not better
    than a smaller file (JPEG at quality 1 vs 3, or ties) carries no information for it.
    """
    sign = -1.0 if lower_is_better else 1.0
    kept: list[dict] = []
    for point in sorted((p for p in points if _finite(p.get(metric)) and _finite(p.get("bpp"))),
                        key=lambda p: (p["bpp"], -sign * p[metric])):
        if kept and (point["bpp"] <= kept[-1]["bpp"] or sign * point[metric] <= sign * kept[-1][metric]):
            continue
        kept.append(point)
    return kept


def _curves(points: Sequence[dict]) -> dict[str, list[dict]]:
    curves: dict[str, list[dict]] = {}
    for point in points:
        curves.setdefault(curve_label(point), []).append(point)
    return curves


def _published_label(beta: float) -> str:
    return f"paper CRDR β={value_text(beta)} (published)"


def bd_rows(points: list[dict], columns: Sequence[str], paper_points: dict[float, list[dict]],
            has_crdr: bool) -> tuple[list, list[str]]:
    """BD rows: crdr at each β (and the published curves, if any) against each baseline, on
    PSNR and ST-LPIPS, over all rates and restricted to 0.1–0.5 bpp; and why a row is n/a."""
    from crdr.bd_rate import BdRow, bd_row

    curves = _curves(points)
    anchors = [label for label, members in curves.items() if members[0]["codec"] != CRDR]
    tests = [label for label, members in curves.items() if members[0]["codec"] == CRDR]
    for beta, published in sorted(paper_points.items()):
        curves[_published_label(beta)] = published
        tests.append(_published_label(beta))
    pairs = [(test, anchor) for test in tests for anchor in anchors]
    if not has_crdr and not paper_points and len(anchors) > 1:
        pairs = [(test, anchors[0]) for test in anchors[1:]]  # baselines only: against the first
    rows, notes = [], []
    for metric, lower_is_better in BD_METRICS:
        if metric not in columns:
            continue
        for rate_range in (None, BD_RESTRICTED_RANGE):
            for test, anchor in pairs:
                test_points = pareto(curves[test], metric, lower_is_better)
                anchor_points = pareto(curves[anchor], metric, lower_is_better)
                if not test_points and test.startswith("paper"):
                    continue  # the paper has no value of this metric
                try:
                    rows.append(bd_row(
                        test, anchor, metric,
                        [p["bpp"] for p in anchor_points], [p[metric] for p in anchor_points],
                        [p["bpp"] for p in test_points], [p[metric] for p in test_points],
                        lower_is_better=lower_is_better, rate_range=rate_range,
                    ))
                except CrdrError as error:
                    rows.append(BdRow(test, anchor, metric, math.nan, None, rate_range))
                    span = f"{rate_range[0]:g}–{rate_range[1]:g} bpp" if rate_range else "all rates"
                    notes.append(f"{test} vs {anchor}, {metric}, {span}: {error}")
    return rows, notes


def bd_markdown(table: str, notes: list[str], root: Path, count: int) -> str:
    """``bd_rate.md``: the table, how to read it, and why rows are n/a."""
    lines = [
        f"# BD-rate on {root.resolve().name} ({count} images)",
        "",
        "Negative BD-rate: the test codec needs fewer bits than the anchor for the same quality. "
        "BD-metric is test − anchor in the metric's units (PSNR dB; ST-LPIPS, lower is better). "
        "Rates are real file sizes. Each curve is reduced to its Pareto points first (a point "
        "no better than a smaller file is dropped); BD needs ≥ 4 points per curve.",
        "",
        table,
    ]
    if notes:
        lines += ["", "Rows marked n/a:", ""] + [f"- {message}" for message in notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def draw_plots(report_dir: Path, points: list[dict], columns: Sequence[str], set_labels: Sequence[str],
               paper_points: dict[float, list[dict]], title: str) -> list[Path]:
    """``plots/rd_<metric>.png|svg`` per metric and ``plots/distortion_realism.png|svg``."""
    from crdr.plot import Curve, plot_distortion_realism, plot_rd

    written: list[Path] = []
    curves = _curves(points)
    plot_dir = report_dir / "plots"
    for metric in [c for c in IMAGE_METRICS if c in columns] + list(set_labels):
        series = [Curve(label, [p for p in members if _finite(p.get(metric))])
                  for label, members in curves.items()]
        for beta, published in sorted(paper_points.items()):
            with_metric = [p for p in published if _finite(p.get(metric))]
            if with_metric:
                series.append(Curve(_published_label(beta), with_metric, style="--"))
        series = [curve for curve in series if curve.points]
        if not series:
            continue
        ylabel = metric + (" (lower is better)" if metric.startswith(("FID", "KID")) else "")
        written += plot_rd(series, metric, plot_dir / f"rd_{slug(metric.lower())}", title=title,
                           ylabel=ylabel if metric.startswith(("FID", "KID")) else None)
    # The distortion–realism plane: at fixed q, β moves the reconstruction along a curve.
    crdr_points = [p for p in points if p["codec"] == CRDR]
    realism = next((c for c in ("ST-LPIPS", "LPIPS", "DISTS") if c in columns), None)
    betas = sorted({p["beta"] for p in crdr_points})
    if crdr_points and len(betas) > 1 and realism and "PSNR" in columns:
        q_values = sorted({p["q"] for p in crdr_points})
        if len(q_values) > DR_MAX_LINES:
            picks = np.linspace(0, len(q_values) - 1, DR_MAX_LINES).round().astype(int)
            q_values = [q_values[i] for i in sorted(set(picks.tolist()))]
        plane = [{"q": p["q"], "beta": p["beta"], "PSNR": p["PSNR"], realism: p[realism]}
                 for p in crdr_points if p["q"] in q_values and _finite(p.get("PSNR")) and _finite(p.get(realism))]
        if plane:
            written += plot_distortion_realism(plane, plot_dir / "distortion_realism", x="PSNR", y=realism,
                                               group="q", annotate="beta", title=title)
    return [Path(path) for path in written]


# ---------------------------------------------------------------------------------------------
# The files
# ---------------------------------------------------------------------------------------------


def points_csv(points: list[dict], image_columns: Sequence[str], set_labels: Sequence[str]) -> str:
    """``points.csv``: one line per point; a KID column is followed by its std."""
    columns = ["codec", "label", "point", "q", "beta", "quality", "images", "bpp", "bpp_estimated",
               *image_columns]
    for label in set_labels:
        columns.append(label)
        if label.startswith("KID["):
            columns.append(label.replace("KID[", "KID_std[", 1))
    if set_labels:
        columns.append("patches")
    return csv_text(columns, ({column: cell(point.get(column)) for column in columns} for point in points))


def _json_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    return value


def points_json(points: list[dict], facts: RunFacts, bd_rows: list, bd_notes: list[str], seconds: float) -> str:
    """``points.json``: the run's settings, notices, BD rows and counts, then the points."""
    request = facts.request
    summary = {
        "dataset": str(request.root.resolve()),
        "images": request.names,
        "model": facts.model_source,
        "model_id": facts.model_hex or None,
        "q": list(facts.q_grid),
        "beta": list(facts.beta_grid),
        "baselines": {codec.name: codec.description for codec in facts.codecs},
        "metrics": facts.image_columns + facts.set_labels,
        "fid_features": facts.extractor or None,
        "paper": facts.paper_name,
        "notices": facts.notices,
        "bd_rate": [dataclasses.asdict(row) for row in bd_rows],
        "bd_notes": bd_notes,
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run": {"encoded": facts.encoded, "decoded": facts.decoded, "reused_rows": facts.skipped,
                "seconds": round(seconds, 1)},
        "points": points,
    }
    return json.dumps(_json_value(summary), indent=1, ensure_ascii=False) + "\n"


def write_report(report_dir: Path, csv_path: Path, points: list[dict], facts: RunFacts,
                 plots: bool) -> EvaluationReport:
    """Write ``points.csv``, ``bd_rate.md``, the plots (if ``plots``) and ``points.json``."""
    from crdr.bd_rate import format_bd_table

    request = facts.request
    # Published points are means over the whole data set: no BD-rate against them on a part.
    rows, notes = bd_rows(points, facts.image_columns, facts.paper_points if request.whole_folder else {},
                          facts.has_crdr)
    bd_table = format_bd_table(rows) if rows else "(no BD-rate rows: needs PSNR or ST-LPIPS and two codecs)"
    title = f"{request.root.resolve().name} ({len(request.images)} images)"
    figures = (draw_plots(report_dir, points, facts.image_columns, facts.set_labels, facts.paper_points, title)
               if plots else [])
    files = {"per_image_csv": csv_path, "points_csv": report_dir / POINTS_CSV,
             "points_json": report_dir / POINTS_JSON, "bd_table": report_dir / BD_TABLE}
    write_text(files["points_csv"], points_csv(points, facts.image_columns, facts.set_labels))
    write_text(files["bd_table"], bd_markdown(bd_table, notes, request.root, len(request.images)))
    seconds = time.perf_counter() - facts.started
    write_text(files["points_json"], points_json(points, facts, rows, notes, seconds))
    return EvaluationReport(
        report_dir=report_dir, images=request.names, files=files, plots=figures, points=points, bd_rows=rows,
        bd_table=bd_table, notices=facts.notices, encoded=facts.encoded, decoded=facts.decoded,
        skipped=facts.skipped, seconds=seconds, bd_notes=notes,
    )
