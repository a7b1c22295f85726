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

    query (D,) -> (k,), (k,); query (Q, D) -> (Q, k), (Q, k). `emb` is read once, in row blocks sized so each
    similarity block stays near 128 MB: a memory-mapped 10M x 512 gallery (20 GB) is streamed from disk one time
    for all the queries, not once per query chunk. Each block keeps its top k (argpartition), merged as it goes.
    """
    query = np.asarray(query, dtype=np.float32)
    single = query.ndim == 1
    queries = query[None] if single else query
    n, k = len(emb), max(0, min(int(k), len(emb)))
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_r = np.zeros((len(queries), k), dtype=np.int64)
    if k and len(queries):
        q_chunk = min(len(queries), 4096)
        block = max(k, min(1 << 16, (1 << 25) // q_chunk))  # <= 64k gallery rows (128 MB at dim 512) a block
        for g0 in range(0, n, block):
            gallery = np.asarray(emb[g0 : g0 + block], dtype=np.float32)
            kk = min(k, len(gallery))
            for q0 in range(0, len(queries), q_chunk):
                sims = queries[q0 : q0 + q_chunk] @ gallery.T
                part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
                cand_s = np.concatenate([best_s[q0 : q0 + q_chunk], np.take_along_axis(sims, part, 1)], axis=1)
                cand_r = np.concatenate([best_r[q0 : q0 + q_chunk], part + g0], axis=1)
                keep = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
                best_s[q0 : q0 + q_chunk] = np.take_along_axis(cand_s, keep, 1)
                best_r[q0 : q0 + q_chunk] = np.take_along_axis(cand_r, keep, 1)
        order = np.argsort(-best_s, axis=1, kind="stable")
        best_s, best_r = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_r, order, 1)
    return (best_r[0], best_s[0]) if single else (best_r, best_s)


class StackedRows:
    """Several (N_i, D) arrays (memory-mapped ones too) read as one (sum N_i, D) array without copying them
    together: `len`, `shape`, and rows by slice (step 1) or integer indices, returned as a new ndarray. What
    exact_search and the map need to treat photo, title and whole-product embeddings as one gallery: at 1M products
    np.concatenate of the three would hold 6 GB."""

    def __init__(self, parts):
        self.parts = list(parts)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), int(self.parts[0].shape[1])

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("StackedRows slices take step 1")
            pieces = [np.asarray(p[max(start - a, 0) : max(min(stop - a, len(p)), 0)])
                      for p, a in zip(self.parts, self.offsets[:-1], strict=True) if start < a + len(p) and stop > a]
            return np.concatenate(pieces) if pieces else np.zeros((0, self.shape[1]), np.float32)
        rows = np.asarray(key, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows out of range for {len(self)} rows")
        part = np.searchsorted(self.offsets, rows, side="right") - 1
        out = np.empty((len(rows), self.shape[1]), np.float32)
        for i, p in enumerate(self.parts):
            at = np.flatnonzero(part == i)
            if len(at):
                out[at] = p[rows[at] - self.offsets[i]]
        return out
