"""Encode/decode speed and peak memory of crdr models and the classical codecs, per image.

What: for each codec (crdr models given with --model, and JPEG/WebP/AVIF/JPEG XL at a mid
quality) and each of the first N Kodak images, the median encode and decode seconds over
several runs (after one warm-up run), and the peak resident memory of encoding and of decoding.
Each (codec, image, operation) runs in a fresh Python subprocess, so one measurement's memory
and caches never leak into the next; peak RSS is ``getrusage(RUSAGE_SELF).ru_maxrss`` of that
subprocess, and the RSS after imports and image loading is reported beside it.
Why: speed and memory are claims of the README; they must be measured the same way each time,
on a described machine.

    python benchmarks/codec_speed.py --model tiny=/work/shared/testvectors/official-tiny/official_tiny.pth.tar
    python benchmarks/codec_speed.py --model crdr=default --images 24 --runs 5 -o reports/codec_speed.json
    python benchmarks/codec_speed.py --model paper-random --codecs none --images 1 --runs 2

``paper-random`` is the paper-size architecture with seeded random weights: the real network's
compute without its weights (random latents make its entropy coding slower than a trained model's).

Prints a Markdown table and writes JSON (and the same table as .md beside it). Timings on a
machine shared with other jobs are noisy: the load average at start and end is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine as machine_info

KODAK = Path("/work/shared/data/kodak")
# A "mid" quality for each classical codec: the middle of its useful range on Kodak
# (about 0.7–1.5 bpp), not a rate-matched setting.
MID_QUALITY = {"jpeg-420": 75, "jpeg-444": 75, "webp": 75, "avif": 50, "jxl": 75}
DEFAULT_CODECS = "jpeg-420,webp,avif,jxl"


# ---------------------------------------------------------------------------------------------
# Worker: one operation on one image, in its own process
# ---------------------------------------------------------------------------------------------


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _worker(spec: dict) -> dict:
    """Run ``spec["op"]`` (encode/decode) ``1 + runs`` times; the first is the warm-up.

    Classical codecs run without importing torch, so their memory is their own.
    """
    if spec["kind"] == "crdr":
        import torch

        from crdr import codec, image_io

        if spec.get("threads"):
            torch.set_num_threads(int(spec["threads"]))
        source = image_io.load_image(spec["image"])

        if spec["model"] == "paper-random":
            # The full-size network with seeded random weights (as benchmarks/serve_latency.py):
            # the real model's compute without its weights; both workers build the same one.
            from crdr.config import PAPER
            from crdr.models.crdr import CRDR

            torch.manual_seed(0)
            model = codec.get_model(CRDR(PAPER).eval())
        else:
            model = codec.get_model(spec["model"])
        if spec["op"] == "encode":
            def operation():
                return codec.encode_at(source, spec["q"], model)
        else:
            data = Path(spec["input"]).read_bytes()

            def operation():
                return codec.decompress(data, beta=spec["beta"], model=model)
        threads = torch.get_num_threads()
    else:
        import numpy as np
        from PIL import Image

        from crdr import baselines

        with Image.open(spec["image"]) as image:
            rgb = np.asarray(image.convert("RGB"))
        baseline = baselines.get_codec(spec["codec"])
        threads = None
        if spec["op"] == "encode":
            def operation():
                return baseline.encode(rgb, spec["quality"])
        else:
            data = Path(spec["input"]).read_bytes()

            def operation():
                return baseline.decode(data)
    rss_before = _peak_rss_mib()
    seconds = []
    result = None
    for _ in range(1 + spec["runs"]):
        tic = time.perf_counter()
        result = operation()
        seconds.append(time.perf_counter() - tic)
    if spec["op"] == "encode":
        Path(spec["output"]).write_bytes(result)
    return {
        "warmup_s": seconds[0],
        "seconds": seconds[1:],
        "median_s": statistics.median(seconds[1:]),
        "rss_before_mib": rss_before,
        "peak_rss_mib": _peak_rss_mib(),
        "torch_threads": threads,
    }


def _run_worker(spec: dict) -> dict:
    completed = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
        capture_output=True, text=True, check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"worker failed ({spec['kind']} {spec['op']} {spec['image']}):\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Machine description
# ---------------------------------------------------------------------------------------------


def describe_machine() -> dict:
    import torch

    return machine_info.describe_machine(torch_threads_default=torch.get_num_threads())


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def _models(specs: list[str]) -> list[tuple[str, str]]:
    """``LABEL=PATH`` or ``PATH`` (labelled by its file name) → (label, path)."""
    models = []
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or "/" in label:
            label, path = Path(spec).name.split(".")[0], spec
        models.append((label, path))
    return models


def _peak(per_image: list[dict], operation: str) -> str:
    """Max peak RSS over images, and the largest growth over the RSS before the operation."""
    peak = max(r[operation]["peak_rss_mib"] for r in per_image)
    growth = max(r[operation]["peak_rss_mib"] - r[operation]["rss_before_mib"] for r in per_image)
    return f"{peak:.0f} (+{growth:.0f})"


def _table(results: list[dict]) -> str:
    header = ["codec", "setting", "images", "bpp", "encode s", "decode s", "encode peak MiB (+growth)",
              "decode peak MiB (+growth)", "RSS before MiB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for result in results:
        per_image = result["images"]
        lines.append("| " + " | ".join([
            result["label"], result["setting"], str(len(per_image)),
            f"{statistics.mean(r['bpp'] for r in per_image):.3f}",
            f"{statistics.mean(r['encode']['median_s'] for r in per_image):.3f}",
            f"{statistics.mean(r['decode']['median_s'] for r in per_image):.3f}",
            _peak(per_image, "encode"),
            _peak(per_image, "decode"),
            f"{max(r['encode']['rss_before_mib'] for r in per_image):.0f}",
        ]) + " |")
    return "\n".join(lines)


def _crdr_threads(results: list[dict]) -> str:
    counts = {r["encode"]["torch_threads"] for result in results if result["kind"] == "crdr" for r in result["images"]}
    return "/".join(str(count) for count in sorted(counts)) or "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[],
                        help="crdr model as LABEL=PATH (or PATH, a bundled name, or paper-random); repeatable")
    parser.add_argument("--codecs", default=DEFAULT_CODECS, help=f"classical codecs (default {DEFAULT_CODECS}; 'none')")
    parser.add_argument("--images", type=int, default=4, help="first N Kodak images (default 4)")
    parser.add_argument("--runs", type=int, default=5, help="measured runs per operation after a warm-up (default 5)")
    parser.add_argument("--q", type=float, default=2.0, help="crdr quality (default 2, the middle)")
    parser.add_argument("--beta", type=float, default=0.0, help="crdr realism at decode (default 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the workers (default torch's)")
    parser.add_argument("--kodak", default=str(KODAK), help=f"Kodak folder (default {KODAK})")
    parser.add_argument("-o", "--output", default="reports/codec_speed.json", help="JSON output (a .md goes beside it)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0

    images = sorted(Path(args.kodak).glob("*.png"))[: args.images]
    if not images:
        raise SystemExit(f"no PNG images in {args.kodak}")
    machine = describe_machine()
    jobs = [("crdr", label, path, f"q={args.q:g}, β={args.beta:g}") for label, path in _models(args.model)]
    codecs = [] if args.codecs.strip().lower() == "none" else [c.strip() for c in args.codecs.split(",") if c.strip()]
    for name in codecs:
        if name not in MID_QUALITY:
            raise SystemExit(f"unknown codec {name!r}; choose from {', '.join(MID_QUALITY)}")
        jobs.append(("baseline", name, name, f"quality {MID_QUALITY[name]}"))
    results = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="codec_speed.") as scratch:
        for kind, label, target, setting in jobs:
            per_image = []
            for image in images:
                coded = Path(scratch) / f"{label}-{image.stem}.bin"
                common = {"kind": kind, "image": str(image), "runs": args.runs, "threads": args.threads,
                          "model": target, "codec": target, "q": args.q, "beta": args.beta,
                          "quality": MID_QUALITY.get(target)}
                encode = _run_worker({**common, "op": "encode", "output": str(coded)})
                decode = _run_worker({**common, "op": "decode", "input": str(coded)})
                from PIL import Image

                with Image.open(image) as opened:
                    pixels = opened.width * opened.height
                per_image.append({"image": image.name, "bytes": coded.stat().st_size,
                                  "bpp": coded.stat().st_size * 8 / pixels, "encode": encode, "decode": decode})
                print(f"{label} {image.name}: encode {encode['median_s']:.3f} s, decode {decode['median_s']:.3f} s",
                      file=sys.stderr)
            results.append({"kind": kind, "label": label, "target": target, "setting": setting, "images": per_image})
    machine["load_average_end"] = list(os.getloadavg())
    table = _table(results)
    notes = (
        f"Machine: {machine['cpu']}, {machine['usable_cpus']} CPUs, torch {machine['torch']} "
        f"(torch threads for crdr: {_crdr_threads(results)}), {machine['date']}; "
        f"load average {machine['load_average_start'][0]:.2f} at start, {machine['load_average_end'][0]:.2f} at end. "
        f"Seconds: mean over images of the median of {args.runs} runs (after a warm-up); peak MiB: max over "
        f"images of ru_maxrss of a fresh process, with in brackets its growth over 'RSS before' (the peak "
        f"after imports and loading the image, before the first operation). 'import crdr' loads torch, so "
        f"the classical codecs' absolute peak includes it too: compare their growth."
    )
    print(table)
    print()
    print(notes)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine, "images": [image.name for image in images], "runs": args.runs,
               "seconds_total": round(time.perf_counter() - started, 1), "results": results}
    output.write_text(json.dumps(payload, indent=1) + "\n")
    output.with_suffix(".md").write_text(f"# Codec speed\n\n{table}\n\n{notes}\n")
    print(f"wrote {output} and {output.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
