"""The resumable store of one report folder: ``per_image.csv`` (one row per image, codec and point)
and the FID/KID features cached beside it (``features/<extractor>/…/<image>.npy``).

Why: a run over a data set takes hours. Rows already in the CSV, with every requested metric filled
in (and, for FID/KID, their feature file), are not computed again, so an interrupted run continues
where it stopped and a rerun with an extra metric or baseline only does the missing work. The CSV
is rewritten atomically after each image, so a crash leaves the previous version whole; a malformed
row (a line cut by another writer) is dropped and recomputed.

Cells are strings: floats as ``repr`` (they read back exactly; ``nan``/``inf`` for unmeasurable
and identical), missing values empty. No torch or numpy here: the features are written and read
by the modules that compute them, this one only names their files.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Sequence

from crdr.evaluate.plan import CRDR, IMAGE_METRICS, slug
from crdr.files import write_atomic

CSV_COLUMNS = (
    "image", "codec", "point", "q", "beta", "quality", "width", "height", "bytes", "bpp",
    "bpp_estimated", *IMAGE_METRICS, "encode_s", "decode_s", "model",
)
PER_IMAGE_CSV = "per_image.csv"

Row = dict  # CSV cells as strings, keyed by CSV_COLUMNS
Key = tuple  # (image, codec, point)


def cell(value: float | int | str | None) -> str:
    """The CSV text of one value."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # round-trips exactly; "nan" / "inf" for unmeasurable / identical
    return str(value)


def _float(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def read_rows(path: Path) -> tuple[dict[Key, Row], int]:
    """Rows of an existing per-image CSV (later rows win); also how many malformed rows (e.g. a
    line cut by a crash) were dropped."""
    rows: dict[Key, Row] = {}
    dropped = 0
    if not path.exists():
        return rows, dropped
    with open(path, newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            row = {column: (record.get(column) or "") for column in CSV_COLUMNS}
            if not (row["image"] and row["codec"] and row["point"]) or _float(row["bytes"]) is None:
                dropped += 1
                continue
            rows[(row["image"], row["codec"], row["point"])] = row
    return rows, dropped


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8, newlines as given) atomically, making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode("utf-8"))


def csv_text(columns: Sequence[str], records: Iterable[dict]) -> str:
    """A CSV table with a header line and ``\\n`` line ends (cells missing from a record are empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def write_rows(path: Path, rows: Iterable[Row]) -> None:
    """Write a per-image CSV (all of :data:`CSV_COLUMNS`) atomically."""
    write_text(path, csv_text(CSV_COLUMNS, rows))


class Store:
    """The per-image rows and feature files of one report folder, as this run sees them.

    ``image_columns``: the per-image metrics this run measures; ``extractor``: the FID/KID feature
    extractor's name, or None when no set metric is measured (a row is then complete without
    features). ``dropped``: malformed rows found in the CSV.
    """

    def __init__(self, report_dir: Path, image_columns: Sequence[str], extractor: str | None) -> None:
        self.csv_path = report_dir / PER_IMAGE_CSV
        self.rows, self.dropped = read_rows(self.csv_path)
        self.image_columns = list(image_columns)
        self.extractor = extractor
        self.feature_dir = report_dir / "features" / slug(extractor or "none")

    def other_models(self, model_hex: str) -> set[str]:
        """Ids of the crdr models, other than ``model_hex``, whose rows the CSV holds."""
        return {row["model"] for row in self.rows.values() if row["codec"] == CRDR and row["model"] != model_hex}

    def feature_path(self, codec_name: str, point: str, image: str) -> Path:
        """Where the features of ``image`` coded by ``codec_name`` at ``point`` are cached."""
        return self.feature_dir / slug(codec_name) / slug(point) / f"{slug(image)}.npy"

    def reference_path(self, image: str) -> Path:
        """Where the features of the original ``image`` are cached."""
        return self.feature_dir / "reference" / f"{slug(image)}.npy"

    def is_complete(self, key: Key) -> bool:
        """Whether the row of ``key`` has every metric of this run (and its features)."""
        row = self.rows.get(key)
        if row is None or any(row[column] == "" for column in self.image_columns):
            return False
        image, codec_name, point = key
        return self.extractor is None or self.feature_path(codec_name, point, image).exists()

    def pending(self, keys: Iterable[Key]) -> int:
        """How many of ``keys`` still need coding."""
        return sum(not self.is_complete(key) for key in keys)

    def put(self, key: Key, values: dict[str, float | int | str | None]) -> None:
        """Store the row of ``key``. Metrics an earlier run measured and this one did not ask for
        are kept."""
        row = {column: "" for column in CSV_COLUMNS}
        row.update(image=key[0], codec=key[1], point=key[2])
        row.update({column: cell(value) for column, value in values.items()})
        old = self.rows.get(key)
        if old is not None:
            for column in IMAGE_METRICS:
                if row[column] == "" and old[column] != "":
                    row[column] = old[column]
        self.rows[key] = row

    def save(self) -> None:
        write_rows(self.csv_path, self.rows.values())
