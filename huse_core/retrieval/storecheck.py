"""Checks of the added-products store's files before and while SQLite uses them: no planted link is written
through, a damaged file is named before SQLite reads it, and SQLite's errors become one line naming the file and
what to do."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .layout import added_path

_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database


class StoreError(ValueError):
    """The added-products store can't be used; the message names the file and what to do."""


MOVE_AWAY = "move it away (its products are then lost to this index)"


def check_files(out_dir: str | Path) -> None:
    """Refuse a store or photo folder that is a symbolic link or lies outside the index folder: the product must
    never write through a link someone planted (a link may point anywhere), and a damaged store is named before
    SQLite reads it."""
    out = Path(out_dir)
    path = added_path(out)
    base = out.resolve()
    for p in (path.parent, path.parent / "images", path, *(Path(f"{path}{s}") for s in ("-wal", "-shm", "-journal"))):
        if p.is_symlink() or (p.exists() and base not in p.resolve().parents):
            raise StoreError(f"{p} is a symbolic link or lies outside {out}: added products are kept only in plain "
                             f"files inside the run folder — {MOVE_AWAY}")
    if path.is_file():
        try:
            with open(path, "rb") as f:
                head = f.read(len(_HEADER))
        except OSError as err:
            raise StoreError(f"{path} can't be read ({err.strerror}): check its permissions") from None
        if head != _HEADER:
            why = "an empty file" if not head else "not an SQLite database"
            raise StoreError(f"{path} can't be read as the added-products store ({why}): {MOVE_AWAY}")


@contextmanager
def guarded(path: str | Path, busy_s: float) -> Iterator[None]:
    """SQLite's errors while using the store at `path` as one StoreError naming the file and what to do (`busy_s`:
    how long a writer waited for the lock)."""
    try:
        yield
    except sqlite3.Error as err:
        text = str(err)
        if "locked" in text or "busy" in text:
            msg = (f"{path} is busy: another `add` or the app kept it locked for over {busy_s:.0f} s — "
                   "let it finish, then run this again")
        elif "full" in text:
            msg = f"{path}: the disk is full ({text}) — free some space, then run this again"
        elif "readonly" in text or "unable to open" in text or "access permission" in text:
            msg = f"{path} can't be written ({text}): check the permissions of the run folder"
        elif isinstance(err, sqlite3.DatabaseError) and not isinstance(err, sqlite3.OperationalError):
            msg = f"{path} can't be read as the added-products store ({text}): {MOVE_AWAY}"
        else:
            msg = f"{path}: {text} — run this again; if it persists, {MOVE_AWAY}"
        raise StoreError(msg) from None
