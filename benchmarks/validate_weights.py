"""Validation metrics of an exported model on centre crops, exactly as a training run validates.

What: loads a weights file (``crdr.weights.load_model``) and runs ``crdr.train.loop.validate`` on
the first ``--images`` images of ``--root`` (centre crops of ``--crop``²) at every (q, β) asked
for: bpp (model estimate), PSNR and ST-LPIPS. Prints a Markdown table and writes JSON.
Why: the recipe ablations of docs/training.md start from an exported model; their "step 0" row
must be measured the same way as the runs' own validations (same crops, same metrics).

    python benchmarks/validate_weights.py src/crdr/bundled/default.safetensors \\
        --root ../shared/data/train/gb82 --images 8 --q 0,2,4 --beta 0,5.12
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from crdr.data import validation_images
from crdr.train import loop
from crdr.train.config import train_preset
from crdr.weights import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights")
    parser.add_argument("--root", required=True, help="folder of validation images")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--q", default="0,2,4")
    parser.add_argument("--beta", default="0,5.12")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("-o", "--output", default="reports/validate_weights.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.weights)
    config = dataclasses.replace(
        train_preset("small-stage3"),
        model="small", validation_q=tuple(float(v) for v in args.q.split(",")),
        validation_beta=tuple(float(v) for v in args.beta.split(",")), batch_size=8,
    )
    images = validation_images(args.root, args.images, args.crop)
    perceptual = loop._perceptual_network(config.perceptual)
    with torch.no_grad():
        results, _ = loop.validate(model, images, config, perceptual, torch.device("cpu"))
    print("| q | β | bpp | PSNR dB | ST-LPIPS |")
    print("|---|---|---|---|---|")
    for row in results:
        print(f"| {row['q']:g} | {row['beta']:g} | {row['bpp']:.4f} | {row['psnr']:.2f} | {row['perceptual']:.4f} |")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"weights": args.weights, "root": args.root, "results": results}, indent=1))


if __name__ == "__main__":
    main()
