"""An Annoy forest over unit rows with a JSON sidecar: build, tune search_k to a target recall, load checked."""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..artifacts import atomic_write
from .knn import exact_search
from .layout import INDEX_FORMAT, rebuild_hint
from .sidecar import SidecarIndex, read_checked

METRIC = "angular"  # Annoy's angular distance on unit rows: d = sqrt(2 - 2 cos)
# 16 trees: build time grows with every tree while recall is bought more cheaply with search_k, which each build
# tunes on sample queries (AnnoyIndex.tune).  # why: docs/decisions.md#annoy-trees
N_TREES = 16
# Both backends are tuned until recall@10 on 200 sample queries reaches 0.98 *less two standard errors* of that
# 200-query mean (recall_bound), so that recall on unseen queries stays at 0.98 or above; the bare mean overfits
# the sample.  # why: docs/decisions.md#index-backend
TARGET_RECALL = 0.98
RECALL_QUERIES = 200  # sample queries for the recall measured at build time and stored in the sidecar
RECALL_Z = 2.0  # standard errors the tuning keeps between the sample's mean recall and TARGET_RECALL


def recall_bound(per_query: np.ndarray, z: float = RECALL_Z) -> float:
    """A lower bound on recall for unseen queries from the sample's per-query recalls r_i:
    mean(r) - z * std(r) / sqrt(Q), with std's ddof = 1 (the mean itself for a single query)."""
    r = np.asarray(per_query, np.float64)
    if r.size < 2:
        return float(r.mean()) if r.size else 1.0
    return float(r.mean() - z * r.std(ddof=1) / np.sqrt(r.size))


def meets_target(per_query: np.ndarray) -> bool:
    """Whether a tuning sample's per-query recalls keep the promise: recall_bound >= TARGET_RECALL."""
    return recall_bound(per_query) >= TARGET_RECALL


def cosine_from_angular(distance):
    """Cosine similarity of two unit vectors from Annoy's angular distance d = |a - b| = sqrt(2 - 2 cos)."""
    return 1.0 - np.square(distance) / 2.0


def _annoy():
    try:
        import annoy
    except ImportError as err:
        raise RuntimeError("the `annoy` package is needed for the search index: `pip install annoy` "
                           "(it builds a small C++ extension), or see requirements.txt") from err
    return annoy


class AnnoyIndex(SidecarIndex):
    """An Annoy forest over unit rows, the row -> product id map, and the JSON sidecar `<name>.ann.json`.

    The forest lives in a uniquely named `<name>.<build>.ann`; the sidecar names it, so writing the sidecar is
    the one atomic step that switches readers to a new build. The sidecar holds dim, metric, n_trees, search_k,
    n_items, the model fingerprint, the recall@10 measured against exact search, build seconds and the ids.
    """

    def __init__(self, ann, meta: dict, sidecar: Path):
        super().__init__(meta, sidecar)
        self._ann = ann

    @property
    def search_k(self) -> int:
        return int(self.meta["search_k"])

    def query(self, vector: np.ndarray, k: int, search_k: int | None = None,
              tuned_for: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cosines) of about the k nearest items, best first. search_k scales with k past the tuned 10.

        tuned_for = t < k: a candidate pool (a re-ranking's): the best t rows keep the tuned recall (search_k scaled
        for t) and the k - t further rows cost Annoy's own default, n_trees nodes each (~0.96 of the exact top 1000
        at 44k, 1/8 of the time of scaling search_k to k. why: docs/decisions.md#annoy-trees)."""
        k = max(0, min(int(k), self.n_items))
        if k == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        top = k if tuned_for is None else max(1, min(int(tuned_for), k))
        # tuned for k = 10; Annoy stops at search_k
        search_k = search_k or int(self.search_k * max(1.0, top / 10)) + int(self.meta.get("n_trees", 1)) * (k - top)
        rows, dist = self._ann.get_nns_by_vector(np.asarray(vector, np.float32).tolist(), k, search_k, True)
        return np.asarray(rows, np.int64), cosine_from_angular(np.asarray(dist, np.float32))

    def recalls(self, emb: np.ndarray, queries: np.ndarray, k: int = 10, search_k: int | None = None,
                truth: np.ndarray | None = None) -> np.ndarray:
        """Each query's share of the exact top k that Annoy's top k finds, (Q,). Ties count: a hit whose cosine
        reaches the exact k-th one is right (catalogues repeat titles, and among identical vectors which ones
        make the top k is arbitrary). `truth`: the exact top-k cosines (Q, k), computed when not given."""
        if truth is None:
            _, truth = exact_search(queries, emb, k)
        kth = truth[:, -1] - 1e-5  # Annoy's float32 distances differ from numpy's in the 7th digit
        found = [min(k, int(np.sum(self.query(q, k, search_k)[1] >= t))) for q, t in zip(queries, kth)]
        return np.asarray(found, np.float64) / max(1, truth.shape[1])

    def recall(self, emb: np.ndarray, queries: np.ndarray, k: int = 10, search_k: int | None = None,
               truth: np.ndarray | None = None) -> float:
        """Mean recall@k over `queries` (see `recalls`); 1.0 for no queries."""
        found = self.recalls(emb, queries, k, search_k, truth)
        return float(found.mean()) if found.size else 1.0

    def tune(self, emb: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """Set search_k to about the smallest value whose recall@10 on `queries` meets_target; return that
        setting's per-query recalls. It grows 1.5x from 4 * n_trees * 10 until the target is met, then
        bisects between the last miss and the hit: recall climbs in steps (leaves hold ~dim items)."""
        _, truth = exact_search(queries, emb, 10)  # once: at 1M rows this is the slow part of tuning
        low, high, limit = 0, self.search_k, self.meta["n_trees"] * len(emb)
        recall = self.recalls(emb, queries, 10, high, truth)
        while not meets_target(recall) and high < limit:  # at the limit Annoy scans every item anyway
            low, high = high, int(high * 1.5)
            recall = self.recalls(emb, queries, 10, high, truth)
        while low and high - low > 0.1 * high:
            mid = (low + high) // 2
            mid_recall = self.recalls(emb, queries, 10, mid, truth)
            low, high, recall = (low, mid, mid_recall) if meets_target(mid_recall) else (mid, high, recall)
        self.meta["search_k"] = high
        return recall

    @classmethod
    def build(cls, emb: np.ndarray, ids, path: str | Path, fingerprint: str, n_trees: int = N_TREES,
              queries: np.ndarray | None = None, seed: int = 0, progress: bool = True) -> AnnoyIndex:
        """Build, save and tune an index of unit rows `emb` (N, D); `path` is `<dir>/<name>.ann`.

        search_k is tuned on `queries` (default: a sample of the rows), see `tune`.
        """
        path, t0 = Path(path), time.time()
        emb, ids = np.asarray(emb, np.float32), [str(i) for i in ids]
        if len(emb) != len(ids):
            raise ValueError(f"{len(emb)} embeddings but {len(ids)} ids; they must be aligned row by row")
        ann = _annoy().AnnoyIndex(emb.shape[1], METRIC)
        ann.set_seed(seed)
        for i in tqdm(range(len(emb)), desc=f"indexing {path.stem}", unit="item", disable=not progress,
                      file=sys.stderr, mininterval=1.0):
            ann.add_item(i, emb[i].tolist())
        ann.build(n_trees, -1)  # -1: all cores
        data = path.with_name(f"{path.stem}.{uuid.uuid4().hex[:8]}.ann")
        atomic_write(data, ann.save)  # save() also mmaps the file; the rename keeps the same inode open
        meta = {"format": INDEX_FORMAT, "file": data.name, "file_bytes": data.stat().st_size, "dim": emb.shape[1],
                "metric": METRIC, "n_trees": n_trees, "search_k": 4 * n_trees * 10, "n_items": len(emb),
                "fingerprint": fingerprint, "build_seconds": None, "recall_at_10": None, "recall_queries": 0}
        index = cls(ann, {**meta, "ids": ids}, Path(f"{path}.json"))
        if queries is None:
            pick = np.random.default_rng(seed).choice(len(emb), min(RECALL_QUERIES, len(emb)), replace=False)
            queries = emb[np.sort(pick)]
        recall = index.tune(emb, queries)
        index.meta.update(recall_at_10=round(float(recall.mean()), 4), recall_at_10_low=round(recall_bound(recall), 4),
                          recall_queries=len(queries),
                          build_seconds=round(time.time() - t0, 2))
        index.commit(data)  # readers now open this build
        return index

    @classmethod
    def load(cls, path: str | Path, dim: int, fingerprint: str, run_dir: str | Path = "RUN") -> AnnoyIndex:
        """Open `<name>.ann` (memory-mapped) after checking its sidecar: Annoy crashes the process on a file of
        another dimension, so nothing is loaded unless dim, model fingerprint and file size all match."""
        sidecar = Path(f"{path}.json")
        meta, data = read_checked(sidecar, {
            "dim": ("dimension", dim), "fingerprint": ("model fingerprint", fingerprint), "metric": ("metric", METRIC)},
            rebuild_hint(run_dir), "search index")
        ann = _annoy().AnnoyIndex(dim, METRIC)
        ann.load(os.fspath(data), False)  # prefault=False: pages load on demand, so opening is instant
        return cls(ann, meta, sidecar)
