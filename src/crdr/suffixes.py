"""What a file name's suffix means to crdr: the images it reads, the files it codes, and the
lossless format it writes for each image name.

One home for these lists (the CLI, ``crdr eval``, the training data loader and ``crdr serve``
all import them), kept free of torch, numpy and Pillow: the CLI checks names before it loads
anything heavy (``tests/test_cli_startup.py``). The writing itself is
:func:`crdr.image_io.save_image_atomic`, which takes its format from :func:`lossless_writer`; the
walk over a folder for these suffixes is :func:`crdr.files.find_files`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from crdr.errors import ParameterError

# Images crdr reads (compress inputs, evaluation folders, training folders, bundled samples):
# every format Pillow opens without a plugin that people keep photos in, and every format
# decompress writes, so an output can be coded again.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pnm", ".tga", ".avif"}
)
# Training and validation folders (crdr.data): the photo formats training sets come in; not GIF
# (256 colours) or the rarer formats above.
TRAINING_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
# Compressed files: crdr's container and the authors' raw format (crdr.bitstream).
CODED_SUFFIXES = frozenset({".crdr", ".bin"})
# Image names decompress refuses: their formats would lose pixels.
LOSSY_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".avif", ".heic", ".heif", ".gif", ".jxl"})

_ALL_MODES = frozenset({"L", "LA", "RGB", "RGBA"})
_NO_ALPHA = frozenset({"L", "RGB"})


@dataclass(frozen=True)
class LosslessWriter:
    """How a decoded image is written under one suffix: the Pillow format and save options,
    the modes it stores exactly (tests/test_image_io.py checks each), and whether it carries an
    ICC profile and EXIF."""

    format: str
    options: dict = field(default_factory=dict)
    modes: frozenset = _ALL_MODES
    metadata: bool = True


# WebP has no grey: an L image comes back as RGB with three equal channels, the same pixels.
LOSSLESS_WRITERS: dict[str, LosslessWriter] = {
    ".png": LosslessWriter("PNG"),
    ".tif": LosslessWriter("TIFF", {"compression": "tiff_deflate"}),
    ".tiff": LosslessWriter("TIFF", {"compression": "tiff_deflate"}),
    ".webp": LosslessWriter("WEBP", {"lossless": True, "exact": True}),
    ".tga": LosslessWriter("TGA", {"compression": "tga_rle"}, metadata=False),
    ".bmp": LosslessWriter("BMP", modes=_NO_ALPHA, metadata=False),
    ".ppm": LosslessWriter("PPM", modes=_NO_ALPHA, metadata=False),
    ".pnm": LosslessWriter("PPM", modes=_NO_ALPHA, metadata=False),
    ".pgm": LosslessWriter("PPM", modes=frozenset({"L"}), metadata=False),
}
LOSSLESS_LIST = ".png, .webp, .tif, .tga, .bmp or .ppm"


def suffix_of(path: str | os.PathLike) -> str:
    """The lower-case suffix of a file name (``""`` if it has none)."""
    return os.path.splitext(os.fspath(path))[1].lower()


def lossless_writer(path: str | os.PathLike) -> LosslessWriter:
    """The lossless writer an output name asks for; lossy and unknown suffixes raise ParameterError."""
    suffix = suffix_of(path)
    if suffix in LOSSLESS_WRITERS:
        return LOSSLESS_WRITERS[suffix]
    if suffix in LOSSY_SUFFIXES:
        raise ParameterError(
            f"refusing to write a lossy format ({os.fspath(path)}): decoded images are written losslessly, "
            f"as {LOSSLESS_LIST}"
        )
    raise ParameterError(
        f"cannot tell a lossless image format from the name {os.fspath(path)}: end it in {LOSSLESS_LIST}"
    )
