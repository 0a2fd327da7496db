"""Distributed training under torchrun (gloo on CPU): every rank ends with the same weights."""

import json
import subprocess
import sys

import pytest
import torch

from crdr.train import checkpoint as checkpoints


@pytest.mark.slow
def test_two_ranks_under_torchrun_end_with_identical_weights(tmp_path):
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "crdr.train.command", "train", "tiny-stage3", "--run-dir", str(run),
        "--set", "steps=2", "--set", "perceptual_weight=0", "--set", "device=cpu",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 2
    assert len(summary["rank_checksums"]) == 2 and summary["ranks_identical"]
    state = checkpoints.load_latest(run)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    # Each rank drew its own likelihood noise.
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
