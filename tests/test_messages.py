"""Messages that say what happened in the user's terms (issue 14, item 6)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from crdr import bitstream, codec
from crdr.errors import FormatError, ImageError, ParameterError, WeightsError


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    data = bytearray(_png(1, 1))
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the input is empty"),
        (_png(4, 4), "is a PNG image, not a compressed file"),
        (b"JUNK" + bytes(80), r"not a .crdr file \(bad magic"),
    ],
)
def test_files_without_the_magic_are_not_called_malformed_bin_files(tiny_model, data, message):
    for call in (lambda: codec.decompress(data, model=tiny_model), lambda: codec.describe(data)):
        with pytest.raises(FormatError, match=message) as caught:
            call()
        assert ".bin" not in str(caught.value).split(";")[0]


def test_damaged_magic_of_a_real_file_is_reported_as_bad_magic(tiny_model):
    data = codec.compress(np.zeros((8, 8, 3), np.uint8), q=1.0, model=tiny_model)
    with pytest.raises(FormatError, match="bad magic 4a554e4b"):
        codec.decompress(b"JUNK" + data[4:], model=tiny_model)


def test_official_format_is_used_when_asked_for_or_when_the_file_starts_like_one(tiny_model, vectors_dir):
    data = (vectors_dir / "q1.5.bin").read_bytes()
    auto = np.asarray(codec.decompress(data, model=tiny_model))
    assert np.array_equal(np.asarray(codec.decompress(data, model=tiny_model, format="official")), auto)
    with pytest.raises(FormatError, match="not an authors' multi-rate .bin file"):
        codec.decompress(_png(4, 4), model=tiny_model, format="official")
    with pytest.raises(FormatError, match="missing CRDR magic|bad magic"):
        codec.decompress(data, model=tiny_model, format="crdr")
    assert codec.describe(data, format="official")["format"] == "official"


def test_huge_input_image_names_max_pixels_not_pillows_global(tiny_model):
    """15000 x 15000 is above Pillow's own guard (179 MP) but within crdr's default limit."""
    data = _png_claiming(15_000, 15_000)
    with pytest.raises(ImageError) as caught:
        codec.compress(data, q=1.0, model=tiny_model, max_pixels=10**8)
    assert "--max-pixels" in str(caught.value) and "MAX_IMAGE_PIXELS" not in str(caught.value)
    with pytest.raises(ImageError) as caught:
        codec.compress(data, q=1.0, model=tiny_model)
    assert "MAX_IMAGE_PIXELS" not in str(caught.value)


def test_too_small_target_bpp_is_reported_in_bpp(tiny_model):
    with pytest.raises(ParameterError, match=r"target of 0.0001 bpp \(0 bytes for 32x32\) is below"):
        codec.encode(np.zeros((32, 32, 3), np.uint8), target_bpp=0.0001, model=tiny_model)


@pytest.mark.parametrize("bound", [0.0, -0.11])
def test_checkpoint_with_a_non_positive_scale_bound_is_a_clear_weights_error(vectors_dir, tmp_path, bound):
    from crdr.weights import load_model

    checkpoint = torch.load(vectors_dir / "official_tiny.pth.tar", map_location="cpu", weights_only=True)
    state = checkpoint["comp_model"] if "comp_model" in checkpoint else checkpoint
    key = next(k for k in state if k.endswith("scale_bound"))
    state[key] = torch.full_like(state[key], bound)
    path = tmp_path / "bad.pth.tar"
    torch.save(checkpoint, path)
    with pytest.raises(WeightsError, match=f"scale bound .* is {bound}; it must be a positive number"):
        load_model(path)


def test_describe_reports_metadata_flags(tiny_model):
    facts = codec.describe(codec.compress(np.zeros((8, 8, 3), np.uint8), q=1.0, model=tiny_model))
    assert (facts["version"], facts["icc_profile"], facts["exif"]) == (2, False, False)
    assert bitstream.identify(b"CRDR") == "crdr"
