"""Decoding product photos with Pillow into fixed-size, white-padded RGB arrays (with an on-disk cache).

Over 300 lines: every photo passes one path (the format allow-list, the size check, the decode, the cache), and a
check kept apart from the decode it guards could be skipped.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from ..artifacts import atomic_write
from .rowfile import write_rows

# Pixels we are willing to allocate for one decoded photo (Pillow's own default, ~89 Mpx).
# JPEGs may declare more: draft() decodes them at 1/2..1/8 scale, and the limit applies after that.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
_CACHE_VERSION = 1  # bump when decoding changes so old caches stop matching
_WHITE = (255, 255, 255)
# The only formats a photo is decoded from. Pillow otherwise picks a plugin by content, whatever the file is
# called, and some plugins hand the file to other programs (EPS/PostScript runs Ghostscript).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
ACCEPTED = "photos must be JPEG, PNG, WEBP, GIF, BMP or TIFF"
_MAGIC = ((b"%PDF", "PDF"), (b"%!PS", "EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"<svg", "SVG"), (b"<?xml", "SVG"))

# Pillow warns (from PIL.Image) for images between its limit and twice it; we enforce our own limit
# below with a clear ImageError, so the warning is only noise, and catch_warnings isn't thread-safe.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning, module=r"PIL\.Image")


class ImageError(ValueError):
    """A photo that can't be used; the message names the file and the problem."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def _name(src) -> str:
    if isinstance(src, (bytes, bytearray)):
        return f"<{len(src)} bytes>"
    if isinstance(src, Image.Image):
        return "<PIL image>"
    return str(src)


def _open(src, name: str) -> Image.Image:
    """Open lazily (header only); file-level problems become ImageError."""
    if isinstance(src, (bytes, bytearray)):
        if len(src) == 0:
            raise ImageError(name, "empty file (0 bytes)")
        fp = io.BytesIO(src)
    else:
        try:
            if os.path.getsize(src) == 0:
                raise ImageError(name, "empty file (0 bytes)")
        except FileNotFoundError:
            raise ImageError(name, "file not found") from None
        fp = src
    try:
        return Image.open(fp, formats=FORMATS)
    except UnidentifiedImageError:
        other = _other_format(fp)
        if other:
            raise ImageError(name, f"format {other} is not accepted ({ACCEPTED})") from None
        raise ImageError(name, "not an image (format not recognised)") from None
    except Image.DecompressionBombError:
        raise ImageError(name, f"too large: {_declared_size(fp)} (limit {MAX_PIXELS:,} px)") from None
    except IsADirectoryError:
        raise ImageError(name, "is a folder, not an image file") from None
    except PermissionError:
        raise ImageError(name, "permission denied") from None


def _head(fp, n: int = 64) -> bytes:
    """The first `n` bytes of a file or an in-memory upload ("" when it can't be read)."""
    try:
        if isinstance(fp, io.BytesIO):
            return fp.getvalue()[:n]
        with open(fp, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _other_format(fp) -> str | None:
    """The name of a format outside FORMATS that a file is in, judged by its first bytes only: no plugin opens it
    (opening one can already run code of that format's, EPS runs Ghostscript)."""
    head = _head(fp)
    for magic, fmt in _MAGIC:
        if head.lstrip()[: len(magic)].lower() == magic.lower():
            return fmt
    Image.init()
    for fmt in Image.ID:
        if fmt in FORMATS:
            continue
        accept = Image.OPEN[fmt][1]
        try:
            if accept is not None and accept(head):
                return fmt
        except Exception:  # noqa: BLE001, S112 - a plugin's own prefix test failing means "not this format"
            continue
    return None


def _declared_size(fp) -> str:
    """'WxH px' from the header of a file Pillow refused to open (it raises before giving us the size)."""
    Image.init()
    try:
        f = fp if isinstance(fp, io.BytesIO) else open(fp, "rb")  # noqa: SIM115 - closed by `with f`
        with f:
            f.seek(0)
            prefix = f.read(16)
            for fmt in (f for f in Image.ID if f in FORMATS):  # Image.open's order, minus its bomb check
                factory, accept = Image.OPEN[fmt]
                if accept is None or accept(prefix) is True:
                    f.seek(0)
                    try:
                        w, h = factory(f, "").size
                        return f"{w}x{h} px"
                    except Exception:  # noqa: BLE001, S112 - not this format; try the next
                        continue
    except OSError:
        pass
    return "declared size over the limit"


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited onto white (product shots sit on white)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = float(arr.max()) if arr.size else 0.0
        if mode.startswith("I;16") or (mode == "I" and 255 < top <= 65535):
            arr = arr / 257.0  # 16-bit -> 8-bit (older Pillow opens 16-bit PNGs as "I")
        elif mode == "F" and top <= 1.0:
            arr = arr * 255.0  # float images usually hold 0..1
        elif top > 255:
            low = float(arr.min())
            arr = (arr - low) * (255.0 / max(top - low, 1e-12))  # unknown range: stretch
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if "transparency" in img.info and mode in ("P", "L", "RGB", "1"):
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, _WHITE)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if mode == "RGB":
        return img
    return img.convert("RGB")


def _decode(src, size: int, name: str) -> np.ndarray:
    own = not isinstance(src, Image.Image)
    opened = img = _open(src, name) if own else src
    try:
        w, h = img.size
        if w < 1 or h < 1:
            raise ImageError(name, f"empty image ({w}x{h} px)")
        if own and img.format == "JPEG":
            img.draft("RGB", (size, size))  # libjpeg decodes at 1/2..1/8 scale: fast, small memory
        if img.size[0] * img.size[1] > MAX_PIXELS:
            raise ImageError(name, f"too large: {w}x{h} px (limit {MAX_PIXELS:,} px)")
        try:
            img.load()  # first frame of animations: open() leaves us on frame 0
        except OSError as err:
            raise ImageError(name, f"truncated or corrupt image data ({err})") from None
        img = ImageOps.exif_transpose(img) or img  # phones store rotation in EXIF, not pixels
        img = _to_rgb(img)
        w, h = img.size
        scale = size / max(w, h)
        new = (max(1, min(size, round(w * scale))), max(1, min(size, round(h * scale))))
        if new != img.size:
            img = img.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)
        canvas = Image.new("RGB", (size, size), _WHITE)
        canvas.paste(img, ((size - new[0]) // 2, (size - new[1]) // 2))
        return np.array(canvas, dtype=np.uint8)
    finally:
        if own:
            opened.close()  # animations keep their file open until closed


def decode_image(src: str | Path | bytes | Image.Image, size: int) -> np.ndarray:
    """Decode one photo to uint8 (size, size, 3): upright, RGB on white, longer side = size, centred."""
    if size < 1:
        raise ValueError(f"image size must be a positive number of pixels, got {size}")
    name = _name(src)
    try:
        return _decode(src, size, name)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(name, "too large to decode (out of memory)") from None
    # Pillow's plugins signal malformed files with a zoo of exception types.
    except OSError as err:
        raise ImageError(name, f"truncated or corrupt image data ({err})") from None
    except (SyntaxError, EOFError, ValueError, IndexError, TypeError, KeyError, struct.error) as err:
        raise ImageError(name, f"unreadable image ({type(err).__name__}: {err})") from None


def as_image(image):
    """A path, bytes or PIL image as images.decode_image takes it; uint8 arrays become PIL images."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"an image array must be uint8 (H, W) or (H, W, 3|4), got {image.dtype} {image.shape}")
        return Image.fromarray(image)
    return str(image) if isinstance(image, Path) else image


def _cache_key(paths: list[str], size: int) -> str:
    digest = hashlib.sha1(f"v{_CACHE_VERSION}\nsize={size}\n".encode())
    for p in paths:
        try:
            st = os.stat(p)
            stamp = f"{st.st_mtime_ns}\t{st.st_size}"
        except OSError:
            stamp = "missing"
        digest.update(f"{os.path.abspath(p)}\t{stamp}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _load_cache(npy: Path, meta: Path, n: int, size: int):
    """(pixels memory-mapped read-only, ok, errors) of a complete cache, else None (decode again)."""
    try:
        info = json.loads(meta.read_text())
        pixels = np.load(npy, mmap_mode="r")  # caches written before chunked writing are the same .npy
    except (OSError, ValueError):
        return None  # no cache, or a damaged one: decode again
    if not isinstance(pixels, np.ndarray) or not isinstance(info, dict):
        return None  # not an .npy array (an older format): decode again
    if pixels.shape != (n, size, size, 3) or pixels.dtype != np.uint8 or info.get("n") != n:
        return None
    ok = np.ones(n, dtype=bool)
    ok[np.asarray(info.get("failed", []), dtype=np.int64)] = False
    return pixels, ok, list(info.get("errors", []))


def _decode_into(paths: list[str], size: int, put, progress: bool) -> tuple[np.ndarray, dict[int, str]]:
    """Decode `paths` in blocks of 64, handing each block to put(start, block); -> (ok, {row: 'path: reason'})."""
    n = len(paths)
    ok = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}

    def work(rows: range) -> int:
        block = np.zeros((len(rows), size, size, 3), dtype=np.uint8)  # failed rows stay zeros
        for j, i in enumerate(rows):
            try:
                block[j] = decode_image(paths[i], size)  # looked up at call time (tests patch it)
                ok[i] = True
            except ImageError as err:
                reasons[i] = f"{paths[i]}: {err.reason}"
            except Exception as err:  # noqa: BLE001 - one odd file must not sink a 44k-photo decode
                reasons[i] = f"{paths[i]}: {type(err).__name__}: {err}"
        put(rows.start, block)
        return len(rows)

    # Pillow releases the GIL while decoding and resizing, so threads use every core; blocks of photos per task
    # keep the per-future overhead small next to a ~1 ms thumbnail decode, and memory to a block per thread.
    chunks = [range(s, min(s + 64, n)) for s in range(0, n, 64)]
    with (
        ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool,
        tqdm(total=n, desc="decoding images", unit="img", disable=not progress) as bar,
    ):
        for done in pool.map(work, chunks):
            bar.update(done)
    return ok, reasons


def decode_many(
    paths: list[str], size: int, cache_dir: str | Path | None = None, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode all paths -> (pixels uint8 (N, size, size, 3), ok bool (N,), errors 'path: reason').

    Failed rows are zeros with ok False. With a `cache_dir` the photos are written there block by block as they
    decode, keyed by paths, mtimes and sizes, and `pixels` is that file memory-mapped read-only: memory holds a
    few blocks, never the array (read rows with rowfile.RowView). Without one, `pixels` is in memory: short lists.
    """
    paths = [str(p) for p in paths]
    n = len(paths)
    shape = (n, size, size, 3)
    if cache_dir is None or n == 0:
        pixels = np.zeros(shape, dtype=np.uint8)

        def put(start: int, block: np.ndarray) -> None:
            pixels[start : start + len(block)] = block

        ok, reasons = _decode_into(paths, size, put, progress)
        return pixels, ok, [reasons[i] for i in sorted(reasons)]

    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    key = _cache_key(paths, size)
    npy, meta = cache / f"pixels-{size}-{key}.npy", cache / f"pixels-{size}-{key}.json"
    hit = _load_cache(npy, meta, n, size)
    if hit is not None:
        return hit
    decoded: dict = {}

    def fill(put) -> None:
        decoded["ok"], decoded["reasons"] = _decode_into(paths, size, put, progress)

    write_rows(npy, shape, np.uint8, fill)
    ok, reasons = decoded["ok"], decoded["reasons"]
    failed = sorted(reasons)
    errors = [reasons[i] for i in failed]
    info = {"n": n, "size": size, "failed": failed, "errors": errors}
    atomic_write(meta, lambda tmp: Path(tmp).write_text(json.dumps(info)))
    return np.load(npy, mmap_mode="r"), ok, errors
