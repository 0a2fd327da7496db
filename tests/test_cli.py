"""The command line, driven through ``main(argv)``: outputs, --force, errors as one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from crdr.cli import main


@pytest.fixture()
def workspace(tmp_path, vectors_dir):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray((rng.random((20, 30, 3)) * 255).astype(np.uint8)).save(tmp_path / f"{name}.png")
    return tmp_path, str(vectors_dir / "official_tiny.pth.tar")


def test_compress_decompress_info_round_trip(workspace, capsys):
    folder, model = workspace
    assert main(["compress", str(folder / "a.png"), "-q", "1.5", "--model", model]) == 0
    assert (folder / "a.crdr").exists()
    assert main(["decompress", str(folder / "a.crdr"), "-o", str(folder / "out.png"), "--beta", "2", "--model", model]) == 0
    assert Image.open(folder / "out.png").size == (30, 20)
    capsys.readouterr()
    assert main(["info", str(folder / "a.crdr"), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["q"] == 1.5 and facts["width"] == 30 and facts["bytes"] == (folder / "a.crdr").stat().st_size


def test_existing_output_needs_force(workspace, capsys):
    folder, model = workspace
    (folder / "a.crdr").write_bytes(b"keep me")
    assert main(["compress", str(folder / "a.png"), "--model", model]) == 1
    assert (folder / "a.crdr").read_bytes() == b"keep me"
    assert "--force" in capsys.readouterr().err
    assert main(["compress", str(folder / "a.png"), "--model", model, "--force"]) == 0
    assert (folder / "a.crdr").read_bytes()[:4] == b"CRDR"


def test_directory_input_prints_summary(workspace, capsys):
    folder, model = workspace
    out = folder / "coded"
    assert main(["compress", str(folder), "--out-dir", str(out), "--model", model, "-q", "0"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.crdr", "b.crdr"]
    assert "2 files, mean" in capsys.readouterr().out


def test_corrupt_file_gives_one_line_error_and_no_output(workspace, capsys):
    folder, model = workspace
    main(["compress", str(folder / "a.png"), "--model", model])
    data = (folder / "a.crdr").read_bytes()
    (folder / "bad.crdr").write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert main(["decompress", str(folder / "bad.crdr"), "-o", str(folder / "bad.png"), "--model", model]) == 1
    err = capsys.readouterr().err
    assert err.startswith("crdr: error:") and err.count("\n") == 1
    assert not (folder / "bad.png").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["compress", "missing.png"],
        ["compress", "{folder}/notimage.png", "--model", "{model}"],
        ["compress", "{folder}/a.png", "-q", "9", "--model", "{model}"],
        ["decompress", "{folder}/a.png", "--model", "{model}", "-o", "{folder}/x.png"],
        ["compress", "{folder}/a.png", "--model", "{folder}/nope.safetensors"],
        ["info", "{folder}/a.png"],
    ],
)
def test_bad_inputs_exit_nonzero_with_one_line(workspace, capsys, argv):
    folder, model = workspace
    (folder / "notimage.png").write_bytes(b"this is not an image")
    argv = [a.format(folder=folder, model=model) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("crdr: error:") and err.count("\n") == 1


def test_official_format_round_trip(workspace):
    folder, model = workspace
    assert main(["compress", str(folder / "a.png"), "-q", "2.0", "--format", "official", "--model", model]) == 0
    assert main(["decompress", str(folder / "a.bin"), "-o", str(folder / "o.png"), "--model", model]) == 0
    assert Image.open(folder / "o.png").size == (30, 20)


def test_target_size_from_cli_stays_under_budget(workspace):
    folder, model = workspace
    assert main(["compress", str(folder / "a.png"), "--target-size", "900", "--model", model, "-o", str(folder / "t.crdr")]) == 0
    assert (folder / "t.crdr").stat().st_size <= 900
