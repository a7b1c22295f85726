"""Exact k-nearest-neighbour search over unit rows by cosine: numpy only, used by evaluation, the index and the map."""

from __future__ import annotations

import numpy as np


def top_k(queries: np.ndarray, gallery: np.ndarray, k: int, exclude_self: bool, chunk: int = 1024) -> np.ndarray:
    """(Q, k) gallery row indices, best first, by cosine; `exclude_self` drops gallery row i for query i."""
    k = min(k, len(gallery) - int(exclude_self))
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        sims = queries[start : start + chunk] @ gallery.T
        if exclude_self:
            rows = np.arange(len(sims))
            sims[rows, rows + start] = -np.inf
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # top k unordered: O(n) per query
        order = np.take_along_axis(sims, part, 1).argsort(1)[:, ::-1]
        out[start : start + chunk] = np.take_along_axis(part, order, 1)
    return out


def exact_search(query: np.ndarray, emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `emb` with the highest cosine to `query`, best first, and those cosines (both unit rows).

    query (D,) -> (k,), (k,); query (Q, D) -> (Q, k), (Q, k). One matrix product, then argpartition of the top
    k only (evaluate.top_k); queries go in chunks so the similarity block stays near 128 MB even at 1M rows.
    """
    query = np.asarray(query, dtype=np.float32)
    single = query.ndim == 1
    queries = query[None] if single else query
    k = max(0, min(int(k), len(emb)))
    if k == 0:
        empty = np.zeros((len(queries), 0))
        rows, scores = empty.astype(np.int64), empty.astype(np.float32)
    else:
        rows = top_k(queries, emb, k, exclude_self=False, chunk=max(1, (1 << 25) // len(emb)))
        scores = np.einsum("qd,qkd->qk", queries, np.asarray(emb[rows.ravel()]).reshape(*rows.shape, -1))
    return (rows[0], scores[0]) if single else (rows, scores)
