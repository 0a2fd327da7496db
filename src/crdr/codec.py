"""Images to files and back: the codec users call (Python API and CLI).

``compress`` turns an image into a ``.crdr`` file at a quality ``q`` or a target size/bpp/PSNR;
``decompress`` turns a file back into an image at any realism ``beta``, which is chosen at decode
time. The authors' raw ``.bin`` format is read and written too (:func:`compress_official`,
:func:`decompress_official`), byte-identical to their pipeline.

Determinism: everything the decoder must mirror (hyper-decoder, context model, entropy coder)
and the synthesis transform run with one intra-op thread, at encode and at decode. The scale
indexes that drive the rANS coder therefore never depend on the caller's thread count, and a
file decodes to the same pixels with 1 or N threads. The caller's threads are still used: the
work is cut into pieces fixed by the image size (the mean and scale transforms of a slice; bands
of rows of each synthesis layer), each single-threaded, run side by side (:mod:`crdr.parallel`).
The analysis transform, whose output is only rounded on the encoder side, uses all threads.

Devices: ``device=`` (``"cpu"``, the default; ``"cuda"``; ``"auto"`` = cuda if available) moves
only the analysis transform g_a (at encode) and the synthesis transform g_s (at decode). Every
step that decides a symbol (hyper-encoder and decoder, context model, scale indexes, rANS) runs
on the CPU in float32 as with ``"cpu"``: y comes back to the CPU as float32 before it is coded,
so a file's ŷ never depends on where the transforms ran, and a file encoded on a GPU decodes to
the same ŷ on any CPU. Pixels synthesised on another device may differ by about one level.
The caller's model stays on the CPU; g_a and g_s are copied to the device once per (model,
device) and the copies kept while the model lives (:func:`_transform`).

Large images are coded in independent tiles (see ``docs/format.md``) so memory stays bounded;
the decoder holds one tile's latents at a time. The coding functions take a ``progress(done,
total)`` callback, called after each tile (the CLI's ``file: tile k/n`` line).

Hostile files: the decoder's work is bounded by the file. The parser caps one piece at
``bitstream.MAX_TILE_PIXELS`` and the image at ``max_pixels``; before any entropy decoding,
every z and y string is checked against the fewest bytes an honest rANS stream of its symbol
count can have (:func:`check_payloads`); a failed allocation becomes a :class:`ResourceError`.

Metadata: the source's ICC profile and EXIF travel in their own segments (``strip=True`` drops
them, with a note) and come back in the decoded image's ``info``, so a saved PNG carries them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import numbers
import os
import threading
import weakref
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from crdr import bitstream, image_io, parallel
from crdr.bitstream import Colour, Container, Header
from crdr.entropy import ScaleRule
from crdr.errors import CrdrError, FormatError, ModelMismatchError, ParameterError, ResourceError
from crdr.models.crdr import CRDR, STRIDE
from crdr.metrics import psnr as psnr_of
from crdr.parallel import single_thread
from crdr.size_search import largest_fitting
from crdr.weights import DEFAULT_MODEL, load_model

DEFAULT_TILE_SIZE = 1024
# Images with more pixels than this are tiled by default (4 MP: a 2048x2048 photo or larger);
# the format refuses larger untiled pieces.
TILE_THRESHOLD = bitstream.MAX_TILE_PIXELS
SIZE_TOLERANCE = 0.03  # target-size search stops within 3 % below the target
SEARCH_STEPS = 14

_MODEL_CACHE: dict[str, CRDR] = {}


_IDENTITIES: "weakref.WeakKeyDictionary[CRDR, bytes]" = weakref.WeakKeyDictionary()
_IDENTITIES_LOCK = threading.Lock()


def get_model(model: CRDR | str | os.PathLike | None = None) -> CRDR:
    """A ready model: a loaded :class:`CRDR` as is, else a name/path (cached), else the default.
    A model made in code gets its coder tables built on first use."""
    if isinstance(model, CRDR):
        if model.model_id is None and model not in _IDENTITIES:
            model.build_tables()
            model_identity(model)
        return model
    key = str(model if model is not None else DEFAULT_MODEL)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(key)
    return _MODEL_CACHE[key]


def model_identity(model: CRDR) -> bytes:
    """The 8-byte id a file records: the loaded weights' (``load_model``), else derived once per
    model object from its weights (:func:`crdr.weights.model_id`) and kept here, not on the model."""
    if model.model_id is not None:
        return model.model_id
    with _IDENTITIES_LOCK:
        if model not in _IDENTITIES:
            from crdr.weights import model_id

            _IDENTITIES[model] = model_id(model)
        return _IDENTITIES[model]


def pad_to_stride(x: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """Pad right/bottom to a multiple of ``stride``: reflect, as the authors do (spec §11).

    Reflection needs the pad to be smaller than the side; tiny images fall back to edge
    replication, which the authors' code cannot code at all.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % stride, (-width) % stride
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


# -- arguments --------------------------------------------------------------------------------------
# Every public entry point checks its arguments here, once: types before loading a model or an
# image, the range of q and beta (the model's) once the model is there. What the entry points call
# takes the checked values as they are.


def _number(name: str, value) -> float:
    """``value`` as a finite float; anything else (a string, None, a bool, NaN) is refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ParameterError(f"{name} must be a finite number, got {value!r}")
    return number


def _positive(name: str, value) -> float:
    number = _number(name, value)
    if number <= 0:
        raise ParameterError(f"{name} must be positive, got {value!r}")
    return number


def _count(name: str, value) -> int:
    """A positive whole number (an int, or a float without a fractional part)."""
    number = _positive(name, value)
    if not number.is_integer():
        raise ParameterError(f"{name} must be a whole number, got {value!r}")
    return int(number)


def _flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{name} must be True or False, got {value!r}")
    return bool(value)


Progress = Callable[[int, int], None]


def _progress(progress) -> Progress | None:
    """A progress callback, called as ``progress(done, total)`` after each tile, or None."""
    if progress is not None and not callable(progress):
        raise ParameterError(f"progress must be a function of (done, total) or None, got {progress!r}")
    return progress


def resolve_device(device) -> torch.device:
    """Where g_a and g_s run: ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``), ``"auto"`` (cuda when
    torch sees a CUDA device, else cpu) or a :class:`torch.device`. A device that this machine
    lacks is a :class:`ParameterError`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise ParameterError(f"device must be cpu, cuda or auto, got {device!r}")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ParameterError(f"device must be cpu, cuda or auto, got {device!r}") from None
    if resolved.type == "cpu":
        return torch.device("cpu")
    if resolved.type != "cuda":
        raise ParameterError(f"device must be cpu, cuda or auto, got {device!r}")
    if not torch.cuda.is_available():
        raise ParameterError(f"device {str(device)!r} is not available: torch sees no CUDA device (use cpu or auto)")
    if resolved.index is not None and resolved.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ParameterError(f"device {str(device)!r} is not available: torch sees {count} CUDA devices")
    return resolved


def _check_q(model: CRDR, q: float) -> None:
    """Refuse a ``q`` (a float: :func:`_number`'s, or a file's) that ``model`` does not code at.
    The range is the model's: :meth:`CRDR.q_tensor` refuses it, with the message users see."""
    model.q_tensor(q)


def _check_beta(model: CRDR, beta: float) -> None:
    """Refuse a ``beta`` (a float from :func:`_number`) that ``model`` does not decode at
    (:meth:`CRDR.beta_tensor`'s range and message)."""
    model.beta_tensor(beta)


def _read_input(data, what: str = ".crdr or .bin data") -> bytes:
    """Compressed bytes as given, or read from a path (str or os.PathLike)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return data
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise FormatError(f"no such file: {path}") from None
        except IsADirectoryError:
            raise FormatError(f"{path} is a directory, not a compressed file") from None
        except OSError as error:
            raise FormatError(f"cannot read {path}: {error.strerror or error}") from None
    raise ParameterError(f"expected {what} (bytes) or a path to it, got {type(data).__name__}")


# -- transforms on a device ----------------------------------------------------------------------
# Only g_a and g_s move; their outputs come back to the CPU as float32 before anything else sees
# them (the module docstring). On the CPU the model's own modules run, as they always did.

_DEVICE_COPIES: "weakref.WeakKeyDictionary[CRDR, dict[tuple[str, torch.device], torch.nn.Module]]" = (
    weakref.WeakKeyDictionary()
)
_DEVICE_COPIES_LOCK = threading.Lock()


def _transform(model: CRDR, part: str, device: torch.device) -> torch.nn.Module:
    """``model.encoder`` or ``model.decoder`` on ``device``: the module itself on the CPU, else a
    copy made on first use and kept while ``model`` lives (weights changed later are not seen)."""
    if device.type == "cpu":
        return getattr(model, part)
    with _DEVICE_COPIES_LOCK:
        copies = _DEVICE_COPIES.setdefault(model, {})
        if (part, device) not in copies:
            copies[(part, device)] = copy.deepcopy(getattr(model, part)).to(device)
        return copies[(part, device)]


def _on(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)


@contextlib.contextmanager
def _full_float32(device: torch.device) -> Iterator[None]:
    """cuDNN convolutions in float32, not TF32 (torch's default), so g_s on a GPU stays within
    about one level of the CPU's pixels."""
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    with cudnn.flags(
        enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic, allow_tf32=False
    ):
        yield


def _cpu_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last layout on the CPU, where oneDNN's convolutions are 1.1–1.4× faster
    in it (g_a, g_s; measured in benchmarks/codec_speed.py), and a row band is contiguous."""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


def _analysis(model: CRDR, x: torch.Tensor, q: float, device: torch.device) -> torch.Tensor:
    """``y = g_a(x, q)`` with g_a on ``device``; y on the CPU in float32, ready for coding.
    ``q`` was checked where it entered."""
    model.check_size(x)
    encoder = _transform(model, "encoder", device)
    with _full_float32(device):
        y = encoder(_cpu_channels_last(x.to(device)), _on(model.q_tensor(q, x.shape[0]), device))
    # The entropy path gets y in the standard layout: its convolutions must compute exactly what
    # the decoder's compute from ŷ, and a channels-last y would lead them into other kernels.
    return y.to("cpu", torch.float32).contiguous()


def _synthesis(
    model: CRDR, y_hat: torch.Tensor, q: float, beta: float, device: torch.device, pool: Executor | None = None
) -> torch.Tensor:
    """Raw ``x̂ = g_s(ŷ, q, β)`` with g_s on ``device``; x̂ on the CPU in float32. On the CPU
    g_s runs in bands of rows on ``pool`` (the same pixels as one piece, see :mod:`crdr.parallel`).
    ``q`` and ``beta`` were checked where they entered."""
    decoder = _transform(model, "decoder", device)
    q_tensor, beta_tensor = _on(model.q_tensor(q), device), _on(model.beta_tensor(beta), device)
    if device.type == "cpu":
        x_hat = parallel.run_steps(decoder.steps(q_tensor, beta_tensor), _cpu_channels_last(y_hat), pool)
        return x_hat.contiguous()
    with _full_float32(device):
        x_hat = decoder(y_hat.to(device), q_tensor, beta_tensor)
    return x_hat.to("cpu", torch.float32)


# -- memory ---------------------------------------------------------------------------------------

# What torch and numpy say when an allocation fails (CPU: "DefaultCPUAllocator: can't allocate
# memory" / "not enough memory"; CUDA: "out of memory"; C++: "std::bad_alloc").
_ALLOCATION_FAILURES = ("can't allocate", "not enough memory", "out of memory", "bad_alloc", "Unable to allocate")


@contextlib.contextmanager
def _memory_guard(action: str) -> Iterator[None]:
    """Turn a failed allocation inside the block into one :class:`ResourceError` line."""
    try:
        yield
    except MemoryError:
        raise ResourceError(f"not enough memory to {action}") from None
    except RuntimeError as error:
        if not any(text in str(error) for text in _ALLOCATION_FAILURES):
            raise
        raise ResourceError(f"not enough memory to {action}") from None


# -- payload bounds -------------------------------------------------------------------------------
#
# CompressAI's rANS coder (ryg_rans' rans64: a 64-bit state x, 16-bit CDFs, 32-bit words) keeps
# x in [2**31, 2**63) and writes whole words: the flushed state (2 words), then one word per
# renormalisation. Decoding a symbol of frequency f sets x' = f (x >> 16) + (x & 0xffff) - start
# < x (f / 2**16 + 2**-15), so log2 x drops by at least d(f) = -log2(f / 2**16 + 2**-15); reading a
# word raises it by at most 32 + 2**-14 (x >= 2**15 before a read); bypass bits only lower it.
# An honest stream starts below 2**63 and ends at exactly 2**31 (the encoder's initial state),
# so symbols whose d add up to D bits need k > (D - 32) / (32 + 2**-14) words beyond the state.
# This is a bound for every stream CompressAI can write, whatever the image: it refuses no valid
# file, and it makes a short file that declares many latents fail before any synthesis.

_PRECISION = 16
STATE_BYTES = 8
WORD_BYTES = 4


def _drop_bits(entropy_model) -> list[float]:
    """Per CDF row: the least log2-state drop of one symbol, d(largest frequency of the row)."""
    cdf = entropy_model._quantized_cdf.numpy().astype(np.int64)  # (rows, longest + 1), padded
    lengths = entropy_model._cdf_length.numpy().reshape(-1, 1)
    frequencies = np.diff(cdf, axis=1)
    frequencies[np.arange(frequencies.shape[1]).reshape(1, -1) >= lengths - 1] = 0
    ratio = np.minimum(frequencies.max(axis=1) / 2**_PRECISION + 2.0**-15, 1.0)
    return np.maximum(-np.log2(ratio), 0.0).tolist()


def minimum_stream_bytes(drop_bits: float) -> int:
    """Fewest bytes of an honest rANS stream whose symbols lower log2 x by ``drop_bits`` in all."""
    bits = drop_bits * (1 - 1e-9)  # float rounding never makes the bound stricter
    words = max(0, math.ceil((bits - 32) / (32 + 2.0**-14)))
    return STATE_BYTES + WORD_BYTES * words


@dataclass(frozen=True)
class PayloadBounds:
    """The model's per-symbol lower bounds: ``z_bits`` per z position (summed over channels,
    each channel has its own CDF), ``y_bits`` per y element (any of the 64 Gaussian tables)."""

    z_bits: float
    y_bits: float
    y_channels: int

    @classmethod
    def of(cls, model: CRDR) -> "PayloadBounds":
        return cls(
            sum(_drop_bits(model.entropy_model_z)),
            min(_drop_bits(model.entropy_model_y)),
            model.config.y_channels,
        )

    def minimum_bytes(self, width: int, height: int) -> tuple[int, int]:
        """Fewest bytes of the (z, y) strings of one ``width`` x ``height`` piece."""
        z_h, z_w = _z_size(width, height)
        y_symbols = self.y_channels * (4 * z_h) * (4 * z_w)
        return minimum_stream_bytes(z_h * z_w * self.z_bits), minimum_stream_bytes(y_symbols * self.y_bits)


def check_payloads(pieces: list[tuple[tuple[int, int, int, int], bytes, bytes]], model: CRDR) -> None:
    """Refuse strings no encoder can have written for their piece, before decoding any of them.

    ``pieces``: ``((left, top, w, h), z_string, y_string)``. A string must be whole 32-bit words,
    at least the flushed state, and at least :meth:`PayloadBounds.minimum_bytes` long.
    """
    bounds = PayloadBounds.of(model)
    many = len(pieces) > 1
    for index, ((_, _, w, h), z_string, y_string) in enumerate(pieces):
        where = f"tile {index} ({w}x{h})" if many else f"the {w}x{h} image"
        for name, string, least in zip(("z", "y"), (z_string, y_string), bounds.minimum_bytes(w, h)):
            if len(string) % WORD_BYTES or len(string) < least:
                raise FormatError(
                    f"{name} string of {where} holds {len(string)} bytes, but a rANS stream for it "
                    f"is a whole number of 4-byte words and at least {least} bytes: the file is "
                    "truncated, damaged or hostile"
                )


# -- encoding -------------------------------------------------------------------------------------


@dataclass
class EncodeResult:
    """A compressed file and what a user wants to know about it."""

    data: bytes
    q: float
    width: int
    height: int
    notes: list[str] = field(default_factory=list)

    @property
    def bpp(self) -> float:
        return len(self.data) * 8 / (self.width * self.height)


# How each .crdr version's y elements pick their Gaussian table scale; the authors' .bin uses
# CompressAI's next-larger rule. Version 3 is version 2 plus metadata segments.
SCALE_RULES = {1: ScaleRule.NEXT_LARGER, 2: ScaleRule.NEAREST, 3: ScaleRule.NEAREST}


def _encode_tile(
    model: CRDR, rgb: np.ndarray, q: float, rule: ScaleRule, device: torch.device
) -> tuple[bytes, bytes, torch.Tensor]:
    x = pad_to_stride(image_io.to_model_input(rgb))
    with torch.no_grad():
        y = _analysis(model, x, q, device)
        with single_thread() as pool:
            coded = model.compress_latents(y, rule, pool)
    return coded.z_string, coded.y_string, coded.y_hat


def _tile_size_for(width: int, height: int, tile_size: int | None) -> int:
    if tile_size is None:
        return DEFAULT_TILE_SIZE if width * height > TILE_THRESHOLD else 0
    bitstream.tile_count(width, height, tile_size)  # type and grid checks
    problem = bitstream.piece_problem(width, height, tile_size)
    if problem:
        raise ParameterError(f"{problem}: give a tile size of at most {bitstream.MAX_TILE_SIZE}")
    return tile_size


def encode_at(
    source: image_io.SourceImage,
    q: float,
    model: CRDR,
    tile_size: int | None = None,
    progress: Progress | None = None,
    device="cpu",
) -> bytes:
    """Encode a loaded image at quality ``q`` into ``.crdr`` bytes (with its ICC/EXIF, if any).

    ``progress(done, total)`` is called after each tile is coded; ``device``: where g_a runs
    (:func:`resolve_device`; the file's ŷ does not depend on it).
    """
    q = _number("q", q)
    progress = _progress(progress)
    device = resolve_device(device)
    _check_q(model, q)  # before any work
    height, width = source.rgb.shape[:2]
    return _encode_at(source, q, model, _tile_size_for(width, height, tile_size), progress, device)


def _encode_at(
    source: image_io.SourceImage, q: float, model: CRDR, tile: int, progress: Progress | None,
    device: torch.device,
) -> bytes:
    """:func:`encode_at` with checked arguments; ``tile``: a tile size :func:`_tile_size_for` gave."""
    height, width = source.rgb.shape[:2]
    has_metadata = source.icc_profile is not None or source.exif is not None
    version = bitstream.version_for(has_metadata)
    tiles = []
    grid = bitstream.tile_grid(width, height, tile)
    with _memory_guard(f"encode a {width}x{height} image (try a smaller tile size)"):
        for done, (left, top, w, h) in enumerate(grid, 1):
            z_string, y_string, _ = _encode_tile(
                model, source.rgb[top : top + h, left : left + w], q, SCALE_RULES[version], device
            )
            tiles.append((z_string, y_string))
            if progress is not None:
                progress(done, len(grid))
        alpha = None if source.alpha is None else image_io.encode_alpha(source.alpha)
    header = Header(
        width=width, height=height, q=q, model_id=model_identity(model), colour=source.colour,
        has_alpha=alpha is not None, tile_size=tile, version=version,
        has_icc=source.icc_profile is not None, has_exif=source.exif is not None,
    )
    container = Container.from_tiles(header, tiles, alpha, source.icc_profile, source.exif)
    return bitstream.pack(container)


def _load(image, max_pixels: int, strip: bool = False) -> image_io.SourceImage:
    """The image argument of the API as a SourceImage; ``strip`` drops its ICC/EXIF (noted)."""
    if isinstance(image, image_io.SourceImage):
        source = image
    else:
        if image is None:
            raise ParameterError(
                "no image given (None): pass a path, encoded bytes, a PIL image or an (H, W, 3) array"
            )
        if isinstance(image, np.ndarray):
            image = image_io.image_from_array(image)
        if not isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)):
            raise ParameterError(
                f"cannot read an image from a {type(image).__name__}: pass a path, encoded bytes, "
                "a PIL image or an (H, W, 3) array"
            )
        source = image_io.load_image(image, max_pixels=max_pixels, metadata=True)
    dropped = [name for name, value in (("ICC profile", source.icc_profile), ("EXIF", source.exif)) if value is not None]
    if strip and dropped:
        note = f"{' and '.join(dropped)} not kept (strip)"
        source = dataclasses.replace(source, icc_profile=None, exif=None, notes=source.notes + (note,))
    return source


def encode(
    image,
    *,
    q: float | None = None,
    target_bpp: float | None = None,
    target_size: int | None = None,
    target_psnr: float | None = None,
    model: CRDR | str | None = None,
    tile_size: int | None = None,
    max_pixels: int = bitstream.DEFAULT_MAX_PIXELS,
    strip: bool = False,
    progress: Progress | None = None,
    device="cpu",
) -> EncodeResult:
    """Compress ``image`` at ``q`` or to a target.

    ``image``: a path, encoded bytes, a PIL image, or a numpy array (H, W) grey, (H, W, 1), (H, W, 3)
    RGB or (H, W, 4) RGBA, uint8 or float in [0, 1] (see :func:`crdr.image_io.image_from_array`).
    Exactly one of ``q``, ``target_bpp``, ``target_size`` (bytes) and ``target_psnr`` (dB at
    beta = 0) may be given; none means ``q = 2`` (the middle of the range). The ICC profile and
    EXIF of the input are kept unless ``strip``. ``progress(done, total)`` is called after each
    tile is coded (a target search codes the image several times: the count starts again for
    each try). ``device``: where g_a runs, and g_s for a PSNR target (:func:`resolve_device`).
    Bad arguments raise :class:`ParameterError`.
    """
    chosen = [v is not None for v in (q, target_bpp, target_size, target_psnr)]
    if sum(chosen) > 1:
        raise ParameterError("give only one of q, target_bpp, target_size and target_psnr")
    q = None if q is None else _number("q", q)
    target_bpp = None if target_bpp is None else _positive("target bpp", target_bpp)
    target_size = None if target_size is None else _count("target size", target_size)
    target_psnr = None if target_psnr is None else _positive("target PSNR", target_psnr)
    max_pixels = _count("max_pixels", max_pixels)
    strip = _flag("strip", strip)
    progress = _progress(progress)
    device = resolve_device(device)
    codec_model = get_model(model)
    if q is not None:
        _check_q(codec_model, q)  # before reading the image
    source = _load(image, max_pixels, strip)
    height, width = source.rgb.shape[:2]
    tile = _tile_size_for(width, height, tile_size)  # before any coding
    label = None
    if target_bpp is not None:
        target_size = int(target_bpp * width * height / 8)
        label = f"{target_bpp:g} bpp ({target_size} bytes for {width}x{height})"
    if target_size is not None:
        result = _search_size(source, target_size, codec_model, tile, label, progress, device)
    elif target_psnr is not None:
        result = _search_psnr(source, target_psnr, codec_model, tile, progress, device)
    else:
        q = 2.0 if q is None else q
        result = EncodeResult(_encode_at(source, q, codec_model, tile, progress, device), q, width, height)
    result.notes[:0] = list(source.notes)
    return result


def _search_size(
    source, target: int, model: CRDR, tile: int, label: str | None = None,
    progress: Progress | None = None, device: torch.device = torch.device("cpu"),
) -> EncodeResult:
    """Largest ``q`` whose file fits in ``target`` bytes: bisection on real encoded sizes.

    Stops as soon as a file lands within 3 % below the target. File size grows with ``q`` (the
    rate levels are trained in order); the search never returns a file above the target.
    ``label`` names the target as the user gave it (a bpp target is rounded down to bytes).
    """
    height, width = source.rgb.shape[:2]
    files: dict[int, bytes] = {}

    def size_of(position: int) -> int:  # q on a grid of 2**SEARCH_STEPS steps: the old midpoints
        files[position] = _encode_at(source, _grid_q(position, model), model, tile, progress, device)
        return len(files[position])

    top = 2**SEARCH_STEPS
    position = largest_fitting(size_of, 0, top, target, good_enough=math.ceil((1 - SIZE_TOLERANCE) * target))
    if position is None:
        smallest = files[0]
        raise ParameterError(
            f"target of {label or f'{target} bytes'} is below the smallest file this model makes for this image: "
            f"{len(smallest)} bytes ({len(smallest) * 8 / (width * height):.4f} bpp at q=0)"
        )
    result = EncodeResult(files[position], _grid_q(position, model), width, height)
    if position == top:
        result.notes.append(
            f"target of {target} bytes exceeds the largest file at q={model.max_q:g} ({len(result.data)} bytes)"
        )
    return result


def _grid_q(position: int, model: CRDR) -> float:
    return position * model.max_q / 2**SEARCH_STEPS


def _search_psnr(
    source, target: float, model: CRDR, tile: int, progress: Progress | None = None,
    device: torch.device = torch.device("cpu"),
) -> EncodeResult:
    """Smallest ``q`` whose reconstruction at beta = 0 reaches ``target`` dB (bisection)."""
    height, width = source.rgb.shape[:2]

    def quality_of(q: float) -> tuple[bytes, float]:
        data = _encode_at(source, q, model, tile, progress, device)
        decoded = _decode_container(bitstream.unpack(data), model, 0.0, None, device)
        return data, psnr_of(decoded.rgb, source.rgb)

    data, psnr = quality_of(model.max_q)
    if psnr < target:
        result = EncodeResult(data, model.max_q, width, height)
        result.notes.append(f"target {target:g} dB is above the best this model reaches: {psnr:.2f} dB")
        return result
    best = EncodeResult(data, model.max_q, width, height)
    low, high = 0.0, model.max_q
    data, psnr = quality_of(low)
    if psnr >= target:
        return EncodeResult(data, low, width, height)
    for _ in range(SEARCH_STEPS // 2):
        middle = (low + high) / 2
        data, psnr = quality_of(middle)
        if psnr >= target:
            high, best = middle, EncodeResult(data, middle, width, height)
        else:
            low = middle
    return best


# -- decoding -------------------------------------------------------------------------------------


@dataclass
class DecodedImage:
    """A reconstruction: ``rgb`` (H, W, 3) uint8, ``alpha`` (H, W) uint8 or None, the source's
    colour kind and, when the file carried them, its ICC profile and EXIF (TIFF bytes)."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    colour: Colour
    icc_profile: bytes | None = None
    exif: bytes | None = None

    def to_pil(self) -> Image.Image:
        """L/LA/RGB/RGBA image; ``info["icc_profile"]`` and ``info["exif"]`` hold the metadata."""
        return image_io.to_pil(self.rgb, self.alpha, self.colour, icc_profile=self.icc_profile, exif=self.exif)


@dataclass
class DecodedLatents:
    """A file after entropy decoding: ŷ per tile. It does not depend on ``beta``, so a caller that
    decodes one file at several realisms (the web page) keeps this and re-runs only synthesis."""

    header: Header
    tiles: list[tuple[tuple[int, int, int, int], torch.Tensor]]  # ((left, top, w, h), ŷ)
    alpha: np.ndarray | None
    icc_profile: bytes | None = None
    exif: bytes | None = None


def _z_size(width: int, height: int) -> tuple[int, int]:
    return -(-height // STRIDE), -(-width // STRIDE)


def _decodable_pieces(container: Container, model: CRDR) -> list[tuple[tuple[int, int, int, int], bytes, bytes]]:
    """``((left, top, w, h), z_string, y_string)`` per tile, after the checks that come before
    any decoding, in order: the model id, ``q`` against the model's range, and every string
    against :func:`check_payloads`, so a hostile file fails before any work."""
    header = container.header
    if header.model_id != model_identity(model):
        raise ModelMismatchError(
            f"file was written by model {header.model_id.hex()}, but the decoding model is "
            f"{model_identity(model).hex()} (pass the right --model)"
        )
    _check_q(model, header.q)
    pieces = container.pieces()
    check_payloads(pieces, model)
    return pieces


@contextlib.contextmanager
def _decoding(width: int, height: int) -> Iterator[Executor | None]:
    """The decoder's setting: no autograd, one thread and its pool (see the module docstring),
    and a failed allocation reported as a :class:`ResourceError`."""
    with _memory_guard(f"decode a {width}x{height} image"), torch.no_grad(), single_thread() as pool:
        yield pool


def _entropy_decode(
    model: CRDR, header: Header, box: tuple[int, int, int, int], z_string: bytes, y_string: bytes,
    pool: Executor | None,
):
    """ŷ of one tile: (1, Y, h / 16, w / 16), rounded up."""
    _, _, w, h = box
    return model.decompress_latents(z_string, y_string, _z_size(w, h), SCALE_RULES[header.version], pool)


def _paint(
    rgb: np.ndarray, model: CRDR, q: float, box: tuple[int, int, int, int], y_hat, beta: float, device: torch.device,
    pool: Executor | None,
) -> None:
    """Synthesise one tile at realism ``beta`` into its place in ``rgb`` (H, W, 3) uint8."""
    left, top, w, h = box
    x_hat = torch.clamp(_synthesis(model, y_hat, q, beta, device, pool), -1, 1)
    rgb[top : top + h, left : left + w] = image_io.from_model_output(x_hat[:, :, :h, :w])


def _alpha(container: Container) -> np.ndarray | None:
    header = container.header
    return image_io.decode_alpha(container.alpha, header.width, header.height) if header.has_alpha else None


def decode_latents(container: Container, model: CRDR, progress: Progress | None = None) -> DecodedLatents:
    """Entropy-decode every tile of a parsed ``.crdr`` container (checks first, see
    :func:`_decodable_pieces`); ``progress(done, total)`` is called after each tile."""
    progress = _progress(progress)
    header = container.header
    pieces = _decodable_pieces(container, model)
    tiles = []
    with _decoding(header.width, header.height) as pool:
        for done, (box, z_string, y_string) in enumerate(pieces, 1):
            tiles.append((box, _entropy_decode(model, header, box, z_string, y_string, pool)))
            if progress is not None:
                progress(done, len(pieces))
        alpha = _alpha(container)
    return DecodedLatents(header, tiles, alpha, container.icc_profile, container.exif)


def _synthesize(
    latents: DecodedLatents, model: CRDR, beta: float, progress: Progress | None, device: torch.device
) -> DecodedImage:
    header = latents.header
    with _decoding(header.width, header.height) as pool:
        rgb = np.empty((header.height, header.width, 3), dtype=np.uint8)
        for done, (box, y_hat) in enumerate(latents.tiles, 1):
            _paint(rgb, model, header.q, box, y_hat, beta, device, pool)
            if progress is not None:
                progress(done, len(latents.tiles))
    return DecodedImage(rgb, latents.alpha, header.colour, latents.icc_profile, latents.exif)


def synthesize(
    latents: DecodedLatents, model: CRDR, beta: float, progress: Progress | None = None, device="cpu"
) -> DecodedImage:
    """Run the synthesis transform on every tile at realism ``beta`` and join the tiles;
    ``progress(done, total)`` is called after each tile; ``device``: where g_s runs."""
    beta = _number("beta", beta)
    _check_beta(model, beta)
    return _synthesize(latents, model, beta, _progress(progress), resolve_device(device))


def decode_container(
    container: Container, model: CRDR, beta: float, progress: Progress | None = None, device="cpu"
) -> DecodedImage:
    """Reconstruct a parsed ``.crdr`` container at realism ``beta``.

    The steps of :func:`decode_latents` then :func:`synthesize`, tile by tile: one tile's ŷ is
    held at a time, and ``progress(done, total)`` is called after each tile is entropy-decoded
    and synthesised. ``device``: where g_s runs (:func:`resolve_device`); entropy decoding is on
    the CPU whatever it is.
    """
    beta = _number("beta", beta)
    _check_beta(model, beta)
    return _decode_container(container, model, beta, _progress(progress), resolve_device(device))


def _decode_container(
    container: Container, model: CRDR, beta: float, progress: Progress | None, device: torch.device
) -> DecodedImage:
    """:func:`decode_container` with checked arguments."""
    header = container.header
    pieces = _decodable_pieces(container, model)
    with _decoding(header.width, header.height) as pool:
        rgb = np.empty((header.height, header.width, 3), dtype=np.uint8)
        for done, (box, z_string, y_string) in enumerate(pieces, 1):
            y_hat = _entropy_decode(model, header, box, z_string, y_string, pool)
            _paint(rgb, model, header.q, box, y_hat, beta, device, pool)
            if progress is not None:
                progress(done, len(pieces))
        alpha = _alpha(container)
    return DecodedImage(rgb, alpha, header.colour, container.icc_profile, container.exif)


def compress(
    image,
    *,
    q=None,
    target_bpp=None,
    target_size=None,
    target_psnr=None,
    model=None,
    tile_size=None,
    max_pixels: int = bitstream.DEFAULT_MAX_PIXELS,
    strip: bool = False,
    progress: Progress | None = None,
    device="cpu",
) -> bytes:
    """Python API: image → ``.crdr`` bytes (see :func:`encode` for the arguments)."""
    return encode(
        image, q=q, target_bpp=target_bpp, target_size=target_size, target_psnr=target_psnr,
        model=model, tile_size=tile_size, max_pixels=max_pixels, strip=strip, progress=progress,
        device=device,
    ).data


def decompress(
    data,
    *,
    beta: float = 0.0,
    model=None,
    max_pixels: int = bitstream.DEFAULT_MAX_PIXELS,
    format: str = "auto",
    progress: Progress | None = None,
    device="cpu",
) -> Image.Image:
    """Python API: ``.crdr`` or the authors' ``.bin`` (bytes, or a path) → PIL image at ``beta``.

    ``format``: ``"auto"`` (a ``.crdr`` magic, or the start of a ``.bin``; anything else is
    refused saying what it is), ``"crdr"`` or ``"official"``. The ICC profile and EXIF of the
    source, when the file has them, are in the image's ``info`` (a PNG saved from it keeps them).
    ``progress(done, total)`` is called after each tile is decoded (see :func:`decode_container`);
    ``device``: where g_s runs (:func:`resolve_device`).
    """
    beta = _number("beta", beta)
    max_pixels = _count("max_pixels", max_pixels)
    progress = _progress(progress)
    device = resolve_device(device)
    data = _read_input(data)
    # The file is parsed before the model is loaded: a hostile header costs no weights.
    if bitstream.identify(data, format) == "crdr":
        container = bitstream.unpack(data, max_pixels=max_pixels)
        codec_model = get_model(model)
        _check_beta(codec_model, beta)
        return _decode_container(container, codec_model, beta, progress, device).to_pil()
    official = bitstream.unpack_official(data, max_pixels=max_pixels)
    return _decode_official(official, beta, get_model(model), progress, device)


# -- the authors' raw .bin format -----------------------------------------------------------------


def compress_official(image, *, q: float, model=None, device="cpu") -> bytes:
    """Encode in the authors' ``.bin`` layout (no tiling, no alpha, q stored as int(16 q)).

    The encoder runs at ``q`` itself, the decoder at ``int(16 q) / 16``, exactly as the authors'
    ``compress.py`` does; choose ``q`` on the 1/16 grid to avoid the mismatch. The format has no
    tiling, so images above ``bitstream.MAX_TILE_PIXELS`` (4 MP) are refused. ``device``: where
    g_a runs (:func:`resolve_device`).
    """
    q = _number("q", q)
    device = resolve_device(device)
    q_byte = bitstream.official_q_byte(q)
    codec_model = get_model(model)
    _check_q(codec_model, q)
    source = _load(image, bitstream.DEFAULT_MAX_PIXELS)
    height, width = source.rgb.shape[:2]
    if height > 65535 or width > 65535:
        raise ParameterError("the authors' format stores sizes in 16 bits: at most 65535x65535")
    problem = bitstream.piece_problem(width, height, 0)
    if problem:
        raise ParameterError(f"the authors' format has no tiling and crdr cannot code {problem}")
    with _memory_guard(f"encode a {width}x{height} image"):
        z_string, y_string, y_hat = _encode_tile(codec_model, source.rgb, q, ScaleRule.NEXT_LARGER, device)
    official = bitstream.OfficialFile(
        height=height, width=width, max_abs_y=bitstream.official_max_abs_byte(float(y_hat.abs().max())),
        q_byte=q_byte, z_string=z_string, y_string=y_string,
    )
    return bitstream.pack_official(official)


def decompress_official(
    data, *, beta: float = 0.0, model=None, max_pixels: int = bitstream.DEFAULT_MAX_PIXELS, device="cpu"
) -> Image.Image:
    """Decode the authors' ``.bin`` (bytes or a path; their files carry no model id: give the
    right model); ``device``: where g_s runs (:func:`resolve_device`)."""
    beta = _number("beta", beta)
    max_pixels = _count("max_pixels", max_pixels)
    device = resolve_device(device)
    official = bitstream.unpack_official(_read_input(data, "authors' .bin data"), max_pixels=max_pixels)
    return _decode_official(official, beta, get_model(model), None, device)


def _decode_official(
    official: bitstream.OfficialFile, beta: float, model: CRDR, progress: Progress | None, device: torch.device
) -> Image.Image:
    _check_q(model, official.q)  # the file's q
    _check_beta(model, beta)
    box = (0, 0, official.width, official.height)
    check_payloads([(box, official.z_string, official.y_string)], model)
    with _decoding(official.width, official.height) as pool:
        y_hat = model.decompress_latents(
            official.z_string, official.y_string, _z_size(official.width, official.height), ScaleRule.NEXT_LARGER, pool
        )
    header = Header(
        width=official.width, height=official.height, q=official.q, model_id=model_identity(model),
        colour=Colour.RGB, has_alpha=False, tile_size=0,
    )
    rgb = _synthesize(DecodedLatents(header, [(box, y_hat)], None), model, beta, progress, device).rgb
    return Image.fromarray(rgb, "RGB")


def describe(data, *, max_pixels: int = bitstream.DEFAULT_MAX_PIXELS, format: str = "auto") -> dict:
    """Header facts of a ``.crdr`` or ``.bin`` file (bytes or a path): :func:`bitstream.describe`."""
    return bitstream.describe(_read_input(data), max_pixels=_count("max_pixels", max_pixels), format=format)


__all__ = [
    "CrdrError", "FormatError", "EncodeResult", "DecodedImage", "compress", "decompress", "encode",
    "encode_at", "decode_container", "decode_latents", "synthesize", "DecodedLatents", "compress_official",
    "decompress_official", "describe", "get_model", "pad_to_stride", "check_payloads", "minimum_stream_bytes",
    "resolve_device",
]
