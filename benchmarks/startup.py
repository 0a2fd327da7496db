"""Start-up time of every ``crdr`` subcommand (``--help``, ``--version``, ``info``, argument errors)
and of one whole ``crdr compress`` of a Kodak image with the bundled model.

What: each command line runs as ``python -m crdr ...`` in a fresh subprocess, once as a warm-up
(file-system caches) and then ``--runs`` times; the table gives the median and the fastest wall
time, the peak RSS of the child (``os.wait4``) and whether the command imported torch (one extra
probe run). Two reference rows frame the figures: the bare interpreter (``python -c pass``) and
``python -c "import torch"``.
Why: the CLI promises that help, version, ``info`` and argument errors start without torch
(target: at most 0.5 s on 2 cores); this measures it the same way each time, on a described machine.

    python benchmarks/startup.py
    python benchmarks/startup.py --runs 9 -o reports/startup.json

``info`` reads a 768x512 ``.crdr`` container of 11 KB made with ``crdr.bitstream`` (its payload is
not decodable, which ``info`` never looks at), or ``--file``. Prints a Markdown table and writes
JSON (and the table as .md beside it). On a machine shared with other jobs start-up times are
noisy: the load average at start and end is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe_machine

TARGET_S = 0.5
# Runs the crdr CLI like `python -m crdr`, then says on stderr whether torch got imported.
PROBE = (
    "import sys, runpy; sys.argv = ['crdr', *sys.argv[1:]]\n"
    "try:\n    runpy.run_module('crdr', run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    "print('torch' in sys.modules, file=sys.__stderr__)"
)


SAMPLE = Path(__file__).resolve().parents[1] / "src" / "crdr" / "samples" / "kodim23.png"


def command_lines(coded: Path, scratch: Path) -> list[tuple[str, list[str]]]:
    """(label, arguments after ``python``) for every measured command."""
    crdr = ["-m", "crdr"]
    lines = [("python -c pass", ["-c", "pass"]), ("python -c 'import torch'", ["-c", "import torch"]),
             ("python -c 'import compressai'", ["-c", "import compressai"])]
    lines += [("crdr --help", [*crdr, "--help"]), ("crdr --version", [*crdr, "--version"])]
    for command in ("compress", "decompress", "info", "train", "export", "eval", "serve"):
        lines.append((f"crdr {command} --help", [*crdr, command, "--help"]))
    lines += [
        ("crdr info FILE", [*crdr, "info", str(coded)]),
        ("crdr info FILE --json", [*crdr, "info", str(coded), "--json"]),
        ("crdr compress (argument error)", [*crdr, "compress"]),
        ("crdr compress -q x (argument error)", [*crdr, "compress", "a.png", "-q", "x"]),
        # The whole job with the bundled model: start-up, model load, coding, writing.
        ("crdr compress kodim23.png -q 2 (whole job)",
         [*crdr, "compress", str(SAMPLE), "-q", "2", "-o", str(scratch / "kodim23.crdr"), "--force"]),
    ]
    return lines


def is_targeted(label: str) -> bool:
    """The commands the target is about (the others are measured for the record)."""
    words = label.split()
    if words[0] != "crdr":
        return False
    return words[1] in ("--help", "--version", "info") or "error" in label or words[1:3] in (
        ["compress", "--help"], ["decompress", "--help"]
    )


def make_coded_file(directory: Path) -> Path:
    from crdr import bitstream

    header = bitstream.Header(
        width=768, height=512, q=2.0, model_id=bytes(8), colour=bitstream.Colour.RGB, has_alpha=False, tile_size=0
    )
    path = directory / "kodim-like.crdr"
    path.write_bytes(bitstream.pack(bitstream.Container.from_tiles(header, [(b"z" * 600, b"y" * 10800)])))
    return path


def run_once(arguments: list[str], env: dict) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB) and exit status of one ``python ARGUMENTS`` child."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, *arguments], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    return elapsed, usage.ru_maxrss / 1024.0, os.waitstatus_to_exitcode(status)


def imports_torch(arguments: list[str], env: dict) -> bool | None:
    if arguments[:2] != ["-m", "crdr"]:
        return "torch" in " ".join(arguments)
    completed = subprocess.run([sys.executable, "-c", PROBE, *arguments[2:]], capture_output=True, text=True, env=env)
    last = completed.stderr.strip().splitlines()[-1:] or [""]
    return {"True": True, "False": False}.get(last[0])


def _table(results: list[dict]) -> str:
    header = ["command", "median s", "fastest s", "peak RSS MiB", "imports torch", f"≤ {TARGET_S} s target"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for result in results:
        target = ("met" if result["median_s"] <= TARGET_S else "MISSED") if result["targeted"] else ""
        torch = {True: "yes", False: "no", None: "?"}[result["imports_torch"]]
        lines.append(
            f"| `{result['label']}` | {result['median_s']:.3f} | {result['fastest_s']:.3f} | "
            f"{result['peak_rss_mib']:.0f} | {torch} | {target} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per command after a warm-up (default 5)")
    parser.add_argument("--file", default=None, help="file for `crdr info` (default: a synthetic 768x512 .crdr)")
    parser.add_argument("-o", "--output", default="reports/startup.json", help="JSON output (a .md goes beside it)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")

    machine = describe_machine()
    source = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))}
    results = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="startup.") as scratch:
        coded = Path(args.file) if args.file else make_coded_file(Path(scratch))
        for label, arguments in command_lines(coded, Path(scratch)):
            run_once(arguments, env)  # warm-up
            runs = [run_once(arguments, env) for _ in range(args.runs)]
            seconds = [run[0] for run in runs]
            result = {
                "label": label, "arguments": arguments, "targeted": is_targeted(label),
                "median_s": statistics.median(seconds), "fastest_s": min(seconds), "seconds": seconds,
                "peak_rss_mib": max(run[1] for run in runs), "exit_status": runs[-1][2],
                "imports_torch": imports_torch(arguments, env),
            }
            results.append(result)
            print(f"{label}: median {result['median_s']:.3f} s", file=sys.stderr)
    machine["load_average_end"] = list(os.getloadavg())
    table = _table(results)
    missed = [r["label"] for r in results if r["targeted"] and r["median_s"] > TARGET_S]
    notes = (
        f"Machine: {machine['cpu']}, {machine['usable_cpus']} CPUs, Python {machine['python']}, torch "
        f"{machine['torch']}, {machine['date']}; load average {machine['load_average_start'][0]:.2f} at start, "
        f"{machine['load_average_end'][0]:.2f} at end. Wall seconds of `python -m crdr ...` in a fresh "
        f"process: median and fastest of {args.runs} runs after a warm-up; peak RSS: the largest ru_maxrss "
        f"of those children. Target ≤ {TARGET_S} s for help, version, info and argument errors: "
        + ("met by all." if not missed else f"missed by {', '.join(missed)}.")
    )
    print(table)
    print()
    print(notes)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine, "runs": args.runs, "target_s": TARGET_S,
               "seconds_total": round(time.perf_counter() - started, 1), "results": results}
    output.write_text(json.dumps(payload, indent=1) + "\n")
    output.with_suffix(".md").write_text(f"# Start-up\n\n{table}\n\n{notes}\n")
    print(f"wrote {output} and {output.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
