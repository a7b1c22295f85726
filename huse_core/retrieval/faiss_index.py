"""A faiss IVF index with 8-bit codes over unit rows, re-ranked exactly: build, tune to a target recall, load checked.

SQ8 (8 bits a dimension) rather than PQ: our embeddings share one offset direction, which product quantisation
codes badly (why: docs/decisions.md#index-backend). SQ8 also trains in one pass (a min and max per dimension) and
works at any n and dimension, where PQ needs >= 256 x 39 training rows and a dimension divisible by its
sub-quantisers.
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..artifacts import atomic_write
from ..data.rowfile import RowView
from .annoy_index import RECALL_QUERIES, meets_target, recall_bound  # one recall promise, tuned alike, for both
from .knn import exact_search
from .layout import INDEX_FORMAT, StaleIndexError, rebuild_hint
from .sidecar import SidecarIndex, read_checked

FAISS = "faiss"  # the backend name, as `index --backend faiss` spells it
METRIC = "inner_product"  # on unit rows: the cosine, which the exact re-ranking returns
CODES = "SQ8"
# Lists: ~4 sqrt(n) (the usual faiss advice), but >= 39 training rows each (k-means quality; faiss warns below).
# The training sample is bounded (TRAIN_PER_LIST rows a list) since k-means costs sample x lists x dim per pass.
LISTS_PER_SQRT_N, MIN_ROWS_PER_LIST, TRAIN_PER_LIST = 4, 39, 40
RERANK_START = 40  # candidates re-ranked for k = 10 while nprobe is tuned; then shrunk to the least that holds
GATHER_FLOATS = 1 << 23  # candidate rows gathered for re-ranking at once: 32 MB of float32
ADD_CHUNK = 65_536  # rows added at a time: the float32 rows are read from the (memory-mapped) embeddings in chunks
INSTALL = "pip install -r requirements-faiss.txt"


def _faiss():
    try:
        import faiss
    except ImportError as err:
        raise RuntimeError(f"the `faiss` package is needed for `--backend faiss`: `{INSTALL}` (faiss-cpu; it leaves "
                           "torch alone), or build with `--backend annoy`") from err
    return faiss


def require_faiss() -> None:
    """Raise the RuntimeError naming the install command when faiss is missing."""
    _faiss()


def faiss_available() -> bool:
    """True when faiss can be imported."""
    try:
        _faiss()
    except RuntimeError:
        return False
    return True


def n_lists(n: int) -> int:
    """Inverted lists for n rows: round(4 sqrt(n)), at most n / 39 so each list's centroid trains on 39+ rows."""
    return max(1, min(round(LISTS_PER_SQRT_N * math.sqrt(n)), n // MIN_ROWS_PER_LIST))


class FaissIndex(SidecarIndex):
    """An IVF-SQ8 faiss index over unit rows, the float32 rows it re-ranks with, the row -> product id map and the
    JSON sidecar `<name>.faiss.json` (dim, nlist, nprobe, rerank, n_items, model fingerprint, recall@10 measured
    against exact search, bytes, build seconds, ids).

    A query fetches about `rerank` candidates (for k = 10; more for larger k) from the nprobe nearest lists by
    their 8-bit codes, then ranks them by their exact float32 cosines: the scores returned are exact.
    The index lives in a uniquely named `<name>.<build>.faiss`; writing the sidecar switches readers to it.
    """

    def __init__(self, index, meta: dict, sidecar: Path, emb: np.ndarray):
        super().__init__(meta, sidecar)
        self._index, self.emb = index, emb
        # Re-ranking reads scattered rows: through the memory map each one pulled ~1 MB of readahead from disk
        # (2,000 random rows of a 20 GB file: 6.2 s); RowView's preadv reads the rows alone (4.3 KB each, 0.12 s).
        self._rows = emb if isinstance(emb, RowView) else RowView(emb)

    @property
    def nprobe(self) -> int:
        return int(self.meta["nprobe"])

    @property
    def rerank(self) -> int:
        return int(self.meta["rerank"])

    def _plan(self, k: int, nprobe: int | None, rerank: int | None, tuned_for: int | None = None) -> tuple[int, int]:
        """(candidates fetched, lists probed) for k hits. Tuned for k = 10: the candidates grow with k (with
        `tuned_for` < k, a re-ranking's pool: with tuned_for, never fewer than k), and the lists probed too when
        the tuned ones would hold fewer than twice the candidates on average."""
        nprobe, rerank, nlist = nprobe or self.nprobe, rerank or self.rerank, int(self.meta["nlist"])
        fetch = min(self.n_items, max(k, math.ceil(rerank * min(k, tuned_for or k) / 10)))
        return fetch, min(nlist, max(nprobe, math.ceil(2 * fetch * nlist / max(1, self.n_items))))

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None,
               rerank: int | None = None, tuned_for: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) rows and exact cosines of about the k nearest items of each query (Q, D), best first. Where fewer
        than k candidates were found (tiny indexes) the row is -1 and the cosine -inf."""
        queries = np.ascontiguousarray(queries, np.float32).reshape(-1, self.dim)
        k = max(0, min(int(k), self.n_items))
        if k == 0 or not len(queries):
            return np.zeros((len(queries), k), np.int64), np.zeros((len(queries), k), np.float32)
        fetch, probes = self._plan(k, nprobe, rerank, tuned_for)
        params = _faiss().SearchParametersIVF(nprobe=probes)  # per call: safe while other threads search
        rows, scores = np.empty((len(queries), k), np.int64), np.empty((len(queries), k), np.float32)
        step = max(1, GATHER_FLOATS // (fetch * self.dim))  # queries whose candidates are gathered at once
        for start in range(0, len(queries), step):
            part = queries[start : start + step]
            _, cand = self._index.search(part, fetch, params=params)  # (q, fetch); -1 where lists ran dry
            found = cand >= 0
            wanted, where = np.unique(np.where(found, cand, 0).ravel(), return_inverse=True)  # file order, once each
            vectors = np.asarray(self._rows[wanted], np.float32)[where].reshape(*cand.shape, -1)
            exact = np.where(found, np.einsum("qd,qfd->qf", part, vectors), -np.inf).astype(np.float32)
            order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
            rows[start : start + step] = np.take_along_axis(cand, order, 1)
            scores[start : start + step] = np.take_along_axis(exact, order, 1)
        return rows, scores

    def query(self, vector: np.ndarray, k: int, nprobe: int | None = None, rerank: int | None = None,
              tuned_for: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cosines) of about the k nearest items to one query (D,), best first (AnnoyIndex.query's shape).
        tuned_for = t < k: a candidate pool (a re-ranking's): k candidates are re-ranked exactly, not the rerank x
        k / 10 the tuned recall needs for all k, which the best t keep (half the rows read at k = 1,000)."""
        rows, scores = self.search(np.asarray(vector, np.float32)[None], k, nprobe, rerank, tuned_for)
        keep = rows[0] >= 0
        return rows[0][keep], scores[0][keep]

    def recalls(self, queries: np.ndarray, k: int = 10, nprobe: int | None = None, rerank: int | None = None,
                truth: np.ndarray | None = None) -> np.ndarray:
        """Each query's share of the exact top k found, (Q,); a hit whose cosine reaches the exact k-th one counts
        (ties among identical vectors, as AnnoyIndex.recalls). `truth`: exact top-k cosines (Q, k)."""
        if truth is None:
            _, truth = exact_search(queries, self.emb, k)
        _, scores = self.search(queries, k, nprobe, rerank)
        found = np.minimum(k, np.sum(scores >= truth[:, -1:] - 1e-5, axis=1))
        return found.astype(np.float64) / max(1, truth.shape[1])

    def recall(self, queries: np.ndarray, k: int = 10, nprobe: int | None = None, rerank: int | None = None,
               truth: np.ndarray | None = None) -> float:
        """Mean recall@k over `queries` (see `recalls`); 1.0 for no queries."""
        found = self.recalls(queries, k, nprobe, rerank, truth)
        return float(found.mean()) if found.size else 1.0

    def tune(self, queries: np.ndarray) -> np.ndarray:
        """Set nprobe, then rerank, to about the smallest values whose recall@10 on `queries` meets_target
        (recall_bound >= TARGET_RECALL); return that setting's per-query recalls. nprobe doubles from 1
        (re-ranking RERANK_START candidates) until the target is met, then bisects; rerank then halves while the
        target holds. If even every list misses (codes too coarse for this geometry), rerank doubles instead."""
        _, truth = exact_search(queries, self.emb, 10)
        nlist, rerank = int(self.meta["nlist"]), RERANK_START

        def recall(p: int, r: int) -> np.ndarray:
            return self.recalls(queries, 10, p, r, truth)

        low, high = 0, 1
        got = recall(high, rerank)
        while not meets_target(got) and high < nlist:
            low, high = high, min(nlist, high * 2)
            got = recall(high, rerank)
        while not meets_target(got) and rerank < self.n_items:
            rerank *= 2
            got = recall(high, rerank)
        while high - low > 1 and high - low > 0.1 * high:
            mid = (low + high) // 2
            mid_got = recall(mid, rerank)
            low, high, got = (low, mid, mid_got) if meets_target(mid_got) else (mid, high, got)
        while rerank > 10 and meets_target(got):
            fewer = recall(high, max(10, rerank // 2))
            if not meets_target(fewer):
                break
            rerank, got = max(10, rerank // 2), fewer
        self.meta.update(nprobe=high, rerank=rerank)
        return got

    @classmethod
    def build(cls, emb: np.ndarray, ids, path: str | Path, fingerprint: str, queries: np.ndarray | None = None,
              seed: int = 0, progress: bool = True) -> FaissIndex:
        """Build, save and tune an index of unit rows `emb` (N, D), read-only (memory-mapped) is fine; `path` is
        `<dir>/<name>.faiss`. nprobe and rerank are tuned on `queries` (default: a sample of the rows)."""
        faiss, path, t0 = _faiss(), Path(path), time.time()
        ids = [str(i) for i in ids]
        if len(emb) != len(ids):
            raise ValueError(f"{len(emb)} embeddings but {len(ids)} ids; they must be aligned row by row")
        if not len(emb):
            raise ValueError("no rows to index")
        n, dim = emb.shape
        nlist = n_lists(n)
        index = faiss.index_factory(dim, f"IVF{nlist},{CODES}", faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.min_points_per_centroid = 1  # n_lists keeps 39+ rows a list; below 39 rows one list is right
        rng = np.random.default_rng(seed)
        train = np.sort(rng.choice(n, min(n, TRAIN_PER_LIST * nlist), replace=False))
        index.train(np.ascontiguousarray(emb[train], np.float32))
        for start in tqdm(range(0, n, ADD_CHUNK), desc=f"indexing {path.stem}", unit="chunk", file=sys.stderr,
                          disable=not progress, mininterval=1.0):
            index.add(np.ascontiguousarray(emb[start : start + ADD_CHUNK], np.float32))
        data = path.with_name(f"{path.stem}.{uuid.uuid4().hex[:8]}.faiss")
        atomic_write(data, lambda tmp: faiss.write_index(index, tmp))
        meta = {"format": INDEX_FORMAT, "file": data.name, "file_bytes": data.stat().st_size, "dim": dim,
                "metric": METRIC, "codes": CODES, "nlist": nlist, "nprobe": 1, "rerank": RERANK_START, "n_items": n,
                "train_rows": len(train), "fingerprint": fingerprint, "build_seconds": None, "recall_at_10": None,
                "recall_queries": 0}
        built = cls(index, {**meta, "ids": ids}, Path(f"{path}.json"), emb)
        if queries is None:
            pick = rng.choice(n, min(RECALL_QUERIES, n), replace=False)
            queries = emb[np.sort(pick)]
        queries = np.asarray(queries, np.float32)
        recall = built.tune(queries)
        built.meta.update(recall_at_10=round(float(recall.mean()), 4), recall_at_10_low=round(recall_bound(recall), 4),
                          recall_queries=len(queries),
                          build_seconds=round(time.time() - t0, 2))
        built.commit(data)  # readers now open this build
        return built

    @classmethod
    def load(cls, path: str | Path, emb: np.ndarray, fingerprint: str, run_dir: str | Path = "RUN") -> FaissIndex:
        """Open `<name>.faiss` (read into memory) beside the rows `emb` it re-ranks with, after checking its sidecar:
        dim, model fingerprint, metric, row count and file size must match, else StaleIndexError names the fix."""
        dim = emb.shape[1] if emb.ndim == 2 else None
        meta, data = read_checked(Path(f"{path}.json"), {
            "dim": ("dimension", dim), "fingerprint": ("model fingerprint", fingerprint), "metric": ("metric", METRIC),
            "n_items": ("rows", len(emb))}, rebuild_hint(run_dir, FAISS), "faiss index")
        faiss = _faiss()
        # Read into memory (the codes: ~dim bytes a row). Memory-mapped (IO_FLAG_MMAP) faiss serves the lists from
        # OnDiskInvertedLists, which searched 3-7x slower here (0.8-1.8 ms against 0.25 ms a query at 20k rows).
        index = faiss.read_index(str(data))
        if index.d != dim or index.ntotal != len(emb):
            raise StaleIndexError(f"{data} holds {index.ntotal} rows of dimension {index.d}, its sidecar says "
                                  f"{len(emb)} of {dim}: {rebuild_hint(run_dir, FAISS)}")
        return cls(index, meta, Path(f"{path}.json"), emb)
