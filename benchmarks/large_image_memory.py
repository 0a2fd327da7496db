"""Peak memory and time to encode and decode one large photo-like image (tiled coding).

Each phase runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own. The image is
built by tiling and mirroring Kodak photos up to the requested size, so it has natural statistics.

    python benchmarks/large_image_memory.py --size 4096 --model default
    python benchmarks/large_image_memory.py --size 4096 --model paper-random   # paper widths, random weights
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"

CHILD = r"""
import json, resource, sys, time
import numpy as np
from PIL import Image
import torch
from crdr import codec
phase, model_name, image_path, coded_path = sys.argv[1:5]
if model_name == "paper-random":
    from crdr.config import PAPER
    from crdr.models.crdr import CRDR
    torch.manual_seed(0)
    model = codec.get_model(CRDR(PAPER).eval())
else:
    model = codec.get_model(model_name)
start = time.perf_counter()
if phase == "encode":
    data = codec.compress(image_path, q=2.0, model=model)
    open(coded_path, "wb").write(data)
    extra = {"bytes": len(data)}
else:
    image = codec.decompress(open(coded_path, "rb").read(), beta=2.56, model=model)
    extra = {"size": list(image.size)}
seconds = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"phase": phase, "seconds": seconds, "peak_rss_mib": peak_kib / 1024, **extra}))
"""


def build_image(size: int, path: Path) -> None:
    import numpy as np
    from PIL import Image

    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(KODAK.glob("*.png"))[:8]]
    photos = [p.transpose(1, 0, 2) if p.shape[0] > p.shape[1] else p for p in photos]  # portrait → 512×768
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    index = 0
    for top in range(0, size, 512):
        for left in range(0, size, 768):
            photo = photos[index % len(photos)][:, ::-1] if index % 2 else photos[index % len(photos)]
            index += 1
            h, w = min(512, size - top), min(768, size - left)
            canvas[top : top + h, left : left + w] = photo[:h, :w]
    Image.fromarray(canvas).save(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--model", default="default", help="bundled name, weights file, or paper-random")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        image, coded = Path(folder) / "large.png", Path(folder) / "large.crdr"
        build_image(args.size, image)
        results = []
        for phase in ("encode", "decode"):
            output = subprocess.run(
                [sys.executable, "-c", CHILD, phase, args.model, str(image), str(coded)],
                check=True, capture_output=True, text=True,
            ).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores",
        "size": args.size,
        "model": args.model,
        "results": results,
    }
    print(f"{args.size}x{args.size}, model {args.model}:")
    for row in results:
        print(f"  {row['phase']}: {row['seconds']:.1f} s, peak RSS {row['peak_rss_mib']:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
