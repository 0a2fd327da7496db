"""Classical image codecs (JPEG, WebP, AVIF, JPEG XL) behind one small interface.

What: :class:`Codec` objects with ``encode(rgb, quality) -> bytes`` and ``decode(data) -> rgb``,
a quality sweep per codec for RD curves, and :func:`encode_to_size` for "same file size"
comparisons (the web page shows JPEG/WebP/AVIF at the byte size of a crdr file).
Why: the baselines of an RD plot must be encoded the same way every time; the settings that
matter (chroma subsampling, encoder effort) are fixed here, in one place, and named.

Backends (all in-process, no command-line tools)::

    jpeg-420  Pillow / libjpeg-turbo, 4:2:0 chroma, optimised Huffman tables, quality 1..100
    jpeg-444  Pillow / libjpeg-turbo, 4:4:4 chroma, optimised Huffman tables, quality 1..100
    webp      Pillow / libwebp, lossy, method 6 (slowest, smallest), quality 0..100
    avif      Pillow / libavif (else imagecodecs), 4:2:0, speed 6, quality 0..100
    jxl       imagecodecs / libjxl, effort 7, quality 5..99 (libjxl maps it to a distance)

Images are ``(H, W, 3) uint8`` RGB arrays. Every sweep runs low → high quality, and its file
sizes grow with quality; on Kodak the sweeps span about 0.05–2 bpp (JPEG cannot go below about
0.1 bpp, JPEG XL about 0.15 bpp).
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from crdr.errors import CrdrError, FormatError, ImageError, ParameterError
from crdr.size_search import largest_fitting

__all__ = [
    "CodecUnavailable",
    "Codec",
    "CODEC_NAMES",
    "get_codec",
    "available_codecs",
    "unavailable_codecs",
    "encode_to_size",
]


class CodecUnavailable(CrdrError):
    """A baseline codec's library is not installed or was built without that format."""


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    array = np.asarray(rgb)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ImageError(f"expected an (H, W, 3) uint8 array, got {array.dtype} {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"empty image: {array.shape}")
    return np.ascontiguousarray(array)


@dataclass(frozen=True)
class Codec:
    """One classical codec with fixed settings.

    ``qualities`` is the RD sweep (low → high), ``min_quality..max_quality`` the full integer
    range :func:`encode_to_size` searches; ``encode`` raises :class:`ParameterError` outside it,
    ``decode`` raises :class:`FormatError` for data it cannot decode.
    """

    name: str
    description: str
    qualities: tuple[int, ...]
    min_quality: int
    max_quality: int
    extension: str
    mime_type: str
    encoder: Callable[[np.ndarray, int], bytes] = field(repr=False, compare=False)
    decoder: Callable[[bytes], np.ndarray] = field(repr=False, compare=False)

    def encode(self, rgb: np.ndarray, quality: int) -> bytes:
        """Encode an ``(H, W, 3) uint8`` image at an integer ``quality``."""
        if isinstance(quality, bool) or int(quality) != quality:
            raise ParameterError(f"{self.name}: quality must be an integer, got {quality!r}")
        quality = int(quality)
        if not self.min_quality <= quality <= self.max_quality:
            raise ParameterError(
                f"{self.name}: quality {quality} outside {self.min_quality}..{self.max_quality}")
        return self.encoder(_check_rgb(rgb), quality)

    def decode(self, data: bytes) -> np.ndarray:
        """Decode to an ``(H, W, 3) uint8`` image."""
        try:
            rgb = self.decoder(bytes(data))
        except CrdrError:
            raise
        except Exception as error:  # the libraries raise OSError, ValueError, their own types
            raise FormatError(f"{self.name}: cannot decode {len(data)} bytes: {error}") from error
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise FormatError(f"{self.name}: decoded to {rgb.dtype} {rgb.shape}, not 8-bit RGB")
        return rgb


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------


def _pillow_encoder(format_name: str, **options: object) -> Callable[[np.ndarray, int], bytes]:
    from PIL import Image

    def encode(rgb: np.ndarray, quality: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(rgb, "RGB").save(buffer, format_name, quality=quality, **options)
        return buffer.getvalue()

    return encode


def _pillow_decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _pillow_has(feature: str) -> bool:
    from PIL import features

    return bool(features.check(feature))


def _imagecodecs_has(codec: str) -> bool:
    if importlib.util.find_spec("imagecodecs") is None:
        return False
    import imagecodecs

    return bool(getattr(getattr(imagecodecs, codec, None), "available", False))


def _jpeg(subsampling: int, label: str) -> Codec:
    return Codec(
        name=f"jpeg-{label}",
        description=f"JPEG {label[0]}:{label[1]}:{label[2]} (Pillow/libjpeg-turbo, optimised Huffman)",
        qualities=(1, 3, 5, 8, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 85, 90, 95),
        min_quality=1,
        max_quality=100,
        extension=".jpg",
        mime_type="image/jpeg",
        encoder=_pillow_encoder("JPEG", subsampling=subsampling, optimize=True),
        decoder=_pillow_decode,
    )


def _webp() -> Codec:
    return Codec(
        name="webp",
        description="WebP lossy (Pillow/libwebp, method 6)",
        qualities=(0, 2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90),
        min_quality=0,
        max_quality=100,
        extension=".webp",
        mime_type="image/webp",
        encoder=_pillow_encoder("WEBP", method=6, lossless=False),
        decoder=_pillow_decode,
    )


def _avif() -> Codec:
    # Same AVIF bitstream either way; Pillow's plugin is preferred because Pillow is a core
    # dependency, imagecodecs is the fallback for Pillow builds without libavif.
    if _pillow_has("avif"):
        backend = "Pillow/libavif"
        encoder = _pillow_encoder("AVIF", subsampling="4:2:0", speed=6)
        decoder = _pillow_decode
    else:
        import imagecodecs

        backend = "imagecodecs/libavif"

        def encoder(rgb: np.ndarray, quality: int) -> bytes:
            return bytes(imagecodecs.avif_encode(rgb, level=quality, speed=6, pixelformat="yuv420"))

        def decoder(data: bytes) -> np.ndarray:
            return imagecodecs.avif_decode(data)[..., :3]

    return Codec(
        name="avif",
        description=f"AVIF 4:2:0 ({backend}, speed 6)",
        qualities=(0, 5, 10, 15, 20, 25, 30, 35, 40, 50, 60, 70, 80, 90),
        min_quality=0,
        max_quality=100,
        extension=".avif",
        mime_type="image/avif",
        encoder=encoder,
        decoder=decoder,
    )


def _jxl() -> Codec:
    import imagecodecs

    def encoder(rgb: np.ndarray, quality: int) -> bytes:
        return bytes(imagecodecs.jpegxl_encode(rgb, level=quality, effort=7))

    def decoder(data: bytes) -> np.ndarray:
        return imagecodecs.jpegxl_decode(data)

    return Codec(
        name="jxl",
        description="JPEG XL (imagecodecs/libjxl, effort 7)",
        # Quality 100 is lossless in libjxl (~15 bpp), so the lossy range stops at 99; below 5
        # libjxl changes mode and sizes stop growing with quality (Kodak: q=4 > q=5), so it starts at 5.
        qualities=(5, 8, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 85, 90),
        min_quality=5,
        max_quality=99,
        extension=".jxl",
        mime_type="image/jxl",
        encoder=encoder,
        decoder=decoder,
    )


def _reason_unavailable(name: str) -> str:
    if name in ("jpeg-420", "jpeg-444"):
        return "" if _pillow_has("jpg") else f"{name}: Pillow was built without libjpeg"
    if name == "webp":
        return "" if _pillow_has("webp") else "webp: Pillow was built without libwebp"
    if name == "avif":
        if _pillow_has("avif") or _imagecodecs_has("AVIF"):
            return ""
        return "avif: neither Pillow nor imagecodecs has AVIF support (pip install -U pillow)"
    if name == "jxl":
        return "" if _imagecodecs_has("JPEGXL") else "jxl: imagecodecs with JPEGXL support is not installed"
    raise ParameterError(f"unknown codec {name!r}; choose from {', '.join(CODEC_NAMES)}")


_FACTORIES: dict[str, Callable[[], Codec]] = {
    "jpeg-420": lambda: _jpeg(2, "420"),
    "jpeg-444": lambda: _jpeg(0, "444"),
    "webp": _webp,
    "avif": _avif,
    "jxl": _jxl,
}
CODEC_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def get_codec(name: str) -> Codec:
    """The codec called ``name`` (one of :data:`CODEC_NAMES`); raises :class:`ParameterError`
    for an unknown name and :class:`CodecUnavailable` if its library is missing here."""
    reason = _reason_unavailable(name)
    if reason:
        raise CodecUnavailable(reason)
    return _FACTORIES[name]()


def available_codecs() -> list[str]:
    """Names of the codecs that work on this machine, in :data:`CODEC_NAMES` order."""
    return [name for name in CODEC_NAMES if not _reason_unavailable(name)]


def unavailable_codecs() -> dict[str, str]:
    """Codec name → one-line reason, for each codec that does not work here."""
    return {name: reason for name in CODEC_NAMES if (reason := _reason_unavailable(name))}


def encode_to_size(codec: Codec | str, rgb: np.ndarray, max_bytes: int) -> tuple[int, bytes] | None:
    """The highest-quality encoding of ``rgb`` that fits in ``max_bytes``: ``(quality, data)``,
    or ``None`` if even ``codec.min_quality`` is larger.

    Bisection over the integer range ``min_quality..max_quality`` (about 7 encodes, by
    :func:`crdr.size_search.largest_fitting`), which assumes size grows with quality. Where a
    codec's size is not perfectly monotonic the result may be a quality or two below the best
    that fits, but the returned data is always one that was measured to fit: the budget is never
    exceeded.
    """
    codec = get_codec(codec) if isinstance(codec, str) else codec
    if isinstance(max_bytes, bool) or int(max_bytes) != max_bytes or max_bytes < 0:
        raise ParameterError(f"max_bytes must be a non-negative integer, got {max_bytes!r}")
    rgb = _check_rgb(rgb)
    files: dict[int, bytes] = {}

    def size_of(quality: int) -> int:
        files[quality] = codec.encode(rgb, quality)
        return len(files[quality])

    quality = largest_fitting(size_of, codec.min_quality, codec.max_quality, max_bytes)
    return None if quality is None else (quality, files[quality])
