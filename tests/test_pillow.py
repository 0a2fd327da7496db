"""The Pillow plugin, exercised through Pillow's own API only (Image.open, Image.save, registries)."""

import io

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import crdr.pillow


@pytest.fixture
def plugin(tiny_model, monkeypatch):
    monkeypatch.setattr(crdr.pillow, "_options", crdr.pillow.Options())  # restored after the test
    crdr.pillow.configure(model=tiny_model)
    return crdr.pillow


def photo(width=96, height=64, mode="RGB"):
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
    pixels = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def saved(image, **params):
    buffer = io.BytesIO()
    image.save(buffer, format="CRDR", **params)
    return buffer.getvalue()


def test_crdr_is_a_registered_extension_and_mime_type(plugin):
    assert Image.registered_extensions()[".crdr"] == "CRDR"
    assert Image.MIME["CRDR"] == "image/x-crdr"


def test_save_then_open_round_trips_size_mode_and_info(plugin, tmp_path, tiny_model):
    path = tmp_path / "x.crdr"
    photo().save(path, q=1.5)
    with Image.open(path) as image:
        assert image.format == "CRDR" and image.size == (96, 64) and image.mode == "RGB"
        assert image.info["q"] == 1.5
        assert len(bytes.fromhex(image.info["model_id"])) == 8
        assert image.info["bpp"] == pytest.approx(8 * path.stat().st_size / (96 * 64))
        pixels = np.asarray(image)
    # The tiny test model is not a good codec: the property is that Pillow gives crdr's pixels.
    assert np.array_equal(pixels, np.asarray(crdr.decompress(path.read_bytes(), beta=0.0, model=tiny_model)))


def test_open_decodes_at_the_configured_beta(plugin):
    data = saved(photo(), q=1.0)
    faithful = np.asarray(Image.open(io.BytesIO(data)))
    plugin.configure(beta=5.12)
    realistic = Image.open(io.BytesIO(data))
    assert not np.array_equal(faithful, np.asarray(realistic))
    assert realistic.info["beta"] == 5.12


def test_save_by_target_size_stays_within_it(plugin):
    larger = saved(photo(), q=4.0)
    target = len(larger) - 40
    assert len(saved(photo(), target_size=target)) <= target


def test_grey_and_alpha_keep_their_modes(plugin):
    assert Image.open(io.BytesIO(saved(photo(mode="L"), q=2.0))).mode == "L"
    rgba = photo(mode="RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    opened = Image.open(io.BytesIO(saved(rgba, q=2.0)))
    assert opened.mode == "RGBA"
    assert np.array_equal(np.asarray(opened)[..., 3], np.asarray(rgba)[..., 3])


def test_damaged_file_is_unidentified_with_crdrs_message(plugin):
    data = saved(photo(), q=2.0)
    with pytest.raises(UnidentifiedImageError, match="truncated|claims|short|bytes"):
        Image.open(io.BytesIO(data[:30]))


def test_file_of_another_model_fails_to_load_with_an_oserror(plugin, tmp_path):
    data = bytearray(saved(photo(), q=2.0))
    image = Image.open(io.BytesIO(bytes(data)))
    plugin.configure(model="default")  # the bundled model did not write this file
    with pytest.raises(OSError, match="model"):
        image.load()


def test_bad_save_arguments_are_oserrors(plugin):
    with pytest.raises(OSError, match="q"):
        saved(photo(), q=99)


def test_configure_refuses_a_non_number_beta(plugin):
    with pytest.raises(crdr.CrdrError, match="beta"):
        plugin.configure(beta="x")
