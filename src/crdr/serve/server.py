"""Running ``crdr serve``: the listening socket, a background server, the command and its options.

What: :func:`listen` binds before the model loads (a busy port fails at once, in one line),
:func:`run_serve` is the ``crdr serve`` command, :func:`register` adds it to the CLI, and
:func:`background_server` serves a Workbench from a thread for tests and benchmarks.
Why apart from the app: the CLI imports this package for ``crdr serve --help``; nothing here
imports uvicorn, FastAPI or torch until the server actually starts.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import socket
import sys
import threading
import time
from typing import Iterator

from crdr.errors import CrdrError, ParameterError
from crdr.serve.app import LOOPBACK_HOSTS, create_app
from crdr.serve.images import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES
from crdr.serve.session import Workbench


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
