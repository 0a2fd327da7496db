"""Images to files and back: the codec users call (Python API and CLI).

``compress`` turns an image into a ``.crdr`` file at a quality ``q`` or a target size/bpp/PSNR;
``decompress`` turns a file back into an image at any realism ``beta``, which is chosen at decode
time. The authors' raw ``.bin`` format is read and written too (:func:`compress_official`,
:func:`decompress_official`), byte-identical to their pipeline.

Determinism: everything the decoder must mirror (hyper-decoder, context model, entropy coder)
and the synthesis transform run with one intra-op thread, at encode and at decode. The scale
indexes that drive the rANS coder therefore never depend on the caller's thread count, and a
file decodes to the same pixels with 1 or N threads. The analysis transform, whose output is only
rounded on the encoder side, uses all threads.

Large images are coded in independent tiles (see ``docs/format.md``) so memory stays bounded.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from crdr import bitstream, image_io
from crdr.bitstream import Colour, Container, Header, Segment, SegmentKind
from crdr.entropy import ScaleRule
from crdr.errors import CrdrError, FormatError, ModelMismatchError, ParameterError
from crdr.models.crdr import CRDR, STRIDE
from crdr.weights import DEFAULT_MODEL, load_model

DEFAULT_TILE_SIZE = 1024
# Images with more pixels than this are tiled by default (4 MP: a 2048x2048 photo or larger).
TILE_THRESHOLD = 4 * 1024 * 1024
SIZE_TOLERANCE = 0.03  # target-size search stops within 3 % below the target
SEARCH_STEPS = 14

_MODEL_CACHE: dict[str, CRDR] = {}


def get_model(model: CRDR | str | os.PathLike | None = None) -> CRDR:
    """A ready model: a loaded :class:`CRDR` as is, else a name/path (cached), else the default."""
    if isinstance(model, CRDR):
        if not hasattr(model, "model_id"):
            from crdr.weights import model_id

            model.build_tables()
            model.model_id = model_id(model)
        return model
    key = str(model if model is not None else DEFAULT_MODEL)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(key)
    return _MODEL_CACHE[key]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the enclosed torch ops with one intra-op thread (see the module docstring)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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
# CompressAI's next-larger rule.
SCALE_RULES = {1: ScaleRule.NEXT_LARGER, 2: ScaleRule.NEAREST}


def _encode_tile(
    model: CRDR, rgb: np.ndarray, q: float, rule: ScaleRule
) -> tuple[bytes, bytes, torch.Tensor]:
    x = pad_to_stride(image_io.to_model_input(rgb))
    with torch.no_grad():
        y = model.analysis(x, q)
        with single_thread():
            coded = model.compress_latents(y, rule)
    return coded.z_string, coded.y_string, coded.y_hat


def _tile_size_for(width: int, height: int, tile_size: int | None) -> int:
    if tile_size is not None:
        return tile_size
    return DEFAULT_TILE_SIZE if width * height > TILE_THRESHOLD else 0


def encode_at(
    source: image_io.SourceImage, q: float, model: CRDR, tile_size: int | None = None
) -> bytes:
    """Encode a loaded image at quality ``q`` into ``.crdr`` bytes."""
    model.quality(q)  # range check before any work
    height, width = source.rgb.shape[:2]
    tile = _tile_size_for(width, height, tile_size)
    version = bitstream.VERSION
    segments = []
    for left, top, w, h in bitstream.tile_grid(width, height, tile):
        z_string, y_string, _ = _encode_tile(
            model, source.rgb[top : top + h, left : left + w], q, SCALE_RULES[version]
        )
        segments += [Segment(SegmentKind.Z, z_string), Segment(SegmentKind.Y, y_string)]
    if source.alpha is not None:
        segments.append(Segment(SegmentKind.ALPHA, image_io.encode_alpha(source.alpha)))
    header = Header(
        width=width, height=height, q=float(q), model_id=model.model_id, colour=source.colour,
        has_alpha=source.alpha is not None, tile_size=tile, version=version,
    )
    return bitstream.pack(Container(header, tuple(segments)))


def _load(image, max_pixels: int) -> image_io.SourceImage:
    if isinstance(image, image_io.SourceImage):
        return image
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image_io.load_image(image, max_pixels=max_pixels)


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
) -> EncodeResult:
    """Compress ``image`` (path, bytes, PIL image, uint8 array) at ``q`` or to a target.

    Exactly one of ``q``, ``target_bpp``, ``target_size`` (bytes) and ``target_psnr`` (dB at
    beta = 0) may be given; none means ``q = 2`` (the middle of the range).
    """
    chosen = [v is not None for v in (q, target_bpp, target_size, target_psnr)]
    if sum(chosen) > 1:
        raise ParameterError("give only one of q, target_bpp, target_size and target_psnr")
    codec_model = get_model(model)
    source = _load(image, max_pixels)
    height, width = source.rgb.shape[:2]
    if target_bpp is not None:
        if not (math.isfinite(target_bpp) and target_bpp > 0):
            raise ParameterError(f"target bpp must be positive, got {target_bpp}")
        target_size = int(target_bpp * width * height / 8)
    if target_size is not None:
        result = _search_size(source, int(target_size), codec_model, tile_size)
    elif target_psnr is not None:
        result = _search_psnr(source, float(target_psnr), codec_model, tile_size)
    else:
        q = 2.0 if q is None else float(q)
        result = EncodeResult(encode_at(source, q, codec_model, tile_size), q, width, height)
    result.notes[:0] = list(source.notes)
    return result


def _search_size(source, target: int, model: CRDR, tile_size: int | None) -> EncodeResult:
    """Largest ``q`` whose file fits in ``target`` bytes: bisection on real encoded sizes.

    Stops as soon as a file lands within 3 % below the target. File size grows with ``q`` (the
    rate levels are trained in order); the search never returns a file above the target.
    """
    height, width = source.rgb.shape[:2]
    if target <= 0:
        raise ParameterError(f"target size must be positive, got {target} bytes")
    low, high = 0.0, model.max_q
    smallest = encode_at(source, low, model, tile_size)
    if len(smallest) > target:
        raise ParameterError(
            f"target of {target} bytes is below the smallest file this model makes for this image: "
            f"{len(smallest)} bytes ({len(smallest) * 8 / (width * height):.4f} bpp at q=0)"
        )
    best = EncodeResult(smallest, low, width, height)
    largest = encode_at(source, high, model, tile_size)
    if len(largest) <= target:
        result = EncodeResult(largest, high, width, height)
        result.notes.append(
            f"target of {target} bytes exceeds the largest file at q={high:g} ({len(largest)} bytes)"
        )
        return result
    for _ in range(SEARCH_STEPS):
        if len(best.data) >= (1 - SIZE_TOLERANCE) * target:
            break
        middle = (low + high) / 2
        data = encode_at(source, middle, model, tile_size)
        if len(data) <= target:
            low, best = middle, EncodeResult(data, middle, width, height)
        else:
            high = middle
    return best


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _search_psnr(source, target: float, model: CRDR, tile_size: int | None) -> EncodeResult:
    """Smallest ``q`` whose reconstruction at beta = 0 reaches ``target`` dB (bisection)."""
    height, width = source.rgb.shape[:2]

    def quality_of(q: float) -> tuple[bytes, float]:
        data = encode_at(source, q, model, tile_size)
        decoded = decode_container(bitstream.unpack(data), model, 0.0)
        return data, _psnr(decoded.rgb, source.rgb)

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


@dataclass
class DecodedImage:
    rgb: np.ndarray
    alpha: np.ndarray | None
    colour: Colour

    def to_pil(self) -> Image.Image:
        return image_io.to_pil(self.rgb, self.alpha, self.colour)


@dataclass
class DecodedLatents:
    """A file after entropy decoding: ŷ per tile. It does not depend on ``beta``, so a caller that
    decodes one file at several realisms (the web page) keeps this and re-runs only synthesis."""

    header: Header
    tiles: list[tuple[tuple[int, int, int, int], torch.Tensor]]  # ((left, top, w, h), ŷ)
    alpha: np.ndarray | None


def _z_size(width: int, height: int) -> tuple[int, int]:
    return -(-height // STRIDE), -(-width // STRIDE)


def decode_latents(container: Container, model: CRDR) -> DecodedLatents:
    """Entropy-decode every tile of a parsed ``.crdr`` container (checks the model id first)."""
    header = container.header
    if header.model_id != model.model_id:
        raise ModelMismatchError(
            f"file was written by model {header.model_id.hex()}, but the decoding model is "
            f"{model.model_id.hex()} (pass the right --model)"
        )
    model.quality(header.q)
    rule = SCALE_RULES[header.version]
    segments = container.segments
    tiles = []
    grid = bitstream.tile_grid(header.width, header.height, header.tile_size)
    with torch.no_grad(), single_thread():
        for index, (left, top, w, h) in enumerate(grid):
            z_string, y_string = segments[2 * index].data, segments[2 * index + 1].data
            y_hat = model.decompress_latents(z_string, y_string, _z_size(w, h), rule)
            tiles.append(((left, top, w, h), y_hat))
    alpha = None
    if header.has_alpha:
        alpha = image_io.decode_alpha(segments[-1].data, header.width, header.height)
    return DecodedLatents(header, tiles, alpha)


def synthesize(latents: DecodedLatents, model: CRDR, beta: float) -> DecodedImage:
    """Run the synthesis transform on every tile at realism ``beta`` and join the tiles."""
    header = latents.header
    model.realism(beta)
    rgb = np.empty((header.height, header.width, 3), dtype=np.uint8)
    with torch.no_grad(), single_thread():
        for (left, top, w, h), y_hat in latents.tiles:
            x_hat = torch.clamp(model.synthesis(y_hat, header.q, beta), -1, 1)
            rgb[top : top + h, left : left + w] = image_io.from_model_output(x_hat[:, :, :h, :w])
    return DecodedImage(rgb, latents.alpha, header.colour)


def decode_container(container: Container, model: CRDR, beta: float) -> DecodedImage:
    """Reconstruct a parsed ``.crdr`` container at realism ``beta``."""
    model.realism(beta)
    return synthesize(decode_latents(container, model), model, beta)


def compress(image, *, q=None, target_bpp=None, target_size=None, target_psnr=None, model=None) -> bytes:
    """Python API: image → ``.crdr`` bytes (see :func:`encode` for the arguments)."""
    return encode(
        image, q=q, target_bpp=target_bpp, target_size=target_size, target_psnr=target_psnr, model=model
    ).data


def decompress(
    data: bytes, *, beta: float = 0.0, model=None, max_pixels: int = bitstream.DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Python API: ``.crdr`` or the authors' ``.bin`` bytes → PIL image at realism ``beta``."""
    codec_model = get_model(model)
    if bitstream.is_crdr(data):
        return decode_container(bitstream.unpack(data, max_pixels=max_pixels), codec_model, beta).to_pil()
    return decompress_official(data, beta=beta, model=codec_model, max_pixels=max_pixels)


# -- the authors' raw .bin format -----------------------------------------------------------------


def compress_official(image, *, q: float, model=None) -> bytes:
    """Encode in the authors' ``.bin`` layout (no tiling, no alpha, q stored as int(16 q)).

    The encoder runs at ``q`` itself, the decoder at ``int(16 q) / 16``, exactly as the authors'
    ``compress.py`` does; choose ``q`` on the 1/16 grid to avoid the mismatch.
    """
    codec_model = get_model(model)
    source = _load(image, bitstream.DEFAULT_MAX_PIXELS)
    height, width = source.rgb.shape[:2]
    if height > 65535 or width > 65535:
        raise ParameterError("the authors' format stores sizes in 16 bits: at most 65535x65535")
    q_byte = bitstream.official_q_byte(q)
    codec_model.quality(q)
    z_string, y_string, y_hat = _encode_tile(codec_model, source.rgb, q, ScaleRule.NEXT_LARGER)
    official = bitstream.OfficialFile(
        height=height, width=width, max_abs_y=bitstream.official_max_abs_byte(float(y_hat.abs().max())),
        q_byte=q_byte, z_string=z_string, y_string=y_string,
    )
    return bitstream.pack_official(official)


def decompress_official(data: bytes, *, beta: float = 0.0, model=None, max_pixels: int = bitstream.DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode the authors' ``.bin`` bytes (their files carry no model id: give the right model)."""
    codec_model = get_model(model)
    official = bitstream.unpack_official(data, max_pixels=max_pixels)
    codec_model.quality(official.q)
    codec_model.realism(beta)
    with torch.no_grad(), single_thread():
        y_hat = codec_model.decompress_latents(
            official.z_string, official.y_string, _z_size(official.width, official.height),
            ScaleRule.NEXT_LARGER,
        )
    header = Header(
        width=official.width, height=official.height, q=official.q, model_id=codec_model.model_id,
        colour=Colour.RGB, has_alpha=False, tile_size=0,
    )
    box = (0, 0, official.width, official.height)
    rgb = synthesize(DecodedLatents(header, [(box, y_hat)], None), codec_model, beta).rgb
    return Image.fromarray(rgb, "RGB")


def describe(data: bytes, *, max_pixels: int = bitstream.DEFAULT_MAX_PIXELS) -> dict:
    """Header facts of a ``.crdr`` or ``.bin`` file, for ``crdr info``."""
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


__all__ = [
    "CrdrError", "FormatError", "EncodeResult", "DecodedImage", "compress", "decompress", "encode",
    "encode_at", "decode_container", "decode_latents", "synthesize", "DecodedLatents", "compress_official", "decompress_official", "describe", "get_model",
    "pad_to_stride",
]
