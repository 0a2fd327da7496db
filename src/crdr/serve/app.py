"""The web app of ``crdr serve``: FastAPI routes over a :class:`~crdr.serve.session.Workbench`.

What: :func:`create_app` maps each URL the page requests to one Workbench call, serves the page
and its assets from memory, answers :class:`~crdr.serve.records.RequestError` with its status
(any other :class:`CrdrError` with 400), and adds the security headers.
Why apart from the Workbench: the work stays testable without a web framework, and everything
HTTP (Host checks, streaming the upload, headers, download names) is here.

This module does not use ``from __future__ import annotations``: FastAPI reads the route
functions' annotations, which name classes imported inside :func:`create_app`, at run time.
"""

from pathlib import Path
from urllib.parse import unquote

from crdr.errors import CrdrError
from crdr.serve.records import RequestError
from crdr.serve.session import Workbench, short_number

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"  # package data of crdr
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


def create_app(workbench: Workbench, *, allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS):
    """The FastAPI app serving ``workbench``; ``allowed_hosts=None`` accepts any ``Host`` header."""
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
        if declared.isdigit():
            workbench.check_upload_size(int(declared))
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            workbench.check_upload_size(len(body))
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
        beta_text = short_number(workbench.checked_beta(beta))
        name = f"{workbench.file_stem(image)}_q{short_number(stream.q)}_beta{beta_text}.png"
        return binary(decoded.png, "image/png", name if download else None)

    @app.get("/api/bitstream.crdr")
    def bitstream_file(image: str, q: float) -> Response:
        stream, _ = workbench.bitstream(image, q)
        name = f"{workbench.file_stem(image)}_q{short_number(stream.q)}.crdr"
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
