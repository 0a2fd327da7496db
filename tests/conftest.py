"""Shared fixtures: paths to ../shared, the authors' tiny test-vector model and its outputs.

The authors' test vectors (their tiny model, its tensors and bitstreams) carry no licence, so they
live outside the repository, in ``../shared/testvectors/official-tiny`` or wherever
``CRDR_TESTVECTORS`` points. A test that needs them is marked ``vectors`` (automatically, when it
uses the ``vectors_dir`` fixture, directly or through ``tiny_model``/``reference``) and FAILS when
they are missing: a clone without them must not go green by skipping its equivalence tests.
``-m "not vectors"`` deselects those tests knowingly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEFAULT_VECTORS = SHARED / "testvectors" / "official-tiny"
VECTORS = Path(os.environ.get("CRDR_TESTVECTORS") or DEFAULT_VECTORS).expanduser().resolve()


def missing_message(path: Path) -> str:
    """Why a ``vectors`` test fails: what is missing, where it is looked for, the two ways out."""
    return (
        f"the authors' test vectors are missing ({path} not found). They are looked for in "
        f"{DEFAULT_VECTORS} (outside the repository: the authors' material has no licence); "
        "CRDR_TESTVECTORS=/path/to/official-tiny points elsewhere; "
        '-m "not vectors" deselects these tests knowingly (-m "not slow and not vectors" for the '
        "default run: a command-line -m replaces pyproject's)."
    )


def require_shared(path: Path) -> Path:
    """``path`` if it exists; else fail (never skip) with the vectors policy message."""
    if not path.exists():
        pytest.fail(missing_message(path), pytrace=False)
    return path


def require_vectors() -> Path:
    require_shared(VECTORS / "outputs.pt")
    return VECTORS


@pytest.hookimpl(tryfirst=True)  # before -m deselects, so `-m "not vectors"` sees the marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "vectors_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.vectors)


def pytest_terminal_summary(terminalreporter):
    """One clear line at the end instead of a reason hidden in each of many failures."""
    if (VECTORS / "outputs.pt").exists():
        return
    failed = [
        report
        for outcome in ("failed", "error")
        for report in terminalreporter.stats.get(outcome, [])
        if "vectors" in getattr(report, "keywords", {})
    ]
    if failed:
        terminalreporter.write_sep("=", f"test vectors missing ({len(failed)} failed)", red=True)
        terminalreporter.write_line(missing_message(VECTORS / "outputs.pt"))


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    return require_vectors()


@pytest.fixture(scope="session")
def tiny_model(vectors_dir):
    from crdr.weights import load_model

    return load_model(vectors_dir / "official_tiny.pth.tar")


@pytest.fixture(scope="session")
def reference(vectors_dir) -> dict:
    import torch

    return torch.load(vectors_dir / "outputs.pt", weights_only=True)
