"""crdr: one learned image codec that controls rate, distortion and realism.

Implements Iwai, Miyazaki & Omachi, "Controlling Rate, Distortion, and Realism: Towards a Single
Comprehensive Neural Image Compression Model" (WACV 2024).
"""

__version__ = "0.1.0"

from crdr.codec import compress, decompress, encode  # noqa: E402
from crdr.config import ModelConfig  # noqa: E402
from crdr.errors import CrdrError  # noqa: E402
from crdr.models.crdr import CRDR  # noqa: E402
from crdr.weights import load_model, save_weights  # noqa: E402

__all__ = ["CRDR", "CrdrError", "ModelConfig", "compress", "decompress", "encode", "load_model", "save_weights"]
