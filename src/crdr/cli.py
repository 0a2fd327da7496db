"""Command-line interface: ``crdr compress | decompress | info | train | export | eval | serve``.

Bad input never produces a traceback: every :class:`~crdr.errors.CrdrError` (and I/O error on
the user's files) becomes one line on stderr and exit status 1. Outputs are written atomically
and never overwrite an existing file without ``--force``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

# Only light modules here: help, --version, info and argument errors must start without torch
# (tests/test_cli_startup.py). The codec and the other commands are imported where they run.
from crdr import __version__, bitstream
from crdr.errors import CrdrError, OutputExistsError, ParameterError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".avif"}
CODED_SUFFIXES = {".crdr", ".bin"}


def _expand(inputs: list[str], suffixes: set[str]) -> list[Path]:
    """Files as given, and the matching files inside any directory (recursively, sorted)."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        elif path.is_file():
            paths.append(path)
        else:
            raise CrdrError(f"no such file or directory: {item}")
    if not paths:
        raise CrdrError("no input files found")
    return paths


def _outputs(inputs: list[Path], output: str | None, out_dir: str | None, suffix: str) -> list[Path]:
    if output and len(inputs) != 1:
        raise ParameterError("-o names one output; use --out-dir for several inputs")
    if output:
        return [Path(output)]
    directory = Path(out_dir) if out_dir else None
    if directory:
        directory.mkdir(parents=True, exist_ok=True)
    return [(directory or path.parent) / (path.stem + suffix) for path in inputs]


def _progress(items, enabled: bool, unit: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, unit=unit, file=sys.stderr)


def _check_free(paths: list[Path], force: bool) -> None:
    for path in paths:
        if path.exists() and not force:
            raise OutputExistsError(f"{path} exists (use --force to overwrite)")


def run_compress(args: argparse.Namespace) -> int:
    from crdr import codec, image_io

    inputs = _expand(args.inputs, IMAGE_SUFFIXES)
    suffix = ".bin" if args.format == "official" else ".crdr"
    outputs = _outputs(inputs, args.output, args.out_dir, suffix)
    _check_free(outputs, args.force)
    model = codec.get_model(args.model)
    started, total_bits, total_pixels = time.perf_counter(), 0, 0
    many = len(inputs) > 1
    for source, target in _progress(list(zip(inputs, outputs)), many, "img"):
        if args.format == "official":
            if args.target_bpp or args.target_size or args.target_psnr:
                raise ParameterError("target modes write .crdr files; use -q with --format official")
            data = codec.compress_official(source, q=2.0 if args.q is None else args.q, model=model)
            width, height = image_io.load_image(source).rgb.shape[1::-1]
            result_q, notes = (2.0 if args.q is None else args.q), []
        else:
            result = codec.encode(
                source, q=args.q, target_bpp=args.target_bpp, target_size=args.target_size,
                target_psnr=args.target_psnr, model=model, tile_size=args.tile_size,
                max_pixels=args.max_pixels,
            )
            data, width, height, result_q, notes = result.data, result.width, result.height, result.q, result.notes
        image_io.write_atomic(target, data, force=args.force)
        total_bits += 8 * len(data)
        total_pixels += width * height
        for note in notes:
            print(f"crdr: note: {source}: {note}", file=sys.stderr)
        if not many:
            print(f"{source} -> {target}: {len(data)} bytes, {8 * len(data) / (width * height):.4f} bpp, q={result_q:.4f}")
    if many:
        elapsed = time.perf_counter() - started
        print(f"{len(inputs)} files, mean {total_bits / total_pixels:.4f} bpp, {elapsed:.1f} s")
    return 0


def run_decompress(args: argparse.Namespace) -> int:
    from crdr import codec, image_io

    inputs = _expand(args.inputs, CODED_SUFFIXES)
    outputs = _outputs(inputs, args.output, args.out_dir, ".png")
    _check_free(outputs, args.force)
    model = codec.get_model(args.model)
    started = time.perf_counter()
    many = len(inputs) > 1
    for source, target in _progress(list(zip(inputs, outputs)), many, "file"):
        data = source.read_bytes()
        image = codec.decompress(data, beta=args.beta, model=model, max_pixels=args.max_pixels)
        image_io.save_png_atomic(image, target, force=args.force)
        if not many:
            print(f"{source} -> {target}: {image.width}x{image.height} {image.mode}, beta={args.beta:g}")
    if many:
        print(f"{len(inputs)} files, {time.perf_counter() - started:.1f} s")
    return 0


def describe(data: bytes, *, max_pixels: int = bitstream.DEFAULT_MAX_PIXELS) -> dict:
    """Header facts of a ``.crdr`` or ``.bin`` file, for ``crdr info`` (bitstream only: no torch)."""
    if bitstream.is_crdr(data):
        container = bitstream.unpack(data, max_pixels=max_pixels)
        header = container.header
        return {
            "format": "crdr",
            "version": header.version,
            "width": header.width,
            "height": header.height,
            "q": header.q,
            "model_id": header.model_id.hex(),
            "colour": header.colour.name.lower(),
            "alpha": header.has_alpha,
            "tile_size": header.tile_size,
            "tiles": bitstream.tile_count(header.width, header.height, header.tile_size),
            "segments": [{"kind": s.kind.name, "bytes": len(s.data)} for s in container.segments],
            "bytes": len(data),
            "bpp": len(data) * 8 / (header.width * header.height),
        }
    official = bitstream.unpack_official(data, max_pixels=max_pixels)
    return {
        "format": "official",
        "width": official.width,
        "height": official.height,
        "q": official.q,
        "max_abs_y": official.max_abs_y,
        "segments": [
            {"kind": "Z", "bytes": len(official.z_string)},
            {"kind": "Y", "bytes": len(official.y_string)},
        ],
        "bytes": len(data),
        "bpp": len(data) * 8 / (official.width * official.height),
    }


def run_info(args: argparse.Namespace) -> int:
    facts = describe(Path(args.file).read_bytes(), max_pixels=args.max_pixels)
    if args.json:
        print(json.dumps(facts, indent=1))
        return 0
    print(f"{args.file}: {facts['format']} file, {facts['bytes']} bytes, {facts['bpp']:.4f} bpp")
    print(f"  size {facts['width']}x{facts['height']}, q={facts['q']:.6g}")
    for key in ("model_id", "colour", "alpha", "tile_size", "tiles", "max_abs_y"):
        if key in facts:
            print(f"  {key.replace('_', ' ')}: {facts[key]}")
    for index, segment in enumerate(facts["segments"]):
        print(f"  segment {index}: {segment['kind']} {segment['bytes']} bytes")
    return 0


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="bundled model name or weights file (default: bundled 'default')")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument(
        "--max-pixels", type=int, default=bitstream.DEFAULT_MAX_PIXELS,
        help=f"refuse images larger than this many pixels (default {bitstream.DEFAULT_MAX_PIXELS})",
    )


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``crdr`` parser; the module behind ``command`` (if an extra one) is imported and registered.

    The other extra commands get a placeholder carrying their one-line help, so ``crdr --help``
    lists every command without importing their modules (``crdr.serve`` imports torch).
    """
    parser = argparse.ArgumentParser(prog="crdr", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"crdr {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    compress = commands.add_parser("compress", help="images -> .crdr files")
    compress.add_argument("inputs", nargs="+", help="image files or directories")
    where = compress.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", help="output file (one input)")
    where.add_argument("--out-dir", help="output directory (default: beside each input)")
    rate = compress.add_mutually_exclusive_group()
    rate.add_argument("-q", "--quality", dest="q", type=float, help="quality in [0, 4] (continuous; default 2)")
    rate.add_argument("--target-bpp", type=float, help="largest file not above this many bits per pixel")
    rate.add_argument("--target-size", type=int, help="largest file not above this many bytes")
    rate.add_argument("--target-psnr", type=float, help="smallest file reaching this PSNR (dB, beta 0)")
    compress.add_argument("--format", choices=("crdr", "official"), default="crdr", help="official = the authors' .bin")
    compress.add_argument("--tile-size", type=int, default=None, help="code in tiles of this size (multiple of 64)")
    _add_common(compress)
    compress.set_defaults(handler=run_compress)

    decompress = commands.add_parser("decompress", help=".crdr/.bin files -> PNG")
    decompress.add_argument("inputs", nargs="+", help=".crdr or .bin files, or directories")
    where = decompress.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", help="output PNG (one input)")
    where.add_argument("--out-dir", help="output directory (default: beside each input)")
    decompress.add_argument("--beta", type=float, default=0.0, help="realism in [0, max_beta]: 0 faithful (default), max realistic")
    _add_common(decompress)
    decompress.set_defaults(handler=run_decompress)

    info = commands.add_parser("info", help="print a file's header")
    info.add_argument("file")
    info.add_argument("--json", action="store_true")
    info.add_argument("--max-pixels", type=int, default=bitstream.DEFAULT_MAX_PIXELS)
    info.set_defaults(handler=run_info)

    for module, helps in EXTRA_COMMANDS.items():
        if command in helps:
            importlib.import_module(module).register(commands)
            continue
        for name, text in helps.items():
            commands.add_parser(name, help=text, add_help=False)
    return parser


# Modules contributing subcommands through ``register(subparsers)``, with each command's one-line
# help as that module gives it (tests/test_cli_startup.py checks that the two agree).
EXTRA_COMMANDS: dict[str, dict[str, str]] = {
    "crdr.train.command": {
        "train": "train one stage (presets: stage1-3, small-stage1-3, tiny-stage1-3)",
        "export": "export a training run's weights for coding",
    },
    "crdr.evaluate": {"eval": "RD / realism evaluation of crdr and classical codecs on an image folder"},
    "crdr.serve": {"serve": "local web page: try q and beta, compare with JPEG/WebP/AVIF"},
}


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in ``argv``: its first word (the top level has only flag options)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CrdrError as error:
        print(f"crdr: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"crdr: error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("crdr: interrupted", file=sys.stderr)
        return 130
