"""Checkpoints, SIGKILL/SIGTERM, --resume: a resumed run equals one that never stopped."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from crdr.train import checkpoint as checkpoints
from crdr.train.command import main

COMMAND = [sys.executable, "-m", "crdr.train.command", "train"]


def spawn(run_dir, *sets):
    arguments = [item for value in sets for item in ("--set", value)]
    return subprocess.Popen(
        [*COMMAND, "tiny-stage3", "--run-dir", str(run_dir), *arguments],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for(condition, process, timeout=600.0):
    # A hang guard, not a speed check: a loaded 2-core machine needs tens of seconds to start torch.
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"training ended early ({process.returncode}): {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the training process")
        time.sleep(0.01)


def final_state(run_dir):
    return checkpoints.load_latest(run_dir)


def assert_same_tensors(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            assert_same_tensors(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{path}[{i}]")


STEPS = ["steps=6", "checkpoint_every=2", "perceptual_weight=0.1"]


@pytest.mark.slow
def test_resume_after_sigkill_reaches_the_weights_of_an_uninterrupted_run(tmp_path):
    killed = tmp_path / "killed"
    process = spawn(killed, *STEPS)
    wait_for(lambda: checkpoints.latest_checkpoint(killed) is not None, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close(), process.stderr.close()
    interrupted_at = checkpoints.find_checkpoints(killed)[-1][0]
    assert 2 <= interrupted_at < 6

    assert main(["train", "--resume", str(killed)]) == 0
    straight = tmp_path / "straight"
    assert main(["train", "tiny-stage3", "--run-dir", str(straight), *sum([["--set", s] for s in STEPS], [])]) == 0

    resumed, reference = final_state(killed), final_state(straight)
    assert resumed["step"] == reference["step"] == 6
    for key in ("model", "discriminator", "optimizer", "aux_optimizer", "discriminator_optimizer",
                "scheduler", "sampling_rng", "rng"):
        assert_same_tensors(resumed[key], reference[key], key)
    # The log has one row per step: rows written after the last checkpoint were replaced.
    steps = [int(line.split(",")[0]) for line in (killed / "train.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 7))
    record = json.loads((killed / "config.json").read_text())
    assert len(record["commands"]) == 2 and "--resume" in record["commands"][1]


def test_sigterm_writes_a_final_checkpoint_and_exits_cleanly(tmp_path, monkeypatch, capsys):
    # The signal is real (os.kill to this process) but sent from inside the third iteration, so the
    # test needs no subprocess and knows where the run stops.
    from crdr.train import loop

    step = loop.training_step
    calls = []

    def signalling_step(training, x):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(training, x)

    monkeypatch.setattr(loop, "training_step", signalling_step)
    run = tmp_path / "run"
    sets = ["steps=100", "checkpoint_every=0", "perceptual_weight=0"]
    assert main(["train", "tiny-stage1", "--run-dir", str(run), *sum([["--set", s] for s in sets], [])]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["step"] == 3
    assert [s for s, _ in checkpoints.find_checkpoints(run)] == [3]
    stderr = capsys.readouterr().err
    assert "--resume" in stderr and "SIGTERM" in stderr
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back
    assert main(["train", "--resume", str(run), "--set", "steps=4"]) == 0
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


def test_checkpoints_keep_the_newest_two_and_load_with_weights_only(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "tiny-stage1", "--run-dir", str(run), "--set", "steps=6", "--set", "perceptual_weight=0"]) == 0
    assert [step for step, _ in checkpoints.find_checkpoints(run)] == [4, 6]
    state = torch.load(checkpoints.checkpoint_path(run, 6), weights_only=True)
    assert state["step"] == 6 and state["config"]["name"] == "tiny-stage1"
    assert isinstance(state["rng"][0]["numpy"]["keys"], torch.Tensor)
    assert not list((run / "checkpoints").glob("*.tmp"))


def test_resume_refuses_to_change_what_the_run_computes(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "tiny-stage1", "--run-dir", str(run), "--set", "steps=2", "--set", "perceptual_weight=0"]) == 0
    assert main(["train", "--resume", str(run), "--set", "lr=1"]) == 1
    assert "lr" in capsys.readouterr().err
    assert main(["train", "tiny-stage1", "--run-dir", str(run)]) == 1  # a new run cannot reuse it
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--set", "steps=3"]) == 0
    assert checkpoints.find_checkpoints(run)[-1][0] == 3


@pytest.mark.slow
def test_a_run_shortened_on_resume_decays_its_learning_rate_like_one_planned_that_way(tmp_path):
    sets = ["perceptual_weight=0", "checkpoint_every=1"]
    extra = sum([["--set", s] for s in sets], [])
    planned, shortened = tmp_path / "planned", tmp_path / "shortened"
    assert main(["train", "tiny-stage3", "--run-dir", str(planned), *extra,
                 "--set", "steps=4", "--set", "lr_milestones=3"]) == 0
    assert main(["train", "tiny-stage3", "--run-dir", str(shortened), *extra,
                 "--set", "steps=2", "--set", "lr_milestones=100"]) == 0
    assert main(["train", "--resume", str(shortened), "--set", "steps=4", "--set", "lr_milestones=3"]) == 0
    state = final_state(shortened)
    assert_same_tensors(final_state(planned)["model"], state["model"])
    config = json.loads((shortened / "config.json").read_text())["config"]
    assert config["lr_milestones"] == [3]
    for key in ("optimizer", "discriminator_optimizer"):
        assert [group["lr"] for group in state[key]["param_groups"]] == pytest.approx(
            [group["lr"] for group in final_state(planned)[key]["param_groups"]]
        )
        assert all(group["lr"] < group["initial_lr"] for group in state[key]["param_groups"])


def test_a_milestone_already_passed_on_resume_applies_at_once(tmp_path):
    run = tmp_path / "run"
    extra = ["--set", "perceptual_weight=0", "--set", "checkpoint_every=1"]
    assert main(["train", "tiny-stage1", "--run-dir", str(run), *extra, "--set", "steps=2",
                 "--set", "lr_milestones=100"]) == 0
    assert main(["train", "--resume", str(run), "--set", "steps=3", "--set", "lr_milestones=1"]) == 0
    state = final_state(run)
    gamma = json.loads((run / "config.json").read_text())["config"]["lr_gamma"]
    for group in state["optimizer"]["param_groups"]:
        assert group["lr"] == pytest.approx(group["initial_lr"] * gamma)


def test_a_warm_up_interrupted_by_resume_continues_where_it_stopped(tmp_path):
    extra = ["--set", "perceptual_weight=0", "--set", "checkpoint_every=1", "--set", "lr_warmup_steps=4",
             "--set", "lr_milestones=100"]
    planned, resumed = tmp_path / "planned", tmp_path / "resumed"
    assert main(["train", "tiny-stage1", "--run-dir", str(planned), *extra, "--set", "steps=2"]) == 0
    assert main(["train", "tiny-stage1", "--run-dir", str(resumed), *extra, "--set", "steps=1"]) == 0
    assert main(["train", "--resume", str(resumed), "--set", "steps=2"]) == 0
    state = final_state(resumed)
    assert_same_tensors(final_state(planned)["model"], state["model"])
    for group in state["optimizer"]["param_groups"]:
        assert group["lr"] == pytest.approx(group["initial_lr"] * 3 / 4)  # iteration 2 of a 4-step ramp
    assert state["scheduler"]["last_epoch"] == 2


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "tiny-stage1", "--run-dir", str(run), "--set", "steps=4", "--set", "perceptual_weight=0"]) == 0
    newest = checkpoints.checkpoint_path(run, 4)
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="older checkpoint"):
        assert checkpoints.load_latest(run)["step"] == 2


def test_loader_workers_do_not_change_the_result(tmp_path):
    sets = ["steps=2", "perceptual_weight=0", "checkpoint_every=0"]
    for workers in (0, 2):
        extra = sum([["--set", s] for s in [*sets, f"workers={workers}"]], [])
        assert main(["train", "tiny-stage2", "--run-dir", str(tmp_path / str(workers)), *extra]) == 0
    first, second = (json.loads((tmp_path / w / "summary.json").read_text()) for w in ("0", "2"))
    assert first["rank_checksums"] == second["rank_checksums"]
