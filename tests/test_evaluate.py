"""Tests of ``crdr eval``: report files, real-file bpp, resuming, bad names, the CLI."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crdr import codec, evaluate, image_io
from crdr.baselines import get_codec
from crdr.errors import CrdrError, ParameterError
from crdr.evaluate import plan, report, store

SIZES = ((64, 48), (70, 50), (48, 64))  # width, height: one needs padding in both directions
GRID = {"q_values": "0,4", "betas": "0,5.12", "baselines": "jpeg-420", "metrics": "psnr,stlpips"}
QUIET = {"progress": False, "notify": None, "threads": 1, "plots": False}


def _make_images(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index, (width, height) in enumerate(SIZES):
        y, x = np.mgrid[0:height, 0:width]
        rgb = np.stack([(4 * x + 30 * index) % 256, (5 * y) % 256, (3 * (x + y)) % 256], axis=-1)
        rgb = np.clip(rgb + rng.integers(-12, 12, rgb.shape), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"img{index}.png")
    return folder


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("evaluate")
    data = _make_images(root / "data")
    report = evaluate.evaluate(data, tiny_model, report_dir=root / "report", **GRID, **{**QUIET, "plots": True})
    return data, report


def test_report_has_one_row_per_image_codec_and_point(first_run):
    data, report = first_run
    jpeg_points = len(get_codec("jpeg-420").qualities)
    rows = _rows(report.files["per_image_csv"])
    assert len(rows) == len(SIZES) * (2 * 2 + jpeg_points)
    assert {(row["codec"], row["point"]) for row in rows if row["codec"] == "crdr"} == {
        ("crdr", "q=0 beta=0"), ("crdr", "q=0 beta=5.12"), ("crdr", "q=4 beta=0"), ("crdr", "q=4 beta=5.12")}
    assert all(row["PSNR"] and row["ST-LPIPS"] and not row["LPIPS"] for row in rows)
    points = _rows(report.files["points_csv"])
    assert len(points) == 2 * 2 + jpeg_points and all(p["images"] == "3" for p in points)
    saved = json.loads(report.files["points_json"].read_text())
    assert saved["metrics"] == ["PSNR", "ST-LPIPS"] and len(saved["points"]) == len(points)
    assert "| test" in report.files["bd_table"].read_text()
    names = {path.name for path in report.plots}
    assert {"rd_psnr.png", "rd_psnr.svg", "rd_st-lpips.png", "distortion_realism.svg"} <= names
    assert all(path.stat().st_size > 0 for path in report.plots)


def test_bpp_is_the_real_file_size(first_run, tiny_model):
    data, report = first_run
    rows = _rows(report.files["per_image_csv"])
    jpeg = get_codec("jpeg-420")
    for row in rows:
        assert float(row["bpp"]) == pytest.approx(int(row["bytes"]) * 8 / (int(row["width"]) * int(row["height"])))
    crdr_row = next(row for row in rows if row["codec"] == "crdr" and row["image"] == "img1.png")
    source = image_io.load_image(data / "img1.png")
    with codec.single_thread():  # the machine may be busy; one thread is fastest for a tiny image
        data = codec.encode_at(source, float(crdr_row["q"]), tiny_model)
    assert int(crdr_row["bytes"]) == len(data)
    assert float(crdr_row["bpp_estimated"]) > 0
    jpeg_row = next(row for row in rows if row["codec"] == "jpeg-420" and row["image"] == "img1.png")
    assert int(jpeg_row["bytes"]) == len(jpeg.encode(source.rgb, int(jpeg_row["quality"])))


def test_every_beta_is_decoded_from_the_same_file(first_run):
    _, report = first_run
    rows = [row for row in _rows(report.files["per_image_csv"]) if row["codec"] == "crdr"]
    for image in {row["image"] for row in rows}:
        for q in ("0.0", "4.0"):
            same_file = [row for row in rows if row["image"] == image and row["q"] == q]
            assert len(same_file) == 2 and len({row["bytes"] for row in same_file}) == 1


def test_rerun_reuses_rows_and_recomputes_only_missing_ones(first_run, tiny_model, tmp_path):
    data, report = first_run
    report_dir = tmp_path / "report"
    shutil.copytree(report.report_dir, report_dir)
    again = evaluate.evaluate(data, tiny_model, report_dir=report_dir, **GRID, **QUIET)
    assert (again.encoded, again.decoded) == (0, 0)
    assert again.skipped == len(_rows(report.files["per_image_csv"]))
    # Drop one crdr row, as if the run had been interrupted: only that file is coded again.
    csv_path = report_dir / evaluate.PER_IMAGE_CSV
    rows = _rows(csv_path)
    kept = [row for row in rows if not (row["image"] == "img2.png" and row["point"] == "q=4 beta=5.12")]
    assert len(kept) == len(rows) - 1
    store.write_rows(csv_path, kept)
    resumed = evaluate.evaluate(data, tiny_model, report_dir=report_dir, **GRID, **QUIET)
    assert (resumed.encoded, resumed.decoded) == (1, 1)
    assert len(_rows(csv_path)) == len(rows)


def test_results_of_another_model_in_the_report_folder_are_refused(first_run, tiny_model, tmp_path):
    data, report = first_run
    rows = _rows(report.files["per_image_csv"])
    for row in rows:
        if row["codec"] == "crdr":
            row["model"] = "0123456789abcdef"
    store.write_rows(tmp_path / evaluate.PER_IMAGE_CSV, rows)
    with pytest.raises(CrdrError, match="another model"):
        evaluate.evaluate(data, tiny_model, report_dir=tmp_path, **GRID, **QUIET)


@pytest.mark.parametrize("option, value, message", [
    ("metrics", "psnr,sharpness", "unknown metric 'sharpness'"),
    ("baselines", "jpeg-420,jpeg2000", "unknown baseline 'jpeg2000'"),
    ("q_values", "0:4:0", "step > 0"),
])
def test_bad_names_fail_with_a_clear_error(first_run, tmp_path, option, value, message):
    data, _ = first_run
    arguments = {**GRID, option: value}
    with pytest.raises(ParameterError, match=message):
        evaluate.evaluate(data, None, report_dir=tmp_path, **arguments, **QUIET)
    assert not (tmp_path / evaluate.PER_IMAGE_CSV).exists()


def test_out_of_range_beta_is_refused_before_any_work(first_run, tiny_model, tmp_path):
    data, _ = first_run
    with pytest.raises(ParameterError, match="beta"):
        evaluate.evaluate(data, tiny_model, report_dir=tmp_path, **{**GRID, "betas": "0,9"}, **QUIET)


def test_unavailable_metric_is_skipped_with_its_reason(first_run, tmp_path, monkeypatch):
    from crdr import metrics

    def unavailable(name):
        raise metrics.MetricUnavailable(f"{name}: weights missing here")

    monkeypatch.setattr(metrics, "perceptual_metric", unavailable)
    data, _ = first_run
    notices = []
    report = evaluate.evaluate(data, None, report_dir=tmp_path, baselines="jpeg-420", metrics="psnr,lpips",
                               progress=False, threads=1, plots=False, notify=notices.append)
    assert notices == ["lpips: weights missing here: skipped"] == report.notices
    rows = _rows(report.files["per_image_csv"])
    assert all(row["PSNR"] and not row["LPIPS"] for row in rows)


def test_fid_and_kid_are_computed_per_point_from_hific_patches(tiny_model, tmp_path):
    rng = np.random.default_rng(1)
    data = tmp_path / "data"
    data.mkdir()
    for index in range(2):  # 256×256: one HiFiC patch each
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(data / f"big{index}.png")
    report = evaluate.evaluate(data, tiny_model, q_values="2", betas="0", baselines="none", metrics="psnr,fid,kid",
                               fid_features="alexnet-stlpips", report_dir=tmp_path / "report", **QUIET)
    (point,) = report.points
    assert point["patches"] == 2
    assert point["FID[alexnet-stlpips]"] >= 0 and np.isfinite(point["KID[alexnet-stlpips]"])
    assert "FID[alexnet-stlpips]" in report.files["points_csv"].read_text().splitlines()[0]


def test_grid_syntax():
    assert evaluate.parse_grid("0:4:0.25") == tuple(i / 4 for i in range(17))
    assert evaluate.parse_grid("3.84, 0") == (0.0, 3.84)
    assert evaluate.parse_grid("0:1:0.5,3") == (0.0, 0.5, 1.0, 3.0)
    assert evaluate.parse_metrics("stlpips,PSNR,st-lpips") == ["ST-LPIPS", "PSNR"]


def test_pareto_drops_points_no_better_than_a_smaller_file():
    points = [{"bpp": 0.1, "PSNR": 25.0}, {"bpp": 0.2, "PSNR": 24.0}, {"bpp": 0.3, "PSNR": 27.0}]
    assert [p["bpp"] for p in report.pareto(points, "PSNR", False)] == [0.1, 0.3]
    lpips = [{"bpp": 0.1, "LPIPS": 0.3}, {"bpp": 0.2, "LPIPS": 0.31}, {"bpp": 0.3, "LPIPS": 0.2}]
    assert [p["bpp"] for p in report.pareto(lpips, "LPIPS", True)] == [0.1, 0.3]


def test_cli_eval_exits_zero_and_prints_the_bd_table(first_run, vectors_dir, tmp_path, capsys):
    from crdr.cli import main

    data, _ = first_run
    model = str(vectors_dir / "official_tiny.pth.tar")
    status = main(["eval", str(data), "--model", model, "--q", "0:4:2", "--beta", "0", "--baselines", "jpeg-420",
                   "--metrics", "psnr", "-o", str(tmp_path / "cli"), "--limit", "2", "--threads", "1", "--quiet",
                   "--no-plots"])
    assert status == 0
    out = capsys.readouterr().out
    assert "2 images:" in out and "| test" in out
    rows = _rows(tmp_path / "cli" / evaluate.PER_IMAGE_CSV)
    assert {row["image"] for row in rows} == {"img0.png", "img1.png"}
    assert main(["eval", str(data), "--no-crdr", "--metrics", "psnr,nope", "-o", str(tmp_path / "x")]) == 1
    assert "unknown metric 'nope'" in capsys.readouterr().err


def test_an_unavailable_device_is_refused_before_any_work(tiny_model, tmp_path, monkeypatch):
    import torch

    data = _make_images(tmp_path / "data")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ParameterError, match="device 'cuda' is not available"):
        evaluate.evaluate(data, tiny_model, report_dir=tmp_path / "report", device="cuda", **GRID, **QUIET)
    assert not (tmp_path / "report").exists()


def test_eval_codes_on_the_device_it_resolves(tiny_model, tmp_path, monkeypatch):
    import torch

    seen = []
    encode_at, decode_container = codec.encode_at, codec.decode_container

    def spy(function):
        return lambda *args, device, **kwargs: seen.append(device) or function(*args, device=device, **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(codec, "encode_at", spy(encode_at))
    monkeypatch.setattr(codec, "decode_container", spy(decode_container))
    data = _make_images(tmp_path / "data")
    evaluate.evaluate(data, tiny_model, report_dir=tmp_path / "report", device="auto", limit=1,
                      q_values="2", betas="0", baselines="none", metrics="psnr", **QUIET)
    assert seen == [torch.device("cpu")] * 2


def test_eval_help_loads_no_torch_or_numpy():
    probe = (
        "import sys\n"
        "from crdr.cli import main\n"
        "try:\n    main(['eval', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(name for name in ('torch', 'numpy', 'PIL', 'scipy') if name in sys.modules), file=sys.stderr)"
    )
    source = Path(__file__).resolve().parents[1] / "src"
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                               env={"PYTHONPATH": str(source), "PATH": "/usr/bin:/bin"})
    assert "dataset_dir" in completed.stdout
    assert completed.stderr.strip().splitlines()[-1] == "[]"


def test_fid_feature_names_are_the_extractors_of_crdr_metrics():
    from crdr import metrics

    assert plan.FID_FEATURES == tuple(metrics.FEATURE_EXTRACTORS)
