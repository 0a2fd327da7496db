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
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import io
import json
import math
import os
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from crdr.errors import CrdrError, FormatError, ParameterError, WeightsError
from crdr.suffixes import IMAGE_SUFFIXES

__all__ = [
    "EvaluationReport",
    "estimated_bits",
    "evaluate",
    "parse_grid",
    "parse_metrics",
    "list_images",
    "register",
    "run_eval",
]

# User-facing metric names → report column names (the column names match paper_results' keys).
METRIC_NAMES = {
    "psnr": "PSNR",
    "ms-ssim": "MS-SSIM",
    "msssim": "MS-SSIM",
    "stlpips": "ST-LPIPS",
    "st-lpips": "ST-LPIPS",
    "lpips": "LPIPS",
    "dists": "DISTS",
    "fid": "FID",
    "kid": "KID",
}
IMAGE_METRICS = ("PSNR", "MS-SSIM", "ST-LPIPS", "LPIPS", "DISTS")  # one value per image
SET_METRICS = ("FID", "KID")  # one value per point, from the patches of all images
_PERCEPTUAL = {"ST-LPIPS": "st-lpips", "LPIPS": "lpips", "DISTS": "dists"}

DEFAULT_Q = "0:4:0.25"
DEFAULT_BETAS = "0,3.84"
DEFAULT_BASELINES = "jpeg-420,webp,avif,jxl"
DEFAULT_METRICS = "psnr,ms-ssim,stlpips,lpips,dists"
DEFAULT_FID_FEATURES = "inception-v3"

BD_METRICS = (("PSNR", False), ("ST-LPIPS", True))  # (metric, lower is better)
BD_RESTRICTED_RANGE = (0.1, 0.5)  # bpp: the low-rate range the paper focuses on
DR_MAX_LINES = 5  # q values drawn in the distortion–realism plane

CSV_COLUMNS = (
    "image", "codec", "point", "q", "beta", "quality", "width", "height", "bytes", "bpp",
    "bpp_estimated", *IMAGE_METRICS, "encode_s", "decode_s", "model",
)
PER_IMAGE_CSV = "per_image.csv"
POINTS_CSV = "points.csv"
POINTS_JSON = "points.json"
BD_TABLE = "bd_rate.md"
CRDR = "crdr"


# ---------------------------------------------------------------------------------------------
# Parsing the grid and names
# ---------------------------------------------------------------------------------------------


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ParameterError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ParameterError(f"{what}: {text!r} is not a finite number")
    return value


def parse_grid(text: str | Sequence[float], what: str = "grid") -> tuple[float, ...]:
    """``"0:4:0.25"`` (start:stop:step, stop included), ``"0,3.84"``, or a mix such as
    ``"0:1:0.5,3"`` → sorted distinct values. A sequence of numbers is accepted as is."""
    if not isinstance(text, str):
        values = [_number(str(value), what) for value in text]
    else:
        values = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            if ":" in item:
                parts = item.split(":")
                if len(parts) != 3:
                    raise ParameterError(f"{what}: ranges are start:stop:step, got {item!r}")
                start, stop, step = (_number(part, what) for part in parts)
                if step <= 0 or stop < start:
                    raise ParameterError(f"{what}: {item!r} needs step > 0 and stop ≥ start")
                count = int(math.floor((stop - start) / step + 1e-9)) + 1
                values += [start + index * step for index in range(count)]
            else:
                values.append(_number(item, what))
    rounded = sorted({round(value, 6) for value in values})
    if not rounded:
        raise ParameterError(f"{what}: no values given")
    return tuple(rounded)


def _names(text: str | Sequence[str] | None) -> list[str]:
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [item.strip().lower() for item in items if item.strip()]
    return [] if names == ["none"] else list(dict.fromkeys(names))


def parse_metrics(text: str | Sequence[str]) -> list[str]:
    """Metric names (``psnr, ms-ssim, stlpips, lpips, dists, fid, kid``) → report column names.
    Raises :class:`ParameterError` naming the choices for an unknown name."""
    columns = []
    for name in _names(text):
        if name not in METRIC_NAMES:
            choices = "psnr, ms-ssim, stlpips, lpips, dists, fid, kid"
            raise ParameterError(f"unknown metric {name!r}; choose from {choices}")
        columns.append(METRIC_NAMES[name])
    if not columns:
        raise ParameterError("no metrics given")
    return list(dict.fromkeys(columns))


def list_images(dataset_dir: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Image files under ``dataset_dir`` (recursively, sorted by relative path), the first
    ``limit`` of them if given."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise CrdrError(f"not a directory: {root}")
    if limit is not None and limit < 1:
        raise ParameterError(f"--limit must be ≥ 1, got {limit}")
    images = sorted(
        (path for path in root.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda path: path.relative_to(root).as_posix(),
    )
    if not images:
        raise CrdrError(f"no images in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return images[:limit] if limit is not None else images


def _text(value: float) -> str:
    """Short stable text of a grid value: 2 → "2", 0.25 → "0.25", 3.84 → "3.84"."""
    return format(round(float(value), 6), "g")


def crdr_point(q: float, beta: float) -> str:
    return f"q={_text(q)} beta={_text(beta)}"


def baseline_point(quality: int) -> str:
    return f"quality={quality}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "_"


def _looks_like_kodak(root: Path, images: Sequence[Path]) -> bool:
    names = {path.name.lower() for path in images}
    return "kodak" in root.resolve().name.lower() or {f"kodim{i:02d}.png" for i in range(1, 25)} <= names


# ---------------------------------------------------------------------------------------------
# Rows and the per-image CSV
# ---------------------------------------------------------------------------------------------

Row = dict  # CSV cells as strings, keyed by CSV_COLUMNS
Key = tuple  # (image, codec, point)


def _cell(value: float | int | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # round-trips exactly; "nan" / "inf" for unmeasurable / identical
    return str(value)


def _float(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _read_rows(path: Path) -> tuple[dict[Key, Row], int]:
    """Rows of an existing per-image CSV (later rows win); also how many malformed rows (e.g. a
    line cut by a crash) were dropped."""
    rows: dict[Key, Row] = {}
    dropped = 0
    if not path.exists():
        return rows, dropped
    with open(path, newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            row = {column: (record.get(column) or "") for column in CSV_COLUMNS}
            if not (row["image"] and row["codec"] and row["point"]) or _float(row["bytes"]) is None:
                dropped += 1
                continue
            rows[(row["image"], row["codec"], row["point"])] = row
    return rows, dropped


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _write_rows(path: Path, rows: Iterable[Row]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write_text_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


class _Measure:
    """The per-image metrics that work here, and the FID/KID feature extractor (or None)."""

    def __init__(self, columns: Sequence[str], fid_features: str, notify: Callable[[str], None]) -> None:
        from crdr import metrics

        self.image_columns: list[str] = []
        self.perceptual: dict[str, object] = {}
        for column in (c for c in columns if c in IMAGE_METRICS):
            if column == "MS-SSIM":
                status = {s.name: s for s in metrics.available_metrics()}["ms-ssim"]
                if not status.available:
                    notify(f"{status.reason}: skipped")
                    continue
            elif column in _PERCEPTUAL:
                try:
                    self.perceptual[column] = metrics.perceptual_metric(_PERCEPTUAL[column])
                except metrics.MetricUnavailable as error:
                    notify(f"{error}: skipped")
                    continue
            self.image_columns.append(column)
        self.set_columns = [column for column in columns if column in SET_METRICS]
        self.extractor = None
        if self.set_columns:
            try:
                self.extractor = metrics.get_feature_extractor(fid_features)
            except metrics.MetricUnavailable as error:
                notify(f"{'/'.join(self.set_columns)} skipped: {error} "
                       f"(or use --fid-features alexnet-stlpips, an offline stand-in)")
                self.set_columns = []

    @property
    def extractor_name(self) -> str:
        return self.extractor.name if self.extractor is not None else ""

    def image_metrics(self, reference: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
        from crdr import metrics

        values: dict[str, float] = {}
        for column in self.image_columns:
            if column == "PSNR":
                values[column] = metrics.psnr(reference, decoded)
            elif column == "MS-SSIM":
                values[column] = metrics.ms_ssim(reference, decoded)
            else:
                values[column] = self.perceptual[column](reference, decoded)
        return values

    def features(self, rgb: np.ndarray) -> np.ndarray:
        from crdr import metrics

        patches = metrics.hific_patches(rgb)
        if len(patches) == 0:
            return np.zeros((0, 0), np.float64)
        return np.asarray(self.extractor(patches), dtype=np.float64)


def estimated_bits(model, rgb: np.ndarray, q: float) -> float:
    """``−Σ log2 p`` of the rounded latents (y and z) from one eval-mode forward pass."""
    import torch

    from crdr import codec, image_io

    x = codec.pad_to_stride(image_io.to_model_input(rgb))
    with torch.no_grad():
        result = model(x, q, 0.0)
    return float(result.bits()[0])


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


@dataclass
class EvaluationReport:
    """What :func:`evaluate` did and wrote.

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


def _mean(values: Sequence[float]) -> float | None:
    if not values:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN (e.g. MS-SSIM of tiny images)
        return float(np.nanmean(np.asarray(values, dtype=np.float64)))


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


def _curve_label(point: dict) -> str:
    return f"crdr β={_text(point['beta'])}" if point["codec"] == CRDR else point["codec"]


def _bd_rows(points: list[dict], columns: Sequence[str], paper_points: dict[float, list[dict]],
             has_crdr: bool, notes: list[str]):
    """BD rows: crdr at each β (and the published curves, if any) against each baseline, on
    PSNR and ST-LPIPS, over all rates and restricted to 0.1–0.5 bpp."""
    from crdr.bd_rate import BdRow, bd_row

    curves: dict[str, list[dict]] = {}
    for point in points:
        curves.setdefault(_curve_label(point), []).append(point)
    anchors = [label for label, members in curves.items() if members[0]["codec"] != CRDR]
    tests = [label for label, members in curves.items() if members[0]["codec"] == CRDR]
    for beta, published in sorted(paper_points.items()):
        label = f"paper CRDR β={_text(beta)} (published)"
        curves[label] = published
        tests.append(label)
    pairs = [(test, anchor) for test in tests for anchor in anchors]
    if not has_crdr and not paper_points and len(anchors) > 1:
        pairs = [(test, anchors[0]) for test in anchors[1:]]  # baselines only: against the first
    rows = []
    for metric, lower_is_better in BD_METRICS:
        if metric not in columns:
            continue
        for rate_range in (None, BD_RESTRICTED_RANGE):
            for test, anchor in pairs:
                test_points = _pareto(curves[test], metric, lower_is_better)
                anchor_points = _pareto(curves[anchor], metric, lower_is_better)
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
    return rows


def _pareto(points: Sequence[dict], metric: str, lower_is_better: bool) -> list[dict]:
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


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _plots(report_dir: Path, points: list[dict], columns: Sequence[str], set_labels: Sequence[str],
           paper_points: dict[float, list[dict]], title: str) -> list[Path]:
    from crdr.plot import Curve, plot_distortion_realism, plot_rd

    written: list[Path] = []
    curves: dict[str, list[dict]] = {}
    for point in points:
        curves.setdefault(_curve_label(point), []).append(point)
    plot_dir = report_dir / "plots"
    for metric in [c for c in IMAGE_METRICS if c in columns] + list(set_labels):
        series = [Curve(label, [p for p in members if _finite(p.get(metric))])
                  for label, members in curves.items()]
        for beta, published in sorted(paper_points.items()):
            with_metric = [p for p in published if _finite(p.get(metric))]
            if with_metric:
                series.append(Curve(f"paper CRDR β={_text(beta)} (published)", with_metric, style="--"))
        series = [curve for curve in series if curve.points]
        if not series:
            continue
        ylabel = metric + (" (lower is better)" if metric.startswith(("FID", "KID")) else "")
        written += plot_rd(series, metric, plot_dir / f"rd_{_slug(metric.lower())}", title=title,
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
# evaluate()
# ---------------------------------------------------------------------------------------------


def _notifier(notices: list[str], notify: Callable[[str], None] | None) -> Callable[[str], None]:
    def note(message: str) -> None:
        notices.append(message)
        if notify is not None:
            notify(message)

    return note


def _print_notice(message: str) -> None:
    print(f"crdr: note: {message}", file=sys.stderr)


def evaluate(
    dataset_dir: str | os.PathLike,
    model=None,
    *,
    q_values: str | Sequence[float] = DEFAULT_Q,
    betas: str | Sequence[float] = DEFAULT_BETAS,
    baselines: str | Sequence[str] = DEFAULT_BASELINES,
    metrics: str | Sequence[str] = DEFAULT_METRICS,
    fid_features: str = DEFAULT_FID_FEATURES,
    report_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    paper: str | None = "auto",
    tile_size: int | None = None,
    keep_files: bool = False,
    progress: bool = True,
    plots: bool = True,
    threads: int | None = None,
    notify: Callable[[str], None] | None = _print_notice,
    device="cpu",
) -> EvaluationReport:
    """Evaluate ``model`` (a :class:`~crdr.models.crdr.CRDR`, a weights file or bundled name; or
    ``None`` for baselines only) and ``baselines`` on the images of ``dataset_dir``.

    ``q_values``/``betas``: ``"0:4:0.25"``-style grids or sequences; ``baselines``: names from
    :data:`crdr.baselines.CODEC_NAMES` (``"none"`` or empty for none); ``metrics``: names
    from ``psnr, ms-ssim, stlpips, lpips, dists, fid, kid``; ``fid_features``: ``inception-v3``
    (published FID) or ``alexnet-stlpips`` (offline stand-in, labelled as such); ``report_dir``
    defaults to ``reports/<dataset folder name>``; ``paper``: ``"auto"`` (Kodak is detected),
    ``"kodak"``, ``"clic"``, ``"div2k"`` or ``None``/``"none"`` to overlay the published points.
    Unknown names raise :class:`ParameterError`; unavailable metrics and codecs are skipped
    with a notice (passed to ``notify`` and kept in ``report.notices``). ``threads`` sets torch's
    intra-op threads for the run (restored afterwards); on a busy machine 1 is often fastest.
    ``plots=False`` skips the figures (the slowest part of a small run). ``device``: where crdr's
    analysis and synthesis transforms run (:func:`crdr.codec.resolve_device`); the estimated
    bits come from a CPU forward pass whatever it is.
    """
    import torch

    from crdr import codec

    device = codec.resolve_device(device)
    if threads is not None and threads < 1:
        raise ParameterError(f"threads must be ≥ 1, got {threads}")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _evaluate(
            dataset_dir, model, q_values=q_values, betas=betas, baselines=baselines, metrics=metrics,
            fid_features=fid_features, report_dir=report_dir, limit=limit, paper=paper, tile_size=tile_size,
            keep_files=keep_files, progress=progress, plots=plots, notify=notify, device=device,
        )
    finally:
        torch.set_num_threads(previous)


def _evaluate(dataset_dir, model, *, q_values, betas, baselines, metrics, fid_features, report_dir, limit,
              paper, tile_size, keep_files, progress, plots, notify, device) -> EvaluationReport:
    from crdr import baselines as baseline_module
    from crdr import bitstream, codec, image_io
    from crdr.paper_results import paper_curve

    started = time.perf_counter()
    notices: list[str] = []
    note = _notifier(notices, notify)
    root = Path(dataset_dir)
    all_images = list_images(root)
    images = list_images(root, limit)
    names = [path.relative_to(root).as_posix() for path in images]
    columns = parse_metrics(metrics)
    baseline_names = _names(baselines)
    for name in baseline_names:
        if name not in baseline_module.CODEC_NAMES:
            raise ParameterError(f"unknown baseline {name!r}; choose from {', '.join(baseline_module.CODEC_NAMES)}")
    if fid_features not in ("inception-v3", "alexnet-stlpips"):
        raise ParameterError(f"unknown FID feature extractor {fid_features!r}; choose inception-v3 or alexnet-stlpips")
    q_grid, beta_grid = parse_grid(q_values, "q"), parse_grid(betas, "beta")

    # The crdr model and its grid.
    crdr_model = None
    if model is not None:
        crdr_model = codec.get_model(model)
        if crdr_model.training:
            crdr_model.eval()
        config = crdr_model.config
        if not config.variable_rate and len(q_grid) > 1:
            note("model is single-rate: q grid reduced to q=0")
            q_grid = (0.0,)
        if not config.beta_conditioned and beta_grid != (0.0,):
            note("model has no β conditioning: β grid reduced to β=0")
            beta_grid = (0.0,)
        for q in q_grid:
            crdr_model.quality(q)
        for beta in beta_grid:
            crdr_model.realism(beta)
    model_hex = crdr_model.model_id.hex() if crdr_model is not None else ""

    codecs = []
    for name in baseline_names:
        try:
            codecs.append(baseline_module.get_codec(name))
        except baseline_module.CodecUnavailable as error:
            note(f"{error}: skipped")
    if crdr_model is None and not codecs:
        raise ParameterError("nothing to evaluate: no crdr model and no available baseline")

    measure = _Measure(columns, fid_features, note)
    if not measure.image_columns and not measure.set_columns:
        raise CrdrError("none of the requested metrics is available here (see the notes above)")
    image_columns = measure.image_columns

    # Published points.
    paper_name = None
    if paper == "auto":
        paper_name = "kodak" if _looks_like_kodak(root, all_images) else None
    elif paper and str(paper).lower() != "none":
        paper_name = str(paper).lower()
    paper_points: dict[float, list[dict]] = {}
    if paper_name is not None:
        paper_points = {beta: paper_curve(paper_name, beta) for beta in (0.0, 3.84)}
        if len(images) < len(all_images):
            note(f"published {paper_name} points are means over the full data set; this run uses "
                 f"{len(images)} of {len(all_images)} images (no BD-rate against them)")

    # Report folder and earlier rows.
    report_dir = Path(report_dir) if report_dir is not None else Path("reports") / _slug(root.resolve().name)
    report_dir.mkdir(parents=True, exist_ok=True)
    csv_path = report_dir / PER_IMAGE_CSV
    rows, dropped = _read_rows(csv_path)
    if dropped:
        note(f"{csv_path}: {dropped} malformed row(s) dropped; they will be recomputed")
    if crdr_model is not None:
        others = {row["model"] for row in rows.values() if row["codec"] == CRDR and row["model"] != model_hex}
        if others:
            raise CrdrError(
                f"{csv_path} holds crdr results of another model ({', '.join(sorted(others))}); "
                f"use another report folder (-o) for model {model_hex}"
            )
    feature_dir = report_dir / "features" / _slug(measure.extractor_name or "none")

    def feature_path(codec_name: str, point: str, image: str) -> Path:
        return feature_dir / _slug(codec_name) / _slug(point) / f"{_slug(image)}.npy"

    def reference_path(image: str) -> Path:
        return feature_dir / "reference" / f"{_slug(image)}.npy"

    def complete(key: Key) -> bool:
        row = rows.get(key)
        if row is None or any(row[column] == "" for column in image_columns):
            return False
        return not measure.set_columns or feature_path(key[1], key[2], key[0]).exists()

    # The plan: every (image, codec, point) still to do.
    crdr_points = [(q, beta, crdr_point(q, beta)) for q in q_grid for beta in beta_grid] if crdr_model else []
    baseline_points = [(c, quality, baseline_point(quality)) for c in codecs for quality in c.qualities]
    pending = 0
    for image in names:
        pending += sum(not complete((image, CRDR, point)) for _, _, point in crdr_points)
        pending += sum(not complete((image, c.name, point)) for c, _, point in baseline_points)
    total_rows = len(names) * (len(crdr_points) + len(baseline_points))
    skipped = total_rows - pending

    encoded = decoded = 0
    bar = None
    if progress and pending:
        from tqdm import tqdm

        bar = tqdm(total=pending, unit="row", file=sys.stderr, dynamic_ncols=True,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)
    file_dir = report_dir / "files"

    def keep(codec_name: str, point: str, image: str, data: bytes, extension: str) -> None:
        if keep_files:
            target = file_dir / _slug(codec_name) / _slug(point) / (_slug(str(Path(image).with_suffix(""))) + extension)
            target.parent.mkdir(parents=True, exist_ok=True)
            image_io.write_atomic(target, data, force=True)

    def record(key: Key, cells: dict, reference: np.ndarray, decoded_rgb: np.ndarray) -> None:
        values = measure.image_metrics(reference, decoded_rgb)
        row = {column: "" for column in CSV_COLUMNS}
        row.update(image=key[0], codec=key[1], point=key[2])
        row.update({column: _cell(value) for column, value in cells.items()})
        row.update({column: _cell(value) for column, value in values.items()})
        old = rows.get(key)
        if old is not None:  # keep metrics an earlier run measured and this one did not ask for
            for column in IMAGE_METRICS:
                if row[column] == "" and old[column] != "":
                    row[column] = old[column]
        if measure.set_columns:
            target = feature_path(key[1], key[2], key[0])
            target.parent.mkdir(parents=True, exist_ok=True)
            np.save(target, measure.features(decoded_rgb))
        rows[key] = row
        if bar is not None:
            bar.update(1)

    try:
        for path, image in zip(images, names):
            work = [p for p in crdr_points if not complete((image, CRDR, p[2]))]
            work_baselines = [p for p in baseline_points if not complete((image, p[0].name, p[2]))]
            if not work and not work_baselines:
                continue
            if bar is not None:
                bar.set_description(image)
            source = image_io.load_image(path)
            for message in source.notes:
                note(f"{image}: {message}")
            source = dataclasses.replace(source, alpha=None)  # every codec codes the same RGB pixels
            rgb = source.rgb
            height, width = rgb.shape[:2]
            pixels = width * height
            if measure.set_columns and not reference_path(image).exists():
                reference_path(image).parent.mkdir(parents=True, exist_ok=True)
                np.save(reference_path(image), measure.features(rgb))
            for q in sorted({q for q, _, _ in work}):
                tic = time.perf_counter()
                data = codec.encode_at(source, q, crdr_model, tile_size, device=device)
                encode_s = time.perf_counter() - tic
                encoded += 1
                estimate = estimated_bits(crdr_model, rgb, q)
                keep(CRDR, f"q={_text(q)}", image, data, ".crdr")
                container = bitstream.unpack(data)
                for _, beta, point in (p for p in work if p[0] == q):
                    tic = time.perf_counter()
                    decoded_rgb = codec.decode_container(container, crdr_model, beta, device=device).rgb
                    decode_s = time.perf_counter() - tic
                    decoded += 1
                    record((image, CRDR, point), {
                        "q": q, "beta": beta, "width": width, "height": height, "bytes": len(data),
                        "bpp": len(data) * 8 / pixels, "bpp_estimated": estimate / pixels,
                        "encode_s": encode_s, "decode_s": decode_s, "model": model_hex,
                    }, rgb, decoded_rgb)
            for baseline, quality, point in work_baselines:
                tic = time.perf_counter()
                data = baseline.encode(rgb, quality)
                encode_s = time.perf_counter() - tic
                encoded += 1
                keep(baseline.name, point, image, data, baseline.extension)
                tic = time.perf_counter()
                decoded_rgb = baseline.decode(data)
                decode_s = time.perf_counter() - tic
                decoded += 1
                if decoded_rgb.shape != rgb.shape:
                    raise FormatError(f"{baseline.name} decoded {image} to {decoded_rgb.shape}, not {rgb.shape}")
                record((image, baseline.name, point), {
                    "quality": quality, "width": width, "height": height, "bytes": len(data),
                    "bpp": len(data) * 8 / pixels, "encode_s": encode_s, "decode_s": decode_s,
                }, rgb, decoded_rgb)
            _write_rows(csv_path, rows.values())
    finally:
        if bar is not None:
            bar.close()
        _write_rows(csv_path, rows.values())

    # Means per point over this run's images, and FID/KID per point.
    points: list[dict] = []
    grid = [(CRDR, point, {"q": q, "beta": beta}) for q, beta, point in crdr_points]
    grid += [(c.name, point, {"quality": quality}) for c, quality, point in baseline_points]
    set_labels = [f"{column}[{measure.extractor_name}]" for column in measure.set_columns]
    reference_features = None
    too_few = False
    if measure.set_columns:
        reference_features = [np.load(reference_path(image)) for image in names]
    for codec_name, point, settings in grid:
        members = [rows[(image, codec_name, point)] for image in names]
        summary = {"codec": codec_name, "point": point, "q": None, "beta": None, "quality": None, **settings,
                   "images": len(members)}
        summary["label"] = _curve_label(summary)
        summary["bpp"] = _mean([float(row["bpp"]) for row in members])
        if codec_name == CRDR:
            summary["bpp_estimated"] = _mean([float(row["bpp_estimated"]) for row in members])
        for column in image_columns:
            summary[column] = _mean([float(row[column]) for row in members])
        if measure.set_columns:
            fake_features = [np.load(feature_path(codec_name, point, image)) for image in names]
            if not _set_metrics(summary, reference_features, fake_features, measure) and not too_few:
                too_few = True
                note(f"{'/'.join(measure.set_columns)} need ≥ 2 patches of 256×256 per set; these images "
                     f"give {sum(len(f) for f in reference_features)}: skipped")
        points.append(summary)

    has_crdr = crdr_model is not None
    bd_notes: list[str] = []
    usable_paper = paper_points if len(images) == len(all_images) else {}
    bd_rows = _bd_rows(points, image_columns, usable_paper, has_crdr, bd_notes)
    from crdr.bd_rate import format_bd_table

    bd_table = format_bd_table(bd_rows) if bd_rows else "(no BD-rate rows: needs PSNR or ST-LPIPS and two codecs)"
    title = f"{root.resolve().name} ({len(images)} images)"
    figures = _plots(report_dir, points, image_columns, set_labels, paper_points, title) if plots else []

    files = {"per_image_csv": csv_path, "points_csv": report_dir / POINTS_CSV,
             "points_json": report_dir / POINTS_JSON, "bd_table": report_dir / BD_TABLE}
    _write_points_csv(files["points_csv"], points, image_columns, set_labels)
    bd_markdown = _bd_markdown(bd_table, bd_notes, root, len(images))
    _write_text_atomic(files["bd_table"], bd_markdown)
    seconds = time.perf_counter() - started
    report = EvaluationReport(
        report_dir=report_dir, images=names, files=files, plots=figures, points=points, bd_rows=bd_rows,
        bd_table=bd_table, notices=notices, encoded=encoded, decoded=decoded, skipped=skipped,
        seconds=seconds, bd_notes=bd_notes,
    )
    summary = {
        "dataset": str(root.resolve()),
        "images": names,
        "model": getattr(crdr_model, "source", None) if crdr_model is not None else None,
        "model_id": model_hex or None,
        "q": list(q_grid) if has_crdr else [],
        "beta": list(beta_grid) if has_crdr else [],
        "baselines": {c.name: c.description for c in codecs},
        "metrics": image_columns + set_labels,
        "fid_features": measure.extractor_name or None,
        "paper": paper_name,
        "notices": notices,
        "bd_rate": [dataclasses.asdict(row) for row in bd_rows],
        "bd_notes": bd_notes,
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run": {"encoded": encoded, "decoded": decoded, "reused_rows": skipped, "seconds": round(seconds, 1)},
        "points": points,
    }
    _write_text_atomic(files["points_json"], json.dumps(_json_value(summary), indent=1, ensure_ascii=False) + "\n")
    return report


def _set_metrics(summary: dict, reference: list[np.ndarray], decoded: list[np.ndarray], measure: _Measure) -> bool:
    """Add FID/KID of one point to ``summary``; False if there are too few patches."""
    from crdr import metrics

    name = measure.extractor_name
    real = [features for features in reference if len(features)]
    fake = [features for features in decoded if len(features)]
    if sum(len(f) for f in real) < 2 or sum(len(f) for f in fake) < 2:
        return False
    real_all, fake_all = np.concatenate(real), np.concatenate(fake)
    if "FID" in measure.set_columns:
        summary[f"FID[{name}]"] = metrics.fid_from_features(real_all, fake_all)
    if "KID" in measure.set_columns:
        kid, kid_std = metrics.kid_from_features(real_all, fake_all)
        summary[f"KID[{name}]"], summary[f"KID_std[{name}]"] = kid, kid_std
    summary["patches"] = len(fake_all)
    return True


def _write_points_csv(path: Path, points: list[dict], image_columns: Sequence[str], set_labels: Sequence[str]) -> None:
    columns = ["codec", "label", "point", "q", "beta", "quality", "images", "bpp", "bpp_estimated",
               *image_columns]
    for label in set_labels:
        columns.append(label)
        if label.startswith("KID["):
            columns.append(label.replace("KID[", "KID_std[", 1))
    if set_labels:
        columns.append("patches")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for point in points:
        writer.writerow({column: _cell(point.get(column)) for column in columns})
    _write_text_atomic(path, buffer.getvalue())


def _bd_markdown(table: str, notes: list[str], root: Path, count: int) -> str:
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
# CLI
# ---------------------------------------------------------------------------------------------


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``crdr eval``."""
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
    parser.add_argument("--fid-features", choices=("inception-v3", "alexnet-stlpips"), default=DEFAULT_FID_FEATURES,
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
