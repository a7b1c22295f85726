"""Arrays larger than memory as .npy files: written block by block under a temp name, read back row by row."""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..artifacts import atomic_write

Put = Callable[[int, np.ndarray], None]  # put(start, block): rows start .. start + len(block) of the file
_COPY_BYTES = 16 << 20  # what one read holds when a file is shortened


def write_rows(path: str | Path, shape: tuple[int, ...], dtype, fill: Callable[[Put], int | None]) -> int:
    """Write the .npy `path` (`shape`, `dtype`, zeros where nothing is put) through `fill(put)`; returns its rows.

    `put(start, block)` writes rows at `start` and may be called from several threads at once. `fill` returns
    how many leading rows to keep (None = all): the file is shortened to them. Nothing is memory-mapped while
    writing, so the process holds the blocks in flight, never the array; the file appears under `path` only when
    complete (artifacts.atomic_write). Read it back with `np.load(path, mmap_mode="r")` or `RowView`.
    """
    dtype, shape = np.dtype(dtype), tuple(int(s) for s in shape)
    row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
    kept = shape[0]

    def write(tmp: str) -> None:
        nonlocal kept
        header = _create(tmp, shape, dtype)
        lock = threading.Lock()
        with open(tmp, "r+b") as f:

            def put(start: int, block: np.ndarray) -> None:
                block = np.ascontiguousarray(block, dtype=dtype)
                if block.shape[1:] != shape[1:] or start < 0 or start + len(block) > shape[0]:
                    raise ValueError(f"{path}: rows {start}..{start + len(block)} of shape {block.shape[1:]} do not "
                                     f"fit an array of shape {shape}")
                if block.size:
                    with lock:
                        f.seek(header + start * row_bytes)
                        f.write(block.data)

            n = fill(put)
        if n is not None and n < shape[0]:
            kept = int(n)
            _shorten(tmp, header, row_bytes, (kept, *shape[1:]), dtype)

    atomic_write(path, write)
    return kept


def _create(path: str, shape: tuple[int, ...], dtype: np.dtype) -> int:
    """An .npy file of zeros (sparse on disk); returns the header's length, where row 0 starts."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    header = int(mm.offset)
    del mm  # unmapped: rows are written with plain file writes
    return header


def _shorten(path: str, header: int, row_bytes: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Keep the first shape[0] rows of the .npy at `path`: a new header, the rows copied in bounded reads."""
    part = f"{path}.part"
    try:
        new_header = _create(part, shape, dtype)
        left = shape[0] * row_bytes
        with open(path, "rb") as src, open(part, "r+b") as dst:
            src.seek(header)
            dst.seek(new_header)
            while left:
                chunk = src.read(min(left, _COPY_BYTES))
                if not chunk:
                    raise OSError(f"{path}: ended {left} bytes early while it was shortened")
                dst.write(chunk)
                left -= len(chunk)
        os.replace(part, path)
    finally:
        Path(part).unlink(missing_ok=True)


class RowView:
    """Rows `kept` (default: all) of an (N, ...) array, in order: what `prepare` holds instead of copying the rows
    it keeps out of a cache file.

    `view[i]`, `view[rows]` (ints or bools), `view[a:b:k]` return a new in-memory ndarray of just those rows. Over a
    .npy memory map they are read from the file with `os.preadv` (runs of consecutive rows in one read), so the
    page cache holds the file and the process holds only the rows asked for; `len`, `shape`, `dtype` as an array's.
    """

    def __init__(self, base: np.ndarray, kept: np.ndarray | None = None):
        self.base = base
        self.kept = None if kept is None else np.asarray(kept, dtype=np.int64)
        self._file = None
        top_map = isinstance(base, np.memmap) and isinstance(base.base, mmap.mmap)  # not a view of one
        if top_map and base.filename and base.flags.c_contiguous and hasattr(os, "preadv"):
            self._file = open(base.filename, "rb")  # noqa: SIM115 - lives as long as the view; the inode too
            self._offset = int(base.offset)
        self._row_bytes = base.dtype.itemsize * int(np.prod(base.shape[1:], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.base) if self.kept is None else len(self.kept)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    @property
    def ndim(self) -> int:
        return self.base.ndim

    def __repr__(self) -> str:
        where = f" of {self.base.filename}" if isinstance(self.base, np.memmap) else ""
        return f"RowView(shape={self.shape}, dtype={self.dtype}{where})"

    def __array__(self, dtype=None, copy=None):
        out = self[:]  # every row, in memory: for small arrays and tests
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key):
        if isinstance(key, tuple):  # rows first, then the rest within the rows read
            first, rest = key[0], key[1:]
            rows = self[first]
            return rows[rest] if np.ndim(first) == 0 and not isinstance(first, slice) else rows[(slice(None), *rest)]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            positions = np.arange(start, stop, step, dtype=np.int64)
        elif np.ndim(key) == 0:
            i = int(key)
            if not -len(self) <= i < len(self):
                raise IndexError(f"row {i} is out of range for {len(self)} rows")
            return self._read(np.array([i % len(self)], dtype=np.int64))[0]
        else:
            positions = np.asarray(key)
            if positions.dtype == bool:
                if positions.shape != (len(self),):
                    raise IndexError(f"a boolean row mask must have {len(self)} entries, got {positions.shape}")
                positions = np.flatnonzero(positions)
            positions = positions.astype(np.int64, copy=False)
            if positions.size and (positions.min() < -len(self) or positions.max() >= len(self)):
                raise IndexError(f"rows out of range for {len(self)} rows")
            positions = np.where(positions < 0, positions + len(self), positions)
        return self._read(positions)

    def _read(self, positions: np.ndarray) -> np.ndarray:
        rows = positions if self.kept is None else self.kept[positions]
        if self._file is None:
            return np.array(self.base[rows])
        out = np.empty((len(rows), *self.base.shape[1:]), dtype=self.base.dtype)
        buf = memoryview(out.reshape(-1).view(np.uint8))
        if not len(rows):
            return out
        starts = np.flatnonzero(np.diff(rows) != 1) + 1  # runs of consecutive rows: one read each
        for a, b in zip(np.r_[0, starts], np.r_[starts, len(rows)], strict=True):
            _read_into(self._file.fileno(), buf[a * self._row_bytes : b * self._row_bytes],
                       self._offset + int(rows[a]) * self._row_bytes)
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _read_into(fd: int, buf: memoryview, offset: int) -> None:
    while len(buf):
        got = os.preadv(fd, [buf], offset)
        if got <= 0:
            raise OSError(f"file ended {len(buf)} bytes early at offset {offset}")
        buf, offset = buf[got:], offset + got
