"""Real ``.crdr`` sizes against the model's estimated bits, and the cost of tiling.

What: for each Kodak image and several q, the bits of the real file (the Z and Y segment
payloads, and the whole file including header, segment table and CRC) against the model's
estimate ``−Σ log2 p`` of the same rounded latents (one eval-mode forward pass). The ratio is
reported per q and overall, and checked against the issue's requirement

    real payload bits ≤ 1.005 × estimated bits   (Kodak-size images, untiled)

Beside each ratio: the encode and decode seconds of that file (untiled, β = 0, wall time in this
process, after one warm-up image) and the process's peak RSS; the machine and its load average are
recorded. Then, on a few images, bpp and PSNR (β = 0) of the file coded in 256×256 tiles against the
untiled file, since tiles restart the context model and the hyperprior at every border.
Why: the gap between real and estimated rate is the entropy coder's overhead (rANS precision,
CDF tables, tail escapes); a regression there costs every user bits without changing any
likelihood, so it needs its own number.

    python benchmarks/rate_efficiency.py --model /work/shared/testvectors/official-tiny/official_tiny.pth.tar
    python benchmarks/rate_efficiency.py --model default --q 0,1,2,3,4 -o reports/rate_efficiency.json

Prints Markdown and writes JSON (and the Markdown as .md beside it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

from machine import cpu_model

KODAK = Path("/work/shared/data/kodak")
REQUIRED_RATIO = 1.005


def _payload_bits(data: bytes) -> int:
    from crdr import bitstream
    from crdr.bitstream import SegmentKind

    container = bitstream.unpack(data)
    return 8 * sum(len(s.data) for s in container.segments if s.kind in (SegmentKind.Z, SegmentKind.Y))


def _psnr(reference, decoded) -> float:
    from crdr import metrics

    return metrics.psnr(reference, decoded)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="crdr weights file or bundled name")
    parser.add_argument("--label", default=None, help="name of the model in the report (default: file name)")
    parser.add_argument("--q", default="0,1,2,3,4", help="q values (default 0,1,2,3,4)")
    parser.add_argument("--images", type=int, default=24, help="first N Kodak images (default 24)")
    parser.add_argument("--tile-images", type=int, default=3, help="images for the tiling comparison (default 3)")
    parser.add_argument("--tile-size", type=int, default=256, help="tile size compared with untiled (default 256)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    parser.add_argument("--kodak", default=str(KODAK), help=f"Kodak folder (default {KODAK})")
    parser.add_argument("-o", "--output", default="reports/rate_efficiency.json", help="JSON output (.md beside it)")
    args = parser.parse_args(argv)

    import torch

    from crdr import bitstream, codec, image_io
    from crdr.evaluate import estimated_bits, parse_grid

    if args.threads:
        torch.set_num_threads(args.threads)
    model = codec.get_model(args.model)
    label = args.label or Path(str(args.model)).name.split(".")[0]
    q_values = parse_grid(args.q, "q")
    images = sorted(Path(args.kodak).glob("*.png"))[: args.images]
    if not images:
        raise SystemExit(f"no PNG images in {args.kodak}")
    load_start = os.getloadavg()
    # Warm-up (first-call allocations, lazy imports) so the first timed image is not penalised.
    warm = image_io.load_image(images[0])
    codec.decode_container(bitstream.unpack(codec.encode_at(warm, q_values[0], model, tile_size=0)), model, 0.0)
    started = time.perf_counter()

    rows = []
    tiling = []
    for index, path in enumerate(images):
        source = image_io.load_image(path)
        height, width = source.rgb.shape[:2]
        pixels = width * height
        for q in q_values:
            tic = time.perf_counter()
            data = codec.encode_at(source, q, model, tile_size=0)
            encode_s = time.perf_counter() - tic
            tic = time.perf_counter()
            codec.decode_container(bitstream.unpack(data), model, 0.0)
            decode_s = time.perf_counter() - tic
            estimate = estimated_bits(model, source.rgb, q)
            payload = _payload_bits(data)
            rows.append({"image": path.name, "q": q, "pixels": pixels, "estimated_bits": estimate,
                         "payload_bits": payload, "file_bits": 8 * len(data),
                         "payload_ratio": payload / estimate, "file_ratio": 8 * len(data) / estimate,
                         "encode_s": encode_s, "decode_s": decode_s})
            if index < args.tile_images:
                tiled = codec.encode_at(source, q, model, tile_size=args.tile_size)
                untiled_rgb = codec.decode_container(bitstream.unpack(data), model, 0.0).rgb
                tiled_rgb = codec.decode_container(bitstream.unpack(tiled), model, 0.0).rgb
                tiling.append({
                    "image": path.name, "q": q,
                    "untiled_bpp": 8 * len(data) / pixels, "tiled_bpp": 8 * len(tiled) / pixels,
                    "untiled_psnr": _psnr(source.rgb, untiled_rgb), "tiled_psnr": _psnr(source.rgb, tiled_rgb),
                    "tiles": bitstream.tile_count(width, height, args.tile_size),
                })
        print(f"{path.name} done", file=sys.stderr)

    def summary(members: list[dict]) -> dict:
        payload = sum(r["payload_bits"] for r in members)
        file_bits = sum(r["file_bits"] for r in members)
        estimate = sum(r["estimated_bits"] for r in members)
        return {
            "images": len(members),
            "estimated_bpp": statistics.mean(r["estimated_bits"] / r["pixels"] for r in members),
            "payload_bpp": statistics.mean(r["payload_bits"] / r["pixels"] for r in members),
            "file_bpp": statistics.mean(r["file_bits"] / r["pixels"] for r in members),
            "payload_ratio": payload / estimate,
            "file_ratio": file_bits / estimate,
            "max_payload_ratio": max(r["payload_ratio"] for r in members),
            "passes": all(r["payload_ratio"] <= REQUIRED_RATIO for r in members),
            "encode_s": statistics.mean(r["encode_s"] for r in members),
            "decode_s": statistics.mean(r["decode_s"] for r in members),
        }

    per_q = {f"{q:g}": summary([r for r in rows if r["q"] == q]) for q in q_values}
    overall = summary(rows)
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load_end = os.getloadavg()
    machine = (f"{cpu_model()}, {len(os.sched_getaffinity(0))} usable CPUs, "
               f"torch {torch.__version__}, {torch.get_num_threads()} torch threads; load average "
               f"{load_start[0]:.2f} at start, {load_end[0]:.2f} at end")
    lines = [
        f"# Rate efficiency: {label}",
        "",
        f"{len(images)} Kodak images, untiled. Ratio = real bits / estimated bits (sum over images); "
        f"requirement: payload ratio ≤ {REQUIRED_RATIO} for every image. Encode/decode: mean seconds "
        f"per image (untiled, β = 0). Peak RSS of the process: {peak_rss_mib:,.0f} MiB. "
        f"{datetime.date.today()}, {machine}.",
        "",
        "| q | est. bpp | payload bpp | file bpp | payload / est. | file / est. | worst image | ≤ 1.005 | encode s | decode s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, s in [*per_q.items(), ("all", overall)]:
        lines.append(f"| {key} | {s['estimated_bpp']:.4f} | {s['payload_bpp']:.4f} | {s['file_bpp']:.4f} | "
                     f"{s['payload_ratio']:.4f} | {s['file_ratio']:.4f} | {s['max_payload_ratio']:.4f} | "
                     f"{'yes' if s['passes'] else 'NO'} | {s['encode_s']:.2f} | {s['decode_s']:.2f} |")
    if tiling:
        lines += [
            "",
            f"Tiling cost ({args.tile_size}×{args.tile_size} tiles vs untiled, β = 0, "
            f"{min(args.tile_images, len(images))} images):",
            "",
            "| q | untiled bpp | tiled bpp | Δ bpp | untiled PSNR | tiled PSNR | Δ PSNR dB |",
            "|---|---|---|---|---|---|---|",
        ]
        for q in q_values:
            members = [t for t in tiling if t["q"] == q]
            untiled = statistics.mean(t["untiled_bpp"] for t in members)
            tiled = statistics.mean(t["tiled_bpp"] for t in members)
            psnr_untiled = statistics.mean(t["untiled_psnr"] for t in members)
            psnr_tiled = statistics.mean(t["tiled_psnr"] for t in members)
            lines.append(f"| {q:g} | {untiled:.4f} | {tiled:.4f} | {100 * (tiled / untiled - 1):+.2f} % | "
                         f"{psnr_untiled:.2f} | {psnr_tiled:.2f} | {psnr_tiled - psnr_untiled:+.3f} |")
    markdown = "\n".join(lines)
    print(markdown)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": str(args.model), "label": label, "model_id": model.model_id.hex(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "required_ratio": REQUIRED_RATIO, "per_q": per_q, "overall": overall, "rows": rows,
        "tile_size": args.tile_size, "tiling": tiling, "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mib": round(peak_rss_mib, 1), "machine": machine,
    }
    output.write_text(json.dumps(payload, indent=1) + "\n")
    output.with_suffix(".md").write_text(markdown + "\n")
    print(f"wrote {output} and {output.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
