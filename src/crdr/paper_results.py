"""The authors' published RD points (``paper_data/paper_rd.csv``), to plot next to our own results.

What: :func:`load_paper_rd` returns the rows for one data set as plain dicts.
Why: reproductions are judged against these numbers (Iwai et al., WACV 2024, ``rd_results/`` of
github.com/iwa-shi/CRDR; see ``paper_data/README.md`` for provenance and column meanings).
"""

from __future__ import annotations

import csv
import io
import math
from importlib import resources

from crdr.errors import ParameterError

__all__ = ["PAPER_DATASETS", "load_paper_rd", "paper_curve"]

PAPER_DATASETS = ("kodak", "CLIC", "DIV2K")
_NUMERIC = ("quality", "beta", "bpp", "PSNR", "FID", "LPIPS", "DISTS")


def _dataset_name(dataset: str) -> str:
    for name in PAPER_DATASETS:
        if name.lower() == dataset.lower():
            return name
    raise ParameterError(f"no published results for {dataset!r}; choose from {', '.join(PAPER_DATASETS)}")


def load_paper_rd(dataset: str) -> list[dict[str, float | str]]:
    """Published points of ``dataset`` (``"kodak"``, ``"clic"``, ``"div2k"``; any case).

    Each row: ``dataset`` (str) and floats ``quality``, ``beta``, ``bpp``, ``PSNR``, ``FID``
    (NaN for Kodak, which has no FID), ``LPIPS``, ``DISTS``; in file order (β = 3.84 first, q
    increasing).
    """
    name = _dataset_name(dataset)
    text = resources.files("crdr").joinpath("paper_data", "paper_rd.csv").read_text(encoding="utf-8")
    rows: list[dict[str, float | str]] = []
    for record in csv.DictReader(io.StringIO(text)):
        if record["dataset"] != name:
            continue
        row: dict[str, float | str] = {"dataset": name}
        for column in _NUMERIC:
            row[column] = float(record[column]) if record[column] else math.nan
        rows.append(row)
    return rows


def paper_curve(dataset: str, beta: float) -> list[dict[str, float | str]]:
    """The rows of one β (0 or 3.84), sorted by bpp: one RD curve."""
    rows = [row for row in load_paper_rd(dataset) if math.isclose(float(row["beta"]), beta)]
    if not rows:
        raise ParameterError(f"no published points for β = {beta} (published: 0 and 3.84)")
    return sorted(rows, key=lambda row: float(row["bpp"]))
