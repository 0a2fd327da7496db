"""Reading images into 8-bit RGB (+ optional alpha), tensor conversion, and writing decoded images
(:func:`save_image_atomic`: the lossless format their name asks for, written atomically by
:mod:`crdr.files`).

The codec codes three 8-bit channels. :func:`load_image` maps whatever Pillow can open onto that,
recording every lossy step (16-bit reduction, CMYK conversion, dropped frames) as a human-readable
note, and remembering whether the source was grey so that decoding can give back one channel.
The pixel limit is checked from the file's header before any pixel is decoded.

Data flow::

    file / bytes / PIL image --load_image--> SourceImage(rgb (H, W, 3) u8, alpha (H, W) u8 | None)
    rgb --to_model_input--> x: (1, 3, H, W) float32 in [-1, 1]
    x_hat: (1, 3, H, W) in [-1, 1] --from_model_output--> rgb (H, W, 3) u8 --to_pil--> L/LA/RGB/RGBA

Alpha is not coded by the network: it travels losslessly as a PNG in the container's ALPHA segment
(:func:`encode_alpha` / :func:`decode_alpha`). A fully opaque alpha (all 255) is dropped at load, so
such images decode without an alpha channel.

Metadata (``load_image(metadata=True)``, what the codec's ``encode`` asks for): the ICC profile
(kept if it describes the decoded kind: RGB or GRAY) and the EXIF block (after the orientation is
applied, so without the orientation tag); anything else that changes how an image looks or what it
says (a CMYK profile, XMP, PNG gamma without sRGB) is dropped with a note. :func:`to_pil` puts them
back into ``info``.

One pixel limit: ``max_pixels`` decides what is too big, also where Pillow's own decompression-bomb
guard (``PIL.Image.MAX_IMAGE_PIXELS``) would be stricter; see :func:`load_image`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import threading
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from crdr import files
from crdr.bitstream import DEFAULT_MAX_PIXELS, EXIF_PREFIX, Colour, exif_problem, icc_problem
from crdr.errors import FormatError, ImageError, ParameterError
from crdr.suffixes import lossless_writer, suffix_of

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image]

# Pillow raises these (besides OSError) from inside its decoders on malformed data.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError)
_SIXTEEN_BIT_NOTE = "16-bit input reduced to 8 bits"


@dataclass(frozen=True)
class SourceImage:
    """An image ready for coding.

    ``rgb``: (H, W, 3) uint8 (grey sources have three equal channels); ``alpha``: (H, W) uint8 or
    None (absent or fully opaque); ``colour``: the source's kind, restored at decode; ``notes``:
    warnings about lossy steps taken while reading, for the user; ``icc_profile``: the source's
    ICC profile; ``exif``: its EXIF as a TIFF structure (no ``Exif\\0\\0`` prefix, orientation
    already applied). Both are None unless read with ``metadata=True``.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    colour: Colour
    notes: tuple[str, ...]
    icc_profile: bytes | None = None
    exif: bytes | None = None

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def load_image(
    source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS, metadata: bool = False
) -> SourceImage:
    """Read a path, encoded bytes or a PIL image into a :class:`SourceImage`.

    EXIF orientation is applied. Multi-frame files contribute their first frame. Anything that is
    not a readable image, too large, or of a mode Pillow cannot turn into RGB raises ImageError.
    ``metadata``: also read the ICC profile and EXIF (see the module docstring).

    ``max_pixels`` is the one size limit: Pillow refuses images above twice
    ``PIL.Image.MAX_IMAGE_PIXELS`` on its own, and when that guard fires for an image within
    ``max_pixels`` the image is read again with Pillow's guard lifted (under a lock, restored
    after), crdr's own check standing in for it.
    """
    if isinstance(source, Image.Image):
        _check_size(source.size, max_pixels)
        read = functools.partial(_read_pil, source, metadata)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        read = functools.partial(_read, bytes(source), "input data", max_pixels, metadata)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fsdecode(source)
        read = functools.partial(_read, path, path, max_pixels, metadata)
    else:
        raise ImageError(f"cannot read an image from a {type(source).__name__}")
    try:
        return _attempt(read, max_pixels)
    except _PillowStricter:
        with _pillow_guard_lifted():
            return _attempt(read, max_pixels)


def declared_size(source: str | os.PathLike | bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(width, height)`` as an image file's header declares it; no pixel is decoded.

    Pillow's decompression-bomb guard is lifted for the look (under the lock of
    :func:`load_image`): a header costs nothing to read, and the caller compares the real size
    with its own limit. Anything that is not an image Pillow can open raises ImageError.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        stream, label = io.BytesIO(bytes(source)), "input data"
    else:
        stream = label = os.fsdecode(source)
    with _pillow_guard_lifted():
        with _open_lazily(stream, label) as image:
            return image.size


def _attempt(read: Callable[[], SourceImage], max_pixels: int) -> SourceImage:
    try:
        return read()
    except Image.DecompressionBombError as error:
        raise _bomb_error(error, max_pixels) from None


def _read_pil(image: Image.Image, metadata: bool) -> SourceImage:
    return _from_pil(image, notes=[], raw=_raw_layout(image), metadata=metadata)


def _read(source: str | bytes, label: str, max_pixels: int, metadata: bool) -> SourceImage:
    """Open a path or encoded bytes lazily, check the size, then decode (see :func:`load_image`)."""
    image = _open_lazily(io.BytesIO(source) if isinstance(source, bytes) else source, label)
    with image:
        # Image.open has only parsed the header: check the size before decoding any pixel.
        _check_size(image.size, max_pixels)
        notes = []
        if getattr(image, "n_frames", 1) > 1:
            notes.append(f"{image.n_frames} frames in the input: only the first is coded")
        raw = _raw_layout(image)  # the decoder's tile list is gone after load()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
        except Image.DecompressionBombError:
            raise
        except _DECODE_ERRORS as error:
            raise ImageError(f"cannot decode {label}: {_one_line(error)}") from None
        return _from_pil(image, notes=notes, raw=raw, metadata=metadata)


def _open_lazily(stream: object, label: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(stream)
    except FileNotFoundError:
        raise ImageError(f"no such file: {label}") from None
    except IsADirectoryError:
        raise ImageError(f"{label} is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label} is not an image format Pillow can read") from None
    except Image.DecompressionBombError:
        raise
    except _DECODE_ERRORS as error:
        raise ImageError(f"cannot read {label}: {_one_line(error)}") from None


class _PillowStricter(Exception):
    """Pillow's bomb guard refused an image that ``max_pixels`` allows: read it again unguarded."""


_PILLOW_GUARD = threading.Lock()


@contextlib.contextmanager
def _pillow_guard_lifted() -> Iterator[None]:
    """Pillow's decompression-bomb guard off for the block (crdr checks ``max_pixels`` itself).

    ``PIL.Image.MAX_IMAGE_PIXELS`` is process-global: the lock keeps two crdr readers from
    restoring each other's value, and the old value is back when the block ends.
    """
    with _PILLOW_GUARD:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def _bomb_error(error: Exception, max_pixels: int) -> Exception:
    """Pillow's own guard fired (inside ``Image.open``, before crdr sees the size).

    Above ``max_pixels``: crdr's message, naming ``--max-pixels``. Within it: Pillow's guard
    was the stricter one, which ``max_pixels`` overrides (:class:`_PillowStricter`).
    """
    match = re.search(r"\((\d+) pixels\)", str(error))
    pixels = int(match.group(1)) if match else None
    if pixels is not None and pixels > max_pixels:
        return ImageError(
            f"image has {pixels} pixels, above the limit of {max_pixels}; "
            "raise it with --max-pixels"
        )
    if Image.MAX_IMAGE_PIXELS is None:  # already lifted: nothing more to try
        return ImageError(f"image is too large to read ({_one_line(error)}); see --max-pixels")
    return _PillowStricter()


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"image is {width}x{height} ({width * height} pixels), above the limit of "
            f"{max_pixels}; raise it with --max-pixels"
        )


@dataclass(frozen=True)
class _RawLayout:
    """What the file stores, as opposed to the mode Pillow presents (read before ``load()``)."""

    sixteen_bit: bool  # Pillow keeps only the high byte of 16-bit RGB(A)/LA samples, silently
    grey: bool  # 16-bit grey+alpha PNGs open as RGBA; their raw mode still says LA


def _raw_layout(image: Image.Image) -> _RawLayout:
    sixteen_bit = grey = False
    for tile in getattr(image, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        rawmode = args if isinstance(args, str) else (args[0] if args else None)
        if not isinstance(rawmode, str):
            continue
        if ";16" in rawmode and image.mode in ("RGB", "RGBA", "LA"):
            sixteen_bit = True
        if rawmode.split(";")[0] in ("L", "LA"):
            grey = True
    return _RawLayout(sixteen_bit=sixteen_bit, grey=grey)


def _from_pil(image: Image.Image, *, notes: list[str], raw: _RawLayout, metadata: bool = False) -> SourceImage:
    if raw.sixteen_bit:
        notes.append(_SIXTEEN_BIT_NOTE)
    try:
        transposed = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError:
        raise
    except _DECODE_ERRORS as error:
        notes.append(f"EXIF data unreadable ({_one_line(error)}): orientation not applied")
        transposed = image
    try:
        grey, alpha, colour = _to_channels(transposed, notes, raw.grey)
    except ImageError:
        raise
    except _DECODE_ERRORS as error:
        raise ImageError(f"cannot convert a {image.mode} image: {_one_line(error)}") from None
    rgb = np.repeat(grey[:, :, None], 3, axis=2) if colour is Colour.GREY else grey
    if alpha is not None and bool(np.all(alpha == 255)):
        notes.append("alpha channel is fully opaque and was dropped")
        alpha = None
    icc_profile, exif = _metadata(image, transposed, colour, notes) if metadata else (None, None)
    # Own, writable copies: np.asarray of a PIL image is read-only.
    return SourceImage(
        rgb=np.array(rgb, dtype=np.uint8, order="C"),
        alpha=None if alpha is None else np.array(alpha, dtype=np.uint8, order="C"),
        colour=colour,
        notes=tuple(notes),
        icc_profile=icc_profile,
        exif=exif,
    )


def _metadata(
    image: Image.Image, transposed: Image.Image, colour: Colour, notes: list[str]
) -> tuple[bytes | None, bytes | None]:
    """The ICC profile and EXIF worth keeping, with a note for each thing dropped."""
    icc_profile = image.info.get("icc_profile") or None
    if icc_profile is not None:
        problem = icc_problem(bytes(icc_profile), colour)
        if problem:
            notes.append(f"{problem} was dropped")
            icc_profile = None
        else:
            icc_profile = bytes(icc_profile)
    # exif_transpose has removed the orientation tag from its result: the pixels are upright now.
    exif = transposed.info.get("exif") or None
    if isinstance(exif, bytes):
        exif = exif[len(EXIF_PREFIX) :] if exif.startswith(EXIF_PREFIX) else exif
        problem = exif_problem(exif)
        if problem:
            notes.append(f"{problem} was dropped")
            exif = None
    else:
        exif = None
    if image.info.get("xmp") or image.info.get("XML:com.adobe.xmp"):
        notes.append("XMP metadata was dropped (only the ICC profile and EXIF are kept)")
    if icc_profile is None and "srgb" not in image.info and ("gamma" in image.info or "chromaticity" in image.info):
        notes.append("PNG gamma/chromaticity was dropped (only an ICC profile is kept): colours may shift")
    return icc_profile, exif


def _to_channels(
    image: Image.Image, notes: list[str], grey_raw: bool
) -> tuple[np.ndarray, np.ndarray | None, Colour]:
    """Pixels as (grey (H, W) | rgb (H, W, 3), alpha | None, colour), all uint8."""
    mode = image.mode
    if mode == "1":
        return np.asarray(image.convert("L")), None, Colour.GREY
    if mode == "L" and "transparency" in image.info:
        mode = "LA"  # a PNG tRNS grey level: Pillow's convert turns it into an alpha channel
    if mode == "RGB" and "transparency" in image.info:
        mode = "RGBA"
    if mode == "L":
        return np.asarray(image), None, Colour.GREY
    if mode in ("LA", "La"):
        pixels = np.asarray(image.convert("LA"))
        return pixels[:, :, 0], pixels[:, :, 1], Colour.GREY
    if mode.startswith("I;16"):
        notes.append(_SIXTEEN_BIT_NOTE)
        return _reduce_sixteen_bit(np.asarray(image).astype(np.int64)), None, Colour.GREY
    if mode == "I":
        return _reduce_int32(np.asarray(image).astype(np.int64), notes), None, Colour.GREY
    if mode == "F":
        return _reduce_float(np.asarray(image), notes), None, Colour.GREY
    if mode in ("P", "PA"):
        if mode == "PA" or image.has_transparency_data:
            pixels = np.asarray(image.convert("RGBA"))
            return pixels[:, :, :3], pixels[:, :, 3], Colour.RGB
        return np.asarray(image.convert("RGB")), None, Colour.RGB
    if mode in ("RGBA", "RGBa"):
        pixels = np.asarray(image.convert("RGBA"))
        if grey_raw:
            return pixels[:, :, 0], pixels[:, :, 3], Colour.GREY
        return pixels[:, :, :3], pixels[:, :, 3], Colour.RGB
    if mode == "RGB":
        return np.asarray(image), None, Colour.RGB
    if mode == "CMYK":
        notes.append("CMYK input converted to RGB without a colour profile")
    try:
        converted = image.convert("RGB")
    except (ValueError, OSError, KeyError) as error:
        raise ImageError(f"unsupported image mode {mode}: {_one_line(error)}") from None
    return np.asarray(converted), None, Colour.RGB


def _reduce_sixteen_bit(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 by rounding v / 257 (65535 -> 255, 128 -> 0, 129 -> 1)."""
    values = np.clip(values, 0, 65535)
    return ((values * 255 + 32767) // 65535).astype(np.uint8)


def _reduce_int32(values: np.ndarray, notes: list[str]) -> np.ndarray:
    """32-bit integer grey: 0..255 is taken as 8-bit, anything larger as 16-bit (clipped)."""
    if values.size and values.min() >= 0 and values.max() <= 255:
        notes.append("32-bit integer input with values in 0..255 used as 8-bit")
        return values.astype(np.uint8)
    if values.size and (values.min() < 0 or values.max() > 65535):
        notes.append("32-bit integer input clipped to 0..65535 and reduced to 8 bits")
    else:
        notes.append("32-bit integer input treated as 16-bit and reduced to 8 bits")
    return _reduce_sixteen_bit(values)


def _reduce_float(values: np.ndarray, notes: list[str]) -> np.ndarray:
    """32-bit float grey: [0, 1] is scaled by 255, anything else clipped to [0, 255]; NaN -> 0."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if values.size and values.min() >= 0.0 and values.max() <= 1.0:
        notes.append("32-bit float input in [0, 1] scaled to 8 bits")
        values = values * 255.0
    else:
        notes.append("32-bit float input clipped to [0, 255] and rounded to 8 bits")
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


_ARRAY_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}  # by channel count


def image_from_array(array: np.ndarray) -> Image.Image:
    """A numpy image as a PIL image, by one documented rule (the API's array input).

    Layout is channel-last: (H, W) or (H, W, 1) grey, (H, W, 2) grey + alpha, (H, W, 3) RGB,
    (H, W, 4) RGBA. A (C, H, W) array with C in 1..4 and a last axis longer than 4 is refused as
    channel-first. Values: uint8 as is; other integer types if they lie in 0..255; floats
    (float16/32/64) must be finite and in [0, 1], and become ``round(255 v)``. Anything else
    raises :class:`ParameterError`.
    """
    shape = tuple(array.shape)
    if array.ndim == 3 and shape[0] in (1, 2, 3, 4) and shape[2] not in (1, 2, 3, 4):
        raise ParameterError(
            f"array of shape {shape} looks channel-first (C, H, W); crdr takes (H, W, C): "
            "pass array.transpose(1, 2, 0)"
        )
    if array.ndim == 3 and shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (2, 3, 4))):
        raise ParameterError(
            f"array of shape {shape} is not an image: expected (H, W), (H, W, 1), (H, W, 2), "
            "(H, W, 3) or (H, W, 4)"
        )
    if array.size == 0:
        raise ParameterError(f"array of shape {shape} has no pixels")
    if array.dtype == np.uint8:
        pixels = array
    elif np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise ParameterError("float image array contains NaN or infinity")
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 1.0:
            raise ParameterError(
                f"float image arrays must hold values in [0, 1], got {low:g}..{high:g} "
                "(pass uint8 for 0..255 data)"
            )
        pixels = np.rint(values * 255.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ParameterError(
                f"integer image arrays must hold values in 0..255, got {low}..{high} "
                f"({array.dtype}); scale 16-bit data to 8 bits or to floats in [0, 1]"
            )
        pixels = array.astype(np.uint8)
    else:
        raise ParameterError(f"image arrays must be uint8, integer or float, got {array.dtype}")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return Image.fromarray(np.ascontiguousarray(pixels), mode=_ARRAY_MODES[channels])


def to_model_input(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> x: (1, 3, H, W) float32 = 2 * (u8 / 255) - 1, in that order in float32.

    Bit-identical to torchvision ``ToTensor`` + ``Normalize(0.5, 0.5)``, the authors' input
    (spec §11).
    """
    _check_rgb(rgb)
    if not (rgb.flags.c_contiguous and rgb.flags.writeable):
        rgb = np.array(rgb, order="C")  # torch.from_numpy warns on read-only arrays
    pixels = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)
    x = pixels.to(torch.float32) / 255.0
    return (2.0 * x - 1.0).contiguous()


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.shape[2:] != (3,):
        raise ParameterError(
            f"expected an (H, W, 3) uint8 array, got {getattr(rgb, 'shape', None)} "
            f"{getattr(rgb, 'dtype', type(rgb).__name__)}"
        )


def from_model_output(x_hat: torch.Tensor) -> np.ndarray:
    """x_hat: (1, 3, H, W) in [-1, 1] -> (H, W, 3) uint8 = clamp(round((x_hat + 1) / 2 * 255)).

    Computed in float32 in that order; rounding is half to even. The authors truncate instead
    (spec §11), which darkens by half a level on average; crdr rounds. NaN becomes 0 (mid grey).
    """
    if not isinstance(x_hat, torch.Tensor) or x_hat.ndim != 4 or x_hat.shape[:2] != (1, 3):
        raise ParameterError(
            f"expected a (1, 3, H, W) tensor, got {tuple(getattr(x_hat, 'shape', ()))}"
        )
    x = torch.nan_to_num(x_hat.detach().to(device="cpu", dtype=torch.float32), nan=0.0)
    levels = torch.round((x + 1.0) / 2.0 * 255.0).clamp_(0.0, 255.0)
    return levels.to(torch.uint8)[0].permute(1, 2, 0).contiguous().numpy()


def to_pil(
    rgb: np.ndarray,
    alpha: np.ndarray | None,
    colour: Colour,
    *,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> Image.Image:
    """Rebuild the output image: L / LA for GREY, RGB / RGBA for RGB, with its metadata.

    GREY takes the rounded mean of the three decoded channels (exact for equal channels).
    ``icc_profile`` goes to ``info["icc_profile"]`` and ``exif`` (TIFF bytes) to ``info["exif"]``
    with Pillow's ``Exif\\0\\0`` prefix, where Pillow's writers and ``getexif()`` look for them.
    """
    image = _pixels_to_pil(rgb, alpha, colour)
    if icc_profile is not None:
        image.info["icc_profile"] = bytes(icc_profile)
    if exif is not None:
        image.info["exif"] = EXIF_PREFIX + bytes(exif)
    return image


def _pixels_to_pil(rgb: np.ndarray, alpha: np.ndarray | None, colour: Colour) -> Image.Image:
    _check_rgb(rgb)
    if alpha is not None and (
        not isinstance(alpha, np.ndarray) or alpha.dtype != np.uint8 or alpha.shape != rgb.shape[:2]
    ):
        raise ParameterError(
            f"alpha must be an {rgb.shape[:2]} uint8 array, got {getattr(alpha, 'shape', None)}"
        )
    if colour is Colour.GREY:
        # s / 3 has fractional part 0, 1/3 or 2/3, so (s + 1) // 3 rounds to nearest without ties.
        total = rgb.astype(np.uint16).sum(axis=2)
        channels = ((total + 1) // 3).astype(np.uint8)
        if alpha is None:
            return Image.fromarray(channels, mode="L")
        return Image.fromarray(np.stack([channels, alpha], axis=2), mode="LA")
    if colour is not Colour.RGB:
        raise ParameterError(f"colour must be a Colour, got {colour!r}")
    if alpha is None:
        return Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    return Image.fromarray(np.concatenate([rgb, alpha[:, :, None]], axis=2), mode="RGBA")


def encode_alpha(alpha: np.ndarray) -> bytes:
    """Lossless alpha payload: the PNG bytes of an L image (deterministic for a given Pillow)."""
    if not isinstance(alpha, np.ndarray) or alpha.dtype != np.uint8 or alpha.ndim != 2:
        raise ParameterError(
            f"alpha must be an (H, W) uint8 array, got {getattr(alpha, 'shape', None)}"
        )
    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(alpha), mode="L")
    image.save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def decode_alpha(data: bytes, width: int, height: int) -> np.ndarray:
    """Inverse of :func:`encode_alpha`; the PNG's size is checked before its pixels are decoded.

    The expected size passed the file's ``max_pixels`` check already; where it is above Pillow's
    own guard, that guard is lifted (the size check below stands in for it).
    """
    limit = Image.MAX_IMAGE_PIXELS
    lifted = limit is not None and width * height > 2 * limit
    with _pillow_guard_lifted() if lifted else contextlib.nullcontext():
        return _decode_alpha(data, width, height)


def _decode_alpha(data: bytes, width: int, height: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes(data)), formats=["PNG"]) as image:
                if image.size != (width, height):
                    raise FormatError(
                        f"alpha segment is {image.size[0]}x{image.size[1]}, "
                        f"expected {width}x{height}"
                    )
                if image.mode != "L":
                    raise FormatError(f"alpha segment has mode {image.mode}, expected L")
                image.load()
                alpha = np.array(image, dtype=np.uint8)
    except FormatError:
        raise
    except Image.DecompressionBombError:
        raise FormatError(
            f"alpha segment declares an image far larger than {width}x{height}"
        ) from None
    except UnidentifiedImageError:
        raise FormatError("alpha segment is not a valid PNG") from None
    except _DECODE_ERRORS as error:
        raise FormatError(f"alpha segment is corrupt: {_one_line(error)}") from None
    return alpha


def metadata_arguments(image: Image.Image) -> dict[str, bytes]:
    """``image.save`` keyword arguments that write its ICC profile and EXIF (from ``info``).

    Pillow's PNG writer takes the ICC profile from ``info`` by itself but EXIF only when passed;
    every writer of decoded images passes both, so nothing the file carried is lost on saving.
    """
    return {key: image.info[key] for key in ("icc_profile", "exif") if image.info.get(key)}


def image_bytes(image: Image.Image, name: str | os.PathLike = "image.png") -> tuple[bytes, list[str]]:
    """``image`` encoded in the lossless format its output ``name`` asks for (by suffix, see
    :func:`crdr.suffixes.lossless_writer`), with its ICC profile and EXIF where the format holds them.

    Returns the bytes and notes on the metadata the format cannot carry. Lossy and unknown
    suffixes, and an image the format cannot store exactly (alpha in BMP), raise ParameterError.
    """
    writer = lossless_writer(name)
    if image.mode not in writer.modes:
        lost = "its alpha channel" if image.mode.endswith("A") else "its colour"
        raise ParameterError(
            f"{suffix_of(name)} cannot store this {image.mode} image exactly ({lost}): use .png, .webp, .tif or .tga"
        )
    options = dict(writer.options)
    carried = metadata_arguments(image)
    notes = []
    if writer.metadata:
        options.update(carried)
    elif carried:
        dropped = " and ".join({"icc_profile": "ICC profile", "exif": "EXIF"}[key] for key in carried)
        notes.append(f"{dropped} not written: {suffix_of(name)} cannot carry it (use .png, .webp or .tif)")
    buffer = io.BytesIO()
    image.save(buffer, format=writer.format, **options)
    return buffer.getvalue(), notes


def save_image_atomic(image: Image.Image, path: str | os.PathLike, *, force: bool = False) -> list[str]:
    """Write ``image`` losslessly in the format its suffix names (:func:`image_bytes`), atomically
    (:func:`crdr.files.write_atomic`); returns the notes on metadata the format could not carry."""
    lossless_writer(path)  # a bad name is refused before an existing file is
    if not force:
        files.refuse_existing(path)  # before the image is encoded
    data, notes = image_bytes(image, path)
    files.write_atomic(path, data, force=force)
    return notes
