"""Rate–distortion and distortion–realism figures, written as PNG and SVG.

What: :func:`plot_rd` (one metric against bpp, several labelled curves) and
:func:`plot_distortion_realism` (e.g. PSNR against ST-LPIPS at a fixed q for several β).
Why: the paper's figures, regenerated from our own numbers and the published ones
(:mod:`crdr.paper_results`) with the same look every time.

Inputs are plain Python: a curve is a :class:`Curve` (a label and a list of point dicts such as
``{"bpp": 0.11, "PSNR": 27.4, "LPIPS": 0.096}``) or a ``{label: points}`` mapping. Figures are
built on matplotlib's object API with the Agg canvas, so importing this module never changes the
global pyplot backend and works without a display. Files are written atomically
(:func:`crdr.files.atomic_path`), so a reader never sees half a figure.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from crdr.errors import ParameterError
from crdr.files import atomic_path

__all__ = ["Curve", "plot_rd", "plot_distortion_realism", "plot_image_grid", "LOWER_IS_BETTER"]

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h")
LOWER_IS_BETTER = frozenset({"LPIPS", "ST-LPIPS", "DISTS", "FID", "KID", "lpips", "st-lpips", "dists", "fid", "kid"})


@dataclass(frozen=True)
class Curve:
    """One labelled series of points; ``style`` is a matplotlib format string such as ``"--"``."""

    label: str
    points: Sequence[Mapping[str, float]]
    style: str = ""
    metadata: Mapping[str, object] = field(default_factory=dict)


def _curves(curves: Sequence[Curve] | Mapping[str, Sequence[Mapping[str, float]]]) -> list[Curve]:
    if isinstance(curves, Mapping):
        return [Curve(label, points) for label, points in curves.items()]
    return [curve if isinstance(curve, Curve) else Curve(**curve) for curve in curves]  # type: ignore[arg-type]


def _value(point: Mapping[str, float], key: str, label: str) -> float:
    if key not in point:
        raise ParameterError(f"curve {label!r}: a point has no {key!r} (keys: {sorted(point)})")
    value = point[key]
    return float(value) if value is not None else math.nan


def _short(value: object) -> str:
    return format(value, "g") if isinstance(value, (int, float)) else str(value)


def _save(figure: object, path_stem: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``<stem>.png`` and ``<stem>.svg`` atomically; returns both paths."""
    stem = Path(path_stem)
    if stem.suffix.lower() in (".png", ".svg"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, options in ((".png", {"dpi": 150}), (".svg", {})):
        target = stem.with_name(stem.name + suffix)
        with atomic_path(target) as temporary:
            figure.savefig(temporary, format=suffix[1:], bbox_inches="tight", **options)  # type: ignore[attr-defined]
        written.append(target)
    return written[0], written[1]


def _figure(size: tuple[float, float] = (6.0, 4.5)) -> tuple[object, object]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.grid(True, which="both", alpha=0.3)
    return figure, axes


def plot_rd(curves: Sequence[Curve] | Mapping[str, Sequence[Mapping[str, float]]], metric: str,
            path_stem: str | os.PathLike[str], *, rate_key: str = "bpp", log_x: bool = False,
            log_y: bool = False, title: str | None = None, xlabel: str | None = None,
            ylabel: str | None = None) -> tuple[Path, Path]:
    """Plot ``metric`` against ``rate_key`` (bpp) for every curve; write PNG and SVG.

    Each curve gets its own marker; points are sorted by rate. A "(lower is better)" note is
    added to the y label of LPIPS, DISTS, FID and KID. Returns ``(png_path, svg_path)``.
    """
    curve_list = _curves(curves)
    if not curve_list:
        raise ParameterError("plot_rd needs at least one curve")
    figure, axes = _figure()
    for index, curve in enumerate(curve_list):
        pairs = sorted((_value(p, rate_key, curve.label), _value(p, metric, curve.label)) for p in curve.points)
        pairs = [(x, y) for x, y in pairs if math.isfinite(x) and math.isfinite(y)]
        if not pairs:
            continue
        xs, ys = zip(*pairs)
        axes.plot(xs, ys, curve.style or "-", marker=MARKERS[index % len(MARKERS)], markersize=4,
                  linewidth=1.2, label=curve.label)
    if log_x:
        axes.set_xscale("log")
    if log_y:
        axes.set_yscale("log")
    note = " (lower is better)" if metric in LOWER_IS_BETTER else ""
    axes.set_xlabel(xlabel or ("bits per pixel" if rate_key == "bpp" else rate_key))
    axes.set_ylabel(ylabel or metric + note)
    if title:
        axes.set_title(title)
    axes.legend(fontsize="small")
    return _save(figure, path_stem)


def plot_distortion_realism(points: Iterable[Mapping[str, float]], path_stem: str | os.PathLike[str], *,
                            x: str = "PSNR", y: str = "ST-LPIPS", group: str = "q", annotate: str | None = "beta",
                            title: str | None = None) -> tuple[Path, Path]:
    """Plot ``y`` (realism/perception, e.g. ST-LPIPS) against ``x`` (distortion, e.g. PSNR).

    One line per value of ``group`` (e.g. per q), its points sorted by ``annotate`` (e.g. β) and
    labelled with that value, so the line shows the trade-off β moves along at fixed rate.
    Returns ``(png_path, svg_path)``.
    """
    groups: dict[object, list[Mapping[str, float]]] = {}
    for point in points:
        groups.setdefault(point.get(group), []).append(point)
    if not groups:
        raise ParameterError("plot_distortion_realism needs at least one point")
    figure, axes = _figure()
    for index, (key, members) in enumerate(sorted(groups.items(), key=lambda item: str(item[0]))):
        if annotate:
            members = sorted(members, key=lambda point: float(point.get(annotate, 0.0)))
        xs = [_value(point, x, f"{group}={key}") for point in members]
        ys = [_value(point, y, f"{group}={key}") for point in members]
        label = f"{group} = {key}" if key is not None else None
        axes.plot(xs, ys, "-", marker=MARKERS[index % len(MARKERS)], markersize=4, linewidth=1.2, label=label)
        if annotate:
            for point, px, py in zip(members, xs, ys):
                if annotate in point:
                    axes.annotate(f"{annotate}={_short(point[annotate])}", (px, py), textcoords="offset points",
                                  xytext=(3, 3), fontsize="x-small")
    axes.set_xlabel(x + (" (lower is better)" if x in LOWER_IS_BETTER else ""))
    axes.set_ylabel(y + (" (lower is better)" if y in LOWER_IS_BETTER else ""))
    if title:
        axes.set_title(title)
    if any(key is not None for key in groups):
        axes.legend(fontsize="small")
    return _save(figure, path_stem)


def plot_image_grid(rows: Sequence[Sequence[tuple[str, object]]], path_stem: str | os.PathLike[str], *,
                    title: str | None = None, cell_inches: float = 2.4) -> tuple[Path, Path]:
    """A grid of images, one titled cell each: ``rows[r][c] = (title, (H, W, 3) uint8 array)``.

    Why: the realism dial is seen, not read off a curve — the same file decoded at β = 0 and at
    β = max, beside the original, at a low and a high rate (README). Pixels are shown unscaled
    (``interpolation="nearest"``) so texture is not smoothed away.
    """
    if not rows or not all(rows):
        raise ParameterError("plot_image_grid needs at least one non-empty row")
    columns = max(len(row) for row in rows)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(cell_inches * columns, (cell_inches + 0.3) * len(rows) + (0.4 if title else 0)))
    FigureCanvasAgg(figure)
    for r, row in enumerate(rows):
        for c, (label, pixels) in enumerate(row):
            axes = figure.add_subplot(len(rows), columns, r * columns + c + 1)
            axes.imshow(pixels, interpolation="nearest")
            axes.set_title(label, fontsize="small")
            axes.set_xticks([])
            axes.set_yticks([])
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path_stem)
