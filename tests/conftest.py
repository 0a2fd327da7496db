"""Shared fixtures: paths to ../shared, the authors' tiny test-vector model and its outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
VECTORS = SHARED / "testvectors" / "official-tiny"


def require_vectors() -> Path:
    if not (VECTORS / "outputs.pt").exists():
        pytest.skip("shared/testvectors/official-tiny is not available")
    return VECTORS


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    return require_vectors()


@pytest.fixture(scope="session")
def tiny_model(vectors_dir):
    from crdr.weights import load_model

    return load_model(vectors_dir / "official_tiny.pth.tar")


@pytest.fixture(scope="session")
def reference(vectors_dir) -> dict:
    return torch.load(vectors_dir / "outputs.pt", weights_only=True)
