"""The bad-input corpus of tests/test_bad_inputs.py, generated in memory (no committed binaries).

Each item says what it is, whether the workbench must refuse it or accept it, and for refusals a fragment of
the message that names the problem, so every check of the corpus is "this input, this outcome".
"""

from __future__ import annotations

import io
import shutil
import stat
import struct
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

RED, BLUE = (255, 0, 0), (0, 0, 255)
WIDE = (12000, 1600)  # the very wide photo: 19 Mpx, 58 MB as RGB if it were decoded at full size


@dataclass(frozen=True)
class Bad:
    """One corpus item: `name` (a file name for files), `data` (bytes or a title), and the expected outcome."""

    kind: str  # "image" | "title" | "catalogue" | "archive" | "table"
    name: str
    data: bytes | str
    refused: bool  # True: a one-line message naming `problem`; False: used like any good input
    problem: str = ""  # a fragment every refusal message for this item contains


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG signature and IHDR declaring width x height (900 Mpx), then a few bytes of data: a decoder
    that trusts the header would allocate 2.7 GB before finding out."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def red_top(w: int = 40, h: int = 80) -> Image.Image:
    """Tall: red upper half, blue lower half, so "upright" can be read off the pixels."""
    img = Image.new("RGB", (w, h), BLUE)
    img.paste(RED, (0, 0, w, h // 2))
    return img


def photo(seed: int = 0, size=(64, 80)) -> Image.Image:
    """A noisy photo-like picture (JPEG needs texture to make a file worth truncating)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(base).resize(size, Image.Resampling.BICUBIC)


# Files in formats that are no photos, named .png: Pillow would open them by content, and EPS runs Ghostscript.
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 40 40\n%%EndComments\n"
       b"(gs-ran) print newpath 0 0 moveto 40 40 lineto stroke showpage\n%%EOF\n")
PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> "
       b"endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")


def images() -> list[Bad]:
    """The 12 image files: 6 refused, 6 that must decode (upright, RGB on white)."""
    full = _save(photo(1), "JPEG", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated by 90 degrees; the viewer is told to turn it back
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([0, 255, 0] + [255, 0, 0] + [0, 0, 0] * 254)
    palette.paste(1, (20, 0, 40, 40))  # left half index 0 (transparent), right half red
    frames = [Image.new("RGB", (40, 40), c) for c in (RED, BLUE, (0, 255, 0))]
    wide = Image.new("RGB", WIDE, RED)
    wide.paste(BLUE, (WIDE[0] // 2, 0, WIDE[0], WIDE[1]))
    return [
        Bad("image", "zero-bytes.jpg", b"", True, "empty file (0 bytes)"),
        Bad("image", "truncated.jpg", full[: len(full) // 2], True, "truncated"),
        Bad("image", "text-file.jpg", b"Product list, not a photo\nid,title\n1,shirt\n", True, "not an image"),
        Bad("image", "bomb-30000x30000.png", bomb_png(), True, "too large: 30000x30000 px"),
        Bad("image", "16-bit.png", _save(Image.fromarray(np.full((40, 40), 40000, np.uint16)), "PNG"), False),
        Bad("image", "cmyk.jpg", _save(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG", quality=95), False),
        Bad("image", "palette-transparent.png", _save(palette, "PNG", transparency=0), False),
        Bad("image", "animated.gif", _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100,
                                           loop=0), False),
        Bad("image", "exif-rotated.jpg", _save(red_top().transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95,
                                               exif=exif.tobytes()), False),
        Bad("image", "wide-12000px.jpg", _save(wide, "JPEG", quality=80), False),
        Bad("image", "postscript-named.png", EPS, True, "format EPS is not accepted"),
        Bad("image", "pdf-named.png", PDF, True, "format PDF is not accepted"),
    ]


def titles() -> list[Bad]:
    """The 10 titles: empty and whitespace are refused; the rest are searched and classified like any title (a
    formula is text: it goes out of every CSV with a leading apostrophe)."""
    return [
        Bad("title", "empty", "", True, "nothing to"),
        Bad("title", "whitespace", " \t \n ", True, "nothing to"),
        Bad("title", "100,000 characters", ("Blue striped cotton shirt for men " * 3031)[:100_000], False),
        Bad("title", "Chinese", "男士蓝色条纹棉衬衫", False),
        Bad("title", "Arabic", "قميص قطني مخطط باللون الأزرق للرجال", False),
        Bad("title", "Cyrillic", "Мужская синяя рубашка в полоску", False),
        Bad("title", "emoji", "👕🔥 Blue shirt 💯✨", False),
        Bad("title", "script tag", "<script>alert(1)</script>", False),
        Bad("title", "Markdown", "**bold** [x](http://e)", False),
        Bad("title", "spreadsheet formula", '=HYPERLINK("http://example.com/x","Blue shirt")', False),
    ]


def catalogue_rows() -> list[Bad]:
    """The 8 catalogue problems: 6 rows of a catalogue that otherwise trains (one of them kept) and 2 whole files.

    `problem` is the command line's wording; the app's add-many screen words its own per-row messages.
    """
    return [
        Bad("catalogue", "missing image file", "corpus/not-there.jpg", True, "missing image file"),
        Bad("catalogue", "duplicate id", "", True, "duplicate id"),
        Bad("catalogue", "empty label", "", True, "missing label articleType"),
        Bad("catalogue", "../ image path", "../outside.png", True, "image path outside the catalogue folder"),
        Bad("catalogue", "absolute image path outside", "", True, "image path outside the catalogue folder"),
        Bad("catalogue", "class with one product", "Kilts", False),  # kept, merged into "other"
        Bad("catalogue", "missing column", "", True, "no title column found"),
        Bad("catalogue", "not a CSV (a PNG renamed .csv)", "", True, "looks like a binary file"),
    ]


def zip_bytes(entries: list[tuple[str, bytes]], symlinks: dict[str, str] | None = None) -> bytes:
    """A zip of (name, data) entries (deflated) plus symlink entries name -> target."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


LONG_NAME = "a" * 252 + ".png"  # 256 bytes: one more than a file name may hold


def archive_entries(good_png: bytes) -> list[Bad]:
    """The 7 dangerous zip entries of the app's photo upload (each refused, the rest of the zip extracted); the
    name clash needs a good entry good.png in the same zip."""
    return [
        Bad("archive", "../../escaped.png", good_png, True, "points outside the upload folder"),
        Bad("archive", "/tmp/absolute.png", good_png, True, "points outside the upload folder"),
        Bad("archive", "link.png", "/etc/passwd".encode(), True, "symbolic links are not extracted"),
        Bad("archive", "bomb.png", b"\0" * (16 << 20), True, "zip bomb"),  # 16 MB of zeros: ~1000x
        Bad("archive", "nested.zip", zip_bytes([("inner.png", good_png)]), True, "archives inside the zip"),
        Bad("archive", "good.png/b.png", good_png, True, "is a file in the zip, so it can't be a folder too"),
        Bad("archive", LONG_NAME, good_png, True, "the name is too long"),
    ]


def small_bombs(n: int = 64, size: int = 1 << 20) -> list[tuple[str, bytes]]:
    """n zip entries of `size` zero bytes each (about 1000x each, under a per-file guard): only a cap on the
    whole archive stops them."""
    return [(f"zeros-{i}.png", b"\0" * size) for i in range(n)]


# ---------------------------------------------------------------- one table in the encodings shops export

# Titles holding the characters Excel's code pages differ on; the ids must survive the byte-order mark.
TABLE_ROWS = [("sku-1", "Café crème T-shirt – 20 €", "a.png"), ("sku-2", "Men’s “Nordvik” jumper", "b.png"),
              ("sku-3", "Straße Jeans", "c.png")]


def table_text(sep: str = ",") -> str:
    return "\r\n".join([sep.join(("id", "title", "image"))] + [sep.join(r) for r in TABLE_ROWS]) + "\r\n"


def tables() -> list[Bad]:
    """The 6 encodings of one 3-row table: all read with the right titles and ids, except the mixed file's row
    with a stray Latin-1 byte, which is reported by its number while the rest read as UTF-8."""
    mixed = table_text().encode("utf-8").replace("Straße".encode(), "Straße".encode("latin-1"))
    return [
        Bad("table", "utf8-bom.csv", b"\xef\xbb\xbf" + table_text().encode("utf-8"), False),
        Bad("table", "excel-cp1252-semicolon.csv", table_text(";").encode("cp1252"), False),
        Bad("table", "utf16-tab.csv", table_text("\t").encode("utf-16"), False),  # Excel's "Unicode text"
        Bad("table", "utf16le-no-bom.csv", table_text().encode("utf-16-le"), False),
        Bad("table", "pipe.csv", table_text("|").encode("utf-8"), False),
        Bad("table", "mixed-latin1-row.csv", mixed, True, "row 3 (id sku-3): text that is not UTF-8"),
    ]


def archive(items: list[Bad], extra: list[tuple[str, bytes]]) -> bytes:
    """One zip holding the `extra` (good) entries and every archive item, the symlink as a real symlink."""
    entries = list(extra) + [(b.name, b.data) for b in items if b.name != "link.png"]
    return zip_bytes(entries, {b.name: b.data.decode() for b in items if b.name == "link.png"})


# ---------------------------------------------------------------- a catalogue holding every bad row


def training_catalogue(corpus: dict, demo_csv: Path, root: Path) -> dict:
    """The demo shop's good rows plus a row per corpus image, title and catalogue-row problem, written to
    root/shop/metadata.csv. "bad" maps each refused row (1-based, as load reports count) to (item, fragments of
    its report line); "whole_files" holds the catalogue items that are whole files, not rows.
    """
    shop = root / "shop"
    shutil.copytree(demo_csv.parent / "images", shop / "images")
    shutil.copytree(corpus["dir"], shop / "corpus")
    demo = pd.read_csv(demo_csv, dtype=str)
    template = demo.iloc[0].to_dict()
    outside = root / "outside.png"
    outside.write_bytes((shop / template["image"]).read_bytes())  # it exists: only its place is wrong
    rows, bad, items = demo.to_dict("records"), {}, []

    def add(item: Bad, fragments: tuple[str, ...], **changes) -> None:
        rows.append({**template, "title": f"Corpus row {len(rows)} Blue Cap", **changes})
        items.append(item)
        if item.refused:
            bad[len(rows)] = (item, fragments)

    for i, item in enumerate(corpus["images"]):  # decode failures are named by their file
        add(item, (f"corpus/{item.name}: ", item.problem), id=f"img-{i}", image=f"corpus/{item.name}")
    for i, item in enumerate(corpus["titles"]):
        add(item, (f"row {len(rows) + 1} (id title-{i}): empty title",), id=f"title-{i}", title=item.data)
    changes = {"missing image file": {"image": "corpus/not-there.jpg"}, "duplicate id": {"id": template["id"]},
               "empty label": {"articleType": ""}, "../ image path": {"image": "../outside.png"},
               "absolute image path outside": {"image": str(outside)},
               "class with one product": {"articleType": "Kilts"}}
    whole_files = {}
    for i, item in enumerate(catalogue_rows()):
        if item.name not in changes:
            whole_files[item.name] = item
            continue
        change = {"id": f"cat-{i}", **changes[item.name]}
        where = f" {change['image']}" if "image" in change else ""
        add(item, (f"row {len(rows) + 1} (id {change['id']}): {item.problem}{where}",), **change)
    csv = shop / "metadata.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return {"csv": csv, "n": len(rows), "bad": bad, "items": items, "whole_files": whole_files}


# ---------------------------------------------------------------- the ledger of outcomes

LEDGER: list[tuple[str, str, str, str]] = []  # (kind, item, where, "refused" | "counted" | "accepted")


def record(item: Bad, where: str, refused: bool) -> None:
    LEDGER.append((item.kind, item.name, where, "refused" if refused else "accepted"))


def ledger_summary(failed: int) -> str:
    """One line: corpus size per kind, checks, places and outcomes (what the README quotes)."""
    if not LEDGER:
        return ""
    items = {(k, n) for k, n, _, _ in LEDGER}
    sizes = Counter(k for k, _ in items)
    outcomes = Counter(o for *_, o in LEDGER)
    places = {w for _, _, w, _ in LEDGER}
    return (f"bad-input corpus: {len(items)} items ({', '.join(f'{n} {k}s' for k, n in sorted(sizes.items()))}); "
            f"{len(LEDGER)} checks in {len(places)} places: {outcomes['refused']} refused with a one-line message, "
            f"{outcomes['counted']} refused and only counted (past the first 10 a load report names), "
            f"{outcomes['accepted']} accepted; " + (f"{failed} tests FAILED" if failed else "0 tracebacks"))


def plain(text) -> str:
    """Page text without the escaping backslashes and zero-width spaces ui.esc adds."""
    return str(text).replace("\\", "").replace("\u200b", "")
