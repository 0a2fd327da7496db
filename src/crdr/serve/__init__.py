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

Modules, each with one job::

    cache.py     ComputeOnce: a bounded LRU whose values are computed once per key, even when
                 requests for one key arrive together
    records.py   what the caches hold (LoadedImage, Bitstream, Latents, Decoded, BaselineFile)
                 and RequestError, the error that carries its HTTP status
    images.py    ImageStore: bundled samples, upload checks (bytes, declared pixels), the images
    st_lpips.py  StLpipsMeter: ST-LPIPS(original, shown), its network built once, on first use
    session.py   Workbench: the codec calls, q and beta checks, "fit a size", the baselines at
                 the crdr file's size, and what each request answers; no web framework
    app.py       create_app: the FastAPI routes over a Workbench, static files, security headers
    server.py    listen, background_server, run_serve and the CLI's ``register``

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

torch, numpy, Pillow, FastAPI and the codec are imported where they are used, so importing this
package (``crdr serve --help``, its argument errors) loads none of them (tests/test_cli_startup.py).
"""

from crdr.serve.app import CONTENT_SECURITY_POLICY, LOOPBACK_HOSTS, STATIC_DIR, STATIC_TYPES, create_app
from crdr.serve.cache import ComputeOnce
from crdr.serve.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    IMAGE_SUFFIXES,
    SAMPLES_DIR,
    THUMBNAIL_SIDE,
    ImageStore,
)
from crdr.serve.records import BaselineFile, Bitstream, Decoded, Latents, LoadedImage, RequestError
from crdr.serve.server import background_server, listen, register, run_serve, url_of
from crdr.serve.session import BASELINE_CODECS, DECIMALS, Q_STEP, Workbench
from crdr.serve.st_lpips import StLpipsMeter

__all__ = [
    "BASELINE_CODECS",
    "BaselineFile",
    "Bitstream",
    "CONTENT_SECURITY_POLICY",
    "ComputeOnce",
    "DECIMALS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "Decoded",
    "IMAGE_SUFFIXES",
    "ImageStore",
    "LOOPBACK_HOSTS",
    "Latents",
    "LoadedImage",
    "Q_STEP",
    "RequestError",
    "SAMPLES_DIR",
    "STATIC_DIR",
    "STATIC_TYPES",
    "StLpipsMeter",
    "THUMBNAIL_SIDE",
    "Workbench",
    "background_server",
    "create_app",
    "listen",
    "register",
    "run_serve",
    "url_of",
]
