"""Checks for uploaded files: photos that must decode, and zips of photos extracted without danger."""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import time
import uuid
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
ARCHIVES = (".zip", ".jar", ".gz", ".tgz", ".tar", ".7z", ".rar", ".bz2", ".xz")
MAX_NAME_BYTES = 255  # one file or folder name (Linux, macOS and Windows all stop here)
MAX_PATH_CHARS = 1024  # a whole path inside the zip
_SMALL = 1 << 20  # a member this small may compress any amount (a flat JPEG, a CSV); the whole-zip cap still counts it


def safe_extract(data: bytes, dest: Path, max_total: int = 2 << 30, max_ratio: float = 100.0,
                 max_entries: int = 200_000, max_file: int = 100 << 20) -> ZipResult:
    """Extract a zip of product photos (and optionally its CSV) into `dest`, refusing dangerous entries.

    Refused, each with its own one-line message, while the rest is extracted: paths that climb out (``../``) or
    are absolute, symlinks, nested archives, names over MAX_NAME_BYTES (a path over MAX_PATH_CHARS), a name given
    twice or a file that another entry uses as a folder (``a.png`` and ``a.png/b.png``), files that inflate more
    than `max_ratio` times or beyond `max_file`, and file types that aren't photos or catalogues. The whole
    archive is capped too: what it extracts in all stays under `max_total` bytes and `max_ratio` times the zip's
    own size (many small members of zeros can't add up to a bomb). Sizes are enforced while reading, so a lying
    header can't get past them; nothing is left half-written.
    """
    dest = Path(dest).resolve()
    problems: list[str] = []
    files: dict[str, Path] = {}
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        return ZipResult({}, [f"not a readable zip file ({err})"])
    budget = min(max_total, int(max_ratio * len(data)) + (1 << 20))  # the whole archive's inflated bytes
    total = 0
    with zf:
        infos = zf.infolist()
        if len(infos) > max_entries:
            problems.append(f"the zip holds {len(infos):,} entries; only the first {max_entries:,} are read")
            infos = infos[:max_entries]
        clashes = _clashes(infos)
        for info in infos:
            name = info.filename
            shown = repr(name) if any(ord(c) < 32 for c in name) else name
            if len(shown) > 300:
                shown = shown[:200] + "…" + shown[-40:]
            if info.is_dir():
                continue
            why = _refusal(info, clashes, max_file, max_ratio)
            if why == "":
                continue  # macOS resource forks and hidden files: not products
            if why:
                problems.append(f"{shown}: {why}")
                continue
            if total + info.file_size > budget:
                problems.append(f"{shown}: refused — the zip's contents exceed {_size(budget)} in all "
                                f"({max_ratio:.0f}x the zip's size, at most {_size(max_total)}; a zip bomb?)")
                continue
            parts = PurePosixPath(name.replace("\\", "/")).parts
            target = dest.joinpath(*parts).resolve()
            if dest not in target.parents:
                problems.append(f"{shown}: refused — the path points outside the upload folder")
                continue
            try:
                body = _inflate(zf, info, min(max_file, budget - total), max_ratio)
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError) as err:
                problems.append(f"{shown}: could not be read ({err})")
                continue
            if isinstance(body, str):
                problems.append(f"{shown}: {body}")
                continue
            try:
                _write(target, body)
            except OSError as err:
                problems.append(f"{shown}: could not be written ({err.strerror or err})")
                continue
            total += len(body)
            files[name] = target
    return ZipResult(files, problems)


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 1 << 30 else f"{n / 2**20:.1f} MB" if n >= 1 << 20 else f"{n:,} bytes"


def _clashes(infos: list[zipfile.ZipInfo]) -> dict[int, str]:
    """{id(entry): why it is refused} for names given twice (the first one stays) and for files under a name
    another entry has as a file (``a.png/b.png`` beside ``a.png``: one path can't be both)."""
    seen: set[tuple[str, ...]] = set()
    out: dict[int, str] = {}
    paths = [(i, PurePosixPath(i.filename.replace("\\", "/")).parts) for i in infos if not i.is_dir()]
    files = {parts for _, parts in paths}
    for info, parts in paths:
        clash = next((parts[:k] for k in range(1, len(parts)) if parts[:k] in files), None)
        if parts in seen:
            out[id(info)] = "refused — another entry of the zip has the same name"
        elif clash:
            out[id(info)] = f"refused — {'/'.join(clash)} is a file in the zip, so it can't be a folder too"
        seen.add(parts)
    return out


def _refusal(info: zipfile.ZipInfo, clashes: dict[int, str], max_file: int, max_ratio: float) -> str | None:
    """Why an entry is refused, from its name and header alone; "" to skip it silently, None to extract it."""
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts or not parts:
        return "refused — the path points outside the upload folder"
    if parts[0] == "__MACOSX" or parts[-1].startswith("."):
        return ""
    if stat.S_ISLNK(info.external_attr >> 16):
        return "refused — symbolic links are not extracted"
    if len(name) > MAX_PATH_CHARS or any(len(p.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for p in parts):
        return (f"refused — the name is too long (a file or folder name holds at most {MAX_NAME_BYTES} bytes, "
                f"a path {MAX_PATH_CHARS} characters)")
    if id(info) in clashes:
        return clashes[id(info)]
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in ARCHIVES:
        return "refused — archives inside the zip are not opened"
    if suffix not in ZIP_KEEP:
        return "skipped — not a photo (png, jpg, webp, gif) or a catalogue file"
    if info.file_size > max_file:
        return f"refused — {info.file_size / 2**20:.0f} MB is over the {max_file / 2**20:.0f} MB limit per file"
    if info.compress_size and info.file_size / info.compress_size > max_ratio and info.file_size > _SMALL:
        return f"refused — it would inflate {info.file_size / info.compress_size:.0f}x (a zip bomb?)"
    return None


def _inflate(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, max_ratio: float) -> bytes | str:
    """The entry's bytes, read at most `limit` + 1 bytes far; a str says why it was refused instead."""
    with zf.open(info) as src:
        head = src.read(min(limit, 1 << 16) + 1)
        if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
            return "refused — archives inside the zip are not opened"
        chunks, size = [head], len(head)
        while size <= limit and (chunk := src.read(1 << 20)):
            chunks.append(chunk)
            size += len(chunk)
    if size > limit or (info.compress_size and size / info.compress_size > max_ratio and size > _SMALL):
        return "refused — it inflates beyond its declared size or the limits"
    return b"".join(chunks)


def _write(target: Path, body: bytes) -> None:
    """`body` at `target` under a temp name, then renamed: a failed write (a full disk) leaves nothing behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{uuid.uuid4().hex[:12]}.part")
    try:
        tmp.write_bytes(body)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def discard(folder: str | Path) -> None:
    """Delete an upload's folder once nothing needs its files (a missing one, or none given, is fine)."""
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def sweep(parent: str | Path, max_age_s: float = 86_400.0) -> list[Path]:
    """Delete the upload folders in `parent` untouched for `max_age_s` (left by app sessions that ended);
    the deleted ones."""
    gone = []
    for folder in Path(parent).iterdir() if Path(parent).is_dir() else []:
        try:
            old = folder.is_dir() and not folder.is_symlink() and time.time() - folder.stat().st_mtime > max_age_s
        except OSError:
            continue
        if old:
            discard(folder)
            gone.append(folder)
    return gone
