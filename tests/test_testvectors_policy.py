"""The test-vector policy itself: without the authors' vectors, their tests fail (never skip).

Runs pytest in a subprocess on a two-test file, with this suite's conftest loaded as a plugin and
``CRDR_TESTVECTORS`` pointing at an empty folder: the test that uses ``vectors_dir`` must fail with
the message that says where the vectors are looked for and how to deselect them, and
``-m "not vectors"`` must deselect exactly that test (so the automatic ``vectors`` mark works).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PYPROJECT = TESTS.parent / "pyproject.toml"

TINY_TESTS = '''
def test_needs_the_vectors(vectors_dir):
    assert (vectors_dir / "outputs.pt").is_file()


def test_needs_nothing():
    assert 1 + 1 == 2
'''


def _pytest(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_tiny.py").write_text(TINY_TESTS)
    (empty := tmp_path / "no-vectors").mkdir(exist_ok=True)
    environment = {
        **os.environ,
        "CRDR_TESTVECTORS": str(empty),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable, "-m", "pytest", "-c", str(PYPROJECT), "--rootdir", str(tmp_path),
        "-p", "conftest", "-p", "no:cacheprovider", "-q", "-rA", *arguments, str(tmp_path / "test_tiny.py"),
    ]
    return subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)


def test_missing_vectors_fail_with_one_clear_message_and_never_skip(tmp_path):
    result = _pytest(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "1 passed" in output and "1 error" in output, output
    assert "skipped" not in output, output
    assert "test_needs_the_vectors" in output
    assert str(tmp_path / "no-vectors" / "outputs.pt") in output
    assert "CRDR_TESTVECTORS=/path/to/official-tiny" in output and '-m "not vectors"' in output
    assert "test vectors missing (1 failed)" in output


def test_not_vectors_deselects_exactly_the_tests_that_use_the_vectors(tmp_path):
    result = _pytest(tmp_path, "-m", "not vectors")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 passed, 1 deselected" in output, output
    assert "PASSED test_tiny.py::test_needs_nothing" in output, output
