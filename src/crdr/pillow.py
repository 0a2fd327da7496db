"""Pillow plugin: ``.crdr`` files through Pillow's own API.

What: importing this module registers the ``CRDR`` format with Pillow, so that

    import crdr.pillow
    image = Image.open("photo.crdr")              # decoded at crdr.pillow.options().beta
    image.info["q"], image.info["model_id"], image.info["bpp"]
    image.save("copy.crdr", q=1.5)                # or target_size=20000 / target_bpp=0.3
    "CRDR" in Image.registered_extensions().values()

Why a plugin: Python imaging users expect a codec to be a Pillow format (pillow-heif and
pillow-avif-plugin work the same way). Pillow has no plugin discovery, so the import is what
registers it; :func:`configure` sets what ``Image.open`` cannot take as arguments (the realism
``beta`` and the model).

How: ``_open`` reads the whole file (``.crdr`` files are small) and parses the container header
with :mod:`crdr.bitstream`, which sets size, mode and ``info`` without loading torch or the model;
pixels are decoded on ``load()`` by :func:`crdr.codec.decompress`. Every crdr error reaches the
caller as Pillow's own exception type with crdr's one-line message: ``UnidentifiedImageError``
when the file cannot be parsed, ``OSError`` when decoding or encoding fails.
"""

from __future__ import annotations

import dataclasses
from typing import IO, Any

from PIL import Image, ImageFile, UnidentifiedImageError

from crdr import bitstream
from crdr.errors import CrdrError, ParameterError

__all__ = ["DEFAULT_Q", "CrdrImageFile", "Options", "configure", "options"]

FORMAT = "CRDR"
DEFAULT_Q = 2.0  # im.save(..., format="CRDR") without q or a target: the middle rate level

@dataclasses.dataclass(frozen=True)
class Options:
    """What ``Image.open`` decodes with: realism ``beta`` (default 0, the faithful decode) and the
    model (``None``: the bundled default; a name, a weights path or a loaded ``CRDR``)."""

    beta: float = 0.0
    model: Any = None


_options = Options()


def options() -> Options:
    """The current decode options."""
    return _options


def configure(*, beta: float | None = None, model: Any = None) -> Options:
    """Set the decode options of later ``Image.open`` calls; returns the new options.

    ``beta`` is checked at once (a number in [0, the model's max]; the range is checked by the
    decoder), so a typo fails here, not at the first ``load()``.
    """
    global _options
    changes: dict[str, Any] = {}
    if beta is not None:
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta != beta or beta < 0:
            raise ParameterError(f"beta must be a non-negative number, got {beta!r}")
        changes["beta"] = float(beta)
    if model is not None:
        changes["model"] = model
    _options = dataclasses.replace(_options, **changes)
    return _options


def _accept(prefix: bytes) -> bool:
    return bitstream.is_crdr(prefix)


def _mode(header: bitstream.Header) -> str:
    grey = header.colour != bitstream.Colour.RGB
    return ("LA" if header.has_alpha else "L") if grey else ("RGBA" if header.has_alpha else "RGB")


class CrdrImageFile(ImageFile.ImageFile):
    """A ``.crdr`` file opened by Pillow; pixels are decoded on first ``load()``."""

    format = FORMAT
    format_description = "crdr learned image codec (Iwai et al., WACV 2024)"

    def _open(self) -> None:
        assert self.fp is not None  # Pillow always opens with a file object
        data = self.fp.read()
        try:
            header = bitstream.unpack(data).header
        except CrdrError as error:
            raise UnidentifiedImageError(str(error)) from None
        self._data: bytes | None = data
        self._size = (header.width, header.height)
        self._mode = _mode(header)
        self.info.update(
            q=header.q, model_id=header.model_id.hex(), bpp=8 * len(data) / (header.width * header.height)
        )
        self.tile = []  # decoded as a whole by load(), not by a Pillow tile decoder

    def load(self):  # noqa: ANN201 (Pillow's signature)
        if self._data is not None:
            from crdr.codec import decompress

            settings = options()
            try:
                image = decompress(self._data, beta=settings.beta, model=settings.model)
            except CrdrError as error:
                raise OSError(str(error)) from None
            if image.mode != self.mode:
                image = image.convert(self.mode)
            self._data = None
            self.im = image.im
            self.info.update({k: v for k, v in image.info.items() if k in ("icc_profile", "exif")})
            self.info["beta"] = settings.beta
        return super().load()


def _save(image: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    """``image.save(path, q=… | target_size=… | target_bpp=…, model=…, strip=…)``."""
    from crdr.codec import compress

    info = image.encoderinfo
    targets = {name: info[name] for name in ("q", "target_size", "target_bpp") if info.get(name) is not None}
    if not targets:
        targets = {"q": DEFAULT_Q}
    try:
        data = compress(image, model=info.get("model", options().model), strip=bool(info.get("strip", False)), **targets)
    except CrdrError as error:
        raise OSError(str(error)) from None
    fp.write(data)


Image.register_open(FORMAT, CrdrImageFile, _accept)
Image.register_save(FORMAT, _save)
Image.register_extension(FORMAT, ".crdr")
Image.register_mime(FORMAT, "image/x-crdr")
