"""``crdr serve``: a local web page to try the codec and compare it with JPEG, WebP and AVIF.

What: pick a bundled sample or upload an image, move a ``q`` slider (rate) and a ``beta`` slider
(realism), and see the reconstruction with its size, bpp, PSNR and ST-LPIPS beside JPEG, WebP and
AVIF files of the same byte budget (closest not above), in a split/zoom view, with downloads.
Why: the paper's point is that realism is chosen at *decode* time. The page shows it: a ``beta``
change re-decodes the cached bitstream (same bytes, same sha256, encode counter unchanged).

Framework: FastAPI (Starlette) served by uvicorn, the project's ``serve`` extra. With the standard
library this would need a hand-written router, streaming body limits, query validation and error
mapping on ``http.server``, which its documentation calls "not recommended for production";
Starlette gives those, a thread pool for the blocking codec work, and an in-process test client.
Uploads are the raw request body (the page ``fetch``es the file), read in chunks and cut off at
the byte limit, so no multipart parser ever spools an oversized upload.

Work per request and its caches (all in memory, bounded, shared by every browser tab)::

    image (sample name | upload) ─► SourceImage, id = sha256 of the bytes          LRU, 8 images
    (image, q)        ─► encode once ─► .crdr bitstream                           LRU, 64
    (image, q)        ─► entropy-decode it once ─► ŷ (does not depend on beta)    LRU, 6
    (image, q, beta)  ─► synthesis g_s(ŷ, q, beta) ─► PNG + PSNR                  LRU, 48
    (image, codec, bytes of the bitstream) ─► encode_to_size ─► file + PSNR       LRU, 96
    (image, q, beta) or (image, codec, bytes) ─► ST-LPIPS(original, shown)       LRU, 256

Each value is computed once even when requests for it arrive together. A ``beta`` change runs only
the synthesis transform on the cached ŷ, the same steps :func:`crdr.codec.decode_container` takes
(a test compares the pixels). Codec work is serialised by one lock: the model is shared, and it
runs with one torch thread (:func:`crdr.codec.single_thread`), a process-wide setting. Baselines
and ST-LPIPS run in parallel with it.

Safety: binds to 127.0.0.1 unless told otherwise; uploads are limited in bytes (checked while
reading) and pixels (checked from the header before decoding); the client names samples, codecs
and cached images by key only, and static files are served from memory, so no client string ever
becomes a file-system path; requests must name a loopback ``Host`` when bound to loopback (DNS
rebinding); pages get a same-origin Content-Security-Policy (no CDN: every asset is bundled).
"""

import argparse
import contextlib
import dataclasses
import hashlib
import io
import ipaddress
import math
import socket
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Hashable, Iterator
from urllib.parse import quote, unquote

from crdr import bitstream
from crdr.errors import CrdrError, ParameterError
from crdr.suffixes import IMAGE_SUFFIXES

# torch, numpy, Pillow and the codec are imported where they are used, so that `crdr serve
# --help` and its argument errors start without them (tests/test_cli_startup.py). Annotations
# naming them are strings: this module cannot use `from __future__ import annotations` (see
# create_app).
if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

    from crdr import baselines, image_io, metrics

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLES_DIR = PACKAGE_DIR / "samples"
STATIC_DIR = PACKAGE_DIR / "static"

BASELINE_CODECS = ("jpeg-420", "webp", "avif")
DEFAULT_MAX_UPLOAD_BYTES = 16 * 2**20
DEFAULT_MAX_PIXELS = 4 * 2**20  # 2048x2048: a larger image would keep the page waiting for minutes
DECIMALS = 4  # q and beta are keyed (and coded) rounded to this many decimals
Q_STEP = 0.05  # the page's q slider step; "fit a size" searches this grid
THUMBNAIL_SIDE = 160

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


class RequestError(CrdrError):
    """A request the page can explain to its user: carries the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- bounded caches --------------------------------------------------------------------------------


class ComputeOnce:
    """A bounded LRU map whose values are computed on first use, once per key.

    Concurrent requests for the same missing key wait for the one computation instead of
    repeating it (two tabs, or the page's parallel baseline requests all needing one bitstream).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._values: OrderedDict[Hashable, object] = OrderedDict()
        self._pending: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def peek(self, key: Hashable) -> object | None:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        return None

    def put(self, key: Hashable, value: object) -> None:
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.capacity:
                self._values.popitem(last=False)

    def get(self, key: Hashable, compute: Callable[[], object]) -> tuple[object, bool]:
        """``(value, cached)``: the stored value, else ``compute()`` stored and returned."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key], True
            key_lock = self._pending.setdefault(key, threading.Lock())
        with key_lock:
            value = self.peek(key)
            if value is not None:
                return value, True
            try:
                value = compute()
                self.put(key, value)
            finally:
                with self._lock:
                    self._pending.pop(key, None)
        return value, False


# -- what the caches hold --------------------------------------------------------------------------


@dataclass
class LoadedImage:
    """An image the page works on; ``id`` is derived from its bytes, never from a client string."""

    id: str
    name: str
    source: "image_io.SourceImage"
    original_png: bytes
    encodes: int = 0  # bitstreams made for this image: one per q, never per beta
    entropy_decodes: int = 0  # one per q as well
    decodes: int = 0  # syntheses: one per (q, beta)

    def summary(self) -> dict:
        height, width = self.source.rgb.shape[:2]
        return {
            "id": self.id, "name": self.name, "width": width, "height": height,
            "notes": list(self.source.notes), "original_url": f"/api/original.png?image={self.id}",
        }


@dataclass(frozen=True)
class Bitstream:
    data: bytes
    q: float
    seconds: float

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Latents:
    """ŷ of each tile of one bitstream, ``((left, top, width, height), y_hat (1, Y, h, w))``."""

    header: bitstream.Header
    tiles: "tuple[tuple[tuple[int, int, int, int], torch.Tensor], ...]"
    alpha: "np.ndarray | None"
    seconds: float


@dataclass(frozen=True)
class Decoded:
    png: bytes
    psnr: float
    seconds: float  # the whole request: entropy decoding (if not cached) + synthesis + PNG
    entropy_seconds: float  # 0 when ŷ came from the cache
    synthesis_seconds: float


@dataclass(frozen=True)
class BaselineFile:
    codec: str
    budget: int
    quality: int | None  # None: the codec cannot go as small as the budget
    data: bytes
    psnr: float
    seconds: float
    message: str = ""


def _finite(value: float | None, digits: int = 4) -> float | None:
    """JSON has no infinity: PSNR of identical images becomes ``None`` (the page shows "∞")."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _number(value: float) -> str:
    return format(value, "g")


def _png(image: "Image.Image") -> bytes:
    # Level 1: about 5x faster than Pillow's default for 1 % larger files; the page waits on it.
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _display_name(raw: str | None) -> str:
    """A label for the page, never used as a path: printable characters only, short."""
    text = "".join(c for c in (raw or "") if c.isprintable() and c not in "/\\")
    return text.strip()[:80] or "upload"


# -- the work ------------------------------------------------------------------------------------


class Workbench:
    """Everything the page asks for, independent of the web framework (tests call it directly)."""

    def __init__(
        self,
        model=None,
        *,
        model_name: str = "default",
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        samples_dir: Path = SAMPLES_DIR,
        device="cpu",
    ) -> None:
        if max_upload_bytes < 1 or max_pixels < 1:
            raise ParameterError("upload limits must be positive")
        from crdr import baselines, codec, metrics

        self.device = codec.resolve_device(device)  # where g_a and g_s run
        self.model = codec.get_model(model)
        self.model_name = model_name
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.codecs = tuple(name for name in BASELINE_CODECS if name in baselines.available_codecs())
        self.samples = self._read_samples(samples_dir)
        self._images = ComputeOnce(8)
        self._bitstreams = ComputeOnce(64)
        self._latents = ComputeOnce(6)
        self._decoded = ComputeOnce(48)
        self._st_lpips = ComputeOnce(256)
        self._baselines = ComputeOnce(96)
        self._baseline_encodes = ComputeOnce(24)
        self._codec_lock = threading.Lock()
        self._metric_lock = threading.Lock()
        self._metric: "metrics.StLpips | None" = None
        self._metric_reason = metrics.StLpips.unavailable_reason()

    # -- samples and uploads

    @staticmethod
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

    def open_upload(self, data: bytes, name: str | None = None) -> dict:
        if not data:
            raise RequestError(400, "the upload is empty: choose an image file")
        if len(data) > self.max_upload_bytes:
            raise RequestError(413, self.too_many_bytes_message())
        return self._add(data, _display_name(name))

    def too_many_bytes_message(self) -> str:
        return f"the upload is larger than the limit of {self.max_upload_bytes / 2**20:.1f} MiB ({self.max_upload_bytes} bytes)"

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
            return LoadedImage(image_id, name, source, _png(rgb_image))

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

    # -- parameters

    def _q(self, q: float) -> float:
        if not math.isfinite(q):
            raise ParameterError(f"q must be a number, got {q}")
        q = round(float(q), DECIMALS)
        self.model.quality(q)  # raises ParameterError outside [0, max_q]
        return q

    def _beta(self, beta: float) -> float:
        if not math.isfinite(beta):
            raise ParameterError(f"beta must be a number, got {beta}")
        beta = round(float(beta), DECIMALS)
        self.model.realism(beta)
        return beta

    # -- crdr

    def bitstream(self, image_id: str, q: float) -> tuple[Bitstream, bool]:
        image, q = self.image(image_id), self._q(q)

        from crdr import codec

        def encode() -> Bitstream:
            started = time.perf_counter()
            with self._codec_lock:
                data = codec.encode_at(image.source, q, self.model, device=self.device)
                image.encodes += 1
            return Bitstream(data, q, time.perf_counter() - started)

        return self._bitstreams.get((image_id, q), encode)

    def encode(self, image_id: str, q: float | None = None, target_bytes: int | None = None) -> dict:
        """Encode at ``q`` (cached per q), or find the largest slider q fitting ``target_bytes``."""
        if (q is None) == (target_bytes is None):
            raise ParameterError("give exactly one of q and target_bytes")
        notes: list[str] = []
        started = time.perf_counter()
        if target_bytes is not None:
            stream, notes = self._fit(image_id, int(target_bytes))
            cached, seconds = False, time.perf_counter() - started
        else:
            stream, cached = self.bitstream(image_id, q)
            seconds = stream.seconds
        return {**self._stream_facts(image_id, stream), "seconds": round(seconds, 4), "cached": cached, "notes": notes}

    def _fit(self, image_id: str, target: int) -> tuple[Bitstream, list[str]]:
        """The largest q on the slider's grid whose file is not above ``target`` bytes.

        Bisection over grid positions (file size grows with q), each probe an ordinary cached
        encode: about 7 encodes, every one of them a slider position the user may visit next,
        where :func:`crdr.codec.encode`'s search would need up to 14 off-grid ones.
        """
        if target < 1:
            raise ParameterError(f"target size must be positive, got {target} bytes")
        steps = round(self.model.max_q / Q_STEP)

        def size(position: int) -> int:
            return len(self.bitstream(image_id, position * Q_STEP)[0].data)

        if size(0) > target:
            raise ParameterError(f"{target} bytes is below the smallest file for this image: {size(0)} bytes at q = 0")
        if size(steps) <= target:
            return self.bitstream(image_id, steps * Q_STEP)[0], [
                f"the largest file, at q = {self.model.max_q:g}, has {size(steps)} bytes"]
        low, high = 0, steps  # low fits, high does not
        while high - low > 1:
            middle = (low + high) // 2
            if size(middle) <= target:
                low = middle
            else:
                high = middle
        return self.bitstream(image_id, low * Q_STEP)[0], []

    def _stream_facts(self, image_id: str, stream: Bitstream) -> dict:
        image = self.image(image_id)
        height, width = image.source.rgb.shape[:2]
        return {
            "image": image_id, "q": stream.q, "bytes": len(stream.data),
            "bpp": round(len(stream.data) * 8 / (width * height), 5), "sha256": stream.sha256,
            "encodes": image.encodes, "download_url": f"/api/bitstream.crdr?image={image_id}&q={_number(stream.q)}",
        }

    def latents(self, image_id: str, q: float) -> tuple[Latents, Bitstream, bool]:
        """Entropy-decode the bitstream of ``(image, q)`` once: ŷ does not depend on ``beta``."""
        image = self.image(image_id)
        stream, _ = self.bitstream(image_id, q)

        from crdr import codec

        def entropy_decode() -> Latents:
            started = time.perf_counter()
            container = bitstream.unpack(stream.data)
            with self._codec_lock:
                decoded = codec.decode_latents(container, self.model)
                image.entropy_decodes += 1
            header, tiles, alpha = decoded.header, decoded.tiles, decoded.alpha
            return Latents(header, tuple(tiles), alpha, time.perf_counter() - started)

        value, cached = self._latents.get((image_id, stream.q), entropy_decode)
        return value, stream, cached

    def decoded(self, image_id: str, q: float, beta: float) -> tuple[Decoded, Bitstream, bool]:
        """The reconstruction at ``beta``: the synthesis transform on the cached ŷ."""
        image, beta = self.image(image_id), self._beta(beta)
        stream, _ = self.bitstream(image_id, q)

        from crdr import codec, metrics

        def decode() -> Decoded:
            started = time.perf_counter()
            latents, _, cached_latents = self.latents(image_id, q)
            header = latents.header
            synthesis_started = time.perf_counter()
            with self._codec_lock:
                result = codec.synthesize(
                    codec.DecodedLatents(header, list(latents.tiles), latents.alpha), self.model, beta,
                    device=self.device,
                )
                image.decodes += 1
            synthesis_seconds = time.perf_counter() - synthesis_started
            rgb = result.rgb
            return Decoded(
                _png(result.to_pil()), metrics.psnr(image.source.rgb, rgb), time.perf_counter() - started,
                0.0 if cached_latents else latents.seconds, synthesis_seconds,
            )

        value, cached = self._decoded.get((image_id, stream.q, beta), decode)
        return value, stream, cached

    def decode(self, image_id: str, q: float, beta: float) -> dict:
        decoded, stream, cached = self.decoded(image_id, q, beta)
        beta = self._beta(beta)
        query = f"image={image_id}&q={_number(stream.q)}&beta={_number(beta)}"
        return {
            **self._stream_facts(image_id, stream), "beta": beta, "psnr": _finite(decoded.psnr),
            "decodes": self.image(image_id).decodes, "entropy_decodes": self.image(image_id).entropy_decodes,
            "seconds": round(decoded.seconds, 4), "entropy_seconds": round(decoded.entropy_seconds, 4),
            "synthesis_seconds": round(decoded.synthesis_seconds, 4), "cached": cached,
            "image_url": f"/api/recon.png?{query}", "png_download_url": f"/api/recon.png?{query}&download=1",
        }

    def file_stem(self, image_id: str) -> str:
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(self.image(image_id).name).stem)
        return stem[:60] or "image"

    # -- ST-LPIPS

    def _st_lpips_metric(self) -> "metrics.StLpips | None":
        import torch

        from crdr import metrics

        if self._metric_reason:
            return None
        with self._metric_lock:  # the network is built on first use; build it once
            if self._metric is None and not self._metric_reason:
                try:
                    metric = metrics.StLpips()
                    network = metric.network
                except metrics.MetricUnavailable as error:
                    self._metric_reason = str(error)
                    return None
                if isinstance(getattr(network, "net", None), torch.nn.Module):
                    network.net = metrics.CachedFeatures(network.net)
                self._metric = metric
        return self._metric

    def _measure_st_lpips(self, original: "np.ndarray", reconstruction: "np.ndarray") -> float | None:
        metric = self._st_lpips_metric()
        return None if metric is None else metric(original, reconstruction)

    def st_lpips(self, image_id: str, q: float, beta: float | None = None, codec_name: str | None = None) -> dict:
        """ST-LPIPS(original, shown image) of crdr at ``(q, beta)``, or of a baseline at q's budget.

        Its own request, apart from decode and baseline: it is the slowest number on the page,
        and the image and the other numbers should not wait for it.
        """
        import numpy as np
        from PIL import Image

        from crdr import baselines

        image = self.image(image_id)
        if codec_name is not None:
            result, stream, _ = self.baseline_file(image_id, q, codec_name)
            if result.quality is None:
                raise RequestError(404, result.message)
            key: tuple = (image_id, codec_name, result.budget)

            def reconstruction() -> "np.ndarray":
                return baselines.get_codec(codec_name).decode(result.data)
        elif beta is not None:
            decoded, stream, _ = self.decoded(image_id, q, beta)
            beta = self._beta(beta)
            key = (image_id, stream.q, beta)

            def reconstruction() -> "np.ndarray":
                with Image.open(io.BytesIO(decoded.png)) as png:
                    return np.asarray(png.convert("RGB"))
        else:
            raise ParameterError("give beta (for crdr) or codec (for a baseline)")

        def measure() -> tuple[float | None, float]:
            started = time.perf_counter()
            return self._measure_st_lpips(image.source.rgb, reconstruction()), time.perf_counter() - started

        (value, seconds), cached = self._st_lpips.get(key, measure)
        return {
            "image": image_id, "q": stream.q, "beta": beta, "codec": codec_name or "crdr",
            "st_lpips": _finite(value), "reason": self._metric_reason, "seconds": round(seconds, 4), "cached": cached,
        }

    # -- baselines

    def _memo_codec(self, image_id: str, name: str) -> "baselines.Codec":
        """The codec with its encoder memoised per quality for this image.

        :func:`baselines.encode_to_size` bisects over qualities and always starts at the ends
        and the middle, so searches for neighbouring budgets (slider steps) share most encodes.
        """
        from crdr import baselines

        base = baselines.get_codec(name)
        files, _ = self._baseline_encodes.get((image_id, name), dict)

        def encoder(rgb: "np.ndarray", quality: int) -> bytes:
            if quality not in files:
                files[quality] = base.encoder(rgb, quality)
            return files[quality]

        return dataclasses.replace(base, encoder=encoder)

    def baseline_file(self, image_id: str, q: float, name: str) -> tuple[BaselineFile, Bitstream, bool]:
        if name not in self.codecs:
            raise RequestError(404, f"unknown codec {name!r}; this server compares with {', '.join(self.codecs)}")
        from crdr import baselines, metrics

        image = self.image(image_id)
        stream, _ = self.bitstream(image_id, q)
        budget = len(stream.data)

        def compare() -> BaselineFile:
            started = time.perf_counter()
            memo = self._memo_codec(image_id, name)
            fitted = baselines.encode_to_size(memo, image.source.rgb, budget)
            if fitted is None:
                smallest = memo.encode(image.source.rgb, memo.min_quality)
                return BaselineFile(
                    name, budget, None, b"", math.nan, time.perf_counter() - started,
                    f"{name} cannot make a file of at most {budget} bytes: its smallest is {len(smallest)} bytes",
                )
            quality, data = fitted
            rgb = memo.decode(data)
            return BaselineFile(name, budget, quality, data, metrics.psnr(image.source.rgb, rgb), time.perf_counter() - started)

        value, cached = self._baselines.get((image_id, name, budget), compare)
        return value, stream, cached

    def baseline(self, image_id: str, q: float, name: str) -> dict:
        from crdr import baselines

        result, stream, cached = self.baseline_file(image_id, q, name)
        height, width = self.image(image_id).source.rgb.shape[:2]
        facts = {
            "image": image_id, "q": stream.q, "codec": name, "description": baselines.get_codec(name).description,
            "budget": result.budget, "fits": result.quality is not None, "message": result.message,
            "seconds": round(result.seconds, 4), "cached": cached,
        }
        if result.quality is None:
            return facts
        url = f"/api/baseline-file?image={image_id}&q={_number(stream.q)}&codec={name}"
        return {
            **facts, "quality": result.quality, "bytes": len(result.data),
            "bpp": round(len(result.data) * 8 / (width * height), 5), "psnr": _finite(result.psnr),
            "image_url": url, "download_url": f"{url}&download=1",
            "st_lpips_url": f"/api/st-lpips?image={image_id}&q={_number(stream.q)}&codec={name}",
        }

    def config(self) -> dict:
        from crdr import baselines

        return {
            "model": {
                "name": self.model_name, "id": self.model.model_id.hex(), "max_q": self.model.max_q,
                "max_beta": float(self.model.config.max_beta), "q_step": Q_STEP,
            },
            "samples": self.sample_list(),
            "codecs": [{"name": name, "description": baselines.get_codec(name).description} for name in self.codecs],
            "limits": {"max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels},
            "st_lpips": {"available": not self._metric_reason, "reason": self._metric_reason},
        }


# -- the web app ---------------------------------------------------------------------------------


def _read_static(directory: Path) -> dict[str, tuple[bytes, str]]:
    """File name → (bytes, media type), read once, so request paths are only ever dict keys."""
    files: dict[str, tuple[bytes, str]] = {}
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            if path.is_file() and path.suffix in STATIC_TYPES:
                files[path.name] = (path.read_bytes(), STATIC_TYPES[path.suffix])
    if "index.html" not in files:
        raise CrdrError(f"the web page is missing from this installation ({directory / 'index.html'})")
    return files


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def create_app(workbench: Workbench, *, allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS):
    """The FastAPI app serving ``workbench``; ``allowed_hosts=None`` accepts any ``Host`` header.

    (This module does not use ``from __future__ import annotations``: FastAPI reads the route
    functions' annotations, which name classes imported here, inside this function.)
    """
    from fastapi import FastAPI, Query, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from crdr import baselines

    static = _read_static(STATIC_DIR)
    # No /docs: FastAPI's interactive docs load scripts from a CDN, and this page promises none.
    app = FastAPI(title="crdr serve", docs_url=None, redoc_url=None, openapi_url=None)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.exception_handler(CrdrError)
    async def crdr_error(request: Request, error: CrdrError) -> JSONResponse:
        status = error.status if isinstance(error, RequestError) else 400
        return JSONResponse({"detail": str(error)}, status_code=status)

    def binary(data: bytes, media_type: str, filename: str | None = None) -> Response:
        headers = {"Cache-Control": "no-store"}
        if filename:
            headers["Content-Disposition"] = f'attachment; filename="{filename}"'
        return Response(data, media_type=media_type, headers=headers)

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        data, media_type = static["index.html"]
        return Response(data, media_type=media_type)

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str) -> Response:
        if name not in static:
            return JSONResponse({"detail": "not found"}, status_code=404)
        data, media_type = static[name]
        return Response(data, media_type=media_type)

    @app.get("/api/config")
    def config() -> dict:
        return workbench.config()

    @app.get("/api/sample-thumbnail.jpg")
    def sample_thumbnail(name: str) -> Response:
        return binary(workbench.sample_thumbnail(name), "image/jpeg")

    @app.post("/api/images/sample")
    def open_sample(name: str) -> dict:
        return workbench.open_sample(name)

    @app.post("/api/images/upload")
    async def open_upload(request: Request) -> dict:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > workbench.max_upload_bytes:
            raise RequestError(413, workbench.too_many_bytes_message())
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > workbench.max_upload_bytes:
                raise RequestError(413, workbench.too_many_bytes_message())
        name = request.headers.get("x-filename", "")
        return await run_in_threadpool(workbench.open_upload, bytes(body), unquote(name))

    @app.get("/api/original.png")
    def original(image: str) -> Response:
        return binary(workbench.image(image).original_png, "image/png")

    @app.post("/api/encode")
    def encode(image: str, q: float | None = None, target_bytes: int | None = Query(None, ge=1)) -> dict:
        return workbench.encode(image, q=q, target_bytes=target_bytes)

    @app.get("/api/decode")
    def decode(image: str, q: float, beta: float) -> dict:
        return workbench.decode(image, q, beta)

    @app.get("/api/st-lpips")
    def st_lpips(image: str, q: float, beta: float | None = None, codec: str | None = None) -> dict:
        return workbench.st_lpips(image, q, beta=beta, codec_name=codec)

    @app.get("/api/baseline")
    def baseline(image: str, q: float, codec: str) -> dict:
        return workbench.baseline(image, q, codec)

    @app.get("/api/recon.png")
    def recon(image: str, q: float, beta: float, download: bool = False) -> Response:
        decoded, stream, _ = workbench.decoded(image, q, beta)
        name = f"{workbench.file_stem(image)}_q{_number(stream.q)}_beta{_number(workbench._beta(beta))}.png"
        return binary(decoded.png, "image/png", name if download else None)

    @app.get("/api/bitstream.crdr")
    def bitstream_file(image: str, q: float) -> Response:
        stream, _ = workbench.bitstream(image, q)
        name = f"{workbench.file_stem(image)}_q{_number(stream.q)}.crdr"
        return binary(stream.data, "application/octet-stream", name)

    @app.get("/api/baseline-file")
    def baseline_file(image: str, q: float, codec: str, download: bool = False) -> Response:
        result, _, _ = workbench.baseline_file(image, q, codec)
        if result.quality is None:
            raise RequestError(404, result.message)
        spec = baselines.get_codec(codec)
        name = f"{workbench.file_stem(image)}_{codec}_q{result.quality}{spec.extension}"
        return binary(result.data, spec.mime_type, name if download else None)

    return app


# -- command line --------------------------------------------------------------------------------


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (0 = any free port), or a one-line :class:`CrdrError`."""
    if not 0 <= port <= 65535:
        raise ParameterError(f"port must be in 0..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host.strip("[]"), port))
    except OSError as error:
        listener.close()
        raise CrdrError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return listener


def url_of(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"http://[{host}]:{port}/" if listener.family == socket.AF_INET6 else f"http://{host}:{port}/"


@contextlib.contextmanager
def background_server(workbench: Workbench, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``workbench`` from a thread (tests, benchmarks); yields the base URL."""
    import uvicorn

    listener = listen(host, port)
    app = create_app(workbench, allowed_hosts=LOOPBACK_HOSTS if _is_loopback(host) else None)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise CrdrError("the background server did not start")
            time.sleep(0.01)
        yield url_of(listener)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


def run_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
        import fastapi  # noqa: F401  (fail here, with the fix, rather than inside create_app)
    except ImportError:
        raise CrdrError("crdr serve needs the 'serve' extra: pip install 'crdr[serve]'") from None

    listener = listen(args.host, args.port)  # before loading the model: a busy port fails at once
    try:
        workbench = Workbench(
            args.model, model_name=args.model or "default",
            max_upload_bytes=args.max_upload_bytes, max_pixels=args.max_pixels, device=args.device,
        )
        import torch

        # One intra-op thread per request: the page fires several requests at once (ST-LPIPS and
        # three baselines), which then share the cores; codec work runs on one thread anyway.
        torch.set_num_threads(1)
        loopback = _is_loopback(args.host)
        app = create_app(workbench, allowed_hosts=LOOPBACK_HOSTS if loopback else None)
        print(f"crdr serve: {url_of(listener)}  (model {workbench.model_name}; Ctrl+C to stop)", file=sys.stderr)
        if not loopback:
            print(f"crdr serve: warning: listening on {args.host}: anyone who can reach it can use it", file=sys.stderr)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        server.run(sockets=[listener])
    finally:
        listener.close()
    return 0


def register(subparsers) -> None:
    from crdr import cli

    parser = subparsers.add_parser("serve", help="local web page: try q and beta, compare with JPEG/WebP/AVIF")
    parser.add_argument("--model", default=None, help="bundled model name or weights file (default: bundled 'default')")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    parser.add_argument(
        "--max-upload-bytes", type=int, default=DEFAULT_MAX_UPLOAD_BYTES,
        help=f"refuse larger uploads (default {DEFAULT_MAX_UPLOAD_BYTES})",
    )
    parser.add_argument(
        "--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
        help=f"refuse images with more pixels (default {DEFAULT_MAX_PIXELS})",
    )
    cli.add_device(parser)
    parser.set_defaults(handler=run_serve)
