"""What one evaluation run covers: the checked arguments (metric and codec names, the q and β grids,
the images of the folder), the grid points with their labels, and the published points to overlay.

Why a module of its own: every argument of ``crdr eval`` is checked here before a model is loaded
or a file is written, so a typo fails at once with one line naming the choices; and the point
labels made here (``q=2 beta=3.84``, ``quality=75``) are keys of the resumable store, so they are
made in one place. No torch or numpy here: ``crdr eval --help`` imports this module.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from crdr.errors import CrdrError, ParameterError
from crdr.files import find_files
from crdr.suffixes import IMAGE_SUFFIXES

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
# The names of crdr.metrics.FEATURE_EXTRACTORS (that module loads torch; the CLI's help must not).
FID_FEATURES = ("inception-v3", "alexnet-stlpips")

DEFAULT_Q = "0:4:0.25"
DEFAULT_BETAS = "0,3.84"
DEFAULT_BASELINES = "jpeg-420,webp,avif,jxl"
DEFAULT_METRICS = "psnr,ms-ssim,stlpips,lpips,dists"
DEFAULT_FID_FEATURES = "inception-v3"

CRDR = "crdr"  # the codec column of crdr's rows
PUBLISHED_BETAS = (0.0, 3.84)  # the β of the paper's published curves


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


def parse_names(text: str | Sequence[str] | None) -> list[str]:
    """Comma-separated (or listed) names → lower-case, distinct, in order; ``"none"`` → ``[]``."""
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [item.strip().lower() for item in items if item.strip()]
    return [] if names == ["none"] else list(dict.fromkeys(names))


def parse_metrics(text: str | Sequence[str]) -> list[str]:
    """Metric names (``psnr, ms-ssim, stlpips, lpips, dists, fid, kid``) → report column names.
    Raises :class:`ParameterError` naming the choices for an unknown name."""
    columns = []
    for name in parse_names(text):
        if name not in METRIC_NAMES:
            choices = "psnr, ms-ssim, stlpips, lpips, dists, fid, kid"
            raise ParameterError(f"unknown metric {name!r}; choose from {choices}")
        columns.append(METRIC_NAMES[name])
    if not columns:
        raise ParameterError("no metrics given")
    return list(dict.fromkeys(columns))


def parse_baselines(text: str | Sequence[str] | None) -> list[str]:
    """Baseline codec names (:data:`crdr.baselines.CODEC_NAMES`; ``"none"`` or empty for none)."""
    from crdr.baselines import CODEC_NAMES

    names = parse_names(text)
    for name in names:
        if name not in CODEC_NAMES:
            raise ParameterError(f"unknown baseline {name!r}; choose from {', '.join(CODEC_NAMES)}")
    return names


def list_images(dataset_dir: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Image files under ``dataset_dir`` (recursively, sorted by relative path), the first
    ``limit`` of them if given. Images are the suffixes of :data:`crdr.suffixes.IMAGE_SUFFIXES`,
    in any case: every format crdr reads and every format decompress writes."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise CrdrError(f"not a directory: {root}")
    if limit is not None and limit < 1:
        raise ParameterError(f"--limit must be ≥ 1, got {limit}")
    images = find_files(root, IMAGE_SUFFIXES)
    if not images:
        raise CrdrError(f"no images in {root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return images[:limit] if limit is not None else images


@dataclass(frozen=True)
class Request:
    """The checked arguments of one run; nothing is loaded yet.

    ``images``: the first ``limit`` of ``all_images`` (the whole folder, needed to tell whether
    the published means apply); ``columns``: the requested metric columns, available or not.
    """

    root: Path
    all_images: list[Path]
    images: list[Path]
    columns: list[str]
    baselines: list[str]
    fid_features: str
    q_grid: tuple[float, ...]
    beta_grid: tuple[float, ...]

    @property
    def names(self) -> list[str]:
        """The images' paths relative to the folder, as the report names them."""
        return [path.relative_to(self.root).as_posix() for path in self.images]

    @property
    def whole_folder(self) -> bool:
        return len(self.images) == len(self.all_images)


def parse_request(dataset_dir: str | os.PathLike, *, q_values: str | Sequence[float], betas: str | Sequence[float],
                  baselines: str | Sequence[str], metrics: str | Sequence[str], fid_features: str,
                  limit: int | None) -> Request:
    """Check every argument of :func:`crdr.evaluate.evaluate` that needs no model."""
    root = Path(dataset_dir)
    all_images = list_images(root)
    images = list_images(root, limit)
    columns = parse_metrics(metrics)
    baseline_names = parse_baselines(baselines)
    if fid_features not in FID_FEATURES:
        raise ParameterError(f"unknown FID feature extractor {fid_features!r}; choose {' or '.join(FID_FEATURES)}")
    return Request(root=root, all_images=all_images, images=images, columns=columns, baselines=baseline_names,
                   fid_features=fid_features, q_grid=parse_grid(q_values, "q"), beta_grid=parse_grid(betas, "beta"))


# ---------------------------------------------------------------------------------------------
# Grid points and their labels
# ---------------------------------------------------------------------------------------------


def value_text(value: float) -> str:
    """Short stable text of a grid value: 2 → "2", 0.25 → "0.25", 3.84 → "3.84"."""
    return format(round(float(value), 6), "g")


def crdr_point(q: float, beta: float) -> str:
    return f"q={value_text(q)} beta={value_text(beta)}"


def baseline_point(quality: int) -> str:
    return f"quality={quality}"


class CrdrPoint(NamedTuple):
    q: float
    beta: float
    label: str


class BaselinePoint(NamedTuple):
    codec: object  # a crdr.baselines codec: .name, .encode, .decode, .extension, .qualities
    quality: int
    label: str


def crdr_points(q_grid: Sequence[float], beta_grid: Sequence[float]) -> list[CrdrPoint]:
    """Every (q, β): each q is one file, decoded at every β."""
    return [CrdrPoint(q, beta, crdr_point(q, beta)) for q in q_grid for beta in beta_grid]


def baseline_points(codecs: Sequence) -> list[BaselinePoint]:
    """Every quality of each codec's sweep."""
    return [BaselinePoint(codec, quality, baseline_point(quality)) for codec in codecs for quality in codec.qualities]


def slug(text: str) -> str:
    """``text`` as one safe file or folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "_"


def report_folder(report_dir: str | os.PathLike | None, root: Path) -> Path:
    """The report folder: ``report_dir``, by default ``reports/<dataset folder name>``."""
    return Path(report_dir) if report_dir is not None else Path("reports") / slug(root.resolve().name)


# ---------------------------------------------------------------------------------------------
# Published points
# ---------------------------------------------------------------------------------------------


def _looks_like_kodak(root: Path, images: Sequence[Path]) -> bool:
    names = {path.name.lower() for path in images}
    return "kodak" in root.resolve().name.lower() or {f"kodim{i:02d}.png" for i in range(1, 25)} <= names


def published_points(paper: str | None, request: Request,
                     note: Callable[[str], None]) -> tuple[str | None, dict[float, list[dict]]]:
    """The data set whose published CRDR points are overlaid (``"auto"``: Kodak is detected), and
    those points per β; a run over part of the folder is told that they are full-set means."""
    from crdr.paper_results import paper_curve

    name = None
    if paper == "auto":
        name = "kodak" if _looks_like_kodak(request.root, request.all_images) else None
    elif paper and str(paper).lower() != "none":
        name = str(paper).lower()
    if name is None:
        return None, {}
    points = {beta: paper_curve(name, beta) for beta in PUBLISHED_BETAS}
    if not request.whole_folder:
        note(f"published {name} points are means over the full data set; this run uses "
             f"{len(request.images)} of {len(request.all_images)} images (no BD-rate against them)")
    return name, points
