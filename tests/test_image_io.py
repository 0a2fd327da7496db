"""Tests of image reading (modes, EXIF, limits, bad files), tensor conversion, atomic image writes and
the lossless image writers (format by suffix); atomic writes themselves: tests/test_files.py."""

from __future__ import annotations

import functools
import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from crdr import image_io
from crdr.bitstream import Colour
from crdr.errors import FormatError, ImageError, OutputExistsError, ParameterError
from crdr.suffixes import LOSSLESS_WRITERS
from crdr.image_io import (
    decode_alpha,
    encode_alpha,
    from_model_output,
    load_image,
    image_bytes,
    save_image_atomic,
    to_model_input,
    to_pil,
)


def random_u8(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but whose pixel data is a 1x1 image's."""
    data = bytearray(encoded(Image.new("L", (1, 1))))
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# --------------------------------------------------------------------------------------------------
# Modes


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (5, 3), (17, 2)])
def test_rgb_png_loads_pixel_exact(size, tmp_path):
    pixels = random_u8((size[1], size[0], 3))
    path = tmp_path / "rgb.png"
    Image.fromarray(pixels, "RGB").save(path)
    source = load_image(path)
    assert source.rgb.dtype == np.uint8 and source.rgb.shape == pixels.shape
    assert np.array_equal(source.rgb, pixels)
    assert source.alpha is None and source.colour is Colour.RGB and source.notes == ()


def test_path_bytes_and_pil_inputs_give_the_same_image(tmp_path):
    pixels = random_u8((5, 3, 3), seed=1)
    path = tmp_path / "rgb.png"
    Image.fromarray(pixels, "RGB").save(path)
    from_path = load_image(str(path))
    from_bytes = load_image(path.read_bytes())
    from_pil = load_image(Image.open(path))
    for source in (from_bytes, from_pil):
        assert np.array_equal(source.rgb, from_path.rgb) and source.colour is from_path.colour


def test_grey_l_is_grey_with_three_equal_channels():
    pixels = random_u8((5, 3), seed=2)
    source = load_image(encoded(Image.fromarray(pixels, "L")))
    assert source.colour is Colour.GREY and source.alpha is None
    for channel in range(3):
        assert np.array_equal(source.rgb[:, :, channel], pixels)


def test_la_keeps_alpha_and_grey():
    pixels = random_u8((5, 3, 2), seed=3)
    source = load_image(encoded(Image.fromarray(pixels, "LA")))
    assert source.colour is Colour.GREY
    assert np.array_equal(source.rgb[:, :, 1], pixels[:, :, 0])
    assert np.array_equal(source.alpha, pixels[:, :, 1])


def test_rgba_keeps_alpha():
    pixels = random_u8((3, 5, 4), seed=4)
    source = load_image(encoded(Image.fromarray(pixels, "RGBA")))
    assert source.colour is Colour.RGB
    assert np.array_equal(source.rgb, pixels[:, :, :3])
    assert np.array_equal(source.alpha, pixels[:, :, 3])


def test_fully_opaque_alpha_is_dropped():
    pixels = random_u8((3, 5, 4), seed=5)
    pixels[:, :, 3] = 255
    source = load_image(encoded(Image.fromarray(pixels, "RGBA")))
    assert source.alpha is None
    assert np.array_equal(source.rgb, pixels[:, :, :3])
    assert any("opaque" in note for note in source.notes)


def test_palette_without_transparency_is_rgb():
    image = Image.fromarray(random_u8((5, 3, 3), seed=6), "RGB").quantize(colors=8)
    source = load_image(encoded(image))
    assert source.colour is Colour.RGB and source.alpha is None
    assert np.array_equal(source.rgb, np.asarray(image.convert("RGB")))


def test_palette_with_transparency_gets_alpha():
    image = Image.new("P", (3, 5), 1)
    image.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    image.putpixel((0, 0), 0)
    source = load_image(encoded(image, transparency=0))
    assert source.alpha is not None and source.alpha[0, 0] == 0 and source.alpha[1, 1] == 255
    assert tuple(source.rgb[1, 1]) == (200, 100, 50)


def test_rgb_png_with_transparent_colour_gets_alpha():
    pixels = np.full((3, 5, 3), 9, dtype=np.uint8)
    pixels[0, 0] = (1, 2, 3)
    source = load_image(encoded(Image.fromarray(pixels, "RGB"), transparency=(1, 2, 3)))
    assert source.colour is Colour.RGB
    assert source.alpha[0, 0] == 0 and int(source.alpha.sum()) == 255 * 14


def test_bilevel_is_grey_zero_or_255():
    image = Image.new("1", (3, 5), 0)
    image.putpixel((1, 2), 1)
    source = load_image(encoded(image))
    assert source.colour is Colour.GREY
    assert source.rgb[2, 1, 0] == 255 and int(source.rgb.sum()) == 3 * 255


def test_sixteen_bit_grey_png_is_reduced_by_rounding_with_note():
    values = np.array([[0, 128, 129, 257, 32896, 65535]], dtype=np.uint16)
    source = load_image(encoded(Image.fromarray(values)))
    assert source.colour is Colour.GREY
    assert source.rgb[0, :, 0].tolist() == [0, 0, 1, 1, 128, 255]
    assert "16-bit input reduced to 8 bits" in source.notes


def test_big_endian_sixteen_bit_grey_image_is_reduced():
    values = np.array([[0, 65535, 257 * 7]], dtype=">u2")
    image = Image.frombytes("I;16B", (3, 1), values.tobytes())
    source = load_image(image)
    assert source.rgb[0, :, 0].tolist() == [0, 255, 7]
    assert "16-bit input reduced to 8 bits" in source.notes


def test_sixteen_bit_rgb_png_is_noted():
    import imagecodecs  # a dependency of crdr (pyproject), so never skipped
    pixels = np.full((3, 5, 3), 257 * 40, dtype=np.uint16)
    source = load_image(imagecodecs.png_encode(pixels))
    assert source.colour is Colour.RGB
    assert int(source.rgb.min()) == int(source.rgb.max()) == 40
    assert "16-bit input reduced to 8 bits" in source.notes


def test_sixteen_bit_grey_alpha_png_stays_grey():
    import imagecodecs  # a dependency of crdr (pyproject), so never skipped
    pixels = np.zeros((3, 5, 2), dtype=np.uint16)
    pixels[:, :, 0] = 257 * 90
    pixels[0, 0, 1] = 65535
    source = load_image(imagecodecs.png_encode(pixels))
    assert source.colour is Colour.GREY
    assert source.alpha is not None and source.alpha[0, 0] == 255 and source.alpha[1, 1] == 0
    assert int(source.rgb.min()) == int(source.rgb.max()) == 90


def test_int32_image_with_sixteen_bit_values_is_reduced():
    values = np.array([[0, 65535, 257 * 3]], dtype=np.int32)
    source = load_image(Image.fromarray(values, "I"))
    assert source.rgb[0, :, 0].tolist() == [0, 255, 3]
    assert any("treated as 16-bit" in note for note in source.notes)


def test_int32_image_with_eight_bit_values_is_kept():
    values = np.array([[0, 255, 17]], dtype=np.int32)
    source = load_image(Image.fromarray(values, "I"))
    assert source.rgb[0, :, 0].tolist() == [0, 255, 17]
    assert source.colour is Colour.GREY


def test_float_image_in_unit_range_is_scaled():
    values = np.array([[0.0, 0.5, 1.0, np.nan]], dtype=np.float32)
    source = load_image(Image.fromarray(values, "F"))
    assert source.rgb[0, :, 0].tolist() == [0, 128, 255, 0]
    assert any("float" in note for note in source.notes)


def test_cmyk_is_converted_to_rgb_with_note():
    image = Image.new("CMYK", (3, 5), (0, 255, 255, 0))
    source = load_image(encoded(image, "TIFF"))
    assert source.colour is Colour.RGB
    assert tuple(source.rgb[0, 0]) == (255, 0, 0)
    assert any("CMYK" in note for note in source.notes)


@pytest.mark.parametrize("mode", ["YCbCr", "RGBX", "HSV", "RGBa", "La", "PA", "I;16L", "I;16N"])
def test_other_pillow_modes_load_as_8_bit_rgb(mode):
    source = load_image(Image.new(mode, (3, 5)))
    assert source.rgb.shape == (5, 3, 3) and source.rgb.dtype == np.uint8


def test_ycbcr_image_converts_to_its_rgb_colours():
    image = Image.new("RGB", (3, 5), (10, 200, 30)).convert("YCbCr")
    source = load_image(image)
    assert source.colour is Colour.RGB
    assert np.array_equal(source.rgb, np.asarray(image.convert("RGB")))


def test_multi_frame_gif_uses_first_frame_with_note():
    frames = [Image.new("RGB", (3, 5), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    source = load_image(data)
    assert tuple(source.rgb[0, 0]) == (255, 0, 0)
    assert any("2 frames" in note for note in source.notes)


def test_exif_orientation_6_is_applied(tmp_path):
    pixels = random_u8((3, 5, 3), seed=7)  # stored 5 wide, 3 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.png"
    Image.fromarray(pixels, "RGB").save(path, exif=exif.tobytes())
    source = load_image(path)
    assert source.rgb.shape == (5, 3, 3)
    assert np.array_equal(source.rgb, np.rot90(pixels, k=-1))


# --------------------------------------------------------------------------------------------------
# Limits and bad input


def test_size_limit_is_checked_before_decoding_pixels():
    # The IHDR claims 100000 x 100000 over a 1x1 image's data: only a header check says "limit".
    with pytest.raises(ImageError, match="--max-pixels"):
        load_image(png_with_size(100_000, 100_000))


def test_size_limit_counts_pixels_exactly():
    data = encoded(Image.new("RGB", (3, 5)))
    with pytest.raises(ImageError, match="--max-pixels"):
        load_image(data, max_pixels=14)
    assert load_image(data, max_pixels=15).rgb.shape == (5, 3, 3)
    with pytest.raises(ImageError, match="--max-pixels"):
        load_image(Image.new("RGB", (3, 5)), max_pixels=14)


def test_max_pixels_decides_where_pillows_own_guard_is_stricter(monkeypatch, tmp_path):
    """One setting decides what is too big: Pillow's guard (here 8 pixels) does not refuse an
    image max_pixels allows, from bytes, a path or a PIL image, and is restored afterwards."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4)  # Pillow refuses > 8 pixels
    pixels = random_u8((5, 3, 3))
    data = encoded(Image.fromarray(pixels))
    (tmp_path / "small.png").write_bytes(data)
    for source in (data, tmp_path / "small.png"):
        assert np.array_equal(load_image(source, max_pixels=100).rgb, pixels)
        assert Image.MAX_IMAGE_PIXELS == 4
    with pytest.raises(ImageError, match="15 pixels, above the limit of 6; raise it with --max"):
        load_image(data, max_pixels=6)


def test_huge_png_names_max_pixels_not_pillows_global():
    """A 15000 x 15000 header (225 MP: above Pillow's 179 MP guard, within crdr's 268 MP)."""
    data = png_with_size(15_000, 15_000)
    with pytest.raises(ImageError) as caught:
        load_image(data, max_pixels=100_000_000)
    assert "--max-pixels" in str(caught.value) and "MAX_IMAGE_PIXELS" not in str(caught.value)
    with pytest.raises(ImageError) as caught:  # allowed by max_pixels: read, then found truncated
        load_image(data)
    assert "MAX_IMAGE_PIXELS" not in str(caught.value) and "cannot decode" in str(caught.value)


def test_truncated_png_is_image_error():
    data = encoded(Image.fromarray(random_u8((40, 40, 3), seed=8), "RGB"))
    with pytest.raises(ImageError):
        load_image(data[: len(data) // 2])


def test_non_image_bytes_are_image_error():
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"this is not an image at all")


def test_missing_file_is_image_error(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_directory_is_image_error(tmp_path):
    with pytest.raises(ImageError):
        load_image(tmp_path)


def test_unsupported_source_type_is_image_error():
    with pytest.raises(ImageError):
        load_image(12345)  # type: ignore[arg-type]


def test_image_errors_are_one_line():
    for data in (b"junk", png_with_size(100_000, 100_000)):
        with pytest.raises(ImageError) as caught:
            load_image(data)
        assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------------------
# Tensor conversion


def test_to_model_input_matches_to_tensor_normalize_bit_exactly():
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = np.stack([levels, levels[::-1], levels.T], axis=2)
    x = to_model_input(rgb)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32 and x.is_contiguous()
    as_tensor = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)  # ToTensor
    normalised = (as_tensor - 0.5) / 0.5  # Normalize(0.5, 0.5)
    assert torch.equal(x[0], normalised)
    expected = 2 * (rgb.astype(np.float32) / np.float32(255)) - np.float32(1)
    assert np.array_equal(x[0].permute(1, 2, 0).numpy(), expected)


def test_model_output_round_trip_is_exact_for_every_level():
    rgb = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    assert np.array_equal(from_model_output(to_model_input(rgb)), rgb)


def test_from_model_output_rounds_half_to_even_and_clamps():
    values = torch.tensor([-3.0, -1.0, 1.0, 2.0, float("nan")])
    scaled = (torch.tensor([0.5, 1.5, 2.5, 254.5]) / 255.0) * 2.0 - 1.0
    x = torch.cat([values, scaled]).reshape(1, 1, 1, 9).repeat(1, 3, 1, 1)
    result = from_model_output(x)
    assert result.shape == (1, 9, 3) and result.dtype == np.uint8
    expected_scaled = torch.round((scaled + 1.0) / 2.0 * 255.0).to(torch.uint8).tolist()
    assert result[0, :5, 0].tolist() == [0, 0, 255, 255, 128]
    assert result[0, 5:, 0].tolist() == expected_scaled


def test_from_model_output_rounds_where_authors_truncate():
    x = torch.full((1, 3, 1, 1), 2 * (100.75 / 255) - 1, dtype=torch.float32)
    assert from_model_output(x)[0, 0, 0] == 101


def test_to_model_input_accepts_read_only_arrays_without_warning():
    rgb = random_u8((5, 3, 3), seed=15)
    rgb.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = to_model_input(rgb)
    assert x.shape == (1, 3, 5, 3)


def test_loaded_arrays_are_writable_copies():
    source = load_image(encoded(Image.fromarray(random_u8((5, 3, 4), seed=16), "RGBA")))
    assert source.rgb.flags.writeable and source.alpha.flags.writeable


def test_tensor_helpers_refuse_wrong_shapes():
    with pytest.raises(ParameterError):
        to_model_input(np.zeros((4, 4), np.uint8))
    with pytest.raises(ParameterError):
        to_model_input(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ParameterError):
        from_model_output(torch.zeros(3, 4, 4))


# --------------------------------------------------------------------------------------------------
# Output images and alpha


def test_to_pil_rebuilds_each_mode():
    rgb = random_u8((5, 3, 3), seed=9)
    alpha = random_u8((5, 3), seed=10)
    assert to_pil(rgb, None, Colour.RGB).mode == "RGB"
    assert np.array_equal(np.asarray(to_pil(rgb, alpha, Colour.RGB)), np.dstack([rgb, alpha]))
    grey = rgb[:, :, :1].repeat(3, axis=2)
    assert np.array_equal(np.asarray(to_pil(grey, None, Colour.GREY)), rgb[:, :, 0])
    la = to_pil(grey, alpha, Colour.GREY)
    assert la.mode == "LA" and np.array_equal(np.asarray(la)[:, :, 1], alpha)


def test_to_pil_grey_is_rounded_channel_mean():
    rgb = np.array([[[10, 11, 11], [0, 0, 1], [255, 255, 254], [1, 2, 3]]], dtype=np.uint8)
    assert np.asarray(to_pil(rgb, None, Colour.GREY))[0].tolist() == [11, 0, 255, 2]


def test_to_pil_refuses_mismatched_alpha():
    with pytest.raises(ParameterError):
        to_pil(np.zeros((5, 3, 3), np.uint8), np.zeros((3, 5), np.uint8), Colour.RGB)


def test_load_then_to_pil_round_trips_every_kind():
    for mode, channels in (("L", None), ("LA", 2), ("RGB", 3), ("RGBA", 4)):
        shape = (5, 3) if channels is None else (5, 3, channels)
        original = Image.fromarray(random_u8(shape, seed=11), mode)
        source = load_image(encoded(original))
        rebuilt = to_pil(source.rgb, source.alpha, source.colour)
        assert rebuilt.mode == mode and np.array_equal(np.asarray(rebuilt), np.asarray(original))


def test_alpha_round_trips_losslessly():
    alpha = random_u8((5, 3), seed=12)
    data = encode_alpha(alpha)
    assert data.startswith(b"\x89PNG")
    assert np.array_equal(decode_alpha(data, 3, 5), alpha)


def test_decode_alpha_refuses_wrong_size():
    with pytest.raises(FormatError, match="expected 5x3"):
        decode_alpha(encode_alpha(random_u8((5, 3))), 5, 3)


def test_decode_alpha_refuses_corrupt_or_foreign_data():
    data = encode_alpha(random_u8((40, 40), seed=13))
    for bad in (b"", b"garbage", data[: len(data) // 2], encoded(Image.new("RGB", (40, 40)))):
        with pytest.raises(FormatError):
            decode_alpha(bad, 40, 40)


def test_decode_alpha_checks_size_before_decoding():
    # The pixel data is a 1x1 image's: decoding it first would fail with another message.
    with pytest.raises(FormatError, match="is 1000x1000, expected 1x1"):
        decode_alpha(png_with_size(1000, 1000), 1, 1)
    with pytest.raises(FormatError, match="far larger than 1x1"):
        decode_alpha(png_with_size(100_000, 100_000), 1, 1)


# --------------------------------------------------------------------------------------------------
# Atomic writes


def test_save_image_atomic_writes_readable_png_and_respects_force(tmp_path):
    image = Image.fromarray(random_u8((5, 3, 4), seed=14), "RGBA")
    path = tmp_path / "out.png"
    assert save_image_atomic(image, path) == []
    with Image.open(path) as reread:
        assert np.array_equal(np.asarray(reread), np.asarray(image))
    with pytest.raises(OutputExistsError):
        save_image_atomic(image, path, force=False)
    save_image_atomic(Image.new("L", (1, 1)), path, force=True)
    with Image.open(path) as reread:
        assert reread.size == (1, 1)


def test_save_image_atomic_keeps_icc_profile_and_exif(tmp_path):
    profile = _rgb_icc_profile()
    image = to_pil(random_u8((4, 5, 3)), None, Colour.RGB, icc_profile=profile, exif=_exif_bytes())
    save_image_atomic(image, tmp_path / "out.png", force=False)
    with Image.open(tmp_path / "out.png") as saved:
        assert saved.info["icc_profile"] == profile
        assert saved.getexif()[0x010F] == "crdr test camera"


@pytest.mark.parametrize("suffix", sorted(LOSSLESS_WRITERS))
@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_every_writer_stores_the_modes_it_claims_exactly(tmp_path, suffix, mode):
    channels = len(mode)
    pixels = random_u8((9, 13, channels), seed=1)
    pixels[:3, ..., -1] = 0  # transparent pixels keep their colour too
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
    path = tmp_path / f"x{suffix.upper()}"  # the suffix is read case-insensitively
    if mode not in LOSSLESS_WRITERS[suffix].modes:
        with pytest.raises(ParameterError, match="cannot store"):
            save_image_atomic(image, path)
        assert not path.exists()
        return
    assert save_image_atomic(image, path) == []
    with Image.open(path) as back:
        assert back.format == LOSSLESS_WRITERS[suffix].format
        assert np.array_equal(np.asarray(back.convert(mode)), np.asarray(image))


@pytest.mark.parametrize("suffix", [".png", ".webp", ".tif"])
def test_writers_that_carry_metadata_keep_the_icc_profile_and_exif(suffix):
    image = Image.new("RGB", (4, 4), (10, 20, 30))
    image.info.update(icc_profile=_rgb_icc_profile(), exif=_exif_bytes())
    data, notes = image_bytes(image, f"x{suffix}")
    back = Image.open(io.BytesIO(data))
    assert back.info.get("icc_profile") == _rgb_icc_profile() and back.getexif().get(0x010F) == "crdr test camera"
    assert notes == []


def test_writers_without_metadata_say_what_they_dropped(tmp_path):
    image = Image.new("RGB", (4, 4), (10, 20, 30))
    image.info["icc_profile"] = _rgb_icc_profile()
    assert save_image_atomic(image, tmp_path / "x.bmp") == [
        "ICC profile not written: .bmp cannot carry it (use .png, .webp or .tif)"
    ]


@pytest.mark.parametrize("name, message", [
    ("o.jpg", "refusing to write a lossy format"),
    ("o.AVIF", "refusing to write a lossy format"),
    ("o.xyz", "cannot tell a lossless image format"),
    ("noext", "cannot tell a lossless image format"),
])
def test_lossy_or_unknown_suffixes_are_refused_and_nothing_is_written(tmp_path, name, message):
    (tmp_path / name).write_bytes(b"keep")  # refused for its name, before "exists"
    with pytest.raises(ParameterError, match=message):
        save_image_atomic(Image.new("RGB", (2, 2)), tmp_path / name, force=True)
    assert (tmp_path / name).read_bytes() == b"keep"


def test_stdout_bytes_default_to_png():
    data, _ = image_bytes(Image.new("L", (3, 2)))
    assert Image.open(io.BytesIO(data)).format == "PNG"


# --------------------------------------------------------------------------------------------------
# Metadata


@functools.lru_cache(maxsize=1)
def _rgb_icc_profile() -> bytes:  # the profile carries its creation time: make it once
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif_bytes(orientation: int | None = None) -> bytes:
    """EXIF as Pillow's info["exif"] holds it (with the Exif\\0\\0 prefix)."""
    exif = Image.Exif()
    exif[0x010F] = "crdr test camera"  # Make
    if orientation is not None:
        exif[0x0112] = orientation
    return exif.tobytes()


def test_metadata_is_read_only_when_asked_for():
    data = encoded(Image.fromarray(random_u8((6, 7, 3))), icc_profile=_rgb_icc_profile(), exif=_exif_bytes())
    plain = load_image(data)
    assert plain.icc_profile is None and plain.exif is None
    source = load_image(data, metadata=True)
    assert source.icc_profile == _rgb_icc_profile()
    assert source.exif[:4] in (b"II*\x00", b"MM\x00*")  # stored without the Exif\\0\\0 prefix


def test_exif_keeps_its_tags_but_loses_the_applied_orientation():
    data = encoded(Image.fromarray(random_u8((10, 30, 3))), fmt="JPEG", exif=_exif_bytes(orientation=6))
    source = load_image(data, metadata=True)
    assert source.rgb.shape[:2] == (30, 10)  # rotated
    exif = Image.Exif()
    exif.load(source.exif)
    assert exif[0x010F] == "crdr test camera" and 0x0112 not in exif


def test_icc_profile_of_another_colour_space_is_dropped_with_a_note():
    from PIL import ImageCms

    grey_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    data = encoded(Image.fromarray(random_u8((6, 7, 3))), icc_profile=grey_profile)
    source = load_image(data, metadata=True)
    assert source.icc_profile is None
    assert any("ICC profile for Lab data on a RGB image was dropped" in note for note in source.notes)


def test_cmyk_profile_is_dropped_with_a_note():
    cmyk = Image.new("CMYK", (4, 4), (10, 20, 30, 40))
    fake = bytearray(_rgb_icc_profile())
    fake[16:20] = b"CMYK"
    source = load_image(encoded(cmyk, fmt="JPEG", icc_profile=bytes(fake)), metadata=True)
    assert source.icc_profile is None and any("CMYK data" in note for note in source.notes)


def test_grey_image_keeps_a_grey_profile():
    from PIL import ImageCms

    grey = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    grey = grey[:16] + b"GRAY" + grey[20:]
    source = load_image(encoded(Image.new("L", (3, 3), 9), icc_profile=grey), metadata=True)
    assert source.colour is Colour.GREY and source.icc_profile == grey


def _with_chunk(png: bytes, kind: bytes, payload: bytes) -> bytes:
    """``png`` with one more chunk right after IHDR (which ends at byte 33)."""
    chunk = struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return png[:33] + chunk + png[33:]


def test_xmp_and_png_gamma_are_noted_as_dropped():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    plain = encoded(Image.fromarray(random_u8((4, 4, 3))))
    notes = load_image(encoded(Image.fromarray(random_u8((4, 4, 3))), pnginfo=info), metadata=True).notes
    assert any("XMP" in note for note in notes)
    with_gamma = _with_chunk(plain, b"gAMA", struct.pack(">I", 45455))
    assert any("gamma" in note for note in load_image(with_gamma, metadata=True).notes)
    srgb = _with_chunk(with_gamma, b"sRGB", b"\x00")  # sRGB says it all: nothing lost
    assert not any("gamma" in note for note in load_image(srgb, metadata=True).notes)


def test_to_pil_puts_metadata_where_pillow_looks():
    image = to_pil(random_u8((2, 2, 3)), None, Colour.RGB, icc_profile=b"p" * 200, exif=_exif_bytes()[6:])
    assert image.info["icc_profile"] == b"p" * 200
    assert image.getexif()[0x010F] == "crdr test camera"


# --------------------------------------------------------------------------------------------------
# numpy arrays (the API's array rule)


@pytest.mark.parametrize(
    ("shape", "mode"), [((4, 5), "L"), ((4, 5, 1), "L"), ((4, 5, 2), "LA"), ((4, 5, 3), "RGB"), ((4, 5, 4), "RGBA")]
)
def test_channel_last_arrays_become_their_mode(shape, mode):
    image = image_io.image_from_array(random_u8(shape))
    assert image.mode == mode and image.size == (5, 4)


def test_float_arrays_in_unit_range_are_scaled_and_rounded():
    values = np.array([[[0.0, 0.5, 1.0]], [[0.2, 1 / 255, 0.999]]], dtype=np.float32)
    pixels = np.asarray(image_io.image_from_array(values))
    assert pixels.tolist() == [[[0, 128, 255]], [[51, 1, 255]]]


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.full((4, 4, 3), 1.5, np.float32), r"\[0, 1\], got 1.5"),
        (np.full((4, 4, 3), -0.1), r"\[0, 1\]"),
        (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
        (np.zeros((3, 16, 16), np.uint8), "channel-first"),
        (np.zeros((6, 6, 5), np.uint8), "not an image"),
        (np.zeros((2, 2, 2, 3), np.uint8), "not an image"),
        (np.zeros((0, 4, 3), np.uint8), "no pixels"),
        (np.full((4, 4, 3), 300, np.int64), "0..255"),
        (np.zeros((4, 4, 3), bool), "uint8"),
    ],
)
def test_unusable_arrays_are_refused_clearly(array, message):
    with pytest.raises(ParameterError, match=message):
        image_io.image_from_array(array)


def test_integer_arrays_within_eight_bits_are_taken_as_eight_bit():
    values = np.arange(48, dtype=np.int64).reshape(4, 4, 3)
    assert np.array_equal(np.asarray(image_io.image_from_array(values)), values.astype(np.uint8))
