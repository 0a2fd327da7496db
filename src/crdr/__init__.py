"""crdr: one learned image codec that controls rate, distortion and realism.

Implements Iwai, Miyazaki & Omachi, "Controlling Rate, Distortion, and Realism: Towards a Single
Comprehensive Neural Image Compression Model" (WACV 2024).

The public names are imported on first use (PEP 562), so ``import crdr`` and the CLI's help,
version and ``info`` start without loading torch.
"""

from __future__ import annotations

from crdr.lazy import lazy_attributes

__version__ = "0.1.0"

# Public name -> module that defines it; each is imported when the name is first read.
_LAZY = {
    "compress": "crdr.codec",
    "decompress": "crdr.codec",
    "encode": "crdr.codec",
    "ModelConfig": "crdr.config",
    "CrdrError": "crdr.errors",
    "CRDR": "crdr.models.crdr",
    "load_model": "crdr.weights",
    "save_weights": "crdr.weights",
}

__all__ = ["CRDR", "CrdrError", "ModelConfig", "compress", "decompress", "encode", "load_model", "save_weights"]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
