"""crdr: one learned image codec that controls rate, distortion and realism.

Implements Iwai, Miyazaki & Omachi, "Controlling Rate, Distortion, and Realism: Towards a Single
Comprehensive Neural Image Compression Model" (WACV 2024).
"""

__version__ = "0.1.0"
