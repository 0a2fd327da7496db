"""The work behind ``crdr serve``'s page: encode, decode at any beta, fit a size, compare.

What: :class:`Workbench` answers every request the page makes, as plain dicts and bytes, with no
web framework (tests and benchmarks call it directly; :mod:`crdr.serve.app` maps it to routes).
It checks ``q`` and ``beta`` where they enter, runs the codec (one lock: the model is shared),
keeps what each step made in a bounded cache, and fits JPEG, WebP and AVIF to the byte size of
the crdr file. The images come from :class:`~crdr.serve.images.ImageStore` (samples, checked
uploads), ST-LPIPS from :class:`~crdr.serve.st_lpips.StLpipsMeter`.
Why: a ``beta`` change must only re-run the synthesis transform on the cached ŷ, and a slider
step must cost at most one encode; the caches here make that so (see :mod:`crdr.serve`).
"""

from __future__ import annotations

import dataclasses
import io
import math
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from crdr import bitstream
from crdr.errors import ParameterError
from crdr.serve.cache import ComputeOnce
from crdr.serve.images import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES, SAMPLES_DIR, ImageStore, png_bytes
from crdr.serve.records import BaselineFile, Bitstream, Decoded, Latents, LoadedImage, RequestError
from crdr.serve.st_lpips import StLpipsMeter
from crdr.size_search import largest_fitting

if TYPE_CHECKING:  # imported where used: importing crdr.serve loads no numpy, torch or codec
    import numpy as np

    from crdr import baselines

BASELINE_CODECS = ("jpeg-420", "webp", "avif")
DECIMALS = 4  # q and beta are keyed (and coded) rounded to this many decimals
Q_STEP = 0.05  # the page's q slider step; "fit a size" searches this grid


def short_number(value: float) -> str:
    """``q`` or ``beta`` as the page's URLs and download names write it (``1.25``, ``0``)."""
    return format(value, "g")


def _finite(value: float | None, digits: int = 4) -> float | None:
    """JSON has no infinity: PSNR of identical images becomes ``None`` (the page shows "∞")."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


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
        # First: it checks the upload limits before torch or the model is loaded.
        self.images = ImageStore(max_upload_bytes=max_upload_bytes, max_pixels=max_pixels, samples_dir=samples_dir)
        from crdr import baselines, codec

        self.device = codec.resolve_device(device)  # where g_a and g_s run
        self.model = codec.get_model(model)
        self.model_name = model_name
        self.codecs = tuple(name for name in BASELINE_CODECS if name in baselines.available_codecs())
        self._bitstreams = ComputeOnce(64)
        self._latents = ComputeOnce(6)
        self._decoded = ComputeOnce(48)
        self._baselines = ComputeOnce(96)
        self._baseline_encodes = ComputeOnce(24)
        self._codec_lock = threading.Lock()
        self.st_lpips_meter = StLpipsMeter(256)

    # -- images (kept by self.images)

    def sample_thumbnail(self, name: str) -> bytes:
        return self.images.sample_thumbnail(name)

    def open_sample(self, name: str) -> dict:
        return self.images.open_sample(name)

    def check_upload_size(self, byte_count: int) -> None:
        self.images.check_upload_size(byte_count)

    def open_upload(self, data: bytes, name: str | None = None) -> dict:
        return self.images.open_upload(data, name)

    def image(self, image_id: str) -> LoadedImage:
        return self.images.image(image_id)

    def file_stem(self, image_id: str) -> str:
        """The image's name made safe for a download name: letters, digits, ``-`` and ``_``."""
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(self.image(image_id).name).stem)
        return stem[:60] or "image"

    # -- parameters

    def checked_q(self, q: float) -> float:
        """``q`` rounded to :data:`DECIMALS` (the cache key and the coded value); raises
        :class:`ParameterError` if it is not a number in ``[0, max_q]``."""
        if not math.isfinite(q):
            raise ParameterError(f"q must be a number, got {q}")
        q = round(float(q), DECIMALS)
        self.model.q_tensor(q)  # the model's range: raises ParameterError outside [0, max_q]
        return q

    def checked_beta(self, beta: float) -> float:
        """``beta`` rounded to :data:`DECIMALS` (the cache key); raises :class:`ParameterError`
        if it is not a number in ``[0, max_beta]``."""
        if not math.isfinite(beta):
            raise ParameterError(f"beta must be a number, got {beta}")
        beta = round(float(beta), DECIMALS)
        self.model.beta_tensor(beta)  # the model's range: raises ParameterError outside [0, max_beta]
        return beta

    # -- crdr

    def bitstream(self, image_id: str, q: float) -> tuple[Bitstream, bool]:
        image, q = self.image(image_id), self.checked_q(q)

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

        Bisection over grid positions (:func:`crdr.size_search.largest_fitting`; file size grows
        with q), each probe an ordinary cached encode: about 7 encodes, every one of them a slider
        position the user may visit next, where :func:`crdr.codec.encode`'s search would need up
        to 14 off-grid ones.
        """
        if target < 1:
            raise ParameterError(f"target size must be positive, got {target} bytes")
        steps = round(self.model.max_q / Q_STEP)

        def size(position: int) -> int:
            return len(self.bitstream(image_id, position * Q_STEP)[0].data)

        position = largest_fitting(size, 0, steps, target)
        if position is None:
            raise ParameterError(f"{target} bytes is below the smallest file for this image: {size(0)} bytes at q = 0")
        stream = self.bitstream(image_id, position * Q_STEP)[0]
        if position == steps:
            return stream, [f"the largest file, at q = {self.model.max_q:g}, has {len(stream.data)} bytes"]
        return stream, []

    def _stream_facts(self, image_id: str, stream: Bitstream) -> dict:
        image = self.image(image_id)
        height, width = image.source.rgb.shape[:2]
        return {
            "image": image_id, "q": stream.q, "bytes": len(stream.data),
            "bpp": round(len(stream.data) * 8 / (width * height), 5), "sha256": stream.sha256,
            "encodes": image.encodes, "download_url": f"/api/bitstream.crdr?image={image_id}&q={short_number(stream.q)}",
        }

    def latents(self, image_id: str, q: float) -> tuple[Latents, Bitstream, bool]:
        """Entropy-decode the bitstream of ``(image, q)`` once: ŷ does not depend on ``beta``."""
        stream, _ = self.bitstream(image_id, q)
        value, cached = self._latents_of(image_id, stream)
        return value, stream, cached

    def _latents_of(self, image_id: str, stream: Bitstream) -> tuple[Latents, bool]:
        """:meth:`latents` of a bitstream already made (its q checked)."""
        image = self.image(image_id)

        from crdr import codec

        def entropy_decode() -> Latents:
            started = time.perf_counter()
            container = bitstream.unpack(stream.data)
            with self._codec_lock:
                decoded = codec.decode_latents(container, self.model)
                image.entropy_decodes += 1
            header, tiles, alpha = decoded.header, decoded.tiles, decoded.alpha
            return Latents(header, tuple(tiles), alpha, time.perf_counter() - started)

        return self._latents.get((image_id, stream.q), entropy_decode)

    def decoded(self, image_id: str, q: float, beta: float) -> tuple[Decoded, Bitstream, bool]:
        """The reconstruction at ``beta``: the synthesis transform on the cached ŷ."""
        decoded, stream, cached, _ = self._decoded_at(image_id, q, beta)
        return decoded, stream, cached

    def _decoded_at(self, image_id: str, q: float, beta: float) -> tuple[Decoded, Bitstream, bool, float]:
        """:meth:`decoded`, and ``beta`` as checked (the page's numbers show it)."""
        image, beta = self.image(image_id), self.checked_beta(beta)
        stream, _ = self.bitstream(image_id, q)

        from crdr import codec, metrics

        def decode() -> Decoded:
            started = time.perf_counter()
            latents, cached_latents = self._latents_of(image_id, stream)
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
                png_bytes(result.to_pil()), metrics.psnr(image.source.rgb, rgb), time.perf_counter() - started,
                0.0 if cached_latents else latents.seconds, synthesis_seconds,
            )

        value, cached = self._decoded.get((image_id, stream.q, beta), decode)
        return value, stream, cached, beta

    def decode(self, image_id: str, q: float, beta: float) -> dict:
        decoded, stream, cached, beta = self._decoded_at(image_id, q, beta)
        query = f"image={image_id}&q={short_number(stream.q)}&beta={short_number(beta)}"
        return {
            **self._stream_facts(image_id, stream), "beta": beta, "psnr": _finite(decoded.psnr),
            "decodes": self.image(image_id).decodes, "entropy_decodes": self.image(image_id).entropy_decodes,
            "seconds": round(decoded.seconds, 4), "entropy_seconds": round(decoded.entropy_seconds, 4),
            "synthesis_seconds": round(decoded.synthesis_seconds, 4), "cached": cached,
            "image_url": f"/api/recon.png?{query}", "png_download_url": f"/api/recon.png?{query}&download=1",
        }

    # -- ST-LPIPS

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

            def reconstruction() -> np.ndarray:
                return baselines.get_codec(codec_name).decode(result.data)
        elif beta is not None:
            decoded, stream, _, beta = self._decoded_at(image_id, q, beta)
            key = (image_id, stream.q, beta)

            def reconstruction() -> np.ndarray:
                with Image.open(io.BytesIO(decoded.png)) as png:
                    return np.asarray(png.convert("RGB"))
        else:
            raise ParameterError("give beta (for crdr) or codec (for a baseline)")

        value, seconds, cached = self.st_lpips_meter.measure(key, image.source.rgb, reconstruction)
        return {
            "image": image_id, "q": stream.q, "beta": beta, "codec": codec_name or "crdr",
            "st_lpips": _finite(value), "reason": self.st_lpips_meter.reason, "seconds": round(seconds, 4),
            "cached": cached,
        }

    # -- baselines

    def _memo_codec(self, image_id: str, name: str) -> baselines.Codec:
        """The codec with its encoder memoised per quality for this image.

        :func:`baselines.encode_to_size` bisects over qualities and always starts at the ends
        and the middle, so searches for neighbouring budgets (slider steps) share most encodes.
        """
        from crdr import baselines

        base = baselines.get_codec(name)
        files, _ = self._baseline_encodes.get((image_id, name), dict)

        def encoder(rgb: np.ndarray, quality: int) -> bytes:
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
        url = f"/api/baseline-file?image={image_id}&q={short_number(stream.q)}&codec={name}"
        return {
            **facts, "quality": result.quality, "bytes": len(result.data),
            "bpp": round(len(result.data) * 8 / (width * height), 5), "psnr": _finite(result.psnr),
            "image_url": url, "download_url": f"{url}&download=1",
            "st_lpips_url": f"/api/st-lpips?image={image_id}&q={short_number(stream.q)}&codec={name}",
        }

    def config(self) -> dict:
        from crdr import baselines, codec

        return {
            "model": {
                "name": self.model_name, "id": codec.model_identity(self.model).hex(), "max_q": self.model.max_q,
                "max_beta": float(self.model.config.max_beta), "q_step": Q_STEP,
            },
            "samples": self.images.sample_list(),
            "codecs": [{"name": name, "description": baselines.get_codec(name).description} for name in self.codecs],
            "limits": {"max_upload_bytes": self.images.max_upload_bytes, "max_pixels": self.images.max_pixels},
            "st_lpips": {"available": not self.st_lpips_meter.reason, "reason": self.st_lpips_meter.reason},
        }
