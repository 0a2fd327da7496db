"""Byte layouts of compressed files: crdr's own ``.crdr`` container and the authors' raw ``.bin``.

Only bytes live here (no torch, no model): the codec turns images into entropy-coded strings and
hands them to :func:`pack`; :func:`unpack` turns untrusted bytes back into a :class:`Container` or
raises :class:`~crdr.errors.FormatError`. The parsers check every length and limit before reading or
allocating, so a hostile or truncated file costs at most one pass over its own bytes and never
leaks an ``IndexError``, ``struct.error`` or ``MemoryError``. ``docs/format.md`` is the full
specification.

``.crdr`` (version 2 or 3, little-endian; version 1 is read too)::

    offset  size        field
    0       4           magic b"CRDR"
    4       1           version (2; 3 = 2 + ICC/EXIF segments; 1 = y coded with the next larger scale)
    5       1           colour (0 RGB, 1 GREY)
    6       1           flags (bit 0: ALPHA segment; version 3: bit 1 ICC, bit 2 EXIF; others 0)
    7       1           reserved (0)
    8       8           model id (first 8 bytes of the sha256 of the weights)
    16      8           q (float64)
    24      4           width            (uint32, >= 1)
    28      4           height           (uint32, >= 1)
    32      4           tile size        (uint32, 0 = one piece, else a multiple of 64)
    36      4           segment count n  (uint32)
    40      5 n         n x (kind uint8, length uint32)
    40+5n   sum(len)    payloads, in table order
    end-4   4           CRC32 (zlib.crc32) of every byte before it

Segments: for each tile of :func:`tile_grid` in raster order a Z then a Y segment, then one ALPHA,
one ICC and one EXIF segment iff their flags are set, in that order; nothing else. A writer uses
the oldest version that can hold its file (:func:`version_for`): files without ICC or EXIF stay
version 2, byte for byte as before, and older readers refuse version 3 by its version byte.
One piece (the whole image when untiled, else one tile) has at most :data:`MAX_TILE_PIXELS`, so
a few bytes cannot declare a decode of unbounded memory.

``.bin`` (the authors' ``save_byte_strings``, spec ``official-crdr.md`` §10.3): three records
``[uint32 LE length][bytes]`` = 6-byte header (uint16 H, uint16 W, uint8 int(max|y_hat|),
uint8 int(16 q)), z string, y string. No magic, version or checksum.
"""

from __future__ import annotations

import enum
import math
import numbers
import struct
import zlib
from dataclasses import dataclass
from typing import Sequence

from crdr.errors import FormatError, ParameterError

MAGIC = b"CRDR"
# Version 2 changed only how y elements pick their Gaussian table scale (nearest on a log axis
# instead of next larger, see crdr.entropy.ScaleRule); the byte layout is the same. Version 3 is
# version 2 plus the optional ICC and EXIF segments; it is written only for files that hold them.
VERSION = 2
METADATA_VERSION = 3
SUPPORTED_VERSIONS = (1, 2, 3)
DEFAULT_MAX_PIXELS = 2**28
# Largest piece coded in one go (the whole image when untiled, else one tile): the encoder tiles
# anything above it, so a larger piece can only come from a damaged or hostile file.
MAX_TILE_PIXELS = 2**22
MAX_TILE_SIZE = 2048  # MAX_TILE_SIZE ** 2 == MAX_TILE_PIXELS
MODEL_ID_SIZE = 8
Q_MAX = 64.0
# The model's total stride: a tile that is not a multiple of it would be padded inside every tile.
TILE_MULTIPLE = 64
UINT32_MAX = 2**32 - 1
# Hard caps independent of --max-pixels, so a raised pixel limit cannot make the segment table
# unbounded (2**22 tiles of 64 x 64 is 2**34 pixels).
MAX_TILES = 2**22
MAX_SEGMENTS = 2 * MAX_TILES + 1

_FIXED = struct.Struct("<4sBBBB8sdIIII")  # magic .. segment count, 40 bytes
_ENTRY = struct.Struct("<BI")  # segment kind, payload length
_CRC = struct.Struct("<I")
_FLAG_ALPHA = 0x01
_FLAG_ICC = 0x02
_FLAG_EXIF = 0x04
HEADER_SIZE = _FIXED.size
SEGMENT_ENTRY_SIZE = _ENTRY.size
CRC_SIZE = _CRC.size


class Colour(enum.IntEnum):
    """Colour kind of the source; GREY is coded as RGB and made one channel again at decode."""

    RGB = 0
    GREY = 1


class SegmentKind(enum.IntEnum):
    """Kind byte of a segment. 0 and 6..255 are unassigned and refused; ICC and EXIF need version 3."""

    Z = 1
    Y = 2
    ALPHA = 3
    ICC = 4
    EXIF = 5


def tile_count(width: int, height: int, tile_size: int) -> int:
    """Number of tiles of :func:`tile_grid`, computed without building the grid."""
    _check_grid_arguments(width, height, tile_size)
    if tile_size == 0:
        return 1
    return -(-width // tile_size) * -(-height // tile_size)


def tile_grid(width: int, height: int, tile_size: int) -> list[tuple[int, int, int, int]]:
    """Tiles as ``(left, top, w, h)`` in raster order (rows top to bottom, each left to right).

    ``tile_size == 0`` gives the whole image as one tile. Otherwise tiles are ``tile_size`` square,
    anchored at (0, 0); the last column and row are cut to the image (``w``/``h`` smaller).
    """
    _check_grid_arguments(width, height, tile_size)
    if tile_size == 0:
        return [(0, 0, width, height)]
    return [
        (left, top, min(tile_size, width - left), min(tile_size, height - top))
        for top in range(0, height, tile_size)
        for left in range(0, width, tile_size)
    ]


def _check_grid_arguments(width: int, height: int, tile_size: int) -> None:
    for name, value in (("width", width), ("height", height), ("tile size", tile_size)):
        if not _is_int(value):
            raise ParameterError(f"{name} must be an integer, got {value!r}")
    if width < 1 or height < 1:
        raise ParameterError(f"image size must be at least 1x1, got {width}x{height}")
    if tile_size < 0 or tile_size % TILE_MULTIPLE:
        raise ParameterError(
            f"tile size must be 0 (no tiling) or a positive multiple of {TILE_MULTIPLE}, "
            f"got {tile_size}"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _normalise(instance: object, names: tuple[str, ...], kind: type) -> None:
    """Store numpy scalars as plain int/float so equality, hashing and repr stay simple."""
    for name in names:
        object.__setattr__(instance, name, kind(getattr(instance, name)))


def expected_kinds(
    n_tiles: int, has_alpha: bool, has_icc: bool = False, has_exif: bool = False
) -> list[SegmentKind]:
    """The segment kinds a container must hold, in order: (Z, Y) per tile, then ALPHA, ICC and
    EXIF, each iff its flag is set."""
    kinds = [SegmentKind.Z, SegmentKind.Y] * n_tiles
    for present, kind in ((has_alpha, SegmentKind.ALPHA), (has_icc, SegmentKind.ICC), (has_exif, SegmentKind.EXIF)):
        if present:
            kinds.append(kind)
    return kinds


def version_for(has_metadata: bool) -> int:
    """The version a writer gives a file: the oldest that can hold it, so that files without ICC
    or EXIF stay readable by every crdr that reads :data:`VERSION`."""
    return max(VERSION, METADATA_VERSION) if has_metadata else VERSION


def piece_problem(width: int, height: int, tile_size: int) -> str | None:
    """Why this image/tile layout exceeds :data:`MAX_TILE_PIXELS` per piece, or None.

    The decoder's memory grows with the largest piece it synthesises at once; crdr's encoder
    tiles every image above the limit, so a file asking for more is damaged or hostile.
    """
    if tile_size == 0 and width * height > MAX_TILE_PIXELS:
        return (
            f"an untiled {width}x{height} image ({width * height} pixels) is above the "
            f"{MAX_TILE_PIXELS} pixels crdr codes in one piece (larger images are tiled)"
        )
    if tile_size > MAX_TILE_SIZE:
        return f"tile size {tile_size} is above the limit of {MAX_TILE_SIZE}"
    return None


ICC_HEADER_SIZE = 128
# ICC colour-space signatures (ICC.1 header bytes 16..19) a decoded image of each kind can carry.
ICC_SPACES = {Colour.RGB: b"RGB ", Colour.GREY: b"GRAY"}
EXIF_PREFIX = b"Exif\x00\x00"  # the JPEG APP1 / Pillow ``info["exif"]`` prefix, not stored
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*")


def icc_problem(profile: bytes, colour: Colour) -> str | None:
    """Why ``profile`` cannot be the ICC segment of an image of kind ``colour``, or None.

    A profile needs its 128-byte header with the ``acsp`` signature, and the colour space the
    decoded image has (``RGB `` for RGB, ``GRAY`` for GREY): a CMYK profile on RGB pixels would
    be worse than none.
    """
    if len(profile) < ICC_HEADER_SIZE or profile[36:40] != b"acsp":
        return f"an ICC profile of {len(profile)} bytes without a valid ICC header"
    space = bytes(profile[16:20])
    if space != ICC_SPACES[colour]:
        shown = space.decode("latin-1").strip() or space.hex()
        return f"an ICC profile for {shown} data on a {colour.name} image"
    return None


def exif_problem(exif: bytes) -> str | None:
    """Why ``exif`` cannot be the EXIF segment (a TIFF structure, no ``Exif\\0\\0``), or None."""
    if len(exif) < 8 or bytes(exif[:4]) not in _TIFF_MAGICS:
        return f"EXIF data of {len(exif)} bytes that is not a TIFF structure"
    return None


@dataclass(frozen=True)
class Header:
    """What a decoder needs besides the strings: size, rate parameter, model, colour and tiling.

    ``q`` is stored exactly (float64), unlike the authors' 1/16 grid; the model checks its own
    range, the container only ``0 <= q <= 64``. ``version`` says how the strings were coded
    (:data:`SUPPORTED_VERSIONS`); new files get :func:`version_for` (``has_icc``/``has_exif``
    need version 3). One piece holds at most :data:`MAX_TILE_PIXELS` (:func:`piece_problem`).
    Invalid values raise :class:`ParameterError`.
    """

    width: int
    height: int
    q: float
    model_id: bytes
    colour: Colour
    has_alpha: bool
    tile_size: int
    version: int = VERSION
    has_icc: bool = False
    has_exif: bool = False

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not _is_int(value) or not 1 <= value <= UINT32_MAX:
                raise ParameterError(
                    f"{name} must be an integer in [1, {UINT32_MAX}], got {value!r}"
                )
        if not _is_int(self.tile_size) or not 0 <= self.tile_size <= UINT32_MAX:
            raise ParameterError(f"tile size must fit a uint32, got {self.tile_size!r}")
        _check_grid_arguments(self.width, self.height, self.tile_size)
        if isinstance(self.q, bool) or not isinstance(self.q, numbers.Real):
            raise ParameterError(f"q must be a number, got {self.q!r}")
        q = float(self.q)
        if not math.isfinite(q) or not 0.0 <= q <= Q_MAX:
            raise ParameterError(f"q must be finite and in [0, {Q_MAX:g}], got {self.q!r}")
        if not isinstance(self.model_id, bytes) or len(self.model_id) != MODEL_ID_SIZE:
            raise ParameterError(f"model id must be {MODEL_ID_SIZE} bytes, got {self.model_id!r}")
        if not isinstance(self.colour, Colour):
            raise ParameterError(f"colour must be a Colour, got {self.colour!r}")
        for name in ("has_alpha", "has_icc", "has_exif"):
            if not isinstance(getattr(self, name), bool):
                raise ParameterError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not _is_int(self.version) or self.version not in SUPPORTED_VERSIONS:
            raise ParameterError(f"version must be one of {SUPPORTED_VERSIONS}, got {self.version!r}")
        if (self.has_icc or self.has_exif) and self.version < METADATA_VERSION:
            raise ParameterError(
                f"ICC and EXIF segments need version {METADATA_VERSION}, got version {self.version}"
            )
        problem = piece_problem(self.width, self.height, self.tile_size)
        if problem:
            raise ParameterError(problem)
        _normalise(self, ("width", "height", "tile_size", "version"), int)
        _normalise(self, ("q",), float)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def n_tiles(self) -> int:
        return tile_count(self.width, self.height, self.tile_size)

    def tiles(self) -> list[tuple[int, int, int, int]]:
        """:func:`tile_grid` of this header."""
        return tile_grid(self.width, self.height, self.tile_size)


@dataclass(frozen=True)
class Segment:
    """One length-prefixed payload of a container."""

    kind: SegmentKind
    data: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.kind, SegmentKind):
            raise ParameterError(f"segment kind must be a SegmentKind, got {self.kind!r}")
        if not isinstance(self.data, bytes):
            raise ParameterError(f"segment data must be bytes, got {type(self.data).__name__}")
        if len(self.data) > UINT32_MAX:
            raise ParameterError(f"segment of {len(self.data)} bytes does not fit a uint32 length")


@dataclass(frozen=True)
class Container:
    """A parsed ``.crdr`` file. Segment kinds and count must follow :func:`expected_kinds`."""

    header: Header
    segments: tuple[Segment, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.header, Header):
            raise ParameterError(f"header must be a Header, got {type(self.header).__name__}")
        if not isinstance(self.segments, tuple):
            raise ParameterError("segments must be a tuple")
        n_tiles = self.header.n_tiles
        if n_tiles > MAX_TILES:
            raise ParameterError(f"{n_tiles} tiles exceed the format's limit of {MAX_TILES}")
        header = self.header
        kinds = [segment.kind for segment in self.segments]
        expected = expected_kinds(n_tiles, header.has_alpha, header.has_icc, header.has_exif)
        if kinds != expected:
            raise ParameterError(
                f"segments must be {_describe_layout(n_tiles, header)}, got "
                f"{len(kinds)} segments ({', '.join(kind.name for kind in kinds[:6])}"
                f"{', ...' if len(kinds) > 6 else ''})"
            )
        problem = (self.icc_profile is not None and icc_problem(self.icc_profile, header.colour)) or (
            self.exif is not None and exif_problem(self.exif)
        )
        if problem:
            raise ParameterError(f"metadata segment holds {problem}")

    @classmethod
    def from_tiles(
        cls,
        header: Header,
        tiles: Sequence[tuple[bytes, bytes]],
        alpha: bytes | None = None,
        icc_profile: bytes | None = None,
        exif: bytes | None = None,
    ) -> Container:
        """Build a container from per-tile ``(z_string, y_string)`` pairs and the optional
        alpha, ICC and EXIF payloads (the header's flags must say which are present)."""
        segments = []
        for z_string, y_string in tiles:
            segments += [Segment(SegmentKind.Z, z_string), Segment(SegmentKind.Y, y_string)]
        for kind, payload in ((SegmentKind.ALPHA, alpha), (SegmentKind.ICC, icc_profile), (SegmentKind.EXIF, exif)):
            if payload is not None:
                segments.append(Segment(kind, payload))
        return cls(header, tuple(segments))

    def tile_strings(self) -> list[tuple[bytes, bytes]]:
        """``(z_string, y_string)`` per tile, in the raster order of :meth:`Header.tiles`."""
        n_tiles = self.header.n_tiles
        return [(self.segments[2 * i].data, self.segments[2 * i + 1].data) for i in range(n_tiles)]

    def pieces(self) -> list[tuple[tuple[int, int, int, int], bytes, bytes]]:
        """``((left, top, w, h), z_string, y_string)`` per tile: each tile of :meth:`Header.tiles`
        with its strings, in the order a decoder takes them."""
        return [(box, z, y) for box, (z, y) in zip(self.header.tiles(), self.tile_strings())]

    def _optional(self, kind: SegmentKind) -> bytes | None:
        for segment in self.segments[2 * self.header.n_tiles :]:
            if segment.kind is kind:
                return segment.data
        return None

    @property
    def alpha(self) -> bytes | None:
        """The ALPHA payload, or None when the header has no alpha."""
        return self._optional(SegmentKind.ALPHA)

    @property
    def icc_profile(self) -> bytes | None:
        """The ICC profile of the source (ICC segment), or None."""
        return self._optional(SegmentKind.ICC)

    @property
    def exif(self) -> bytes | None:
        """The source's EXIF as a TIFF structure (EXIF segment, no ``Exif\\0\\0``), or None."""
        return self._optional(SegmentKind.EXIF)


def _describe_layout(n_tiles: int, header: Header) -> str:
    text = f"{n_tiles} (Z, Y) pair{'s' if n_tiles != 1 else ''}"
    extras = [
        name for name, present in (("ALPHA", header.has_alpha), ("ICC", header.has_icc), ("EXIF", header.has_exif))
        if present
    ]
    return text + (f" then {', '.join(extras)}" if extras else " and no ALPHA")


def is_crdr(data: bytes) -> bool:
    """Whether ``data`` starts with the ``.crdr`` magic (says nothing about validity)."""
    return bytes(data[: len(MAGIC)]) == MAGIC


# Signatures of files people hand a decoder by mistake, so the message can say what they are.
_IMAGE_SIGNATURES = (
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"\xff\x0a", "JPEG XL"),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (0, b"qoif", "QOI"),
    (4, b"ftypavif", "AVIF"),
    (4, b"ftypavis", "AVIF"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (0, b"BM", "BMP"),
)
# A .bin file starts with the length of its header record: 6 (multi-rate) or 5 (single-rate).
_OFFICIAL_STARTS = (b"\x06\x00\x00\x00", b"\x05\x00\x00\x00")
FORMATS = ("auto", "crdr", "official")


def image_kind(data: bytes) -> str | None:
    """The image format ``data`` starts like (``"PNG"``, ``"JPEG"``, ...), or None."""
    head = bytes(data[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    for offset, signature, name in _IMAGE_SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            return name
    return None


def _not_crdr(data: bytes) -> str:
    """What ``data`` is, in the user's terms, when it lacks the CRDR magic."""
    if len(data) == 0:
        return "the input is empty (0 bytes), not a .crdr file"
    kind = image_kind(data)
    if kind:
        return f"the input is a {kind} image, not a compressed file (compress it with crdr compress)"
    head = bytes(data[: len(MAGIC)])
    return (
        f"not a .crdr file (bad magic {head.hex()}, expected {MAGIC.hex()} = 'CRDR'); "
        "for an authors' .bin file use --format official"
    )


def identify(data: bytes, expected: str = "auto") -> str:
    """Which parser ``data`` needs: ``"crdr"`` or ``"official"`` (the authors' ``.bin``).

    ``expected`` is one of :data:`FORMATS`; ``"auto"`` takes ``.crdr`` by its magic and ``.bin``
    only when it starts like one (a 6- or 5-byte header record), since ``.bin`` files carry no
    magic. Anything else raises :class:`FormatError` saying what the input is: empty, an image
    (PNG, JPEG, WebP, ... by their signatures) or a file with a bad magic.
    """
    if expected not in FORMATS:
        raise ParameterError(f"format must be one of {', '.join(FORMATS)}, got {expected!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError(f"expected bytes, got {type(data).__name__}")
    if expected != "auto":
        return expected
    if is_crdr(data):
        return "crdr"
    if bytes(data[:4]) in _OFFICIAL_STARTS:
        return "official"
    raise FormatError(_not_crdr(data))


def pack(container: Container) -> bytes:
    """Serialise a container (already validated by its constructor) to ``.crdr`` bytes."""
    if not isinstance(container, Container):
        raise ParameterError(f"pack needs a Container, got {type(container).__name__}")
    header = container.header
    parts = [
        _FIXED.pack(
            MAGIC,
            header.version,
            int(header.colour),
            (_FLAG_ALPHA if header.has_alpha else 0)
            | (_FLAG_ICC if header.has_icc else 0)
            | (_FLAG_EXIF if header.has_exif else 0),
            0,
            header.model_id,
            float(header.q),
            header.width,
            header.height,
            header.tile_size,
            len(container.segments),
        )
    ]
    parts += [_ENTRY.pack(int(segment.kind), len(segment.data)) for segment in container.segments]
    parts += [segment.data for segment in container.segments]
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def unpack(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Container:
    """Parse and validate ``.crdr`` bytes; any problem raises :class:`FormatError` (one line).

    Order of checks: size of the fixed header, magic, version, reserved bits, field ranges,
    ``max_pixels``, piece size, segment count, table size, kinds, declared lengths == remaining
    bytes, CRC, metadata payloads. Structure is checked before the CRC so that truncation and
    trailing data get their own message.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError(f"expected bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    size = len(view)
    if size < len(MAGIC) or bytes(view[: len(MAGIC)]) != MAGIC:
        raise FormatError(_not_crdr(view))
    if size < HEADER_SIZE + CRC_SIZE:
        raise FormatError(
            f"truncated .crdr file: {size} bytes, the fixed header alone needs "
            f"{HEADER_SIZE + CRC_SIZE}"
        )
    (_, version, colour, flags, reserved, model_id, q, width, height, tile_size, count) = (
        _FIXED.unpack_from(view, 0)
    )
    if version not in SUPPORTED_VERSIONS:
        readable = ", ".join(str(v) for v in SUPPORTED_VERSIONS[:-1]) + f" and {SUPPORTED_VERSIONS[-1]}"
        raise FormatError(
            f"unsupported .crdr version {version} (this crdr reads versions {readable})"
        )
    known_flags = _FLAG_ALPHA | (_FLAG_ICC | _FLAG_EXIF if version >= METADATA_VERSION else 0)
    if flags & ~known_flags or reserved:
        raise FormatError(
            f"reserved header bits set (flags 0x{flags:02x}, reserved 0x{reserved:02x})"
        )
    if colour not in Colour._value2member_map_:
        raise FormatError(f"unknown colour kind {colour} in .crdr header")
    if width < 1 or height < 1:
        raise FormatError(f"invalid image size {width}x{height} in .crdr header")
    if not math.isfinite(q) or not 0.0 <= q <= Q_MAX:
        raise FormatError(f"q = {q!r} in .crdr header is not finite or outside [0, {Q_MAX:g}]")
    if tile_size % TILE_MULTIPLE:
        raise FormatError(
            f"tile size {tile_size} in .crdr header is not a multiple of {TILE_MULTIPLE}"
        )
    _check_max_pixels(width, height, max_pixels)
    problem = piece_problem(width, height, tile_size)
    if problem:
        raise FormatError(f"damaged or hostile .crdr header: {problem}")
    n_tiles = tile_count(width, height, tile_size)
    if n_tiles > MAX_TILES:
        raise FormatError(f"{n_tiles} tiles in .crdr header exceed the limit of {MAX_TILES}")
    has_alpha, has_icc, has_exif = (bool(flags & flag) for flag in (_FLAG_ALPHA, _FLAG_ICC, _FLAG_EXIF))
    # Count and table size are checked arithmetically before any per-segment list is built.
    expected_count = 2 * n_tiles + has_alpha + has_icc + has_exif
    header = Header(
        width=width,
        height=height,
        q=q,
        model_id=bytes(model_id),
        colour=Colour(colour),
        has_alpha=has_alpha,
        tile_size=tile_size,
        version=version,
        has_icc=has_icc,
        has_exif=has_exif,
    )
    if count != expected_count:
        raise FormatError(
            f".crdr header declares {count} segments, expected {expected_count} "
            f"({_describe_layout(n_tiles, header)})"
        )
    table_end = HEADER_SIZE + count * SEGMENT_ENTRY_SIZE
    if table_end + CRC_SIZE > size:
        raise FormatError(
            f"truncated .crdr file: {size} bytes, the segment table alone needs "
            f"{table_end + CRC_SIZE}"
        )
    expected = expected_kinds(n_tiles, has_alpha, has_icc, has_exif)
    lengths = []
    for index, (kind, length) in enumerate(_ENTRY.iter_unpack(view[HEADER_SIZE:table_end])):
        if kind != expected[index]:
            name = SegmentKind(kind).name if kind in SegmentKind._value2member_map_ else str(kind)
            raise FormatError(f"segment {index} has kind {name}, expected {expected[index].name}")
        lengths.append(length)
    payload_end = size - CRC_SIZE
    declared = sum(lengths)
    available = payload_end - table_end
    if declared > available:
        raise FormatError(
            f"truncated .crdr file: segments declare {declared} bytes, {available} present"
        )
    if declared < available:
        raise FormatError(f"trailing data: {available - declared} bytes after the last segment")
    (stored_crc,) = _CRC.unpack_from(view, payload_end)
    actual_crc = zlib.crc32(view[:payload_end])
    if stored_crc != actual_crc:
        raise FormatError(
            f".crdr checksum mismatch (stored {stored_crc:08x}, computed {actual_crc:08x}): "
            "the file is corrupt"
        )
    segments = []
    offset = table_end
    for kind, length in zip(expected, lengths):
        segments.append(Segment(kind, bytes(view[offset : offset + length])))
        offset += length
    try:
        return Container(header, tuple(segments))
    except ParameterError as error:  # the metadata payload checks live in the constructor
        raise FormatError(str(error)) from None


def _check_max_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise FormatError(
            f"file declares a {width}x{height} image ({width * height} pixels), above the limit of "
            f"{max_pixels}; raise it with --max-pixels if the file is trusted"
        )


# --------------------------------------------------------------------------------------------------
# The authors' raw .bin format


OFFICIAL_HEADER_SIZE = 6
_OFFICIAL_HEADER = struct.Struct("<HHBB")
_RECORD_LENGTH = struct.Struct("<I")
_UINT16_MAX = 2**16 - 1


@dataclass(frozen=True)
class OfficialFile:
    """The three records of an authors' ``.bin`` file (multi-rate, 6-byte header).

    ``max_abs_y`` is ``int(max |y_hat|)`` (informational; their decoder ignores it) and ``q_byte``
    ``int(16 q)``; the decoder runs at ``q = q_byte / 16``. Invalid fields raise ParameterError.
    """

    height: int
    width: int
    max_abs_y: int
    q_byte: int
    z_string: bytes
    y_string: bytes

    def __post_init__(self) -> None:
        for name, low, high in (
            ("height", 1, _UINT16_MAX),
            ("width", 1, _UINT16_MAX),
            ("max_abs_y", 0, 255),
            ("q_byte", 0, 255),
        ):
            value = getattr(self, name)
            if not _is_int(value) or not low <= value <= high:
                raise ParameterError(
                    f"{name} must be an integer in [{low}, {high}] for the authors' .bin format, "
                    f"got {value!r}"
                )
        for name in ("z_string", "y_string"):
            value = getattr(self, name)
            if not isinstance(value, bytes):
                raise ParameterError(f"{name} must be bytes, got {type(value).__name__}")
            if len(value) > UINT32_MAX:
                raise ParameterError(f"{name} of {len(value)} bytes does not fit a uint32 length")
        _normalise(self, ("height", "width", "max_abs_y", "q_byte"), int)

    @property
    def q(self) -> float:
        """The q the authors' decoder uses: ``q_byte / 16`` (exact in float64)."""
        return self.q_byte / 16


def official_q_byte(q: float) -> int:
    """The authors' header q byte, ``int(16 q)``: truncation toward zero, so 0.1 -> 1 (= 0.0625).

    Computed in float64; multiplying by 16 is exact, so only ``q`` itself is rounded.
    """
    if isinstance(q, bool) or not isinstance(q, numbers.Real):
        raise ParameterError(f"q must be a number, got {q!r}")
    value = float(q)
    # int(16 q) <= 255 exactly when q < 16; testing q avoids int(inf) for huge values.
    if not math.isfinite(value) or not 0.0 <= value < 16.0:
        raise ParameterError(
            f"q = {q!r} cannot be stored in the authors' .bin header (int(16 q) must be in 0..255)"
        )
    return int(16.0 * value)


def official_max_abs_byte(value: float) -> int:
    """The authors' header byte ``int(max |y_hat|)``; refused (not wrapped) when it reaches 256.

    The authors' numpy < 2 code silently wraps such values modulo 256 and numpy >= 2 raises;
    crdr refuses with a :class:`FormatError` rather than write a header that lies.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FormatError(f"max |y_hat| must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0.0:
        raise FormatError(f"max |y_hat| = {value!r} cannot be stored in the authors' .bin header")
    if number >= 256.0:
        raise FormatError(
            f"max |y_hat| = {number:g} does not fit the authors' one-byte header field (< 256); "
            "this image cannot be written in the .bin format"
        )
    return int(number)


def pack_official(official: OfficialFile) -> bytes:
    """Serialise to the authors' ``.bin`` layout: three ``[uint32 LE length][bytes]`` records."""
    if not isinstance(official, OfficialFile):
        raise ParameterError(f"pack_official needs an OfficialFile, got {type(official).__name__}")
    header = _OFFICIAL_HEADER.pack(
        official.height, official.width, official.max_abs_y, official.q_byte
    )
    parts = []
    for record in (header, official.z_string, official.y_string):
        parts += [_RECORD_LENGTH.pack(len(record)), record]
    return b"".join(parts)


def unpack_official(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> OfficialFile:
    """Parse an authors' ``.bin`` file; anything but exactly three sane records is a FormatError.

    The format has no checksum, so corruption inside the strings is not detected here. It has no
    tiling either: images above :data:`MAX_TILE_PIXELS` are refused (crdr will not write them).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError(f"expected bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    size = len(view)
    records = []
    offset = 0
    for name in ("header", "z string", "y string"):
        if offset + _RECORD_LENGTH.size > size:
            raise FormatError(
                f"truncated .bin file: {size} bytes, no length field for the {name} record"
            )
        (length,) = _RECORD_LENGTH.unpack_from(view, offset)
        offset += _RECORD_LENGTH.size
        if name == "header" and length != OFFICIAL_HEADER_SIZE:
            detail = " (a single-rate model's file, not supported)" if length == 5 else ""
            raise FormatError(
                f"not an authors' multi-rate .bin file: header record of {length} bytes, "
                f"expected {OFFICIAL_HEADER_SIZE}{detail}"
            )
        if length > size - offset:
            raise FormatError(
                f"truncated .bin file: the {name} record declares {length} bytes, "
                f"{size - offset} present"
            )
        records.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != size:
        raise FormatError(f"trailing data: {size - offset} bytes after the y string record")
    height, width, max_abs_y, q_byte = _OFFICIAL_HEADER.unpack(records[0])
    if height < 1 or width < 1:
        raise FormatError(f"invalid image size {width}x{height} in .bin header")
    _check_max_pixels(width, height, max_pixels)
    problem = piece_problem(width, height, 0)  # the format has no tiling
    if problem:
        raise FormatError(f"authors' .bin file too large to decode: {problem}")
    return OfficialFile(
        height=height,
        width=width,
        max_abs_y=max_abs_y,
        q_byte=q_byte,
        z_string=records[1],
        y_string=records[2],
    )


# --------------------------------------------------------------------------------------------------
# Header facts


def describe(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, format: str = "auto") -> dict:
    """Header facts of a ``.crdr`` or ``.bin`` file (``crdr info``): bytes only, no model, no torch.

    ``format`` as for :func:`identify`; a problem raises :class:`FormatError` as the parsers do.
    """
    if identify(data, format) == "crdr":
        container = unpack(data, max_pixels=max_pixels)
        header = container.header
        return {
            "format": "crdr",
            "version": header.version,
            "width": header.width,
            "height": header.height,
            "q": header.q,
            "model_id": header.model_id.hex(),
            "colour": header.colour.name.lower(),
            "alpha": header.has_alpha,
            "icc_profile": header.has_icc,
            "exif": header.has_exif,
            "tile_size": header.tile_size,
            "tiles": header.n_tiles,
            "segments": [{"kind": s.kind.name, "bytes": len(s.data)} for s in container.segments],
            "bytes": len(data),
            "bpp": len(data) * 8 / header.pixels,
        }
    official = unpack_official(data, max_pixels=max_pixels)
    return {
        "format": "official",
        "width": official.width,
        "height": official.height,
        "q": official.q,
        "max_abs_y": official.max_abs_y,
        "segments": [
            {"kind": "Z", "bytes": len(official.z_string)},
            {"kind": "Y", "bytes": len(official.y_string)},
        ],
        "bytes": len(data),
        "bpp": len(data) * 8 / (official.width * official.height),
    }
