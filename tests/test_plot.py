"""Tests of the RD / distortion–realism figures and of the bundled published results."""

from __future__ import annotations

import math

import pytest

from crdr.errors import ParameterError
from crdr.paper_results import load_paper_rd, paper_curve
from crdr.plot import Curve, plot_distortion_realism, plot_rd


def test_plot_rd_writes_non_empty_png_and_svg(tmp_path):
    curves = [
        Curve("crdr β=0", [{"bpp": 0.1, "PSNR": 28.0}, {"bpp": 0.3, "PSNR": 31.0}, {"bpp": 0.2, "PSNR": 30.0}]),
        Curve("jpeg", [{"bpp": 0.2, "PSNR": 25.0}, {"bpp": 0.5, "PSNR": 29.0}], style="--"),
    ]
    png, svg = plot_rd(curves, "PSNR", tmp_path / "out" / "kodak_psnr", log_x=True, title="Kodak")
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 1000
    assert b"<svg" in svg.read_bytes() and svg.stat().st_size > 1000
    assert sorted(p.name for p in png.parent.iterdir()) == ["kodak_psnr.png", "kodak_psnr.svg"]  # no temp files


def test_plot_rd_accepts_a_mapping_of_labels_to_point_dicts(tmp_path):
    png, svg = plot_rd({"paper": paper_curve("kodak", 0.0)}, "LPIPS", tmp_path / "lpips.png")
    assert png.name == "lpips.png" and svg.name == "lpips.svg"
    assert png.stat().st_size > 0 and svg.stat().st_size > 0


def test_plot_rd_rejects_points_without_the_metric(tmp_path):
    with pytest.raises(ParameterError, match="DISTS"):
        plot_rd([Curve("x", [{"bpp": 0.1, "PSNR": 30.0}])], "DISTS", tmp_path / "x")


def test_plot_distortion_realism_writes_non_empty_png_and_svg(tmp_path):
    points = [{"q": q, "beta": beta, "PSNR": 30 + q - beta / 2, "ST-LPIPS": 0.2 - 0.04 * beta}
              for q in (0.0, 2.0) for beta in (0.0, 1.28, 2.56, 3.84)]
    png, svg = plot_distortion_realism(points, tmp_path / "dr")
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 1000
    assert b"<svg" in svg.read_bytes()


def test_paper_rd_kodak_has_the_spec_point_and_34_rows():
    rows = load_paper_rd("Kodak")
    assert len(rows) == 34
    first = next(row for row in rows if row["quality"] == 0.0 and row["beta"] == 3.84)
    assert first["bpp"] == pytest.approx(0.109, abs=5e-4)
    assert first["PSNR"] == pytest.approx(27.45, abs=5e-3)
    assert first["LPIPS"] == pytest.approx(0.096, abs=5e-4)
    assert math.isnan(first["FID"])


def test_paper_rd_has_clic_and_div2k_with_fid_and_same_bpp_for_both_betas():
    for dataset in ("clic", "div2k"):
        low, high = paper_curve(dataset, 0.0), paper_curve(dataset, 3.84)
        assert len(low) == len(high) == 17
        assert [row["bpp"] for row in low] == [row["bpp"] for row in high]  # β does not change the rate
        assert all(row["FID"] > 0 for row in low)
    with pytest.raises(ParameterError):
        load_paper_rd("imagenet")


def test_plot_image_grid_shows_every_cell_and_refuses_an_empty_grid(tmp_path):
    import numpy as np
    from PIL import Image

    from crdr.plot import plot_image_grid

    red = np.zeros((16, 24, 3), np.uint8)
    red[..., 0] = 255
    rows = [[("original", red), ("β = 0", red)], [("q = 4", red), ("β = 5.12", red)]]
    png, svg = plot_image_grid(rows, tmp_path / "grid", title="dial")
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    reddish = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    assert reddish.sum() > 4 * 16 * 24  # all four cells drawn (at 150 dpi they are larger than 16x24)
    assert svg.read_text().count("<image") == 4
    with pytest.raises(ParameterError):
        plot_image_grid([], tmp_path / "none")
