"""Seconds per training iteration of each stage, for the small and paper models, on this machine.

What: for each model preset and stage, one full iteration of ``crdr.train.loop.training_step``
(G step, aux step and, in stage 3, the HRRGAN reference pass and the D step) on a fixed batch of
synthetic images; the median over ``--steps`` timed iterations after ``--warmup`` untimed ones.
q is fixed at 2 (and β at ``--beta``, default 2.56) so every stage-3 iteration includes the reference
pass at q = 3; at ``--beta 0`` the loop skips the reference, perceptual and G-side D passes.
The perceptual loss is ST-LPIPS(alex) (the paper's LPIPS(alex) has the same network size).
Each case runs in each ``--precisions`` variant: ``fp32``, ``bf16`` (autocast of the transforms,
discriminator and perceptual network; the entropy model stays float32), each optionally with
``-cl`` (``channels_last`` weights and batches); ``--compile`` adds each case again with g_a, g_s and
the discriminator wrapped in ``torch.compile`` (the first, compiling, iteration is reported apart).
Why: training time is a claim of docs/training.md; it must be measured the same way each time.

    python benchmarks/train_step.py --presets small                 # all stages, 5 steps each
    python benchmarks/train_step.py --presets small --crop 128 --precisions fp32,fp32-cl,bf16,bf16-cl
    python benchmarks/train_step.py --presets paper --stages 2 --steps 2 --warmup 1
    python benchmarks/train_step.py --presets small --stages 3 --crop 128 --precisions fp32-cl --compile
    python benchmarks/train_step.py --presets small --stages 3 --crop 128 --precisions fp32-cl --beta 0

Prints a Markdown table and writes JSON (``-o``). On a machine shared with other jobs timings are
noisy: the load average at start and end is recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from crdr.data import SyntheticImageDataset
from crdr.train import loop
from crdr.train.config import train_preset

PRESET_CONFIGS = {"paper": "stage{}", "small": "small-stage{}", "tiny": "tiny-stage{}"}


PRECISIONS = ("fp32", "fp32-cl", "bf16", "bf16-cl")


def measure(
    preset: str, stage: int, batch: int, crop: int, steps: int, warmup: int, device: str, precision: str = "fp32",
    compiled: bool = False, beta: float = 2.56,
) -> dict:
    config = dataclasses.replace(
        train_preset(PRESET_CONFIGS[preset].format(stage)),
        batch_size=batch, crop=crop, perceptual="stlpips-alex", workers=0, device=device, threads=0,
        bf16=precision.startswith("bf16"), channels_last=precision.endswith("-cl"),
    )
    training = loop.build_training(config, device)
    if compiled:
        # Benchmark only: the wrapped modules keep their parameters (the optimisers still hold them),
        # but their state_dict names gain ``_orig_mod.``, so a run never checkpoints this way.
        training.model.encoder = torch.compile(training.model.encoder)
        training.model.decoder = torch.compile(training.model.decoder)
        if training.discriminator is not None:
            training.discriminator = torch.compile(training.discriminator)
    if stage >= 2:
        fixed = beta if stage == 3 else None
        loop._sample_q_beta = lambda _training: (2, 2.0, fixed)  # a fixed, mid-rate iteration
    images = SyntheticImageDataset(batch, crop, seed=0)
    x = torch.stack([images[i] for i in range(batch)]).to(device)
    times = []
    for index in range(warmup + steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        loop.training_step(training, x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if index == 0:
            first = time.perf_counter() - start
        if index >= warmup:
            times.append(time.perf_counter() - start)
    parameters = sum(p.numel() for p in training.model.parameters())
    discriminator = training.discriminator
    d_parameters = sum(p.numel() for p in discriminator.parameters()) if discriminator is not None else 0
    return {
        "preset": preset, "stage": stage, "batch": batch, "crop": crop, "device": device, "precision": precision,
        "compiled": compiled, "beta": beta if stage == 3 else None, "first_step_s": first,
        "codec_parameters": parameters, "discriminator_parameters": d_parameters,
        "median_s": statistics.median(times), "min_s": min(times), "times_s": times,
        "steps_per_s": 1 / statistics.median(times),
    }


def _bf16_flags() -> list[str]:
    """The CPU's bf16 matrix/vector units (lscpu's amx_bf16, avx512_bf16): without them bf16 is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return []
    return sorted({flag for flag in flags if flag in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="small", help="comma-separated: small, paper, tiny")
    parser.add_argument("--stages", default="1,2,3")
    parser.add_argument("--steps", type=int, default=5, help="timed iterations per case")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", default="fp32", help=f"comma-separated: {', '.join(PRECISIONS)}")
    parser.add_argument("--compile", action="store_true", help="also run each case under torch.compile")
    parser.add_argument("--beta", type=float, default=2.56, help="β of the stage-3 iterations")
    parser.add_argument("-o", "--output", default="reports/train_step.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = args.precisions.split(",")
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown:
        parser.error(f"unknown precision(s) {', '.join(unknown)}; choose from {', '.join(PRECISIONS)}")
    load_start = os.getloadavg()
    results = []
    print(
        "| preset | stage | precision | compiled | batch × crop² | codec params | D params | first step s "
        "| median s/step | min s/step | steps/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        for stage in (int(s) for s in args.stages.split(",")):
            for precision in precisions:
                for compiled in (False, True) if args.compile else (False,):
                    row = measure(
                        preset, stage, args.batch, args.crop, args.steps, args.warmup, args.device, precision,
                        compiled, args.beta,
                    )
                    results.append(row)
                    print(
                        f"| {preset} | {stage} | {precision} | {'yes' if compiled else 'no'} | "
                        f"{args.batch} × {args.crop}² | {row['codec_parameters']:,} | "
                        f"{row['discriminator_parameters']:,} | {row['first_step_s']:.1f} | {row['median_s']:.2f} | "
                        f"{row['min_s']:.2f} | {row['steps_per_s']:.3f} |",
                        flush=True,
                    )
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": {
            "platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_cpu_flags": _bf16_flags(),
        },
        "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "steps": args.steps, "warmup": args.warmup, "results": results,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=1))
    print(f"written {args.output}; load average {load_start[0]:.2f} -> {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
