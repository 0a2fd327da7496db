"""Tests of the classical baseline codecs: round trips, monotonic sizes, size-constrained encoding."""

from __future__ import annotations

import numpy as np
import pytest

from crdr import baselines
from crdr.baselines import CODEC_NAMES, available_codecs, encode_to_size, get_codec
from crdr.errors import FormatError, ImageError, ParameterError
from crdr.metrics import psnr


def _photo_like(height: int = 64, width: int = 64) -> np.ndarray:
    """Smooth gradients plus mild texture: compresses like a photo, unlike pure noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    texture = np.random.default_rng(0).normal(0.0, 12.0, (height, width, 3))
    base = np.stack([x / width * 200 + 30, y / height * 180 + 40, 128 + 60 * np.sin(x / 7) * np.cos(y / 9)], axis=-1)
    return np.clip(base + texture, 0, 255).astype(np.uint8)


AVAILABLE = available_codecs()


def test_core_codecs_are_available_here():
    assert {"jpeg-420", "jpeg-444", "webp"} <= set(AVAILABLE)
    assert set(AVAILABLE) | set(baselines.unavailable_codecs()) == set(CODEC_NAMES)


@pytest.mark.parametrize("name", AVAILABLE)
def test_codec_round_trips_to_an_image_of_the_same_shape_close_to_the_input(name):
    codec = get_codec(name)
    image = _photo_like()
    decoded = codec.decode(codec.encode(image, codec.qualities[-1]))
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert psnr(image, decoded) > 25.0


@pytest.mark.parametrize("name", AVAILABLE)
def test_codec_sizes_increase_with_quality(name):
    codec = get_codec(name)
    image = _photo_like()
    sweep = [codec.qualities[0], codec.qualities[len(codec.qualities) // 2], codec.qualities[-1]]
    sizes = [len(codec.encode(image, quality)) for quality in sweep]
    assert sizes[0] < sizes[1] < sizes[2]


@pytest.mark.parametrize("name", AVAILABLE)
def test_encode_to_size_never_exceeds_the_budget_and_returns_what_it_measured(name):
    codec = get_codec(name)
    image = _photo_like()
    low = len(codec.encode(image, codec.min_quality))
    high = len(codec.encode(image, codec.qualities[-1]))
    budget = (low + high) // 2
    result = encode_to_size(codec, image, budget)
    assert result is not None
    quality, data = result
    assert len(data) <= budget
    assert data == codec.encode(image, quality)
    # One step up does not fit (bisection found the boundary).
    assert len(codec.encode(image, quality + 1)) > budget


def test_encode_to_size_returns_none_when_even_the_lowest_quality_is_too_big():
    codec = get_codec("jpeg-420")
    assert encode_to_size(codec, _photo_like(), 10) is None


def test_encode_to_size_returns_the_top_quality_when_everything_fits():
    codec = get_codec("jpeg-444")
    quality, _ = encode_to_size("jpeg-444", _photo_like(16, 16), 10**7)
    assert quality == codec.max_quality


def test_jpeg_420_is_smaller_than_jpeg_444_at_equal_quality():
    image = _photo_like()
    assert len(get_codec("jpeg-420").encode(image, 75)) < len(get_codec("jpeg-444").encode(image, 75))


def test_bad_inputs_raise_crdr_errors():
    codec = get_codec("jpeg-420")
    with pytest.raises(ParameterError):
        codec.encode(_photo_like(), 101)
    with pytest.raises(ImageError):
        codec.encode(np.zeros((8, 8, 4), np.uint8), 50)
    with pytest.raises(FormatError):
        codec.decode(b"not an image")
    with pytest.raises(ParameterError):
        get_codec("jpeg-2000")
