"""Export: a run's newest checkpoint becomes weights that load_model reads, with their provenance."""

import json

import pytest
import torch

from crdr.errors import OutputExistsError
from crdr.train import checkpoint as checkpoints
from crdr.train.command import main
from crdr.train.export import export
from crdr.weights import file_sha256, is_constant_buffer, load_model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("export") / "run"
    sets = ["steps=2", "perceptual_weight=0", "validate_every=2", "tensorboard=true"]
    assert main(["train", "tiny-stage2", "--run-dir", str(run_dir), *sum([["--set", s] for s in sets], [])]) == 0
    return run_dir


def test_export_loads_with_load_model_and_records_its_provenance(run, tmp_path):
    output = tmp_path / "model.safetensors"
    assert main(["export", str(run), "-o", str(output)]) == 0
    model = load_model(output)
    assert model.config.variable_rate and not model.config.beta_conditioned
    trained = checkpoints.load_latest(run)["model"]
    for key, value in model.state_dict().items():
        if key in trained:
            # Learned tensors go through fp16; the constant lower bounds stay exact.
            expected = trained[key] if is_constant_buffer(key) else trained[key].half().float()
            assert torch.equal(value, expected), key
    sidecar = json.loads(output.with_suffix(".json").read_text())
    assert sidecar["sha256"] == file_sha256(output)
    assert "tiny-stage2" in sidecar["command"][0]
    training = sidecar["training"]
    assert training["stage"] == 2 and training["step"] == 2 and training["wall_time_s"] >= 0
    assert training["config"]["name"] == "tiny-stage2"
    assert training["validation"]["step"] == 2 and len(training["validation"]["results"]) == 5
    history = training["validation_history"]
    assert [row["step"] for row in history] == [2] * 5
    assert [row["q"] for row in history] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert all(row["bpp"] > 0 and row["psnr"] > 0 for row in history)
    assert "export" in training["export_command"]


def test_validation_history_stops_at_the_exported_step(tmp_path):
    from crdr.train.export import _validation_history

    path = tmp_path / "validation.csv"
    path.write_text("step,q,beta,bpp,psnr,perceptual\n500,0,,0.1,25,0.3\n1000,0,2.56,0.2,26,0.2\nbad,row\n")
    assert _validation_history(path, 500) == [
        {"step": 500, "q": 0.0, "beta": None, "bpp": 0.1, "psnr": 25.0, "perceptual": 0.3}
    ]
    assert len(_validation_history(path, 1000)) == 2
    assert _validation_history(tmp_path / "missing.csv", 1000) == []


def test_export_refuses_to_overwrite_without_force(run, tmp_path, capsys):
    output = tmp_path / "model.safetensors"
    export(run, output)
    with pytest.raises(OutputExistsError):
        export(run, output)
    assert main(["export", str(run), "-o", str(output)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["export", str(run), "-o", str(output), "--force", "--fp32"]) == 0
    assert json.loads(output.with_suffix(".json").read_text())["dtype"] == "float32"


def test_export_of_a_folder_without_checkpoints_fails(tmp_path, capsys):
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "m.safetensors")]) == 1
    assert "checkpoint" in capsys.readouterr().err


def test_validation_writes_a_grid_of_q_rows_and_metrics(run):
    from PIL import Image

    grid = Image.open(run / "validation" / "step_000000002.png")
    assert grid.size == (2 * 64 + 2, 5 * 64 + 4 * 2)  # original + one β column; one row per q
    rows = (run / "validation.csv").read_text().splitlines()
    assert rows[0] == "step,q,beta,bpp,psnr,perceptual" and len(rows) == 6


def test_tensorboard_events_are_written_when_enabled(run):
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_next_stage_export_records_the_stage_it_started_from(run, tmp_path):
    stage2 = tmp_path / "stage2.safetensors"
    assert main(["export", str(run), "-o", str(stage2)]) == 0
    stage3_run = tmp_path / "stage3"
    sets = ["steps=1", "perceptual_weight=0", "validate_every=0", f"init_from={stage2}"]
    assert main(["train", "tiny-stage3", "--run-dir", str(stage3_run), *sum([["--set", s] for s in sets], [])]) == 0
    stage3 = tmp_path / "stage3.safetensors"
    assert main(["export", str(stage3_run), "-o", str(stage3)]) == 0
    sidecar = json.loads(stage3.with_suffix(".json").read_text())
    (previous,) = sidecar["previous_stages"]
    assert previous["stage"] == 2 and previous["sha256"] == file_sha256(stage2)
    assert "tiny-stage2" in previous["commands"][0]


def test_an_export_from_a_run_directory_records_that_run_too(run, tmp_path):
    stage3_run = tmp_path / "stage3"
    sets = ["steps=1", "perceptual_weight=0", "validate_every=0", f"init_from={run}"]
    assert main(["train", "tiny-stage3", "--run-dir", str(stage3_run), *sum([["--set", s] for s in sets], [])]) == 0
    stage3 = tmp_path / "stage3.safetensors"
    assert main(["export", str(stage3_run), "-o", str(stage3)]) == 0
    (previous,) = json.loads(stage3.with_suffix(".json").read_text())["previous_stages"]
    assert previous["run_dir"] == str(run) and previous["stage"] == 2 and previous["step"] == 2
    assert "tiny-stage2" in previous["commands"][0] and previous["validation_history"]
