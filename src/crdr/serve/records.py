"""What the page's caches hold, and the error a request can get.

Plain records shared by :mod:`crdr.serve.images` (which makes :class:`LoadedImage`),
:mod:`crdr.serve.session` (the rest) and :mod:`crdr.serve.app` (which maps
:class:`RequestError` to its HTTP status). They live apart from the code that makes them so that
those modules import them without importing each other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from crdr import bitstream
from crdr.errors import CrdrError

if TYPE_CHECKING:  # imported where used: importing crdr.serve loads no numpy or torch
    import numpy as np
    import torch

    from crdr import image_io


class RequestError(CrdrError):
    """A request the page can explain to its user: carries the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class LoadedImage:
    """An image the page works on; ``id`` is derived from its bytes, never from a client string."""

    id: str
    name: str
    source: image_io.SourceImage
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
    tiles: tuple[tuple[tuple[int, int, int, int], torch.Tensor], ...]
    alpha: np.ndarray | None
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
