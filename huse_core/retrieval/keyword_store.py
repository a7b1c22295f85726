"""The keyword side of an index build's products, stored with the build: BM25 in bm25s's own files (numpy arrays
and JSON, loaded memory-mapped, no pickle), the rest (document frequencies, brand words, rows with a useless title)
in one JSON file. `index` writes it; a Searcher reads it in a fraction of a second instead of building it on its
first word search (about a second per 44k products on 2 cores), and builds it in memory only when the build has none
or one that does not match its rows.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import read_json, write_json
from .keyword import B, K1, KeywordIndex, brand_terms, label_terms, product_text, useless_title
from .layout import keyword_path

KEYWORD_FORMAT = 1  # bump when terms(), product_text(), brand_terms() or these files change
META = "keyword.json"


@dataclass
class KeywordParts:
    """What word searches read of the build's products: their BM25 index, the catalogue's brand words (hybrid.Router)
    and the rows whose title says nothing (useless_title: credited by their label words)."""

    index: KeywordIndex
    brands: set[str]
    untitled: np.ndarray  # int64 rows


def keyword_texts(products: pd.DataFrame, heads, rows=None) -> list[str]:
    """The keyword documents (title and label words) of these rows of `products` (all by default)."""
    part = products if rows is None else products.iloc[np.asarray(rows, np.int64)]  # a few rows: read only those
    titles = part["title"].to_numpy(dtype=object)
    cells = {h["name"]: part[h["name"]].to_numpy(dtype=object) for h in heads}
    return [product_text(titles[i], {h: c[i] for h, c in cells.items()}) for i in range(len(part))]


def make_parts(products: pd.DataFrame, heads) -> KeywordParts:
    """The keyword side of `products` (an index build's rows), built in memory."""
    titles = products["title"].to_numpy(dtype=object)
    return KeywordParts(KeywordIndex(keyword_texts(products, heads)), brand_terms(titles, label_terms(heads)),
                        np.flatnonzero([useless_title(t) for t in titles]).astype(np.int64))


def rows_digest(products: pd.DataFrame, heads) -> str:
    """What stored parts must match: the products' ids in order and the label columns their documents read."""
    ids = products["id"].to_numpy(dtype=object).tolist()  # 10x faster than iterating an Arrow-backed column
    text = "\n".join(map(str, ids)) + "\0" + "\n".join(h["name"] for h in heads)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def save_parts(folder: str | Path, parts: KeywordParts, products: pd.DataFrame, heads) -> int:
    """Write `parts` (of `products`) as `folder`/keyword/: every file into a temp folder, flushed to disk, then
    renamed, so a crash leaves the folder whole or absent. Returns its size in bytes."""
    folder, target = Path(folder), keyword_path(folder)
    tmp = Path(tempfile.mkdtemp(prefix=".keyword.", suffix=".tmp", dir=folder))
    try:
        index = parts.index
        index.bm25.save(tmp, show_progress=False)  # data/indices/indptr .npy, vocab and params .json
        write_json(tmp / META, {"format": KEYWORD_FORMAT, "n_docs": index.n_docs,
                                "rows": rows_digest(products, heads), "avgdl": index.avgdl, "k1": K1, "b": B,
                                "df": index.df, "brands": sorted(parts.brands), "untitled": parts.untitled.tolist()})
        for path in tmp.iterdir():
            with open(path, "rb+") as f:
                os.fsync(f.fileno())  # the rename must not land before the data does
        if target.exists():  # a rewrite: readers meanwhile find none and build in memory, never a mix
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sum(p.stat().st_size for p in target.iterdir())


def load_parts(folder: str | Path, products: pd.DataFrame, heads) -> tuple[KeywordParts | None, str]:
    """(the parts stored in `folder`/keyword/, "") when they were built for exactly these rows, else (None, why
    not): none stored (a build from before they were), another version's, other rows, or unreadable."""
    path = keyword_path(folder)
    if not (path / META).is_file():
        return None, "is not stored with this build"
    try:
        meta = read_json(path / META)
        if meta.get("format") != KEYWORD_FORMAT or (meta.get("k1"), meta.get("b")) != (K1, B):
            return None, "was stored by another version"
        if meta.get("n_docs") != len(products) or meta.get("rows") != rows_digest(products, heads):
            return None, "was stored for other products than this build's"
        import bm25s  # here: only searches with words need it

        bm25 = bm25s.BM25.load(path, mmap=True, allow_pickle=False, show_progress=False)
        # plain arrays over the same memory maps: np.memmap's own wrapping made each query's scoring ~15 % slower
        bm25.scores = {k: np.asarray(v) if isinstance(v, np.memmap) else v for k, v in bm25.scores.items()}
        if bm25.scores["num_docs"] != max(len(products), 1) or (bm25.k1, bm25.b, bm25.method) != (K1, B, "lucene"):
            return None, "does not match its own description"
        untitled = np.asarray(meta["untitled"], np.int64)
        if len(untitled) and (untitled.min() < 0 or untitled.max() >= len(products)):
            return None, "names rows this build does not have"
        index = KeywordIndex.from_parts(bm25, {str(w): int(n) for w, n in meta["df"].items()}, meta["n_docs"],
                                        meta["avgdl"])
        return KeywordParts(index, {str(w) for w in meta["brands"]}, untitled), ""
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return None, f"is unreadable ({type(err).__name__}: {str(err)[:120]})"
