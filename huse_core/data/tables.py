"""Reading a shop's table (CSV, TSV, Parquet; a file or uploaded bytes) and finding its columns by name."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

# Column names auto-detected (any case) when no flag names the column; the first match wins.
TEXT_COLS = ("title", "productDisplayName", "name", "product_name")
IMAGE_COLS = ("image", "image_path", "filename", "file")
LEVEL_COLS = ("masterCategory", "subCategory", "articleType")
ATTRIBUTE_COLS = ("gender", "baseColour", "season", "usage", "pattern")


def read_table(source: str | Path | bytes, name: str = "", nrows: int | None = None,
               missing_as_nan: bool = True) -> pd.DataFrame:
    """A catalogue table: a CSV, TSV or Parquet file, or an uploaded one's bytes with its file `name` (the
    extension picks the format). CSV cells are text, read as UTF-8 or else Latin-1 (Excel exports); `nrows` reads
    only the first rows. `missing_as_nan`: empty cells and pandas' NA words ("NA", "null", ...) become NaN, else
    they stay text. Anything unreadable is a ValueError naming the file."""
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else None
    path = Path(name) if data is not None else Path(source)
    if data is None and not path.is_file():
        raise ValueError(f"catalogue file not found: {path} — pass --catalog with a CSV or Parquet file")

    def opened():
        return io.BytesIO(data) if data is not None else path

    if path.suffix.lower() in (".parquet", ".pq"):
        try:  # non-text cells (int ids, lists for multi-label) are handled by _cells / _multi
            table = pd.read_parquet(opened())
        except Exception as err:  # noqa: BLE001 - pyarrow raises its own error types
            raise ValueError(f"could not read {path} as Parquet: {err}") from None
        return table if nrows is None else table.head(nrows)
    if data is not None:
        head = data[:8192]
    else:
        with open(path, "rb") as f:
            head = f.read(8192)
    if b"\x00" in head:
        raise ValueError(f"could not read {path} as CSV: it looks like a binary file, not text")
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    for enc in ("utf-8-sig", "latin-1"):  # shops export from Excel too
        try:
            return pd.read_csv(opened(), dtype=str, keep_default_na=missing_as_nan, sep=sep, encoding=enc,
                               nrows=nrows)
        except UnicodeDecodeError:
            continue
        except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
            raise ValueError(f"could not read {path} as CSV: {str(err).strip()}") from None
    raise ValueError(f"could not read {path} as CSV: unknown text encoding")


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


