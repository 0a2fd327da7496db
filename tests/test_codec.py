"""The codec on real images: round trips, modes, tiling, targets, determinism, hostile files."""

from __future__ import annotations

import functools
import io
import random
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from guards import hang_guard
from PIL import Image

from crdr import bitstream, codec, image_io
from crdr.errors import CrdrError, FormatError, ModelMismatchError, ParameterError


def _photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 3 + yy, 128 + 60 * np.sin(xx / 5.0), yy * 2], axis=-1)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (65, 17), (130, 70)])
def test_round_trip_keeps_size_for_any_dimensions(tiny_model, size):
    width, height = size
    data = codec.compress(_photo(width, height), q=2.0, model=tiny_model)
    image = codec.decompress(data, beta=0.0, model=tiny_model)
    assert image.size == (width, height) and image.mode == "RGB"


def test_q_is_stored_exactly_not_on_a_grid(tiny_model):
    data = codec.compress(_photo(40, 30), q=1.2345678, model=tiny_model)
    assert bitstream.unpack(data).header.q == 1.2345678


def test_beta_changes_pixels_but_not_the_file(tiny_model):
    data = codec.compress(_photo(64, 64), q=1.0, model=tiny_model)
    faithful = np.asarray(codec.decompress(data, beta=0.0, model=tiny_model))
    realistic = np.asarray(codec.decompress(data, beta=5.12, model=tiny_model))
    assert not np.array_equal(faithful, realistic)


def test_grey_and_alpha_come_back_as_grey_and_exact_alpha(tiny_model):
    grey = Image.fromarray(_photo(20, 12)[:, :, 0], "L")
    assert codec.decompress(codec.compress(grey, q=1.0, model=tiny_model), model=tiny_model).mode == "L"
    rgba = np.dstack([_photo(20, 12), np.arange(240, dtype=np.uint8).reshape(12, 20)])
    decoded = codec.decompress(codec.compress(Image.fromarray(rgba, "RGBA"), q=1.0, model=tiny_model), model=tiny_model)
    assert decoded.mode == "RGBA"
    assert np.array_equal(np.asarray(decoded)[:, :, 3], rgba[:, :, 3])


def test_tiled_coding_reassembles_the_image(tiny_model):
    rgb = _photo(150, 70)
    source = codec._load(rgb, bitstream.DEFAULT_MAX_PIXELS)
    tiled = codec.encode_at(source, 2.0, tiny_model, tile_size=64)
    header = bitstream.unpack(tiled).header
    assert header.tile_size == 64 and bitstream.tile_count(150, 70, 64) == 6
    image = codec.decompress(tiled, model=tiny_model)
    assert image.size == (150, 70)
    whole = codec.decompress(codec.encode_at(source, 2.0, tiny_model, tile_size=0), model=tiny_model)
    # Tiles are coded independently, so the top-left tile differs only through its padding.
    assert np.asarray(image).shape == np.asarray(whole).shape


def test_progress_is_called_after_each_tile_of_encode_and_decode(tiny_model):
    calls = {"encode": [], "decompress": [], "latents": [], "synthesis": []}
    rgb = _photo(150, 70)
    data = codec.compress(rgb, q=1.0, model=tiny_model, tile_size=64, progress=lambda *a: calls["encode"].append(a))
    image = codec.decompress(data, model=tiny_model, progress=lambda *a: calls["decompress"].append(a))
    latents = codec.decode_latents(bitstream.unpack(data), tiny_model, lambda *a: calls["latents"].append(a))
    parts = codec.synthesize(latents, tiny_model, 0.0, lambda *a: calls["synthesis"].append(a))
    steps = [(done, 6) for done in range(1, 7)]  # 150x70 in 64-pixel tiles: 3 x 2
    assert calls == {"encode": steps, "decompress": steps, "latents": steps, "synthesis": steps}
    # Decoding tile by tile (one ŷ held at a time) gives the pixels of the two passes.
    assert np.array_equal(np.asarray(image), parts.rgb)


def test_progress_of_an_untiled_image_is_one_step(tiny_model):
    calls = []
    data = codec.compress(_photo(20, 14), q=1.0, model=tiny_model, progress=lambda *a: calls.append(a))
    codec.decompress(data, model=tiny_model, progress=lambda *a: calls.append(a))
    assert calls == [(1, 1), (1, 1)]


@pytest.mark.slow
def test_target_size_never_exceeds_and_lands_close(tiny_model):
    rgb = _photo(128, 96)
    smallest = len(codec.compress(rgb, q=0.0, model=tiny_model))
    largest = len(codec.compress(rgb, q=4.0, model=tiny_model))
    target = (smallest + largest) // 2
    result = codec.encode(rgb, target_size=target, model=tiny_model)
    assert len(result.data) <= target
    assert len(result.data) >= 0.97 * target or result.q in (0.0, 4.0) or largest - smallest < 50


def test_target_below_smallest_file_is_a_clear_error(tiny_model):
    with pytest.raises(ParameterError, match="smallest file"):
        codec.encode(_photo(64, 64), target_size=10, model=tiny_model)


def test_target_above_largest_file_returns_top_quality_with_a_note(tiny_model):
    result = codec.encode(_photo(32, 32), target_size=10**7, model=tiny_model)
    assert result.q == 4.0 and any("exceeds" in note for note in result.notes)


def test_target_bpp_matches_target_size(tiny_model):
    rgb = _photo(64, 64)
    result = codec.encode(rgb, target_bpp=3.0, model=tiny_model)
    assert result.bpp <= 3.0


def test_out_of_range_quality_is_refused(tiny_model):
    with pytest.raises(ParameterError):
        codec.compress(_photo(8, 8), q=4.5, model=tiny_model)
    data = codec.compress(_photo(8, 8), q=1.0, model=tiny_model)
    with pytest.raises(ParameterError):
        codec.decompress(data, beta=6.0, model=tiny_model)


def test_a_model_made_in_code_gets_an_identity_without_new_attributes():
    from crdr.config import preset
    from crdr.models.crdr import CRDR
    from crdr.weights import model_id

    torch.manual_seed(3)
    model = CRDR(preset("tiny")).eval()
    data = codec.compress(_photo(16, 16), q=1.0, model=model)
    assert "model_id" not in vars(model) and model.model_id is None
    assert bitstream.unpack(data).header.model_id == codec.model_identity(model) == model_id(model)
    assert codec.decompress(data, model=model).size == (16, 16)


def test_file_from_another_model_is_refused(tiny_model):
    import copy

    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        other.decoder.conv4.bias.add_(0.1)
    del other.model_id
    data = codec.compress(_photo(16, 16), q=1.0, model=other)
    with pytest.raises(ModelMismatchError):
        codec.decompress(data, model=tiny_model)


DETERMINISM_SCRIPT = """
import sys, torch, numpy as np
torch.set_num_threads(int(sys.argv[1]))
from crdr import codec
model = codec.get_model(sys.argv[2])
if sys.argv[3] == "encode":
    rng = np.random.default_rng(1)
    rgb = (rng.random((70, 90, 3)) * 255).astype(np.uint8)
    sys.stdout.buffer.write(codec.compress(rgb, q=2.3, model=model))
else:
    data = open(sys.argv[4], "rb").read()
    sys.stdout.buffer.write(np.asarray(codec.decompress(data, beta=2.0, model=model)).tobytes())
"""


@pytest.mark.slow
def test_decode_ignores_thread_count(tmp_path, vectors_dir):
    weights = str(vectors_dir / "official_tiny.pth.tar")

    def run(*args):
        return subprocess.run(
            [sys.executable, "-c", DETERMINISM_SCRIPT, *args], check=True, capture_output=True
        ).stdout

    encoded = {threads: run(str(threads), weights, "encode") for threads in (1, 2)}
    assert encoded[1] == encoded[2]
    (tmp_path / "f.crdr").write_bytes(encoded[2])
    decoded = {threads: run(str(threads), weights, "decode", str(tmp_path / "f.crdr")) for threads in (1, 2)}
    assert decoded[1] == decoded[2]


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.slow
def test_hostile_files_raise_crdr_errors_never_crash(tiny_model):
    """Seeded mutations of a valid file, CRC fixed up so payload damage reaches the rANS decoder."""
    rng = random.Random(1234)
    valid = codec.compress(_photo(24, 20), q=3.0, model=tiny_model)
    body = valid[:-4]
    outcomes = {"ok": 0, "error": 0}
    with hang_guard(600):
        _mutate_and_decode(tiny_model, rng, body, outcomes)
    assert outcomes["ok"] > 0 and outcomes["error"] > 0


def _mutate_and_decode(tiny_model, rng: random.Random, body: bytes, outcomes: dict) -> None:
    for trial in range(400):
        mutated = bytearray(body)
        kind = trial % 4
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                position = rng.randrange(40, len(mutated))
                mutated[position] ^= 1 << rng.randrange(8)
        elif kind == 1:
            mutated = mutated[: rng.randrange(len(mutated))]
        elif kind == 2:
            position = rng.randrange(40, len(mutated))
            mutated[position:] = bytes(rng.randrange(256) for _ in range(len(mutated) - position))
        else:
            mutated = bytearray(rng.randbytes(rng.randrange(0, 200)))
        data = _with_crc(bytes(mutated)) if rng.random() < 0.8 else bytes(mutated)
        try:
            codec.decompress(data, model=tiny_model)
            outcomes["ok"] += 1
        except CrdrError:
            outcomes["error"] += 1


@pytest.mark.slow
def test_official_files_with_damaged_payloads_do_not_crash(tiny_model, vectors_dir):
    rng = random.Random(99)
    valid = (vectors_dir / "q1.5.bin").read_bytes()
    intact = np.asarray(codec.decompress(valid, model=tiny_model))
    outcomes = {"changed": 0, "refused": 0}
    for _ in range(150):
        mutated = bytearray(valid)
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(14, len(mutated))
            mutated[position] = rng.randrange(256)
        try:
            image = codec.decompress(bytes(mutated), model=tiny_model)
        except CrdrError:
            outcomes["refused"] += 1
        else:
            pixels = np.asarray(image)
            assert pixels.shape == intact.shape  # bytes 14 on are past the header: the size stays
            outcomes["changed"] += not np.array_equal(pixels, intact)
    assert outcomes["changed"] > 0, outcomes  # the damage reached the entropy decoder


def test_truncated_and_wrong_magic_files_raise_format_error(tiny_model):
    data = codec.compress(_photo(16, 16), q=1.0, model=tiny_model)
    with pytest.raises(FormatError):
        codec.decompress(data[:-10], model=tiny_model)
    with pytest.raises(FormatError):
        codec.decompress(b"JUNK" + data[4:], model=tiny_model)


def test_huge_claimed_dimensions_are_refused_before_allocation(tiny_model):
    data = bytearray(codec.compress(_photo(16, 16), q=1.0, model=tiny_model))
    struct.pack_into("<II", data, 24, 100000, 100000)
    with pytest.raises(FormatError, match="max-pixels"):
        codec.decompress(_with_crc(bytes(data[:-4])), model=tiny_model)


def test_exif_orientation_is_applied(tiny_model):
    image = Image.fromarray(_photo(30, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    decoded = codec.decompress(codec.compress(buffer.getvalue(), q=1.0, model=tiny_model), model=tiny_model)
    assert decoded.size == (10, 30)


def test_version_1_files_decode_to_the_same_pixels_as_version_2(tiny_model, monkeypatch):
    """Version 1 coded y with the next larger table scale; ŷ does not depend on the scale rule,
    so a v1 and a v2 file of one image differ in their y bytes but decode to the same pixels."""
    rgb = _photo(130, 70)
    current = codec.compress(rgb, q=2.0, model=tiny_model)
    monkeypatch.setattr(bitstream, "VERSION", 1)
    old = codec.compress(rgb, q=2.0, model=tiny_model)
    assert (current[4], old[4]) == (2, 1)
    assert bitstream.unpack(current).segments[1].data != bitstream.unpack(old).segments[1].data
    expected = np.asarray(codec.decompress(current, model=tiny_model))
    assert np.array_equal(np.asarray(codec.decompress(old, model=tiny_model)), expected)
    # The version byte selects the rule: a v1 payload read as v2 does not give the image back.
    relabelled = bytearray(old[:-4])
    relabelled[4] = 2
    relabelled = bytes(relabelled) + struct.pack("<I", zlib.crc32(relabelled))
    try:
        wrong = np.asarray(codec.decompress(relabelled, model=tiny_model))
    except CrdrError:
        return
    assert not np.array_equal(wrong, expected)


@pytest.mark.slow
@pytest.mark.parametrize("q", [0.0, 4.0])
def test_file_payload_is_within_half_a_percent_of_the_estimated_bits(q):
    """The entropy coder's overhead (issue 3: real payload bits ≤ 1.005 × −Σ log2 p) on a full
    Kodak-size sample with the bundled model; benchmarks/rate_efficiency.py measures all of Kodak."""
    from crdr import image_io, load_model
    from crdr.weights import BUNDLED_DIR

    model = load_model("default")
    source = image_io.load_image(BUNDLED_DIR.parent / "samples" / "kodim23.png")
    data = codec.encode_at(source, q, model)
    container = bitstream.unpack(data)
    payload_bits = 8 * sum(len(s.data) for s in container.segments)
    x = codec.pad_to_stride(image_io.to_model_input(source.rgb))
    with torch.no_grad():
        estimated = float(model.eval()(x, q, 0.0).bits(quantized=True))
    assert payload_bits <= 1.005 * estimated
    assert payload_bits >= 0.99 * estimated  # the estimate is of the same latents


# --------------------------------------------------------------------------------------------------
# API arguments: every bad one is a ParameterError (a CrdrError), never a raw TypeError


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"image": None}, "no image given"),
        ({"image": 12345}, "cannot read an image from a int"),
        ({"image": np.zeros((3, 16, 16), np.uint8)}, "channel-first"),
        ({"image": np.full((8, 8, 3), 2.0, np.float32)}, r"\[0, 1\]"),
        ({"image": np.full((8, 8, 3), np.nan)}, "NaN"),
        ({"q": "x"}, "q must be a number"),
        ({"q": float("nan")}, "q must be a finite number"),
        ({"q": True}, "q must be a number"),
        ({"q": None, "target_bpp": "x"}, "target bpp must be a number"),
        ({"q": None, "target_size": "x"}, "target size must be a number"),
        ({"q": None, "target_size": 10.5}, "whole number"),
        ({"q": None, "target_psnr": float("nan")}, "target PSNR must be a finite number"),
        ({"q": None, "target_psnr": -3}, "target PSNR must be positive"),
        ({"max_pixels": "many"}, "max_pixels must be a number"),
        ({"strip": "yes"}, "strip must be True or False"),
        ({"progress": "tty"}, "progress must be a function"),
    ],
)
def test_bad_encode_arguments_are_parameter_errors(tiny_model, arguments, message):
    call = {"image": np.zeros((8, 8, 3), np.uint8), "q": 1.0, "model": tiny_model, **arguments}
    for function in (codec.encode, codec.compress):
        with pytest.raises(ParameterError, match=message):
            function(**call)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"beta": "x"}, "beta must be a number"),
        ({"beta": None}, "beta must be a number"),
        ({"beta": float("nan")}, "beta must be a finite number"),
        ({"beta": 99.0}, "beta must lie in"),
        ({"data": None}, "expected .crdr or .bin data"),
        ({"data": 3.5}, "expected .crdr or .bin data"),
        ({"format": "png"}, "format must be one of"),
        ({"max_pixels": 0}, "max_pixels must be positive"),
        ({"progress": 3}, "progress must be a function"),
    ],
)
def test_bad_decompress_arguments_are_parameter_errors(tiny_model, arguments, message):
    data = codec.compress(np.zeros((8, 8, 3), np.uint8), q=1.0, model=tiny_model)
    with pytest.raises(ParameterError, match=message):
        codec.decompress(**{"data": data, "model": tiny_model, **arguments})


def test_float_arrays_in_unit_range_code_like_their_uint8_image(tiny_model):
    rgb = _photo(24, 16)
    as_float = rgb.astype(np.float64) / 255.0
    assert codec.compress(as_float, q=1.0, model=tiny_model) == codec.compress(rgb, q=1.0, model=tiny_model)


def test_grey_arrays_code_as_grey(tiny_model):
    grey = _photo(12, 10)[:, :, 0]
    assert codec.decompress(codec.compress(grey, q=1.0, model=tiny_model), model=tiny_model).mode == "L"


def test_decompress_accepts_a_path_str_or_pathlike(tiny_model, tmp_path):
    data = codec.compress(_photo(16, 12), q=1.0, model=tiny_model)
    (tmp_path / "f.crdr").write_bytes(data)
    expected = np.asarray(codec.decompress(data, model=tiny_model))
    for path in (tmp_path / "f.crdr", str(tmp_path / "f.crdr")):
        assert np.array_equal(np.asarray(codec.decompress(path, model=tiny_model)), expected)
    assert codec.describe(tmp_path / "f.crdr")["width"] == 16
    with pytest.raises(FormatError, match="no such file"):
        codec.decompress(tmp_path / "missing.crdr", model=tiny_model)
    with pytest.raises(FormatError, match="is a directory"):
        codec.decompress(tmp_path, model=tiny_model)


def test_decompress_official_accepts_a_path(tiny_model, vectors_dir):
    image = codec.decompress_official(vectors_dir / "q1.5.bin", model=tiny_model)
    assert image.size == (93, 61)


# --------------------------------------------------------------------------------------------------
# ICC profile and EXIF


@functools.lru_cache(maxsize=1)
def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # dated: made once


def _photo_with_metadata(fmt: str = "PNG") -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "crdr test camera"
    buffer = io.BytesIO()
    Image.fromarray(_photo(20, 14)).save(buffer, format=fmt, icc_profile=_srgb_profile(), exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_icc_profile_and_exif_survive_to_the_decoded_image_and_its_png(tiny_model, tmp_path, fmt):
    from crdr import image_io

    data = codec.compress(_photo_with_metadata(fmt), q=1.0, model=tiny_model)
    container = bitstream.unpack(data)
    assert container.header.version == 3 and container.icc_profile == _srgb_profile()
    decoded = codec.decompress(data, model=tiny_model)
    assert decoded.info["icc_profile"] == _srgb_profile()
    assert decoded.getexif()[0x010F] == "crdr test camera"
    assert image_io.save_image_atomic(decoded, tmp_path / "out.png") == []
    with Image.open(tmp_path / "out.png") as saved:
        assert saved.info["icc_profile"] == _srgb_profile()
        assert saved.getexif()[0x010F] == "crdr test camera"


def test_strip_drops_icc_and_exif_with_a_note_and_writes_version_2(tiny_model):
    result = codec.encode(_photo_with_metadata(), q=1.0, model=tiny_model, strip=True)
    assert result.data[4] == 2
    assert "ICC profile and EXIF not kept (strip)" in result.notes
    decoded = codec.decompress(result.data, model=tiny_model)
    assert "icc_profile" not in decoded.info and "exif" not in decoded.info


def test_metadata_changes_no_pixel_and_no_coded_byte(tiny_model):
    """The file with metadata is the stripped file plus two segments: same strings, same pixels."""
    kept = bitstream.unpack(codec.compress(_photo_with_metadata(), q=1.0, model=tiny_model))
    stripped = bitstream.unpack(codec.compress(_photo_with_metadata(), q=1.0, model=tiny_model, strip=True))
    assert kept.tile_strings() == stripped.tile_strings()
    assert np.array_equal(
        codec.decode_container(kept, tiny_model, 0.0).rgb, codec.decode_container(stripped, tiny_model, 0.0).rgb
    )


def test_images_without_metadata_give_the_bytes_they_always_did(tiny_model):
    """No ICC, no EXIF: version 2, and byte-identical to the container built without metadata."""
    rgb = _photo(40, 30)
    data = codec.compress(rgb, q=1.5, model=tiny_model)
    container = bitstream.unpack(data)
    assert data[4] == 2 and (container.icc_profile, container.exif) == (None, None)
    assert bitstream.pack(bitstream.Container.from_tiles(container.header, container.tile_strings())) == data


def test_a_tiled_file_with_alpha_and_metadata_is_the_container_bitstream_builds(tiny_model):
    """A tiled RGBA file with ICC and EXIF is, byte for byte, ``Container.from_tiles`` of a header
    made here, its tile strings, the PNG-coded alpha, the profile and the EXIF of the source."""
    rgba = np.dstack([_photo(100, 40), (np.arange(100 * 40) % 251).astype(np.uint8).reshape(40, 100)])
    exif = Image.Exif()
    exif[0x010F] = "crdr test camera"
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", icc_profile=_srgb_profile(), exif=exif.tobytes())
    data = codec.compress(buffer.getvalue(), q=1.0, model=tiny_model, tile_size=64)
    header = bitstream.Header(
        width=100, height=40, q=1.0, model_id=codec.model_identity(tiny_model), colour=bitstream.Colour.RGB,
        has_alpha=True, tile_size=64, version=3, has_icc=True, has_exif=True,
    )
    tiles = bitstream.unpack(data).tile_strings()
    exif_tiff = image_io.load_image(buffer.getvalue(), metadata=True).exif
    expected = bitstream.Container.from_tiles(
        header, tiles, image_io.encode_alpha(rgba[:, :, 3]), _srgb_profile(), exif_tiff
    )
    assert len(tiles) == 2 and exif_tiff is not None and bitstream.pack(expected) == data


# -- devices: only g_a and g_s move; everything that decides a symbol stays on the CPU ------------


def test_device_cpu_gives_the_bytes_and_pixels_of_the_models_own_methods(tiny_model):
    """``device="cpu"`` (and the default) code exactly what CRDR.compress / decompress give."""
    rgb = _photo(70, 50)
    data = codec.compress_official(rgb, q=1.5, model=tiny_model, device="cpu")
    assert data == codec.compress_official(rgb, q=1.5, model=tiny_model)
    official = bitstream.unpack_official(data)
    x = codec.pad_to_stride(image_io.to_model_input(rgb))
    coded = tiny_model.compress(x, 1.5)
    assert (official.z_string, official.y_string) == (coded.z_string, coded.y_string)
    pixels = np.asarray(codec.decompress_official(data, beta=2.0, model=tiny_model, device="cpu"))
    with codec.single_thread():
        x_hat = tiny_model.decompress(coded.z_string, coded.y_string, coded.z_size, 1.5, 2.0)
    assert np.array_equal(pixels, image_io.from_model_output(x_hat[:, :, :50, :70]))
    tiled = codec.compress(rgb, q=2.3, model=tiny_model, tile_size=64, device="cpu")
    assert tiled == codec.compress(rgb, q=2.3, model=tiny_model, tile_size=64)
    assert np.array_equal(
        np.asarray(codec.decompress(tiled, beta=1.0, model=tiny_model, device="cpu")),
        np.asarray(codec.decompress(tiled, beta=1.0, model=tiny_model)),
    )


def test_cuda_without_cuda_is_a_parameter_error_before_any_work(tiny_model, monkeypatch):
    data = codec.compress(_photo(16, 16), q=1.0, model=tiny_model)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(codec, "_encode_tile", lambda *args: pytest.fail("encoded before refusing"))
    monkeypatch.setattr(codec, "_entropy_decode", lambda *args: pytest.fail("decoded before refusing"))
    calls = [
        lambda: codec.compress(_photo(16, 16), q=1.0, model=tiny_model, device="cuda"),
        lambda: codec.compress_official(_photo(16, 16), q=1.0, model=tiny_model, device="cuda:0"),
        lambda: codec.decompress(data, model=tiny_model, device="cuda"),
        lambda: codec.decode_container(bitstream.unpack(data), tiny_model, 0.0, device=torch.device("cuda")),
    ]
    for call in calls:
        with pytest.raises(ParameterError, match="not available: torch sees no CUDA device"):
            call()


@pytest.mark.parametrize("device", ["tpu", "mps", "", 0, None, "cuda:x"])
def test_unknown_devices_are_parameter_errors(tiny_model, device):
    with pytest.raises(ParameterError, match="device must be cpu, cuda or auto"):
        codec.compress(_photo(16, 16), q=1.0, model=tiny_model, device=device)


def test_auto_is_cpu_without_cuda_and_cuda_with_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert codec.resolve_device("auto") == torch.device("cpu")
    assert codec.resolve_device("cpu:0") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert codec.resolve_device("auto") == torch.device("cuda")


class _Bfloat16Encoder(torch.nn.Module):
    """g_a computed in bfloat16 and returned as such: another device's numerics, on the CPU."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        import copy

        self.inner = copy.deepcopy(encoder).to(torch.bfloat16)

    def forward(self, x, q):
        return self.inner(x.to(torch.bfloat16), None if q is None else q.to(torch.bfloat16))


def test_an_analysis_transform_in_other_numerics_writes_files_the_cpu_decoder_reads_exactly(tiny_model, monkeypatch):
    """The decoder's ŷ equals the ŷ the encoder coded, bit for bit: the entropy path sees y only
    after it is back on the CPU in float32, never the transform's device or dtype."""
    rgb = _photo(130, 70)
    reference = codec.compress(rgb, q=2.3, model=tiny_model, tile_size=64)
    coded = []
    compress_latents = tiny_model.compress_latents

    def spy(y, rule, pool=None):
        assert y.dtype == torch.float32 and y.device.type == "cpu"
        result = compress_latents(y, rule, pool)
        coded.append(result.y_hat)
        return result

    with monkeypatch.context() as patched:
        # Sub-modules live in _modules: setitem restores them (setattr's undo would delete them).
        patched.setitem(tiny_model._modules, "encoder", _Bfloat16Encoder(tiny_model.encoder))
        patched.setitem(tiny_model.__dict__, "compress_latents", spy)
        data = codec.compress(rgb, q=2.3, model=tiny_model, tile_size=64)
    assert data != reference  # the other numerics did reach the file
    latents = codec.decode_latents(bitstream.unpack(data), tiny_model)
    assert len(latents.tiles) == len(coded) == 6
    for (_, y_hat), expected in zip(latents.tiles, coded):
        assert torch.equal(y_hat, expected)
    decoded = codec.decode_container(bitstream.unpack(data), tiny_model, 1.0)
    assert np.array_equal(codec.synthesize(latents, tiny_model, 1.0).rgb, decoded.rgb)


def test_device_copies_leave_the_callers_model_on_the_cpu(tiny_model, monkeypatch):
    """A device copy of g_a is made once per (model, device) and the model itself never moves."""
    made = []
    original = torch.nn.Module.to

    def to(module, *args, **kwargs):
        made.append(module)
        return module  # stands in for a move to another device

    fake = torch.device("cuda", 7)
    monkeypatch.setattr(torch.nn.Module, "to", to)
    first = codec._transform(tiny_model, "encoder", fake)
    assert codec._transform(tiny_model, "encoder", fake) is first and made == [first]
    assert first is not tiny_model.encoder
    assert codec._transform(tiny_model, "encoder", torch.device("cpu")) is tiny_model.encoder
    monkeypatch.setattr(torch.nn.Module, "to", original)
    del codec._DEVICE_COPIES[tiny_model]
    assert all(p.device.type == "cpu" for p in tiny_model.parameters())
