"""CSV as text, both ways: decoding a shop's file (encoding, separator, rows with foreign bytes) and writing CSVs
no spreadsheet runs as formulas (OWASP's CSV-injection rule)."""

from __future__ import annotations

import codecs
import csv
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..artifacts import atomic_write

# Legacy code pages a table that isn't UTF-8 may be in, Excel's "CSV" exports first: when charset-normalizer finds
# several equally clean readings (a short file often fits many), the first one here wins.
LEGACY = ("cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1257", "cp1255", "cp1256", "cp874", "cp932",
          "shift_jis", "gb18030", "big5", "euc_kr", "euc_jp", "koi8_r", "mac_roman")
SEPARATORS = ",;\t|"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # OWASP: a cell starting with one of these may run as a formula
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_FOREIGN = re.compile("[\udc80-\udcff]+")  # bytes that did not decode, kept by errors="surrogateescape"
_SHOWN = "\ufffd"  # what such bytes show as once read


@dataclass
class Decoded:
    """A CSV file's text: `encoding` it was read in; `replaced`: bytes of another encoding were shown as U+FFFD."""

    text: str
    encoding: str
    replaced: bool = False


def decode_csv(data: bytes, name: str) -> Decoded:
    """A CSV file's bytes as text. A byte-order mark decides (UTF-8, UTF-16, UTF-32; the mark itself is dropped);
    else UTF-8 when the file is UTF-8, even with a few stray bytes of another encoding (those are U+FFFD and their
    rows reported, never the whole file re-read in another encoding); else a legacy code page that
    charset-normalizer finds (Excel's cp1252 on a tie). UTF-16 without a mark is read by its zero bytes; other
    binary files are refused."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _decode(data, encoding, name)
    head = data[:8192]
    if b"\x00" in head:
        odd, even = head[1::2].count(0), head[0::2].count(0)
        if odd > len(head) // 4 and even == 0:
            return _decode(data, "utf-16-le", name)
        if even > len(head) // 4 and odd == 0:
            return _decode(data, "utf-16-be", name)
        raise ValueError(f"could not read {name} as CSV: it looks like a binary file, not text")
    try:
        return Decoded(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError:
        pass
    loose = data.decode("utf-8", "surrogateescape")
    foreign = sum(len(m) for m in _FOREIGN.findall(loose))
    multibyte = sum(ord(c) > 0x7F for c in loose) - foreign
    if multibyte > foreign:  # mostly UTF-8: the odd foreign byte is the row's problem, not the file's
        return Decoded(_FOREIGN.sub(_SHOWN, loose), "utf-8", True)
    return _decode(data, _legacy_encoding(data, name), name)


def _decode(data: bytes, encoding: str, name: str) -> Decoded:
    try:
        return Decoded(data.decode(encoding), encoding.removesuffix("-sig"))
    except UnicodeDecodeError:
        pass
    try:
        loose = data.decode(encoding, "surrogateescape")
    except UnicodeDecodeError as err:  # UTF-16/32 with a broken tail can't keep the bytes
        raise ValueError(f"could not read {name} as {encoding.upper()} text ({err.reason} at byte {err.start}): "
                         "save it again as a UTF-8 CSV") from None
    return Decoded(_FOREIGN.sub(_SHOWN, loose), encoding.removesuffix("-sig"), True)


def _legacy_encoding(data: bytes, name: str) -> str:
    """The code page charset-normalizer reads `data` in most cleanly (ties: the first in LEGACY)."""
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data[: 1 << 20], cp_isolation=list(LEGACY)))
    if not matches:
        raise ValueError(f"could not read {name} as CSV: its text encoding is not UTF-8 nor one recognised — "
                         "save it again as a UTF-8 CSV")
    best = min(m.chaos for m in matches)
    clean = set()
    for m in matches:
        if m.chaos <= best + 0.01:
            clean |= {m.encoding, *m.could_be_from_charset}
    return next((e for e in LEGACY if e in clean), matches[0].encoding)


def sniff_separator(text: str) -> str:
    """The separator of a CSV's text (`,` `;` tab or `|`), found by csv.Sniffer over its first lines; `,` when the
    sniffer can't tell or picks one the header row does not hold."""
    sample = text[:65536]
    if len(text) > len(sample) and "\n" in sample:
        sample = sample[: sample.rfind("\n") + 1]
    header = sample.split("\n", 1)[0]
    try:
        sep = csv.Sniffer().sniff(sample, delimiters=SEPARATORS).delimiter
    except csv.Error:
        sep = ","
    if sep not in header:
        counts = {s: header.count(s) for s in SEPARATORS}
        sep = max(counts, key=counts.get) if max(counts.values()) else ","
    return sep


def bad_rows(table: pd.DataFrame, decoded: Decoded) -> dict[int, tuple[str, str]]:
    """{row position: (why, the first such cell)} of the rows holding bytes that are not `decoded.encoding` text
    (shown as U+FFFD)."""
    why = f"text that is not {decoded.encoding.upper()} (save the file as UTF-8)"
    out: dict[int, tuple[str, str]] = {}
    for column in table.columns:
        cells = table[column]
        if cells.dtype.kind in "biufcmM":
            continue
        for i, cell in cells.items():
            pos = table.index.get_loc(i)
            if pos not in out and isinstance(cell, str) and _SHOWN in cell:
                out[pos] = (why, f"{column}: {cell[:40]!r}")
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- writing


def safe_cell(value):
    """A text cell that a spreadsheet would take for a formula, with a leading apostrophe; others unchanged."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def formula_safe(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of `table` where no text cell or column name starts a formula (OWASP's CSV-injection rule), whatever
    the column's dtype holds text (object, pandas' str / string, categorical); numbers stay numbers."""
    out = table.copy()
    out.columns = [safe_cell(c) for c in out.columns]
    for i in range(out.shape[1]):
        cells = out.iloc[:, i]
        if cells.dtype.kind in "biufcmM":
            continue
        if isinstance(cells.dtype, pd.CategoricalDtype):
            cells = cells.astype(object)
        out.isetitem(i, cells.map(safe_cell))
    return out


def csv_bytes(table: pd.DataFrame) -> bytes:
    """`table` as UTF-8 CSV bytes, formula-safe: what every download of the app sends. Text cells are quoted
    (pandas leaves a carriage return in a cell unquoted otherwise, which splits the row in a spreadsheet)."""
    return formula_safe(table).to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC).encode("utf-8")


def write_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """`table` written formula-safe as a UTF-8 CSV at `path`, atomically: what every --csv output of the CLI
    writes."""
    data = csv_bytes(table)
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
