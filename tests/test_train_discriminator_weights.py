"""Discriminator weights travel with an export: ``crdr export --discriminator`` writes them and
``discriminator_init_from`` starts a run from them, or refuses ones made for another discriminator."""

import dataclasses
import json

import pytest
import torch

from crdr.errors import ParameterError, WeightsError
from crdr.train import checkpoint as checkpoints
from crdr.train.command import main
from crdr.train.config import train_preset
from crdr.train.loop import build_training
from crdr.weights import file_sha256, read_safetensors

SETS = ["steps=1", "perceptual_weight=0", "validate_every=0"]


def train(preset, run_dir):
    assert main(["train", preset, "--run-dir", str(run_dir), *sum([["--set", s] for s in SETS], [])]) == 0
    return run_dir


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A one-step tiny stage-3 run, and its export with the discriminators beside it."""
    folder = tmp_path_factory.mktemp("discriminator")
    run_dir = train("tiny-stage3", folder / "run")
    weights, discriminator = folder / "model.safetensors", folder / "model.discriminator.safetensors"
    assert main(["export", str(run_dir), "-o", str(weights), "--discriminator", str(discriminator)]) == 0
    return run_dir, weights, discriminator


def config_from(source, **changes):
    base = train_preset("tiny-stage3")
    return dataclasses.replace(base, perceptual_weight=0.0, discriminator_init_from=str(source), **changes)


def test_export_writes_the_checkpoints_discriminators_in_fp16_and_names_them(exported):
    run_dir, weights, discriminator = exported
    trained = checkpoints.load_latest(run_dir)["discriminator"]
    state, metadata = read_safetensors(discriminator)
    assert state.keys() == trained.keys()
    assert all(torch.equal(state[key], value.half()) for key, value in trained.items())
    assert json.loads(metadata["crdr_discriminator"])["main_channels"] == 8 and metadata["crdr_step"] == "1"
    record = json.loads(weights.with_suffix(".json").read_text())["training"]["discriminator"]
    assert record["file"] == discriminator.name and record["sha256"] == file_sha256(discriminator)


def test_a_run_starts_from_the_exported_discriminators(exported):
    run_dir, _, discriminator = exported
    trained = checkpoints.load_latest(run_dir)["discriminator"]
    loaded = build_training(config_from(discriminator)).discriminator.state_dict()
    assert all(torch.equal(loaded[key], value.half().float()) for key, value in trained.items())
    fresh = build_training(config_from("")).discriminator.state_dict()
    assert not all(torch.equal(fresh[key], value) for key, value in trained.items())


def test_a_run_directory_gives_its_checkpoints_discriminators_exactly(exported):
    run_dir, _, _ = exported
    trained = checkpoints.load_latest(run_dir)["discriminator"]
    loaded = build_training(config_from(run_dir)).discriminator.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in trained.items())


def test_a_resumed_run_ignores_the_discriminator_source():
    # Resuming builds with init=False and takes every weight from its checkpoint, so a source that
    # has gone since (another machine's file) does not matter.
    training = build_training(config_from("/nonexistent/discriminator.safetensors"), init=False)
    assert training.discriminator is not None


def test_discriminators_built_differently_are_refused(exported):
    _, _, discriminator = exported
    with pytest.raises(WeightsError, match="main_channels 8 != 4"):
        build_training(config_from(discriminator, discriminator_channels=4))
    with pytest.raises(WeightsError, match="kind 'independent' != 'shared'"):
        build_training(config_from(discriminator, discriminator="shared"))


def test_codec_weights_and_broken_files_are_not_taken_for_discriminators(exported, tmp_path):
    _, weights, discriminator = exported
    with pytest.raises(WeightsError, match="not a discriminator file"):
        build_training(config_from(weights))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(discriminator.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="cannot read"):
        build_training(config_from(truncated))
    with pytest.raises(WeightsError, match="cannot read"):
        build_training(config_from(tmp_path / "missing.safetensors"))


def test_a_discriminator_source_needs_a_stage_that_trains_one():
    with pytest.raises(ParameterError, match="discriminator_init_from needs a discriminator"):
        dataclasses.replace(train_preset("tiny-stage2"), discriminator_init_from="d.safetensors")


def test_export_of_a_run_without_discriminators_writes_nothing(tmp_path, capsys):
    run_dir = train("tiny-stage2", tmp_path / "run")
    weights, discriminator = tmp_path / "m.safetensors", tmp_path / "d.safetensors"
    assert main(["export", str(run_dir), "-o", str(weights), "--discriminator", str(discriminator)]) == 1
    assert "trains no discriminator" in capsys.readouterr().err
    assert not weights.exists() and not discriminator.exists()


def test_export_refuses_an_existing_discriminator_file_without_force(exported, tmp_path, capsys):
    run_dir, _, _ = exported
    weights, discriminator = tmp_path / "m.safetensors", tmp_path / "d.safetensors"
    discriminator.write_bytes(b"keep me")
    assert main(["export", str(run_dir), "-o", str(weights), "--discriminator", str(discriminator)]) == 1
    assert "--force" in capsys.readouterr().err
    assert discriminator.read_bytes() == b"keep me" and not weights.exists()
    assert main(["export", str(run_dir), "-o", str(weights), "--discriminator", str(weights)]) == 1
    assert "both be written" in capsys.readouterr().err
