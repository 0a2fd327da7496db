"""Tests of the .crdr container and the authors' .bin format: layout, limits, corrupt input."""

from __future__ import annotations

import random
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from conftest import require_shared, require_vectors
from guards import hang_guard

from crdr import bitstream
from crdr.bitstream import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_VERSIONS,
    VERSION,
    Colour,
    Container,
    Header,
    OfficialFile,
    Segment,
    SegmentKind,
    is_crdr,
    official_max_abs_byte,
    official_q_byte,
    pack,
    pack_official,
    tile_count,
    tile_grid,
    unpack,
    unpack_official,
)
from crdr.errors import FormatError, ParameterError

VECTOR_NAMES = ["q0.0.bin", "q0.1.bin", "q1.5.bin", "q2.25.bin", "q4.0.bin"]
MODEL_ID = bytes(range(1, 9))


def make_header(**changes) -> Header:
    fields = dict(
        width=93,
        height=61,
        q=1.5,
        model_id=MODEL_ID,
        colour=Colour.RGB,
        has_alpha=False,
        tile_size=0,
    )
    fields.update(changes)
    return Header(**fields)


def make_container(seed: int = 0, **changes) -> Container:
    """A valid container with random payloads for every tile (and alpha when asked)."""
    header = make_header(**changes)
    rng = random.Random(seed)
    tiles = [
        (rng.randbytes(rng.randint(1, 12)), rng.randbytes(rng.randint(0, 20)))
        for _ in range(header.n_tiles)
    ]
    alpha = rng.randbytes(rng.randint(1, 9)) if header.has_alpha else None
    return Container.from_tiles(header, tiles, alpha)


def with_fixed_crc(body_and_crc: bytes) -> bytes:
    """Recompute the trailing CRC so a test reaches the checks behind it."""
    body = body_and_crc[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def patch(data: bytes, offset: int, fmt: str, *values) -> bytes:
    raw = bytearray(data)
    struct.pack_into(fmt, raw, offset, *values)
    return with_fixed_crc(bytes(raw))


def load_vector(name: str) -> bytes:
    """An authors' .bin file; fails (never skips) without the vectors: its tests are marked ``vectors``."""
    return require_shared(require_vectors() / name).read_bytes()


# --------------------------------------------------------------------------------------------------
# .crdr: round trips and layout


def test_pack_unpack_round_trips_single_tile():
    container = make_container()
    assert unpack(pack(container)) == container


def test_pack_unpack_round_trips_tiled_grey_with_alpha():
    container = make_container(
        seed=3, width=200, height=130, tile_size=64, colour=Colour.GREY, has_alpha=True
    )
    assert container.header.n_tiles == 4 * 3
    assert unpack(pack(container)) == container


@pytest.mark.parametrize("q", [0.0, 0.1, 1.0 / 3.0, 2.25, 63.999999999, 64.0])
def test_q_is_stored_exactly_not_on_a_grid(q):
    assert unpack(pack(make_container(q=q))).header.q == q


def test_model_id_colour_and_alpha_flag_survive_round_trip():
    model_id = b"\xff\x00abc\x01\x02\x03"
    container = make_container(model_id=model_id, colour=Colour.GREY, has_alpha=True)
    header = unpack(pack(container)).header
    assert (header.model_id, header.colour, header.has_alpha) == (model_id, Colour.GREY, True)


def test_layout_matches_documented_byte_offsets():
    header = make_header(colour=Colour.GREY, has_alpha=True, tile_size=64)
    container = Container.from_tiles(header, [(b"z0", b"y00"), (b"z1", b"y1")], alpha=b"A")
    expected_body = (
        b"CRDR"
        + bytes([2, 1, 1, 0])  # version, colour GREY, flags alpha, reserved
        + MODEL_ID
        + struct.pack("<d", 1.5)
        + struct.pack("<IIII", 93, 61, 64, 5)
        + bytes([1, 2, 0, 0, 0, 2, 3, 0, 0, 0, 1, 2, 0, 0, 0, 2, 2, 0, 0, 0, 3, 1, 0, 0, 0])
        + b"z0y00z1y1A"
    )
    assert pack(container) == expected_body + struct.pack("<I", zlib.crc32(expected_body))
    assert bitstream.HEADER_SIZE == 40


def test_crc_covers_every_byte_before_it():
    data = pack(make_container(seed=1, tile_size=64))
    for index in range(len(data) - 4):
        corrupted = bytearray(data)
        corrupted[index] ^= 0x01
        with pytest.raises(FormatError):
            unpack(bytes(corrupted))


def test_payload_corruption_is_reported_as_checksum_mismatch():
    data = bytearray(pack(make_container(seed=2)))
    data[-5] ^= 0x40  # last payload byte
    with pytest.raises(FormatError, match="checksum mismatch"):
        unpack(bytes(data))


def test_is_crdr_checks_magic_only():
    assert is_crdr(pack(make_container()))
    assert is_crdr(b"CRDR")
    assert not is_crdr(b"CRD")
    assert not is_crdr(b"\x06\x00\x00\x00=\x00]\x00")
    assert not is_crdr(b"")


def test_unpack_accepts_bytearray_and_memoryview():
    data = pack(make_container())
    assert unpack(bytearray(data)) == unpack(memoryview(data)) == unpack(data)


def test_container_accessors_return_tiles_in_raster_order_and_alpha():
    header = make_header(width=130, height=64, tile_size=64, has_alpha=True)
    tiles = [(b"z0", b"y0"), (b"z1", b"y1"), (b"z2", b"y2")]
    container = Container.from_tiles(header, tiles, alpha=b"png")
    assert container.tile_strings() == tiles
    assert container.pieces() == [
        ((0, 0, 64, 64), b"z0", b"y0"), ((64, 0, 64, 64), b"z1", b"y1"), ((128, 0, 2, 64), b"z2", b"y2")
    ]
    assert container.alpha == b"png"
    assert Container.from_tiles(make_header(), [(b"z", b"y")]).alpha is None


# --------------------------------------------------------------------------------------------------
# Tiling


def test_tile_grid_zero_tile_size_is_whole_image():
    assert tile_grid(93, 61, 0) == [(0, 0, 93, 61)]
    assert tile_count(93, 61, 0) == 1


def test_tile_grid_is_raster_order_with_clipped_last_row_and_column():
    assert tile_grid(130, 70, 64) == [
        (0, 0, 64, 64),
        (64, 0, 64, 64),
        (128, 0, 2, 64),
        (0, 64, 64, 6),
        (64, 64, 64, 6),
        (128, 64, 2, 6),
    ]


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (64, 64), (65, 63), (300, 129), (1, 1000)])
@pytest.mark.parametrize("tile_size", [0, 64, 128])
def test_tile_grid_covers_every_pixel_exactly_once(size, tile_size):
    width, height = size
    covered = [[0] * width for _ in range(height)]
    grid = tile_grid(width, height, tile_size)
    for left, top, w, h in grid:
        assert w >= 1 and h >= 1
        for row in range(top, top + h):
            for column in range(left, left + w):
                covered[row][column] += 1
    assert all(count == 1 for row in covered for count in row)
    assert tile_count(width, height, tile_size) == len(grid)


@pytest.mark.parametrize("tile_size", [-64, 1, 63, 100])
def test_tile_size_must_be_zero_or_multiple_of_64(tile_size):
    with pytest.raises(ParameterError):
        tile_grid(100, 100, tile_size)
    with pytest.raises(ParameterError):
        make_header(tile_size=tile_size)


# --------------------------------------------------------------------------------------------------
# Constructor validation (pack side)


@pytest.mark.parametrize(
    "changes",
    [
        {"width": 0},
        {"height": -1},
        {"width": 2**32},
        {"width": 5.0},
        {"q": -0.001},
        {"q": 64.5},
        {"q": float("nan")},
        {"q": float("inf")},
        {"q": True},
        {"q": "1.5"},
        {"model_id": b"short"},
        {"model_id": "12345678"},
        {"colour": 0},
        {"has_alpha": 1},
    ],
)
def test_header_refuses_invalid_fields(changes):
    with pytest.raises(ParameterError):
        make_header(**changes)


def test_header_stores_numpy_scalars_as_plain_numbers():
    header = make_header(width=np.int64(93), height=np.uint32(61), q=np.float32(1.5))
    assert header == make_header()
    assert type(header.width) is int and type(header.q) is float
    assert unpack(pack(Container.from_tiles(header, [(b"z", b"y")]))).header == header


def test_container_refuses_segments_out_of_order():
    header = make_header()
    with pytest.raises(ParameterError, match="segments must be"):
        Container(header, (Segment(SegmentKind.Y, b"y"), Segment(SegmentKind.Z, b"z")))


def test_container_refuses_alpha_segment_when_header_has_none():
    with pytest.raises(ParameterError):
        Container.from_tiles(make_header(), [(b"z", b"y")], alpha=b"a")


def test_container_refuses_missing_tile():
    with pytest.raises(ParameterError):
        Container.from_tiles(make_header(width=130, tile_size=64), [(b"z", b"y")])


def test_segment_refuses_non_bytes_data():
    with pytest.raises(ParameterError):
        Segment(SegmentKind.Z, bytearray(b"z"))


# --------------------------------------------------------------------------------------------------
# .crdr: refusals with specific messages


def test_unpack_refuses_huge_dimensions():
    data = patch(pack(make_container()), 24, "<II", 100_000, 100_000)
    with pytest.raises(FormatError, match="--max-pixels"):
        unpack(data)


def test_unpack_honours_a_lowered_and_raised_max_pixels():
    data = pack(make_container())
    with pytest.raises(FormatError, match="--max-pixels"):
        unpack(data, max_pixels=93 * 61 - 1)
    assert unpack(data, max_pixels=93 * 61).header.width == 93
    assert DEFAULT_MAX_PIXELS == 2**28


def test_unpack_refuses_huge_tile_count_without_allocating():
    # 1 x 2**28 pixels in 64-pixel tiles: 2**22 tiles, 2**23 segments declared by a 44-byte file.
    header = bitstream._FIXED.pack(b"CRDR", 1, 0, 0, 0, MODEL_ID, 1.0, 1, 2**28, 64, 2**23)
    data = with_fixed_crc(header + b"\0\0\0\0")
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="truncated"):
            unpack(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_unpack_refuses_wrong_magic():
    data = b"CRDX" + pack(make_container())[4:]
    with pytest.raises(FormatError, match="magic"):
        unpack(data)


@pytest.mark.parametrize("version", [0, 4, 255])
def test_unpack_refuses_unknown_version(version):
    data = patch(pack(make_container()), 4, "<B", version)
    with pytest.raises(FormatError, match=f"version {version} .*versions 1, 2 and 3"):
        unpack(data)


def test_version_round_trips_and_new_files_get_the_current_one():
    assert make_header().version == VERSION == 2
    for version in SUPPORTED_VERSIONS:
        data = pack(make_container(version=version))
        assert data[4] == version
        assert unpack(data).header.version == version


@pytest.mark.parametrize("version", [0, 4, True, 1.5])
def test_header_refuses_unsupported_version(version):
    with pytest.raises(ParameterError, match="version"):
        make_header(version=version)


def test_unpack_refuses_trailing_garbage():
    data = pack(make_container())
    with pytest.raises(FormatError, match="trailing"):
        unpack(with_fixed_crc(data[:-4] + b"junk" + data[-4:]))
    with pytest.raises(FormatError):
        unpack(data + b"\0")


def test_unpack_refuses_crc_mismatch():
    data = bytearray(pack(make_container()))
    data[-1] ^= 0xFF
    with pytest.raises(FormatError, match="checksum"):
        unpack(bytes(data))


def test_unpack_refuses_every_truncation_with_format_error():
    data = pack(make_container(seed=5, tile_size=64, has_alpha=True))
    for length in range(len(data)):
        with pytest.raises(FormatError):
            unpack(data[:length])
    with pytest.raises(FormatError, match="truncated"):
        unpack(data[:30])


def test_unpack_refuses_segment_count_mismatch():
    data = pack(make_container())
    with pytest.raises(FormatError, match="declares 3 segments, expected 2"):
        unpack(patch(data, 36, "<I", 3))


def test_unpack_refuses_segments_in_wrong_order():
    data = pack(make_container())
    with pytest.raises(FormatError, match="segment 0 has kind Y, expected Z"):
        unpack(patch(data, 40, "<B", int(SegmentKind.Y)))


def test_unpack_refuses_unknown_segment_kind():
    data = pack(make_container())
    with pytest.raises(FormatError, match="segment 1 has kind 9"):
        unpack(patch(data, 45, "<B", 9))


def test_unpack_refuses_alpha_flag_without_alpha_segment():
    data = pack(make_container())
    with pytest.raises(FormatError, match="expected 3"):
        unpack(patch(data, 6, "<B", 1))


def test_unpack_refuses_length_fields_that_overrun():
    data = pack(make_container())
    with pytest.raises(FormatError, match="truncated"):
        unpack(patch(data, 41, "<I", 2**32 - 1))


@pytest.mark.parametrize("q", [float("nan"), float("inf"), -1.0, 64.0001, -float("inf")])
def test_unpack_refuses_nonfinite_or_out_of_range_q(q):
    data = patch(pack(make_container()), 16, "<d", q)
    with pytest.raises(FormatError, match="q ="):
        unpack(data)


@pytest.mark.parametrize("size", [(0, 61), (93, 0)])
def test_unpack_refuses_zero_dimensions(size):
    data = patch(pack(make_container()), 24, "<II", *size)
    with pytest.raises(FormatError, match="invalid image size"):
        unpack(data)


def test_unpack_refuses_reserved_bits():
    data = pack(make_container())
    with pytest.raises(FormatError, match="reserved"):
        unpack(patch(data, 6, "<B", 0x81))
    with pytest.raises(FormatError, match="reserved"):
        unpack(patch(data, 7, "<B", 1))


def test_unpack_refuses_unknown_colour():
    with pytest.raises(FormatError, match="colour"):
        unpack(patch(pack(make_container()), 5, "<B", 2))


def test_unpack_refuses_tile_size_off_the_grid():
    with pytest.raises(FormatError, match="tile size 100"):
        unpack(patch(pack(make_container()), 32, "<I", 100))


def test_unpack_refuses_non_bytes_input():
    with pytest.raises(FormatError):
        unpack("CRDR")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Version 3: ICC and EXIF segments


def fake_icc(space: bytes = b"RGB ", size: int = 200) -> bytes:
    """Enough of an ICC profile for the container's checks: 128-byte header, 'acsp', a space."""
    profile = bytearray(size)
    struct.pack_into(">I", profile, 0, size)
    profile[16:20] = space
    profile[36:40] = b"acsp"
    return bytes(profile)


EXIF = b"II*\x00\x08\x00\x00\x00" + bytes(10)


def make_metadata_container(icc=None, exif=None, **changes) -> Container:
    header = make_header(version=3, has_icc=icc is not None, has_exif=exif is not None, **changes)
    tiles = [(b"z" * 8, b"y" * 8)] * header.n_tiles
    alpha = b"png" if header.has_alpha else None
    return Container.from_tiles(header, tiles, alpha, icc, exif)


def test_icc_and_exif_segments_round_trip_after_alpha_in_order():
    container = make_metadata_container(fake_icc(), EXIF, has_alpha=True, width=130, tile_size=64)
    data = pack(container)
    assert data[4] == 3 and data[6] == 0b111
    parsed = unpack(data)
    assert parsed == container
    assert [s.kind.name for s in parsed.segments[-3:]] == ["ALPHA", "ICC", "EXIF"]
    assert (parsed.icc_profile, parsed.exif, parsed.alpha) == (fake_icc(), EXIF, b"png")


def test_files_without_metadata_stay_version_2_and_byte_identical():
    assert bitstream.version_for(False) == 2 and bitstream.version_for(True) == 3
    container = make_container()
    assert container.icc_profile is None and container.exif is None
    assert pack(container)[4] == 2


def test_metadata_needs_version_3():
    with pytest.raises(ParameterError, match="need version 3"):
        make_header(version=2, has_icc=True)
    data = pack(make_metadata_container(fake_icc()))
    with pytest.raises(FormatError, match="reserved header bits"):
        unpack(patch(data, 4, "<B", 2))


def test_version_3_readers_still_refuse_undefined_flags():
    data = pack(make_metadata_container(fake_icc()))
    with pytest.raises(FormatError, match="reserved header bits"):
        unpack(patch(data, 6, "<B", 0x0A))


def test_metadata_segments_are_counted_and_ordered():
    data = pack(make_metadata_container(fake_icc(), EXIF))
    with pytest.raises(FormatError, match="expected 3"):
        unpack(patch(data, 6, "<B", 0x02))  # EXIF flag cleared: one segment too many
    with pytest.raises(FormatError, match="segment 2 has kind EXIF, expected ICC"):
        unpack(patch(data, bitstream.HEADER_SIZE + 10, "<B", 5))


@pytest.mark.parametrize(
    ("icc", "exif", "colour", "message"),
    [
        (fake_icc(b"CMYK"), None, Colour.RGB, "ICC profile for CMYK data on a RGB image"),
        (fake_icc(b"RGB "), None, Colour.GREY, "ICC profile for RGB data on a GREY image"),
        (fake_icc(size=100), None, Colour.RGB, "without a valid ICC header"),
        (None, b"Exif\x00\x00II*\x00" + bytes(8), Colour.RGB, "not a TIFF structure"),
    ],
)
def test_metadata_payloads_are_checked(icc, exif, colour, message):
    with pytest.raises(ParameterError, match=message):
        make_metadata_container(icc, exif, colour=colour)
    good = make_metadata_container(
        fake_icc(b"GRAY" if colour is Colour.GREY else b"RGB ") if icc is not None else None,
        EXIF if exif is not None else None, colour=colour,
    )
    data = bytearray(pack(good))
    start = len(data) - 4 - len((good.icc_profile or good.exif))
    data[start:-4] = (icc or exif)[: len(data) - 4 - start].ljust(len(data) - 4 - start, b"\0")
    if icc is not None and len(icc) < 128:
        data[start + 36 : start + 40] = b"xxxx"
    with pytest.raises(FormatError, match="metadata segment holds"):
        unpack(with_fixed_crc(bytes(data)))


# --------------------------------------------------------------------------------------------------
# Telling files apart


def test_identify_takes_crdr_by_magic_and_bin_by_its_first_record():
    assert bitstream.identify(pack(make_container())) == "crdr"
    assert bitstream.identify(pack_official(make_official())) == "official"
    assert bitstream.identify(b"anything", "official") == "official"
    with pytest.raises(ParameterError, match="format must be one of"):
        bitstream.identify(b"", "jpeg")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n" + bytes(30), "is a PNG image"),
        (b"\xff\xd8\xff\xe0" + bytes(30), "is a JPEG image"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(20), "is a WebP image"),
        (b"GIF89a" + bytes(30), "is a GIF image"),
        (b"\x00\x00\x00\x1cftypavif" + bytes(20), "is a AVIF image"),
        (b"II*\x00" + bytes(30), "is a TIFF image"),
        (b"CRDX" + bytes(60), r"not a .crdr file \(bad magic 43524458"),
        (b"\x07\x00\x00\x00" + bytes(60), "bad magic"),
    ],
)
def test_identify_says_what_a_foreign_file_is(data, message):
    with pytest.raises(FormatError, match=message) as caught:
        bitstream.identify(data)
    assert "authors' multi-rate .bin" not in str(caught.value)
    with pytest.raises(FormatError, match=message):
        unpack(data)


# --------------------------------------------------------------------------------------------------
# Authors' .bin format


@pytest.mark.vectors
@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_official_vectors_repack_byte_identically(name):
    data = load_vector(name)
    parsed = unpack_official(data)
    assert pack_official(parsed) == data
    assert (parsed.height, parsed.width) == (61, 93)
    assert len(parsed.z_string) == 24


@pytest.mark.vectors
def test_official_q1_5_header_bytes():
    data = load_vector("q1.5.bin")
    assert data[:10] == b"\x06\x00\x00\x00" + bytes.fromhex("3d005d001118")
    parsed = unpack_official(data)
    assert (parsed.height, parsed.width, parsed.max_abs_y, parsed.q_byte) == (61, 93, 17, 24)
    assert parsed.q == 1.5


@pytest.mark.vectors
def test_official_q0_1_vector_decodes_at_truncated_q():
    parsed = unpack_official(load_vector("q0.1.bin"))
    assert parsed.q_byte == official_q_byte(0.1) == 1
    assert parsed.q == 0.0625


@pytest.mark.parametrize(
    ("q", "byte"), [(0.0, 0), (0.1, 1), (0.0624, 0), (1.5, 24), (2.25, 36), (4.0, 64), (15.99, 255)]
)
def test_official_q_byte_truncates(q, byte):
    assert official_q_byte(q) == byte


@pytest.mark.parametrize("q", [16.0, -0.01, float("nan"), float("inf"), 1e308, "x", True])
def test_official_q_byte_refuses_unrepresentable_q(q):
    with pytest.raises(ParameterError):
        official_q_byte(q)


@pytest.mark.parametrize(("value", "byte"), [(0.0, 0), (17.9, 17), (255.999, 255)])
def test_official_max_abs_byte_truncates(value, byte):
    assert official_max_abs_byte(value) == byte


@pytest.mark.parametrize("value", [256.0, 1000.0, -1.0, float("nan"), float("inf")])
def test_official_max_abs_byte_refuses_instead_of_wrapping(value):
    with pytest.raises(FormatError):
        official_max_abs_byte(value)


def make_official(**changes) -> OfficialFile:
    fields = dict(height=61, width=93, max_abs_y=17, q_byte=24, z_string=b"z" * 24, y_string=b"yy")
    fields.update(changes)
    return OfficialFile(**fields)


def test_official_round_trip_without_vectors():
    official = make_official(z_string=b"", y_string=bytes(range(256)))
    data = pack_official(official)
    assert data[:10] == bytes.fromhex("06000000 3d005d00 1118")
    assert unpack_official(data) == official


@pytest.mark.parametrize(
    "changes",
    [{"height": 0}, {"width": 65536}, {"max_abs_y": 256}, {"q_byte": -1}, {"y_string": "s"}],
)
def test_official_file_refuses_fields_the_format_cannot_hold(changes):
    with pytest.raises(ParameterError):
        make_official(**changes)


def test_unpack_official_refuses_single_rate_header():
    data = b"\x05\x00\x00\x00" + b"\x3d\x00\x5d\x00\x11" + pack_official(make_official())[10:]
    with pytest.raises(FormatError, match="single-rate"):
        unpack_official(data)


def test_unpack_official_refuses_truncation_and_trailing_data():
    data = pack_official(make_official())
    for length in range(len(data)):
        with pytest.raises(FormatError):
            unpack_official(data[:length])
    with pytest.raises(FormatError, match="trailing"):
        unpack_official(data + b"\0")


def test_unpack_official_refuses_zero_size_and_huge_size():
    data = bytearray(pack_official(make_official()))
    data[4:6] = b"\0\0"
    with pytest.raises(FormatError, match="invalid image size"):
        unpack_official(bytes(data))
    data[4:8] = b"\xff\xff\xff\xff"
    with pytest.raises(FormatError, match="--max-pixels"):
        unpack_official(bytes(data), max_pixels=65535 * 65534)


def test_unpack_official_refuses_crdr_files():
    with pytest.raises(FormatError):
        unpack_official(pack(make_container()))


# --------------------------------------------------------------------------------------------------
# Fuzzing: every mutation parses (and then re-packs to the same bytes) or raises FormatError


def _mutations(valid: list[bytes], rng: random.Random, *, table: int, fix_crc: bool):
    """The originals, truncations, bit flips, field corruption, spliced and random bytes."""
    yield from valid
    for data in valid:
        for length in range(len(data)):
            yield data[:length]
    for _ in range(3000):
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 3)):
            index = rng.randrange(len(data))
            data[index] ^= 1 << rng.randrange(8)
        yield bytes(data)
    interesting = [0, 1, 2, 3, 4, 5, 63, 64, 255, 256, 2**16, 2**31, 2**32 - 1]
    for _ in range(3000):
        data = bytearray(rng.choice(valid))
        offset = rng.randrange(0, min(len(data) - 4, table))
        value = rng.choice(interesting + [rng.randrange(2**32)])
        struct.pack_into("<I", data, offset, value)
        mutated = bytes(data)
        yield with_fixed_crc(mutated) if fix_crc and rng.random() < 0.7 else mutated
    for _ in range(1000):
        first, second = rng.choice(valid), rng.choice(valid)
        cut = rng.randrange(len(first))
        yield first[:cut] + second[rng.randrange(len(second)) :]
    for _ in range(1000):
        prefix = rng.choice([b"", b"CRDR", b"CRDR\x01", rng.choice(valid)[:12]])
        yield prefix + rng.randbytes(rng.randrange(0, 80))


def _fuzz(parse, serialise, valid: list[bytes], *, table: int, fix_crc: bool) -> int:
    rng = random.Random(20240527)
    parsed = 0
    with hang_guard(120.0):
        for data in _mutations(valid, rng, table=table, fix_crc=fix_crc):
            try:
                result = parse(data)
            except FormatError:
                pass
            else:
                parsed += 1
                assert serialise(result) == data
    return parsed


def test_unpack_fuzzed_inputs_parse_or_raise_format_error_only():
    valid = [
        pack(make_container(seed=10)),
        pack(make_container(seed=11, width=130, height=70, tile_size=64, has_alpha=True)),
        pack(make_container(seed=12, width=1, height=1, colour=Colour.GREY, q=0.0)),
        pack(make_metadata_container(fake_icc(b"GRAY"), EXIF, colour=Colour.GREY, has_alpha=True)),
    ]
    parsed = _fuzz(unpack, pack, valid, table=bitstream.HEADER_SIZE + 5 * 13, fix_crc=True)
    assert parsed >= len(valid)


@pytest.mark.vectors
def test_unpack_official_fuzzed_inputs_parse_or_raise_format_error_only():
    valid = [pack_official(make_official()), pack_official(make_official(y_string=b""))]
    valid += [load_vector(name) for name in VECTOR_NAMES]
    assert _fuzz(unpack_official, pack_official, valid, table=40, fix_crc=False) >= len(valid)


def test_describe_reads_header_facts_from_bytes_alone():
    container = make_metadata_container(fake_icc(), None, width=130, tile_size=64, has_alpha=True)
    facts = bitstream.describe(pack(container))
    assert (facts["format"], facts["version"], facts["tiles"]) == ("crdr", 3, 3)
    assert (facts["alpha"], facts["icc_profile"], facts["exif"]) == (True, True, False)
    assert [s["kind"] for s in facts["segments"]][-2:] == ["ALPHA", "ICC"]
    official = bitstream.describe(pack_official(make_official()))
    assert (official["format"], official["width"], official["q"]) == ("official", 93, 1.5)
    with pytest.raises(FormatError, match="PNG image"):
        bitstream.describe(b"\x89PNG\r\n\x1a\n" + bytes(20))
