"""Start-up: ``import crdr``, the CLI's help, --version, ``info`` and argument errors (``serve``'s
included) load no torch.

Each check runs in a fresh interpreter (this test process has torch loaded already) and lists the
heavy modules it finds in ``sys.modules`` afterwards. Timings live in benchmarks/startup.py.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import crdr
from crdr import bitstream, cli

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "torchvision", "compressai", "lpips", "matplotlib", "numpy", "PIL", "scipy")

# Runs main(argv) like the `crdr` script, then prints the heavy modules that got imported.
PROBE = """
import json, sys
from crdr.cli import main
argv = json.loads(sys.argv[1])
try:
    main(argv)
except SystemExit:
    pass
print(json.dumps([name for name in {heavy!r} if name in sys.modules]), file=sys.__stderr__)
"""


def _heavy_modules_after(code: str, *args: str) -> list[str]:
    completed = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )
    return json.loads(completed.stderr.strip().splitlines()[-1])


def test_import_crdr_and_crdr_cli_load_no_torch():
    code = f"import json, sys, crdr, crdr.cli; print(json.dumps([n for n in {HEAVY!r} if n in sys.modules]), file=sys.stderr)"
    assert _heavy_modules_after(code) == []


@pytest.fixture(scope="module")
def coded_file(tmp_path_factory) -> Path:
    """A valid .crdr container (made with bitstream alone: the payloads are not decodable)."""
    header = bitstream.Header(
        width=30, height=20, q=1.5, model_id=bytes(8), colour=bitstream.Colour.RGB, has_alpha=False, tile_size=0
    )
    path = tmp_path_factory.mktemp("startup") / "a.crdr"
    path.write_bytes(bitstream.pack(bitstream.Container.from_tiles(header, [(b"z" * 9, b"y" * 40)])))
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["compress", "--help"],
        ["decompress", "--help"],
        ["info", "--help"],
        ["info", "{coded}"],
        ["info", "{coded}", "--json"],
        ["info", "{missing}"],
        ["info", "{coded}", "--format", "official"],
        ["decompress", "{coded}", "-o", "{coded}.jpg"],
        ["compress"],
        ["compress", "a.png", "-q", "x"],
        ["compress", "a.png", "--device", "tpu"],
        ["decompress", "a.crdr", "--device", "tpu"],
        ["decompress", "a.crdr", "--beta"],
        ["nope"],
        [],
        ["train", "--help"],
        ["serve", "--help"],
        ["serve", "--port", "x"],
        ["serve", "--port", "70000"],
        ["serve", "--port", "0", "--max-pixels", "0"],
        ["serve", "--device", "tpu"],
    ],
)
def test_help_version_info_and_argument_errors_load_no_torch(argv, coded_file):
    argv = [word.format(coded=coded_file, missing=coded_file.parent / "missing.crdr") for word in argv]
    assert _heavy_modules_after(PROBE.format(heavy=HEAVY), json.dumps(argv)) == []


def test_info_reads_the_header_without_the_codec(coded_file, capsys):
    assert cli.main(["info", str(coded_file), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert (facts["format"], facts["width"], facts["height"], facts["q"], facts["tiles"]) == ("crdr", 30, 20, 1.5, 1)
    assert facts["bytes"] == coded_file.stat().st_size


def test_public_names_of_crdr_still_resolve():
    from crdr import codec, config, errors, weights
    from crdr.models.crdr import CRDR

    assert crdr.__version__ == cli.__version__
    assert (crdr.compress, crdr.decompress, crdr.encode) == (codec.compress, codec.decompress, codec.encode)
    assert (crdr.load_model, crdr.save_weights) == (weights.load_model, weights.save_weights)
    assert (crdr.CRDR, crdr.ModelConfig, crdr.CrdrError) == (CRDR, config.ModelConfig, errors.CrdrError)
    assert set(crdr.__all__) <= set(dir(crdr))
    with pytest.raises(AttributeError):
        crdr.no_such_name


def test_placeholder_help_lines_match_the_modules_commands():
    for module, helps in cli.EXTRA_COMMANDS.items():
        commands = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module).register(commands)
        assert {action.dest: action.help for action in commands._choices_actions} == helps


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps long help lines
    for name in ("compress", "decompress", "info", "train", "export", "eval", "serve"):
        assert name in out
    assert cli.EXTRA_COMMANDS["crdr.serve"]["serve"] in out
