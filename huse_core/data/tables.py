"""Reading a shop's table (CSV, TSV, Parquet; a file or uploaded bytes) and finding its columns by name."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from . import csvtext as text

_PEEK_BYTES = 4 << 20  # what a peek at a table's first rows reads of a file

# Column names auto-detected (any case) when no flag names the column; the first match wins.
TEXT_COLS = ("title", "productDisplayName", "name", "product_name")
IMAGE_COLS = ("image", "image_path", "filename", "file")
LEVEL_COLS = ("masterCategory", "subCategory", "articleType")
ATTRIBUTE_COLS = ("gender", "baseColour", "season", "usage", "pattern")


def read_table(source: str | Path | bytes, name: str = "", nrows: int | None = None,
               missing_as_nan: bool = True) -> pd.DataFrame:
    """A catalogue table: a CSV, TSV or Parquet file, or an uploaded one's bytes with its file `name` (the
    extension picks the format). CSV cells are text, decoded and split as text.decode_csv finds (UTF-8 with or
    without a BOM, UTF-16, a legacy code page such as Excel's cp1252; `,` `;` tab or `|`). Rows holding bytes of
    another encoding are kept with the bad bytes shown as U+FFFD and listed in `table.attrs["bad_rows"]` ({row
    position: why}), for callers to report and skip. `nrows` reads only the first rows. `missing_as_nan`: empty
    cells and pandas' NA words ("NA", "null", ...) become NaN, else they stay text. Anything unreadable is a
    ValueError naming the file."""
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else None
    path = Path(name) if data is not None else Path(source)
    if data is None and not path.is_file():
        raise ValueError(f"catalogue file not found: {path} — pass --catalog with a CSV or Parquet file")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:  # non-text cells (int ids, lists for multi-label) are handled by _cells / _multi
            table = pd.read_parquet(io.BytesIO(data) if data is not None else path)
        except Exception as err:  # noqa: BLE001 - pyarrow raises its own error types
            raise ValueError(f"could not read {path} as Parquet: {err}") from None
        return table if nrows is None else table.head(nrows)
    if data is None:
        with open(path, "rb") as f:
            data = f.read(_PEEK_BYTES if nrows is not None else -1)  # a peek at the columns needs the start only
        if nrows is not None and len(data) == _PEEK_BYTES:  # end on a whole line (UTF-16/32: whole characters)
            wide = b"\x00" in data[:8192]
            data = data[: len(data) - len(data) % 4] if wide else data[: data.rfind(b"\n") + 1] or data
    decoded = text.decode_csv(data, str(path))
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else text.sniff_separator(decoded.text)
    try:
        table = pd.read_csv(io.StringIO(decoded.text), dtype=str, keep_default_na=missing_as_nan, sep=sep,
                            nrows=nrows)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise ValueError(f"could not read {path} as CSV: {' '.join(str(err).split())}") from None
    table.attrs["encoding"], table.attrs["separator"] = decoded.encoding, sep
    table.attrs["bad_rows"] = text.bad_rows(table, decoded) if decoded.replaced else {}
    return table


def matching_columns(columns, candidates: tuple[str, ...]) -> list[str]:
    """The `columns` named like one of `candidates` (any case), in the candidates' order: what reading a
    catalogue auto-detects from, e.g. matching_columns(cols, TEXT_COLS)[0] is the title column."""
    lower = {str(c).lower(): c for c in columns}
    return [lower[c.lower()] for c in candidates if c.lower() in lower]


def pick_column(cols: list[str], given: str, candidates: tuple[str, ...] = (), what: str = "", flag: str = ""):
    """The column a flag names (it must exist), else the first auto-detected candidate, else None."""
    lower = {c.lower(): c for c in cols}
    if given:
        if given in cols:
            return given
        hint = f"pass {flag} {lower[given.lower()]}" if given.lower() in lower else f"pass {flag} with one of them"
        raise ValueError(f"{what} column '{given}' not found; columns are: {', '.join(cols)} — {hint}")
    return next((lower[c.lower()] for c in candidates if c.lower() in lower), None)


