"""The images the page works on: bundled samples, checked uploads, each loaded once.

What: :class:`ImageStore` reads the bundled samples (and their thumbnails) once at start, checks
uploads (bytes, then the pixel count the header declares, before any pixel is decoded), and keeps
the loaded images in an LRU under an id made from their bytes.
Why its own module: these are the server's input checks, in one place; the codec work in
:mod:`crdr.serve.session` only ever sees an image that passed them, named by that id.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from crdr import bitstream
from crdr.errors import CrdrError, ParameterError
from crdr.serve.cache import ComputeOnce
from crdr.serve.records import LoadedImage, RequestError
from crdr.suffixes import IMAGE_SUFFIXES

if TYPE_CHECKING:  # Pillow is imported where used: importing crdr.serve loads none of it
    from PIL import Image

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples"  # package data of crdr
DEFAULT_MAX_UPLOAD_BYTES = 16 * 2**20
DEFAULT_MAX_PIXELS = 4 * 2**20  # 2048x2048: a larger image would keep the page waiting for minutes
THUMBNAIL_SIDE = 160


def png_bytes(image: Image.Image) -> bytes:
    """``image`` as PNG, fast: what the page shows."""
    # Level 1: about 5x faster than Pillow's default for 1 % larger files; the page waits on it.
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _display_name(raw: str | None) -> str:
    """A label for the page, never used as a path: printable characters only, short."""
    text = "".join(c for c in (raw or "") if c.isprintable() and c not in "/\\")
    return text.strip()[:80] or "upload"


def _read_samples(directory: Path) -> dict[str, tuple[bytes, bytes]]:
    """Sample name → (file bytes, JPEG thumbnail), read once: later lookups are by name only."""
    from PIL import Image

    samples: dict[str, tuple[bytes, bytes]] = {}
    if not directory.is_dir():
        return samples
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            thumbnail = image.convert("RGB")
            thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            buffer = io.BytesIO()
            thumbnail.save(buffer, "JPEG", quality=85)
        samples[path.stem] = (data, buffer.getvalue())
    return samples


class ImageStore:
    """Samples by name, uploads within the limits, and the 8 most recently used images by id."""

    def __init__(
        self, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
        samples_dir: Path = SAMPLES_DIR,
    ) -> None:
        # Checked before anything is read or imported: a bad limit fails at once, without Pillow.
        if max_upload_bytes < 1 or max_pixels < 1:
            raise ParameterError("upload limits must be positive")
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.samples = _read_samples(samples_dir)
        self._images = ComputeOnce(8)

    def sample_list(self) -> list[dict]:
        return [{"name": name, "thumbnail_url": f"/api/sample-thumbnail.jpg?name={quote(name)}"} for name in self.samples]

    def _sample(self, name: str) -> tuple[bytes, bytes]:
        if name not in self.samples:
            raise RequestError(404, f"no bundled sample is called {name!r}; choose one of: {', '.join(self.samples)}")
        return self.samples[name]

    def sample_thumbnail(self, name: str) -> bytes:
        return self._sample(name)[1]

    def open_sample(self, name: str) -> dict:
        # Bundled files are trusted and small: the upload limits do not apply to them.
        return self._add(self._sample(name)[0], name, trusted=True)

    def check_upload_size(self, byte_count: int) -> None:
        """413 for an upload of more than ``max_upload_bytes`` (also called while it streams in)."""
        if byte_count > self.max_upload_bytes:
            raise RequestError(
                413,
                f"the upload is larger than the limit of {self.max_upload_bytes / 2**20:.1f} MiB ({self.max_upload_bytes} bytes)",
            )

    def open_upload(self, data: bytes, name: str | None = None) -> dict:
        if not data:
            raise RequestError(400, "the upload is empty: choose an image file")
        self.check_upload_size(len(data))
        return self._add(data, _display_name(name))

    def _add(self, data: bytes, name: str, trusted: bool = False) -> dict:
        image_id = hashlib.sha256(data).hexdigest()[:16]

        from PIL import Image

        from crdr import image_io

        def load() -> LoadedImage:
            if not trusted:
                self._check_pixels(data)
            try:
                source = image_io.load_image(data, max_pixels=bitstream.DEFAULT_MAX_PIXELS if trusted else self.max_pixels)
            except CrdrError as error:
                raise RequestError(415, f"not an image this server can read: {error}") from None
            rgb_image = Image.fromarray(source.rgb, "RGB")
            return LoadedImage(image_id, name, source, png_bytes(rgb_image))

        image, _ = self._images.get(image_id, load)
        return image.summary()

    def _check_pixels(self, data: bytes) -> None:
        """Refuse by the size the header declares, before any pixel is decoded (413), or a non-image (415)."""
        from crdr import image_io

        try:
            width, height = image_io.declared_size(data)
        except Exception:  # an ImageError, or any of the many types Pillow raises for data that is not an image
            raise RequestError(
                415, "the upload is not an image: send a PNG, JPEG, WebP, AVIF, TIFF, BMP or GIF file"
            ) from None
        if width * height > self.max_pixels:
            raise RequestError(
                413, f"the image has {width}x{height} = {width * height} pixels, above this server's limit of {self.max_pixels}"
            )

    def image(self, image_id: str) -> LoadedImage:
        image = self._images.peek(image_id)
        if image is None:
            raise RequestError(404, "unknown image (the server may have dropped it from its cache): choose the image again")
        return image
