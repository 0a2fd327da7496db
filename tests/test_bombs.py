"""Decompression bombs: a file cannot make the decoder do more work than its bytes justify.

Three limits, each tested here: one piece (untiled image or tile) is at most MAX_TILE_PIXELS,
every z/y string is at least the fewest bytes an honest rANS stream of its symbol count can
have (checked before any decoding), and a failed allocation is one ResourceError line. The bomb
corpus feeds headers declaring sizes up to the limits, tiled and untiled, with short payloads;
a guard fails the test if any of them reaches the entropy decoder or the synthesis transform,
and SIGALRM bounds a hang (no wall-clock assertion).
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
from compressai.ans import RansEncoder
from guards import hang_guard

from crdr import bitstream, codec, image_io
from crdr.bitstream import Colour, Container, Header, MAX_TILE_PIXELS, MAX_TILE_SIZE
from crdr.errors import CrdrError, FormatError, ParameterError, ResourceError


def _photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.fixture()
def no_decoding(tiny_model, monkeypatch):
    """Counts entropy decoding and synthesis calls; the bomb tests expect none."""
    calls = {"decode": 0, "synthesis": 0}

    def refuse(name):
        def call(*args, **kwargs):
            calls[name] += 1
            raise AssertionError(f"a bomb reached {name}")

        return call

    monkeypatch.setattr(tiny_model, "decompress_latents", refuse("decode"))
    monkeypatch.setattr(tiny_model, "synthesis", refuse("synthesis"))
    return calls


def _header(width: int, height: int, tile_size: int, model_id: bytes, **changes) -> bytes:
    """The fixed header and segment table of a file with the given size and equal string lengths."""
    fields = dict(version=2, colour=0, flags=0, q=1.0, z_length=8, y_length=8)
    fields.update(changes)
    n_tiles = bitstream.tile_count(width, height, tile_size)
    head = bitstream._FIXED.pack(
        b"CRDR", fields["version"], fields["colour"], fields["flags"], 0, model_id, fields["q"],
        width, height, tile_size, 2 * n_tiles,
    )
    table = struct.pack("<BIBI", 1, fields["z_length"], 2, fields["y_length"]) * n_tiles
    return head + table


def _bomb(width: int, height: int, tile_size: int, model_id: bytes, payload: bytes = b"\0" * 8) -> bytes:
    n_tiles = bitstream.tile_count(width, height, tile_size)
    body = _header(width, height, tile_size, model_id, z_length=len(payload), y_length=len(payload))
    return _with_crc(body + payload * (2 * n_tiles))


# --------------------------------------------------------------------------------------------------
# One piece at most MAX_TILE_PIXELS


def test_untiled_8192_square_header_is_refused_by_the_parser(tiny_model, no_decoding):
    """The issue's 1,214-byte file: a real small file whose header declares an untiled 8192x8192."""
    data = bytearray(codec.compress(_photo(64, 64), q=0.0, model=tiny_model))
    struct.pack_into("<II", data, 24, 8192, 8192)
    bomb = _with_crc(bytes(data[:-4]))
    with pytest.raises(FormatError, match="untiled 8192x8192"):
        codec.decompress(bomb, model=tiny_model)
    assert no_decoding == {"decode": 0, "synthesis": 0}


def test_hostile_header_is_refused_before_any_model_is_loaded(tmp_path):
    bomb = _bomb(8192, 8192, 0, b"\0" * 8)
    with pytest.raises(FormatError, match="untiled 8192x8192"):
        codec.decompress(bomb, model=tmp_path / "no-such-weights.safetensors")


def test_untiled_images_up_to_the_threshold_parse_and_one_pixel_more_does_not():
    width = MAX_TILE_SIZE
    ok = _bomb(width, MAX_TILE_PIXELS // width, 0, b"\0" * 8)
    assert bitstream.unpack(ok).header.pixels == MAX_TILE_PIXELS
    with pytest.raises(FormatError, match="one piece"):
        bitstream.unpack(_bomb(width + 1, MAX_TILE_PIXELS // width, 0, b"\0" * 8))


def test_tile_size_above_the_cap_is_refused_by_the_parser():
    with pytest.raises(FormatError, match=f"tile size {2 * MAX_TILE_SIZE} is above the limit"):
        bitstream.unpack(_bomb(8192, 8192, 2 * MAX_TILE_SIZE, b"\0" * 8))


def test_codec_tiling_threshold_is_the_format_limit():
    assert codec.TILE_THRESHOLD == MAX_TILE_PIXELS == MAX_TILE_SIZE**2
    assert codec.DEFAULT_TILE_SIZE <= MAX_TILE_SIZE


@pytest.mark.parametrize("tile_size", [0, 2 * MAX_TILE_SIZE])
def test_encoder_refuses_pieces_the_decoder_would_refuse(tiny_model, tile_size, monkeypatch):
    source = image_io.SourceImage(
        np.zeros((MAX_TILE_SIZE, MAX_TILE_SIZE + 64, 3), np.uint8), None, Colour.RGB, ()
    )
    monkeypatch.setattr(codec, "_encode_tile", lambda *args: pytest.fail("encoded before refusing"))
    with pytest.raises(ParameterError, match=f"at most {MAX_TILE_SIZE}"):
        codec.encode_at(source, 1.0, tiny_model, tile_size=tile_size)


def test_header_refuses_an_untiled_piece_above_the_limit():
    with pytest.raises(ParameterError, match="one piece"):
        Header(width=4096, height=4096, q=1.0, model_id=b"\0" * 8, colour=Colour.RGB,
               has_alpha=False, tile_size=0)


def test_official_bin_declaring_a_large_image_is_refused_before_decoding(tiny_model, vectors_dir, no_decoding):
    data = bytearray((vectors_dir / "q1.5.bin").read_bytes())
    struct.pack_into("<HH", data, 4, 8192, 8192)
    with pytest.raises(FormatError, match="untiled 8192x8192"):
        codec.decompress(bytes(data), model=tiny_model)
    with pytest.raises(ParameterError, match="no tiling"):
        codec.compress_official(np.zeros((2049, 2048, 3), np.uint8), q=1.0, model=tiny_model)


# --------------------------------------------------------------------------------------------------
# Payload bounds


def test_payload_too_small_for_the_declared_latents_is_refused_before_decoding(tiny_model, no_decoding):
    """A real 64x64 file relabelled 2048x2048 (within the piece limit): its strings are too short."""
    real = bitstream.unpack(codec.compress(_photo(64, 64), q=0.0, model=tiny_model))
    header = Header(
        width=2048, height=2048, q=0.0, model_id=tiny_model.model_id, colour=Colour.RGB,
        has_alpha=False, tile_size=0,
    )
    bomb = bitstream.pack(Container(header, real.segments))
    with pytest.raises(FormatError, match="z string of the 2048x2048 image holds"):
        codec.decompress(bomb, model=tiny_model)
    assert no_decoding["decode"] == 0


def test_strings_that_are_not_whole_words_are_refused(tiny_model, no_decoding):
    real = bitstream.unpack(codec.compress(_photo(16, 16), q=1.0, model=tiny_model))
    z_string, y_string = real.tile_strings()[0]
    for tiles in ([(z_string + b"\0", y_string)], [(z_string, y_string[:-1])], [(z_string, b"")]):
        data = bitstream.pack(Container.from_tiles(real.header, tiles))
        with pytest.raises(FormatError, match="whole number of 4-byte words"):
            codec.decompress(data, model=tiny_model)
    assert no_decoding["decode"] == 0


@pytest.mark.parametrize(("size", "tile_size"), [((1, 1), 0), ((3, 5), 0), ((65, 17), 0), ((200, 130), 0), ((130, 70), 64)])
@pytest.mark.parametrize("kind", ["flat", "noise"])
def test_every_file_the_encoder_writes_meets_the_payload_bound(tiny_model, size, tile_size, kind):
    """Lowest and highest q, flat and noisy images, whole and edge tiles: the bound refuses no
    valid file (the tiny model's z strings come within 4 % of it)."""
    width, height = size
    rgb = np.full((height, width, 3), 128, np.uint8) if kind == "flat" else _photo(width, height)
    bounds = codec.PayloadBounds.of(tiny_model)
    for q in (0.0, tiny_model.max_q):
        container = bitstream.unpack(codec.compress(rgb, q=q, model=tiny_model, tile_size=tile_size))
        for (_, _, w, h), z_string, y_string in container.pieces():
            z_least, y_least = bounds.minimum_bytes(w, h)
            assert len(z_string) >= z_least and len(y_string) >= y_least
            assert len(z_string) % 4 == len(y_string) % 4 == 0


@pytest.mark.parametrize("repeats", [1, 3, 40, 2000])
def test_payload_bound_holds_for_the_cheapest_stream_compressai_can_write(tiny_model, repeats):
    """Every z channel's most probable symbol, repeated: the cheapest z string of that length.
    The bound never exceeds it and is within a few words of it (it is not vacuous)."""
    z_model = tiny_model.entropy_model_z
    cdfs = z_model._quantized_cdf.tolist()
    lengths = z_model._cdf_length.reshape(-1).int().tolist()
    offsets = z_model._offset.reshape(-1).int().tolist()
    indexes, symbols = [], []
    for row, cdf in enumerate(cdfs):
        frequencies = [cdf[i + 1] - cdf[i] for i in range(lengths[row] - 1)]
        indexes += [row] * repeats
        symbols += [frequencies.index(max(frequencies)) + offsets[row]] * repeats
    string = RansEncoder().encode_with_indexes(symbols, indexes, cdfs, lengths, offsets)
    bound = codec.minimum_stream_bytes(sum(codec._drop_bits(z_model)) * repeats)
    assert bound <= len(string) <= bound + 4 * max(2, math.ceil(0.001 * len(string) / 4))


def test_minimum_stream_bytes_is_the_flushed_state_plus_whole_words():
    assert codec.minimum_stream_bytes(0.0) == 8
    assert codec.minimum_stream_bytes(32.0) == 8
    assert codec.minimum_stream_bytes(33.0) == 12
    assert codec.minimum_stream_bytes(32 + 10 * 32.0) == 8 + 4 * 10


# --------------------------------------------------------------------------------------------------
# Allocation failures


ALLOCATION_FAILURE = (
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
    "you tried to allocate 274877906944 bytes."
)


@pytest.mark.parametrize(
    "failure", [MemoryError(), RuntimeError(ALLOCATION_FAILURE), RuntimeError("can't allocate memory")]
)
def test_allocation_failures_become_one_line_resource_errors(tiny_model, monkeypatch, failure):
    data = codec.compress(_photo(16, 16), q=1.0, model=tiny_model)

    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(codec, "_synthesis", fail)  # what the decoder runs for g_s
    with pytest.raises(ResourceError, match="not enough memory to decode a 16x16 image") as caught:
        codec.decompress(data, model=tiny_model)
    assert "\n" not in str(caught.value)
    monkeypatch.setattr(codec, "_encode_tile", fail)
    with pytest.raises(ResourceError, match="not enough memory to encode a 16x16 image"):
        codec.compress(_photo(16, 16), q=1.0, model=tiny_model)


def test_other_runtime_errors_are_not_disguised_as_memory_errors(tiny_model, monkeypatch):
    data = codec.compress(_photo(16, 16), q=1.0, model=tiny_model)

    def fail(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(codec, "_synthesis", fail)  # what the decoder runs for g_s
    with pytest.raises(RuntimeError, match="shapes"):
        codec.decompress(data, model=tiny_model)


# --------------------------------------------------------------------------------------------------
# The bomb corpus


def _corpus(model, real: Container) -> list[tuple[str, bytes]]:
    model_id = model.model_id
    z_string, y_string = real.tile_strings()[0]
    limit = bitstream.DEFAULT_MAX_PIXELS
    cases = []
    # Untiled, up to the piece limit and beyond it.
    for width, height in [(2048, 2048), (2049, 2048), (8192, 8192), (MAX_TILE_PIXELS, 1), (1, MAX_TILE_PIXELS)]:
        cases.append((f"untiled {width}x{height}", _bomb(width, height, 0, model_id)))
    # Tiled, up to max_pixels, with the largest tiles and with the smallest.
    for width, height, tile in [
        (16384, 16384, 1024), (16384, 16384, 2048), (limit // 2048, 2048, 2048), (8192, 8192, 1024),
        (4096, 4096, 64), (limit, 1, 2048), (1, limit, 1024), (limit + 1, 1, 1024), (65536, 65536, 2048),
    ]:
        if bitstream.tile_count(width, height, tile) <= 2**16:
            cases.append((f"tiled {width}x{height}/{tile}", _bomb(width, height, tile, model_id)))
        else:  # the table alone would be megabytes: declare it and truncate
            cases.append((f"tiled {width}x{height}/{tile} truncated", _with_crc(_header(width, height, tile, model_id)[:60])))
    # Real strings of a 64x64 tile under headers that declare more per tile.
    for width, height, tile in [(2048, 2048, 0), (4096, 4096, 1024), (2048, 2048, 2048)]:
        n_tiles = bitstream.tile_count(width, height, tile)
        header = Header(width=width, height=height, q=real.header.q, model_id=model_id,
                        colour=Colour.RGB, has_alpha=False, tile_size=tile)
        cases.append((f"real strings as {width}x{height}/{tile}",
                      bitstream.pack(Container.from_tiles(header, [(z_string, y_string)] * n_tiles))))
    # Short payloads: empty strings, one word, strings cut to any length.
    for payload in (b"", b"\0\0\0\0", b"\xff" * 8):
        cases.append((f"512x512 with {len(payload)}-byte strings", _bomb(512, 512, 0, model_id, payload)))
    z_least, _ = codec.PayloadBounds.of(model).minimum_bytes(64, 64)
    for cut in range(len(z_string)):
        if cut < z_least or cut % 4:
            tiles = [(z_string[:cut], y_string)]
            cases.append((f"z cut to {cut}", bitstream.pack(Container.from_tiles(real.header, tiles))))
    return cases


def test_bomb_corpus_fails_fast_with_crdr_errors(tiny_model, no_decoding):
    real = bitstream.unpack(codec.compress(_photo(64, 64), q=0.0, model=tiny_model))
    corpus = _corpus(tiny_model, real)
    assert len(corpus) > 20
    with hang_guard(30.0):
        for name, data in corpus:
            with pytest.raises(CrdrError) as caught:
                codec.decompress(data, model=tiny_model)
            assert "\n" not in str(caught.value), name
    assert no_decoding == {"decode": 0, "synthesis": 0}
