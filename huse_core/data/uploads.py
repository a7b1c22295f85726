"""Checks for uploaded files: photos that must decode, and zips of photos extracted without danger."""

from __future__ import annotations

import io
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .images import ImageError, decode_image


def check_image(data: bytes, name: str = "upload") -> str | None:
    """None when `data` decodes as a photo, else a message naming the file and the problem."""
    try:
        decode_image(data, 32)
    except ImageError as err:
        return f"{name}: {err.reason}"
    return None


@dataclass
class ZipResult:
    files: dict[str, Path]  # entry name -> extracted file
    problems: list[str]  # one message per refused entry


ZIP_KEEP = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".csv", ".tsv", ".parquet")


def safe_extract(data: bytes, dest: Path, max_total: int = 2 << 30, max_ratio: float = 100.0,
                 max_entries: int = 200_000, max_file: int = 100 << 20) -> ZipResult:
    """Extract a zip of product photos (and optionally its CSV) into `dest`, refusing dangerous entries.

    Refused, each with its own message, while the rest is extracted: paths that climb out (``../``) or are
    absolute, symlinks, nested archives, files that inflate more than `max_ratio` times or beyond `max_file`,
    anything past `max_total` uncompressed bytes in all, and file types that aren't photos or catalogues.
    Sizes are enforced while reading, so a lying header can't get past them.
    """
    dest = Path(dest).resolve()
    problems: list[str] = []
    files: dict[str, Path] = {}
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        return ZipResult({}, [f"not a readable zip file ({err})"])
    total = 0
    with zf:
        infos = zf.infolist()
        if len(infos) > max_entries:
            problems.append(f"the zip holds {len(infos):,} entries; only the first {max_entries:,} are read")
            infos = infos[:max_entries]
        for info in infos:
            name = info.filename
            shown = repr(name) if any(ord(c) < 32 for c in name) else name
            if info.is_dir():
                continue
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts or not parts:
                problems.append(f"{shown}: refused — the path points outside the upload folder")
                continue
            if parts[0] == "__MACOSX" or parts[-1].startswith("."):
                continue  # macOS resource forks and hidden files: not products
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                problems.append(f"{shown}: refused — symbolic links are not extracted")
                continue
            suffix = PurePosixPath(name).suffix.lower()
            if suffix in (".zip", ".jar", ".gz", ".tgz", ".tar", ".7z", ".rar", ".bz2", ".xz"):
                problems.append(f"{shown}: refused — archives inside the zip are not opened")
                continue
            if suffix not in ZIP_KEEP:
                problems.append(f"{shown}: skipped — not a photo (png, jpg, webp, gif) or a catalogue file")
                continue
            if info.file_size > max_file:
                problems.append(f"{shown}: refused — {info.file_size / 2**20:.0f} MB is over the "
                                f"{max_file / 2**20:.0f} MB limit per file")
                continue
            if info.compress_size and info.file_size / info.compress_size > max_ratio and info.file_size > 1 << 20:
                problems.append(f"{shown}: refused — it would inflate {info.file_size / info.compress_size:.0f}x "
                                f"(a zip bomb?)")
                continue
            if total + info.file_size > max_total:
                problems.append(f"{shown}: refused — the zip's contents exceed {max_total / 2**30:.1f} GB in all")
                continue
            target = dest.joinpath(*parts).resolve()
            if dest not in target.parents:
                problems.append(f"{shown}: refused — the path points outside the upload folder")
                continue
            try:
                limit = min(max_file, max_total - total)
                with zf.open(info) as src:
                    head = src.read(min(limit, 1 << 16) + 1)
                    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
                        problems.append(f"{shown}: refused — archives inside the zip are not opened")
                        continue
                    chunks, size = [head], len(head)
                    while size <= limit and (chunk := src.read(1 << 20)):
                        chunks.append(chunk)
                        size += len(chunk)
                    if size > limit or (info.compress_size and size / info.compress_size > max_ratio
                                        and size > 1 << 20):
                        problems.append(f"{shown}: refused — it inflates beyond its declared size or the limits")
                        continue
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError) as err:
                problems.append(f"{shown}: could not be read ({err})")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"".join(chunks))
            total += size
            files[name] = target
    return ZipResult(files, problems)
