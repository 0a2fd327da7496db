"""Command-line interface: ``crdr compress | decompress | info | train | export | eval | serve``.

Bad input never produces a traceback: every :class:`~crdr.errors.CrdrError` (and I/O error on
the user's files) becomes one line on stderr and exit status 1 (:func:`run_handler`, used by every
command and by ``python -m crdr.train.command``).

Nothing is lost: before any coding starts, a run is planned (:func:`plan_jobs`) and checked
(:func:`check_jobs`): an output that is one of the inputs (same path, symlink or hard link) is
refused even with ``--force``; two inputs mapping to one output are refused with the clash named;
an existing output needs ``--force`` (or is skipped with ``--skip-existing``, so a rerun
resumes); an output directory that does not exist or cannot be written is reported under the
user's path. Directory inputs are mirrored under ``--out-dir``. Outputs are written atomically.
``-`` is stdin as an input and stdout as ``-o``; messages then go to stderr only. Coding one image
of several tiles shows ``file: tile k/n`` on stderr when it is a terminal (:func:`_tile_progress`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

# Only light modules here: help, --version, info and argument errors must start without torch
# (tests/test_cli_startup.py). The codec and the other commands are imported where they run.
from crdr import __version__, bitstream, files
from crdr.errors import CrdrError, OutputExistsError, ParameterError
from crdr.suffixes import CODED_SUFFIXES, IMAGE_SUFFIXES, LOSSLESS_LIST, lossless_writer

STDIO = "-"


def error_line(error: BaseException) -> str:
    """The one line the CLI prints for a user-facing error (CrdrError or an I/O error)."""
    if isinstance(error, OSError):
        return f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")
    return str(error)


def print_error(line: str) -> None:
    """``crdr: error: <line>`` on stderr."""
    print(f"crdr: error: {line}", file=sys.stderr)


def run_handler(args: argparse.Namespace) -> int:
    """Run a parsed command (``args.handler``) and return its exit status: a user-facing error
    (CrdrError, OSError) is one line on stderr and 1, Ctrl+C is ``crdr: interrupted`` and 130.
    Every entry point runs its commands through here (``crdr``, ``python -m crdr.train.command``)."""
    try:
        return int(args.handler(args) or 0)
    except (CrdrError, OSError) as error:
        print_error(error_line(error))
        return 1
    except KeyboardInterrupt:
        print("crdr: interrupted", file=sys.stderr)
        return 130


# -- planning a run: inputs, outputs, and every check that can be made before coding -------------


@dataclasses.dataclass(frozen=True)
class Job:
    """One input and its output; ``None`` is stdin (source) or stdout (target)."""

    source: Path | None
    target: Path | None
    skip: bool = False  # the output exists and --skip-existing was given

    @property
    def label(self) -> str:
        return "stdin" if self.source is None else str(self.source)


def plan_jobs(
    items: list[str], *, output: str | None, out_dir: str | None, suffixes: set[str], out_suffix: str
) -> list[Job]:
    """Inputs as given and the matching files inside directories, each with its output path.

    Files inside a directory argument keep their path relative to it under ``out_dir`` (the input
    tree is mirrored, so ``a/x.png`` and ``b/x.png`` do not meet); without ``out_dir`` each output
    goes beside its input.
    """
    if STDIO in items:
        if len(items) != 1:
            raise ParameterError("'-' (stdin) must be the only input")
        if output is None:
            raise ParameterError("reading stdin needs -o FILE, or -o - for stdout")
        return [Job(None, _target(output))]
    found: list[tuple[Path, Path]] = []  # (input, its path relative to the argument it came from)
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += [(p, p.relative_to(path)) for p in files.find_files(path, suffixes)]
        elif path.is_file():
            found.append((path, Path(path.name)))
        elif path.exists():
            raise CrdrError(f"{item} is not a regular file (use - to read stdin)")
        else:
            raise CrdrError(f"no such file or directory: {item}")
    if not found:
        raise CrdrError(f"no input files found (looked for {', '.join(sorted(suffixes))})")
    if output is not None:
        if len(found) != 1:
            raise ParameterError("-o names one output; use --out-dir for several inputs")
        return [Job(found[0][0], _target(output))]
    jobs = []
    for source, relative in found:
        directory = Path(out_dir) / relative.parent if out_dir else source.parent
        jobs.append(Job(source, directory / (source.stem + out_suffix)))
    return jobs


def _target(output: str) -> Path | None:
    if output != STDIO:
        return Path(output)
    if sys.stdout.isatty():
        raise ParameterError("refusing to write binary data to a terminal: redirect stdout or use -o FILE")
    return None


def check_jobs(jobs: list[Job], *, force: bool, skip_existing: bool, create_dirs: bool) -> list[Job]:
    """Refuse a run that could lose data or fail late; mark outputs to skip. Nothing is written.

    ``create_dirs``: missing output directories will be made (``--out-dir``); otherwise an
    output's directory must exist.
    """
    _refuse_clashes(jobs)
    _refuse_overwriting_inputs(jobs)
    checked, existing = [], []
    for job in jobs:
        if job.target is not None:
            _check_writable(job.target, create_dirs)
            if os.path.lexists(job.target):
                if skip_existing:
                    job = dataclasses.replace(job, skip=True)
                elif not force:
                    existing.append(job.target)
        checked.append(job)
    if existing:
        more = f" (and {len(existing) - 1} more outputs)" if len(existing) > 1 else ""
        raise OutputExistsError(
            f"{existing[0]} exists{more} (use --force to overwrite, or --skip-existing to keep it)"
        )
    return checked


def _refuse_clashes(jobs: list[Job]) -> None:
    by_output: dict[str, list[Job]] = {}
    for job in jobs:
        if job.target is not None:
            by_output.setdefault(os.path.normcase(os.path.realpath(job.target)), []).append(job)
    clashes = [group for group in by_output.values() if len(group) > 1]
    if not clashes:
        return
    shown = "; ".join(
        f"{group[0].target} <- {', '.join(job.label for job in group)}" for group in clashes[:3]
    )
    more = f"; and {len(clashes) - 3} more" if len(clashes) > 3 else ""
    raise CrdrError(
        f"{sum(len(group) for group in clashes)} inputs would be written to {len(clashes)} "
        f"output{'s' if len(clashes) > 1 else ''}: {shown}{more} (rename them, or code them separately)"
    )


def _refuse_overwriting_inputs(jobs: list[Job]) -> None:
    # st_dev + st_ino: the same file under another name, a symlink or a hard link.
    inputs = {}
    for job in jobs:
        if job.source is not None:
            status = os.stat(job.source)
            inputs[(status.st_dev, status.st_ino)] = job.source
    for job in jobs:
        if job.target is None:
            continue
        try:
            status = os.stat(job.target)
        except OSError:
            continue  # absent (or a dangling link): not an input
        source = inputs.get((status.st_dev, status.st_ino))
        if source is not None:
            same = "" if os.path.abspath(source) == os.path.abspath(job.target) else f" (the same file as {source})"
            raise CrdrError(f"refusing to overwrite an input, even with --force: {job.target}{same}")


def _check_writable(target: Path, create_dirs: bool) -> None:
    if target.is_dir():
        raise CrdrError(f"cannot write {target}: it is a directory")
    directory = target.parent
    if not create_dirs and not directory.is_dir():
        reason = "not a directory" if directory.exists() else "no such directory"
        raise CrdrError(f"cannot write {target}: {reason}: {directory}")
    existing = directory
    while not existing.exists():  # the nearest existing ancestor is where --out-dir is created
        existing = existing.parent
    if not existing.is_dir():
        raise CrdrError(f"cannot write {target}: not a directory: {existing}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CrdrError(f"cannot write {target}: permission denied in {existing}")


# -- running a run --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunSummary:
    done: int
    skipped: int
    failed: list[str]  # the inputs that failed


def run_jobs(jobs: list[Job], work: Callable[[Job], None], *, keep_going: bool) -> RunSummary:
    """``work`` on every job not skipped; with ``keep_going`` a failure is reported and the rest run."""
    done, failed = 0, []
    todo = [job for job in jobs if not job.skip]
    for job in _progress(todo, len(jobs) > 1):
        try:
            work(job)
        except (CrdrError, OSError) as error:
            line = error_line(error)
            if job.label not in line and len(jobs) > 1:
                line = f"{job.label}: {line}"
            if not keep_going:
                raise CrdrError(line) from error
            print_error(line)
            failed.append(job.label)
            continue
        done += 1
    return RunSummary(done, len(jobs) - len(todo), failed)


def _progress(items: list, enabled: bool):
    """A progress bar over several files, on a terminal only (never in a pipe or a log)."""
    if not enabled or not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    return tqdm(items, unit="file", file=sys.stderr)


def _finish(summary: RunSummary, jobs: list[Job], line: str) -> int:
    """Print a directory run's summary (stdout) and its failures (stderr); the exit status."""
    if len(jobs) > 1:
        skipped = f", {summary.skipped} skipped (output exists)" if summary.skipped else ""
        print(f"{line}{skipped}")
    if not summary.failed:
        return 0
    names = ", ".join(summary.failed[:10])
    more = f" and {len(summary.failed) - 10} more" if len(summary.failed) > 10 else ""
    print_error(f"{len(summary.failed)} of {len(jobs)} files failed: {names}{more}")
    return 1


def _read(source: Path | None) -> bytes:
    return sys.stdin.buffer.read() if source is None else source.read_bytes()


def _write(target: Path | None, data: bytes, *, force: bool) -> None:
    """Write atomically under the user's name, or to stdout."""
    if target is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    with _writing(target):
        files.write_atomic(target, data, force=force)


def _save_image(target: Path | None, image, *, force: bool) -> list[str]:
    """Write a decoded image in the lossless format its name asks for (stdout: PNG); the notes."""
    from crdr import image_io

    if target is None:
        data, notes = image_io.image_bytes(image)
        _write(None, data, force=force)
        return notes
    with _writing(target):
        return image_io.save_image_atomic(image, target, force=force)


@contextlib.contextmanager
def _writing(target: Path) -> Iterator[None]:
    """Make the output's directory; a failed write names the user's file, not the temporary."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield
    except CrdrError:
        raise
    except OSError as error:
        raise CrdrError(f"cannot write {target}: {error.strerror or error}") from None


@contextlib.contextmanager
def _tile_progress(job: Job, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """The codec's progress callback: ``\\r<file>: tile k/n`` on stderr while one image is coded.

    Only on a terminal (never in a pipe or a log), only for images of several tiles, and not in
    directory runs (their bar counts files). The line is erased when the work ends or fails, so
    the report or the error that follows starts on a clean line.
    """
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    shown = 0  # characters on the line

    def report(done: int, total: int) -> None:
        nonlocal shown
        if total < 2:
            return
        text = f"{job.label}: tile {done}/{total}"
        sys.stderr.write("\r" + text.ljust(shown))
        sys.stderr.flush()
        shown = max(shown, len(text))

    try:
        yield report
    finally:
        if shown:
            sys.stderr.write("\r" + " " * shown + "\r")
            sys.stderr.flush()


def _status(job: Job, line: str) -> None:
    """The one-file report: stdout, unless stdout carries the output."""
    print(line, file=sys.stderr if job.target is None else sys.stdout)


def _name(path: Path | None, stdio: str) -> str:
    return stdio if path is None else str(path)


def _report(job: Job, notes: list[str], single: bool, outcome: str) -> None:
    """A file's notes (stderr), then, when it is the only file, ``input -> output: outcome``."""
    for note in notes:
        print(f"crdr: note: {job.label}: {note}", file=sys.stderr)
    if single:
        _status(job, f"{job.label} -> {_name(job.target, 'stdout')}: {outcome}")


# -- compress -------------------------------------------------------------------------------------


def run_compress(args: argparse.Namespace) -> int:
    official = args.format == "official"
    if official and (args.target_bpp or args.target_size or args.target_psnr):
        raise ParameterError("target modes write .crdr files; use -q with --format official")
    suffix = ".bin" if official else ".crdr"
    jobs = plan_jobs(args.inputs, output=args.output, out_dir=args.out_dir, suffixes=IMAGE_SUFFIXES, out_suffix=suffix)
    jobs = check_jobs(jobs, force=args.force, skip_existing=args.skip_existing, create_dirs=bool(args.out_dir))
    for job in jobs:
        if job.target is not None and job.target.suffix.lower() in IMAGE_SUFFIXES:
            raise ParameterError(f"{job.target} names an image, but compress writes {suffix} files")

    from crdr import codec, image_io

    device = codec.resolve_device(args.device)
    model = codec.get_model(args.model)
    started, totals = time.perf_counter(), [0, 0]  # bits, pixels

    def work(job: Job) -> None:
        source = _read(job.source) if job.source is None else job.source
        if official:
            q = 2.0 if args.q is None else args.q
            data = codec.compress_official(source, q=q, model=model, device=device)
            width, height = image_io.load_image(source).rgb.shape[1::-1]
            result_q, notes = q, []
        else:
            with _tile_progress(job, len(jobs) == 1) as progress:
                result = codec.encode(
                    source, q=args.q, target_bpp=args.target_bpp, target_size=args.target_size,
                    target_psnr=args.target_psnr, model=model, tile_size=args.tile_size,
                    max_pixels=args.max_pixels, strip=args.strip, progress=progress, device=device,
                )
            data, width, height, result_q, notes = result.data, result.width, result.height, result.q, result.notes
        _write(job.target, data, force=args.force)
        totals[0] += 8 * len(data)
        totals[1] += width * height
        _report(job, notes, len(jobs) == 1,
                f"{len(data)} bytes, {8 * len(data) / (width * height):.4f} bpp, q={result_q:.4f}")

    summary = run_jobs(jobs, work, keep_going=args.keep_going)
    mean = f"mean {totals[0] / totals[1]:.4f} bpp, " if totals[1] else ""
    return _finish(summary, jobs, f"{summary.done} files, {mean}{time.perf_counter() - started:.1f} s")


# -- decompress -----------------------------------------------------------------------------------


def run_decompress(args: argparse.Namespace) -> int:
    jobs = plan_jobs(args.inputs, output=args.output, out_dir=args.out_dir, suffixes=CODED_SUFFIXES, out_suffix=".png")
    jobs = check_jobs(jobs, force=args.force, skip_existing=args.skip_existing, create_dirs=bool(args.out_dir))
    for job in jobs:
        if job.target is not None:
            lossless_writer(job.target)

    from crdr import codec

    device = codec.resolve_device(args.device)
    model = codec.get_model(args.model)
    started = time.perf_counter()

    def work(job: Job) -> None:
        data = _read(job.source)
        with _tile_progress(job, len(jobs) == 1) as progress:
            image = codec.decompress(
                data, beta=args.beta, model=model, max_pixels=args.max_pixels, format=args.format,
                progress=progress, device=device,
            )
        notes = _save_image(job.target, image, force=args.force)
        _report(job, notes, len(jobs) == 1, f"{image.width}x{image.height} {image.mode}, beta={args.beta:g}")

    summary = run_jobs(jobs, work, keep_going=args.keep_going)
    return _finish(summary, jobs, f"{summary.done} files, {time.perf_counter() - started:.1f} s")


# -- info -----------------------------------------------------------------------------------------


def run_info(args: argparse.Namespace) -> int:
    source = None if args.file == STDIO else Path(args.file)
    facts = bitstream.describe(_read(source), max_pixels=args.max_pixels, format=args.format)
    if args.json:
        print(json.dumps(facts, indent=1))
        return 0
    print(f"{_name(source, 'stdin')}: {facts['format']} file, {facts['bytes']} bytes, {facts['bpp']:.4f} bpp")
    print(f"  size {facts['width']}x{facts['height']}, q={facts['q']:.6g}")
    for key in ("model_id", "colour", "alpha", "icc_profile", "exif", "tile_size", "tiles", "max_abs_y"):
        if key in facts:
            print(f"  {key.replace('_', ' ')}: {facts[key]}")
    for index, segment in enumerate(facts["segments"]):
        print(f"  segment {index}: {segment['kind']} {segment['bytes']} bytes")
    return 0


# -- arguments: each is validated here, where it enters ---------------------------------------------


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text!r}")
        return value

    return parse


def _add_max_pixels(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-pixels", type=_count(1), default=bitstream.DEFAULT_MAX_PIXELS,
        help=f"refuse images larger than this many pixels (default {bitstream.DEFAULT_MAX_PIXELS})",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device`` of compress, decompress, eval and serve (resolved by ``codec.resolve_device``)."""
    parser.add_argument(
        "--device", choices=("cpu", "cuda", "auto"), default="cpu",
        help="where the analysis and synthesis transforms run: cpu (default), cuda, or auto (cuda if "
        "available); entropy coding stays on the CPU, so a file decodes to the same latents anywhere",
    )


def _add_coded_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=bitstream.FORMATS, default="auto",
        help="how to read the input: auto (a .crdr by its magic, an authors' .bin by its start; default), "
        "crdr, or official (the authors' .bin)",
    )


def _add_inputs_and_outputs(parser: argparse.ArgumentParser, inputs: str, output: str) -> None:
    parser.add_argument("inputs", nargs="+", help=f"{inputs}, or directories (searched recursively); - reads stdin")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", help=f"{output} (one input); - writes to stdout")
    where.add_argument(
        "--out-dir", help="output directory; directory inputs keep their sub-folders under it (default: beside each input)"
    )
    parser.add_argument("--model", default=None, help="bundled model name or weights file (default: bundled 'default')")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--force", action="store_true", help="overwrite existing outputs (never an input)")
    existing.add_argument(
        "--skip-existing", action="store_true", help="leave existing outputs alone and code the rest (a rerun resumes)"
    )
    add_device(parser)
    parser.add_argument(
        "--keep-going", action="store_true",
        help="when a file fails, report it and go on; the failures are listed at the end (exit status 1)",
    )
    _add_max_pixels(parser)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``crdr`` parser; the module behind ``command`` (if an extra one) is imported and registered.

    The other extra commands get a placeholder carrying their one-line help, so ``crdr --help``
    lists every command without importing their modules (``crdr.serve`` imports torch).
    """
    parser = argparse.ArgumentParser(prog="crdr", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"crdr {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    compress = commands.add_parser("compress", help="images -> .crdr files")
    _add_inputs_and_outputs(compress, "image files", "output .crdr file")
    rate = compress.add_mutually_exclusive_group()
    rate.add_argument("-q", "--quality", dest="q", type=_finite, help="quality in [0, 4] (continuous; default 2)")
    rate.add_argument("--target-bpp", type=_positive, help="largest file not above this many bits per pixel")
    rate.add_argument("--target-size", type=_count(1), help="largest file not above this many bytes")
    rate.add_argument("--target-psnr", type=_positive, help="smallest file reaching this PSNR (dB, beta 0)")
    compress.add_argument("--format", choices=("crdr", "official"), default="crdr", help="official = the authors' .bin")
    compress.add_argument(
        "--strip", action="store_true", help="drop the image's ICC profile and EXIF (kept by default; a note says so)"
    )
    compress.add_argument(
        "--tile-size", type=_count(0), default=None, help="code in tiles of this size (multiple of 64; 0 = untiled)"
    )
    compress.set_defaults(handler=run_compress)

    decompress = commands.add_parser("decompress", help=".crdr/.bin files -> lossless images (PNG, WebP, TIFF, ...)")
    _add_inputs_and_outputs(
        decompress, ".crdr or .bin files",
        f"output image, its format chosen by the suffix: {LOSSLESS_LIST} (lossless only; stdout: PNG)",
    )
    decompress.add_argument(
        "--beta", type=_finite, default=0.0, help="realism in [0, max_beta]: 0 faithful (default), max realistic"
    )
    _add_coded_format(decompress)
    decompress.set_defaults(handler=run_decompress)

    info = commands.add_parser("info", help="print a file's header")
    info.add_argument("file", help=".crdr or .bin file; - reads stdin")
    info.add_argument("--json", action="store_true", help="print the facts as JSON")
    _add_coded_format(info)
    _add_max_pixels(info)
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
    return run_handler(parser.parse_args(argv))
