"""The store of products added after an index build: one SQLite database under index/delta/ and their photos.

Over 300 lines: one database's schema, reads, writes and id numbering, which must change together.

Why SQLite in WAL mode: the app's threads, a second app and the `add` command may add products at the same time.
Each batch of products is one transaction (its rows and both embeddings, one INSERT each: adding N products costs
O(N) however many are stored), writers queue on SQLite's lock (busy_timeout) instead of rewriting one shared file,
an id is UNIQUE so a product is never stored twice, and a `kill -9` mid-write leaves the last committed state (the
journal rolls the half-written batch back). WAL lets searches read while a batch is written. The store must sit on
a local disk (WAL needs shared memory between processes; network file systems don't give it).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .embed import ADDED_SPLIT
from .layout import DELTA, added_path, added_photo_path, legacy_added_path
from .storecheck import StoreError, check_files, guarded

STORE_FORMAT = 1  # the store's PRAGMA user_version; bump when its table changes incompatibly
BUSY_TIMEOUT_S = 120.0  # how long a writer waits for others' batches (each holds the lock well under a second)
AUTO_MAX = 10**15 - 1  # the largest N of an automatic id new-N: far below SQLite's 2**63 - 1, so N + 1 fits too
_AUTO_ID = re.compile(r"new-(\d{1,15})")  # ids given automatically: new-1, new-2, ...; longer ones are plain text
_BASE = ("seq", "id", "title", "image", "split", "fingerprint")  # read_added's columns besides one per head
_SCHEMA = (
    """CREATE TABLE added (
        seq INTEGER PRIMARY KEY,     -- the order products were added in
        id TEXT NOT NULL UNIQUE,     -- a second product with an id in use is refused, whoever writes it
        title TEXT NOT NULL,
        image TEXT NOT NULL,         -- the kept photo, relative to delta/
        split TEXT NOT NULL,
        labels TEXT NOT NULL,        -- JSON {head: predicted label}; multi-label heads "a|b"
        fingerprint TEXT NOT NULL,   -- the model that embedded and labelled the product
        auto_n INTEGER,              -- N of an id new-N: the next automatic id is new-(MAX + 1)
        dim INTEGER NOT NULL,
        image_emb BLOB NOT NULL,     -- dim float32 (native byte order)
        text_emb BLOB NOT NULL,
        content_key TEXT)            -- hash of source table, row, title, photo: a re-run adds no row twice""",
    "CREATE INDEX added_auto_n ON added(auto_n)",
    "CREATE INDEX added_content_key ON added(content_key)",
)
_ADD_CONTENT_KEY = ("ALTER TABLE added ADD COLUMN content_key TEXT",  # stores made before the column: same format
                    "CREATE INDEX IF NOT EXISTS added_content_key ON added(content_key)")
_COLUMNS = "id, title, image, split, labels, fingerprint, auto_n, dim, image_emb, text_emb, content_key"
_INSERT = f"INSERT INTO added ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"  # a second id: IntegrityError
_UPSERT = _INSERT + " ON CONFLICT(id) DO UPDATE SET " + ", ".join(
    f"{c} = COALESCE(excluded.{c}, {c})" if c == "content_key" else f"{c} = excluded.{c}"
    for c in _COLUMNS.split(", ")[1:])


def auto_number(pid: str) -> int | None:
    """N of an id of the form new-N with N from 1 to AUTO_MAX, else None (such an id is plain text)."""
    found = _AUTO_ID.fullmatch(pid)
    return int(found[1]) if found and 0 < int(found[1]) <= AUTO_MAX else None


@dataclass(frozen=True)
class IndexIds:
    """The ids an index build serves, which new products may not take, and the highest new-N among them (automatic
    ids continue past it). Made once per Searcher: checking an id against it costs O(1)."""

    ids: frozenset[str]
    max_auto: int = 0

    @classmethod
    def of(cls, ids) -> IndexIds:
        ids = frozenset(str(i) for i in ids)
        return cls(ids, max((n for n in map(auto_number, ids) if n is not None), default=0))


# -- opening --------------------------------------------------------------------------------------------------

def _connect(path: str | Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)  # transactions are explicit
    con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    con.execute("PRAGMA synchronous = FULL")  # a committed batch survives a power cut, not only a kill
    return con


def _create(out_dir: str | Path) -> None:
    """Make the store whole under a temp name (the table, WAL mode, and the products of an old Parquet store when
    there is one), then link it into place: no reader sees half of it, and when two processes race the first
    link wins and the other's copy is dropped (a link never replaces a file, a rename would)."""
    path, legacy = added_path(out_dir), legacy_added_path(out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"  # SQLite makes it, with the umask's mode
    try:
        con = _connect(tmp)
        try:
            con.execute("PRAGMA journal_mode = WAL")  # kept in the file: every later connection uses it
            con.execute("BEGIN")
            for statement in _SCHEMA:
                con.execute(statement)
            con.execute(f"PRAGMA user_version = {STORE_FORMAT}")
            if legacy.is_file():
                df, image_emb, text_emb = _read_legacy(legacy)
                con.executemany(_UPSERT, _rows(df, image_emb, text_emb, Path(out_dir) / DELTA))
            con.execute("COMMIT")
        finally:
            con.close()  # a clean close folds the WAL into the file and removes it
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made the store first: use theirs
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def open_store(out_dir: str | Path, create: bool = False) -> sqlite3.Connection | None:
    """A connection to an index folder's store; None when there is none and `create` is False.

    Old stores: products added before this store existed were kept in one Parquet file (delta/added.parquet).
    When that file is there and the SQLite store is not, its products are imported once, in the same atomic step
    that creates the store; the Parquet file is left as it was (later additions go to SQLite only).
    """
    path = added_path(out_dir)
    check_files(out_dir)
    if not path.is_file():
        if not create and not legacy_added_path(out_dir).is_file():
            return None
        with guarded(path, BUSY_TIMEOUT_S):
            _create(out_dir)
        check_files(out_dir)  # a link planted meanwhile
    with guarded(path, BUSY_TIMEOUT_S):
        con = _connect(path)
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
        except BaseException:
            con.close()
            raise
    if version != STORE_FORMAT:
        con.close()
        raise StoreError(f"{path} is an added-products store of format {version}, this version reads format "
                         f"{STORE_FORMAT}: use the version of huse_core that wrote it, or move the file away (its "
                         "products are then lost to this index)")
    return con


def _read_legacy(path: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The rows and embeddings of an old Parquet store (image paths as stored: relative to delta/)."""
    df = pd.read_parquet(path)
    as_matrix = (lambda col: np.stack(df[col].to_numpy()).astype(np.float32) if len(df)  # noqa: E731
                 else np.zeros((0, 0), np.float32))
    image_emb, text_emb = as_matrix("image_emb"), as_matrix("text_emb")
    df = df.drop(columns=["image_emb", "text_emb"])
    if "split" not in df:
        df["split"] = ADDED_SPLIT
    return df, image_emb, text_emb


# -- rows -----------------------------------------------------------------------------------------------------


def _params(product: dict, image_emb: np.ndarray, text_emb: np.ndarray, delta: Path) -> tuple:
    """The values of one product's row: keys id, title, image, fingerprint, optional split; any other key that
    isn't one of read_added's columns is a head and its label."""
    image = Path(str(product["image"]))
    try:
        image = image.relative_to(delta)  # kept relative: the run folder may move
    except ValueError:
        pass  # already relative (an old Parquet store's rows)
    labels = {h: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
              for h, v in product.items() if h not in _BASE and h != "added"}
    image_emb, text_emb = np.asarray(image_emb, np.float32), np.asarray(text_emb, np.float32)
    return (str(product["id"]), str(product["title"]), image.as_posix(), str(product.get("split") or ADDED_SPLIT),
            json.dumps(labels, ensure_ascii=False), str(product["fingerprint"]), auto_number(str(product["id"])),
            len(image_emb), image_emb.tobytes(), text_emb.tobytes(), product.get("content_key"))


def _rows(df: pd.DataFrame, image_emb: np.ndarray, text_emb: np.ndarray, delta: Path):
    """_params of every row of a read_added-style table."""
    for product, image, text in zip(df.to_dict("records"), image_emb, text_emb):
        yield _params(product, image, text, delta)


def read_added(out_dir: str | Path, dim: int, since: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Products added after the build, in the order they came: (table with absolute image paths, image_emb,
    text_emb); empty if none. The table: seq, id, title, image, split, fingerprint, one column per head.

    `since`: only the products after this seq (what a Searcher has not seen yet). One SELECT: a consistent snapshot
    while others write. Rows embedded at another dimension (an older model) come back as zeros until
    `adding.refresh_added` re-embeds them.
    """
    con = open_store(out_dir)
    rows = []
    if con is not None:
        try:
            with guarded(added_path(out_dir), BUSY_TIMEOUT_S):
                rows = con.execute("SELECT seq, id, title, image, split, fingerprint, labels, dim, image_emb, "
                                   "text_emb FROM added WHERE seq > ? ORDER BY seq", (int(since),)).fetchall()
        finally:
            con.close()
    delta = Path(out_dir) / DELTA
    df = pd.DataFrame([r[:6] for r in rows], columns=list(_BASE))
    df["seq"] = df["seq"].astype(np.int64)
    df["image"] = [str(delta / p) for p in df["image"]]  # stored relative: the run folder may move
    labels = [json.loads(r[6]) for r in rows]
    for head in dict.fromkeys(h for per in labels for h in per):
        df[head] = [per.get(head, "") for per in labels]
    image_emb, text_emb = np.zeros((len(rows), dim), np.float32), np.zeros((len(rows), dim), np.float32)
    for i, r in enumerate(rows):
        if r[7] == dim:
            image_emb[i], text_emb[i] = np.frombuffer(r[8], np.float32), np.frombuffer(r[9], np.float32)
    return df, image_emb, text_emb


def count_added(out_dir: str | Path) -> int:
    """How many products the store holds (every product ever added, folded into the index or not)."""
    con = open_store(out_dir)
    if con is None:
        return 0
    try:
        with guarded(added_path(out_dir), BUSY_TIMEOUT_S):
            return int(con.execute("SELECT COUNT(*) FROM added").fetchone()[0])
    finally:
        con.close()


@contextmanager
def _write(out_dir: str | Path) -> Iterator[sqlite3.Connection]:
    """The store opened for one write transaction: BEGIN IMMEDIATE (the write lock), COMMIT when the block ends,
    ROLLBACK on any error (a crash leaves nothing half-written either: SQLite's journal), closed either way."""
    con = open_store(out_dir, create=True)
    try:
        with guarded(added_path(out_dir), BUSY_TIMEOUT_S):
            con.execute("BEGIN IMMEDIATE")
            try:
                if "content_key" not in {r[1] for r in con.execute("PRAGMA table_info(added)")}:
                    for statement in _ADD_CONTENT_KEY:
                        con.execute(statement)
                yield con
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
    finally:
        con.close()


def stored_keys(out_dir: str | Path, keys: list[str]) -> dict[str, str]:
    """{content key: id} of the stored products among these content keys."""
    if not keys:
        return {}
    con = open_store(out_dir)
    if con is None:
        return {}
    found: dict[str, str] = {}
    try:
        with guarded(added_path(out_dir), BUSY_TIMEOUT_S):
            if "content_key" not in {r[1] for r in con.execute("PRAGMA table_info(added)")}:
                return {}
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                found.update(con.execute(f"SELECT content_key, id FROM added WHERE content_key IN "
                                         f"({', '.join('?' * len(part))})", part).fetchall())
    finally:
        con.close()
    return found


def write_added(out_dir: str | Path, df: pd.DataFrame, image_emb: np.ndarray, text_emb: np.ndarray) -> Path:
    """Write these products (rows of read_added's table, with their embeddings) in one transaction: a product
    whose id is stored is replaced in place (keeping its place in the order), others are appended."""
    with _write(out_dir) as con:
        con.executemany(_UPSERT, _rows(df, image_emb, text_emb, Path(out_dir) / DELTA))
    return added_path(out_dir)


def insert_added(out_dir: str | Path, products: list[dict], image_emb: np.ndarray, text_emb: np.ndarray,
                 photos: list[Path], index: IndexIds) -> list[tuple[str | None, str | None]]:
    """Store new products in one transaction; per product (its id, None) or (None, why it was refused).

    products: {"id" (None = the next free new-N), "title", "labels": {head: label}, "fingerprint"}; photos: each
    one's photo under a temp name in delta/images/ (adding.stage_photo). Under the write lock (BEGIN IMMEDIATE)
    ids are checked against the index and the store and automatic ids are handed out, so concurrent writers never
    store an id twice; each photo is renamed to delta/images/<id>.png before its row is written, and none of the
    rows exist until COMMIT.
    """
    out: list[tuple[str | None, str | None]] = []
    with _write(out_dir) as con:

        def taken(pid: str) -> bool:
            return pid in index.ids or con.execute("SELECT 1 FROM added WHERE id = ?", (pid,)).fetchone() is not None

        next_n = 0
        for p, image, text, photo in zip(products, image_emb, text_emb, photos):
            pid, key = p["id"], p.get("content_key")
            same = key and con.execute("SELECT id FROM added WHERE content_key = ?", (key,)).fetchone()
            if pid is None and same:
                out.append((None, f"already added as {same[0]} from this row of this table (the same title and photo)"))
                continue
            if pid is None:
                next_n = _next_auto(con, index, next_n, taken)
                pid = f"new-{next_n}"
            elif taken(pid):
                out.append((None, f"id {pid!r} is already used by another product; give a new id or none"))
                continue
            final = added_photo_path(out_dir, pid)
            final.unlink(missing_ok=True)  # a link planted at the photo's place is removed, never written through
            os.replace(photo, final)
            product = {"id": pid, "title": p["title"], "image": final, "fingerprint": p["fingerprint"],
                       "content_key": key, **p["labels"]}
            con.execute(_INSERT, _params(product, image, text, Path(out_dir) / DELTA))
            out.append((pid, None))
    return out


def _next_auto(con: sqlite3.Connection, index: IndexIds, last: int, taken) -> int:
    """The N of the next free automatic id new-N: past the highest N in use (index or store, N <= AUTO_MAX) and
    `last` (handed out earlier in this batch), else, once that reaches AUTO_MAX, the lowest free N. Ids stored
    with a larger N (given by hand, or by an older version) are plain text and never collide: each is checked."""
    stored = con.execute("SELECT MAX(auto_n) FROM added WHERE auto_n <= ?", (AUTO_MAX,)).fetchone()[0] or 0
    n = max(index.max_auto, stored, last) + 1
    while n <= AUTO_MAX and taken(f"new-{n}"):
        n += 1
    if n <= AUTO_MAX:
        return n
    n = 1
    while taken(f"new-{n}"):  # every id from here to AUTO_MAX can't all be in use: the store would be petabytes
        n += 1
    return n
