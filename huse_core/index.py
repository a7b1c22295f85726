"""Nearest-neighbour search over unit embeddings: exact search, an Annoy wrapper with a JSON sidecar, index builds."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .artifacts import atomic_write, write_json
from .evaluate import top_k

INDEX_FORMAT = 1  # bump when the sidecar or the index folder changes incompatibly
METRIC = "angular"  # Annoy's angular distance on unit rows: d = sqrt(2 - 2 cos)
# 16 trees: build time grows with every tree (1M x 512: 2-4 min for 16 on 2 cores) while recall is bought more
# cheaply with search_k, which each build tunes on sample queries (AnnoyIndex.tune). Measured (BENCHMARKS.md):
# recall@10 0.97-0.98 at 0.2 ms a query on the real 44k catalogue, 0.7 ms at 1M (40x and 144x faster than exact);
# on a harder geometry than our trained embeddings the tuning keeps the recall but Annoy gains only ~2x at 1M.
N_TREES = 16
# search_k is tuned to 0.98 on 200 sample queries so that recall on unseen queries, which varies by about +-0.01
# between samples of that size, stays at or above the 0.97 we promise.
TARGET_RECALL = 0.98
RECALL_QUERIES = 200  # sample queries for the recall measured at build time and stored in the sidecar


class IndexMissingError(RuntimeError):
    """No usable search index for a run; the message says which command builds it."""


class StaleIndexError(IndexMissingError):
    """An index built for another model, dimension or catalogue: it must be rebuilt, never loaded."""


def rebuild_hint(run_dir: str | Path) -> str:
    return f"run `python -m huse_core index --run {run_dir}` again"


def cosine_from_angular(distance):
    """Cosine similarity of two unit vectors from Annoy's angular distance d = |a - b| = sqrt(2 - 2 cos)."""
    return 1.0 - np.square(distance) / 2.0


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


def _annoy():
    try:
        import annoy
    except ImportError as err:
        raise RuntimeError("the `annoy` package is needed for the search index: `pip install annoy` "
                           "(it builds a small C++ extension), or see requirements.txt") from err
    return annoy


class AnnoyIndex:
    """An Annoy forest over unit rows, the row -> product id map, and the JSON sidecar `<name>.ann.json`.

    The forest lives in a uniquely named `<name>.<build>.ann`; the sidecar names it, so writing the sidecar is
    the one atomic step that switches readers to a new build. The sidecar holds dim, metric, n_trees, search_k,
    n_items, the model fingerprint, the recall@10 measured against exact search, build seconds and the ids.
    """

    def __init__(self, ann, meta: dict, sidecar: Path):
        self._ann, self.meta, self.sidecar = ann, meta, sidecar
        self.ids = np.asarray(meta["ids"], dtype=object)

    @property
    def n_items(self) -> int:
        return int(self.meta["n_items"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def search_k(self) -> int:
        return int(self.meta["search_k"])

    def query(self, vector: np.ndarray, k: int, search_k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cosines) of about the k nearest items, best first. search_k scales with k past the tuned 10."""
        k = max(0, min(int(k), self.n_items))
        if k == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        search_k = search_k or int(self.search_k * max(1.0, k / 10))  # tuned for k = 10; Annoy stops at search_k
        rows, dist = self._ann.get_nns_by_vector(np.asarray(vector, np.float32).tolist(), k, search_k, True)
        return np.asarray(rows, np.int64), cosine_from_angular(np.asarray(dist, np.float32))

    def recall(self, emb: np.ndarray, queries: np.ndarray, k: int = 10, search_k: int | None = None,
               truth: np.ndarray | None = None) -> float:
        """Share of the exact top k that Annoy's top k finds, averaged over `queries`. Ties count: a hit whose
        cosine reaches the exact k-th one is right (catalogues repeat titles, and among identical vectors which
        ones make the top k is arbitrary). `truth`: the exact top-k cosines (Q, k), computed when not given."""
        if truth is None:
            _, truth = exact_search(queries, emb, k)
        kth = truth[:, -1] - 1e-5  # Annoy's float32 distances differ from numpy's in the 7th digit
        found = [min(k, int(np.sum(self.query(q, k, search_k)[1] >= t))) for q, t in zip(queries, kth)]
        return float(np.sum(found) / truth.size) if truth.size else 1.0

    def tune(self, emb: np.ndarray, queries: np.ndarray) -> float:
        """Set search_k to about the smallest value whose recall@10 on `queries` reaches TARGET_RECALL; return
        that recall. It grows 1.5x from 4 * n_trees * 10 until the target is met, then bisects between the last
        miss and the hit: recall climbs in steps (Annoy's leaves hold ~dim items), so 1.5x alone can overshoot."""
        _, truth = exact_search(queries, emb, 10)  # once: at 1M rows this is the slow part of tuning
        low, high, limit = 0, self.search_k, self.meta["n_trees"] * len(emb)
        recall = self.recall(emb, queries, 10, high, truth)
        while recall < TARGET_RECALL and high < limit:  # at the limit Annoy is scanning every item anyway
            low, high = high, int(high * 1.5)
            recall = self.recall(emb, queries, 10, high, truth)
        while low and high - low > 0.1 * high:
            mid = (low + high) // 2
            mid_recall = self.recall(emb, queries, 10, mid, truth)
            low, high, recall = (low, mid, mid_recall) if mid_recall >= TARGET_RECALL else (mid, high, recall)
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
        index.meta.update(recall_at_10=round(recall, 4), recall_queries=len(queries),
                          build_seconds=round(time.time() - t0, 2))
        write_json(index.sidecar, index.meta)  # the commit point: readers now open this build
        for old in path.parent.glob(f"{path.stem}.*.ann"):
            if old.name != data.name:
                try:
                    old.unlink()  # an app still serving the old build keeps its mmap (POSIX)
                except OSError:
                    pass
        return index

    @classmethod
    def load(cls, path: str | Path, dim: int, fingerprint: str, run_dir: str | Path = "RUN") -> AnnoyIndex:
        """Open `<name>.ann` (memory-mapped) after checking its sidecar: Annoy crashes the process on a file of
        another dimension, so nothing is loaded unless dim, model fingerprint and file size all match."""
        sidecar = Path(f"{path}.json")
        if not sidecar.is_file():
            raise IndexMissingError(f"no search index at {sidecar.parent}: {rebuild_hint(run_dir)}")
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
            data = sidecar.parent / meta["file"]
            stale = [(what, meta.get(key), want) for what, key, want in (
                ("format", "format", INDEX_FORMAT), ("dimension", "dim", dim),
                ("model fingerprint", "fingerprint", fingerprint), ("metric", "metric", METRIC))
                if meta.get(key) != want]
            size = data.stat().st_size if data.is_file() else None
            if size != meta["file_bytes"]:
                stale.append(("file size", size, meta["file_bytes"]))
        except (ValueError, KeyError, TypeError, OSError) as err:
            raise StaleIndexError(f"{sidecar} is damaged ({err}); {rebuild_hint(run_dir)}") from None
        if stale:
            what = "; ".join(f"{w} {got!r} != expected {want!r}" for w, got, want in stale)
            raise StaleIndexError(f"the index {sidecar.with_suffix('')} does not match this run ({what}); it was "
                                  f"built for another model or is incomplete: {rebuild_hint(run_dir)}")
        ann = _annoy().AnnoyIndex(dim, METRIC)
        ann.load(os.fspath(data), False)  # prefault=False: pages load on demand, so opening is instant
        return cls(ann, meta, sidecar)


OVERFETCH = 2000  # most Annoy candidates fetched to satisfy a filter before exact search over the matches


def top_matches(query: np.ndarray, emb: np.ndarray, forest: AnnoyIndex | None, k: int,
                mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cosines) of the k rows of `emb` nearest `query`, via `forest` when given, among `mask` rows only.

    A filter over-fetches from the forest (k / share of matching rows, x1.5); when that still finds fewer than k
    matches (a rare label), exact search over just the matching rows answers: cheap, since they are few. So k
    rows come back whenever k rows match.
    """
    if mask is None:
        return forest.query(query, k) if forest else exact_search(query, emb, k)
    match = np.flatnonzero(mask)
    if len(match) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    fetch = min(len(emb), int(k * len(emb) / len(match) * 1.5) + 10)
    if forest and fetch <= OVERFETCH:
        rows, scores = forest.query(query, fetch)
        keep = mask[rows]
        if keep.sum() >= min(k, len(match)):
            return rows[keep][:k], scores[keep][:k]
    rows, scores = exact_search(query, np.asarray(emb[match]), k)
    return match[rows], scores


# Below this many products the Searcher scans exactly by default: at 512 dims that is ~0.1-0.3 ms a query on an
# idle 2-core CPU (BENCHMARKS.md) and never misses; the forests are built anyway, so growing past it needs no flag.
EXACT_BELOW = 5_000
MANIFEST = "index.json"  # written last by build_index: the index folder is complete when it exists
# Each build writes every file into its own index/build-<build_id>/ and index.json names that folder, so writing
# index.json is the one atomic step that switches readers from one complete build to the next: `kill -9` at any
# moment leaves the old build or the new one, never new embeddings beside an old map or old forests.
BUILD_DIR = re.compile(r"build-[0-9a-f]{12}")
FLAT_FILES = ("products.parquet", "image_emb.npy", "text_emb.npy", "map.parquet")  # indexes built before folders


def build_folder(out_dir: str | Path, manifest: dict | None = None) -> Path:
    """The folder holding the files of the build that `manifest` (default: `out_dir`/index.json) names: its
    build-<id>/ folder, or `out_dir` itself for an index from before build folders, or a folder with no manifest
    (what embed_catalog and build_map write to directly)."""
    out = Path(out_dir)
    if manifest is None:
        try:
            manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return out
    name = manifest.get("dir") if isinstance(manifest, dict) else None
    if name is None:
        return out
    if not isinstance(name, str) or not BUILD_DIR.fullmatch(name) or not (out / name).is_dir():
        raise StaleIndexError(f"{out / MANIFEST} names a build folder {name!r} that is not there: "
                              f"{rebuild_hint(out.parent)}")
    return out / name


def _remove_other_builds(out: Path, keep: Path) -> None:
    """Delete build folders other than `keep` (replaced, or left by a killed build), the files of a pre-folder
    index, and temp files a killed write left. An app still serving an old build keeps its memory maps (POSIX)."""
    for path in out.iterdir():
        if path == keep:
            continue
        if path.is_dir() and BUILD_DIR.fullmatch(path.name):
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and (path.name in FLAT_FILES or path.name.endswith((".ann", ".ann.json", ".tmp"))):
            path.unlink(missing_ok=True)


# A build's steps and their rough shares of its time, for one progress bar (demo shop on 2 cores: embedding 6.5 s,
# each forest 0.2 s, the map 10 s; at 44k products embedding takes a larger share, the map is sampled).
BUILD_STEPS = {"embed": 0.4, "annoy_image": 0.05, "annoy_text": 0.05, "map": 0.5}
Progress = Callable[[dict], None]


def build_index(run_dir: str | Path, n_trees: int = N_TREES, with_map: bool = True, progress: bool = True,
                callback: Progress | None = None) -> dict:
    """Build a run's search index in a new `run_dir/index/build-<id>/`: catalogue + added products' embeddings, one
    Annoy forest per modality, the 2-D map; then `index/index.json` (timings, recall, the folder's name) switches
    readers to it and older builds are deleted. Products added since the previous build are re-embedded with this
    model and folded in as ordinary rows (their `added` flag kept).

    `callback` gets {"stage": "embed" | "annoy" | "map" | "done", "fraction": share of the build done (0..1, never
    decreasing), "message": str} as each step starts, and "done" with fraction 1.0 once index.json is written.
    """
    from .embed import embed_catalog, index_dir, load_embeddings, refresh_added
    from .run import load_run

    if n_trees < 1:
        raise ValueError(f"--n-trees must be at least 1, got {n_trees}")
    t_start, seconds = time.time(), {}
    steps = [name for name in BUILD_STEPS if with_map or name != "map"]
    shares = np.array([BUILD_STEPS[name] for name in steps])
    starts = dict(zip(steps, np.concatenate([[0.0], np.cumsum(shares)[:-1]]) / shares.sum()))
    emit = callback or (lambda event: None)

    def report(step: str, message: str) -> None:
        emit({"stage": step.split("_")[0], "fraction": float(starts.get(step, 1.0)), "message": message})

    report("embed", "embedding the catalogue's photos and titles")
    run = load_run(run_dir)
    out = index_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    added = refresh_added(run, out, progress)
    build_id = uuid.uuid4().hex[:12]
    stage = out / f"build-{build_id}"
    t = time.time()
    products = embed_catalog(run, None, stage, progress=progress, added=added)
    seconds["embed"] = round(time.time() - t, 2)
    _, image_emb, text_emb = load_embeddings(stage)
    pick = np.sort(np.random.default_rng(0).choice(len(products), min(RECALL_QUERIES, len(products)), replace=False))
    forests = {}
    for name, emb, other in (("image", image_emb, text_emb), ("text", text_emb, image_emb)):
        t = time.time()
        report(f"annoy_{name}", f"building the {'photo' if name == 'image' else 'title'} search index")
        # Recall is measured with the other modality's rows as queries: a title searching photos is the app's case.
        forest = AnnoyIndex.build(emb, products["id"], stage / f"{name}.ann", run.fingerprint, n_trees,
                                  queries=np.asarray(other[pick]), progress=progress)
        seconds[f"annoy_{name}"] = round(time.time() - t, 2)
        forests[name] = {k: forest.meta[k] for k in ("n_trees", "search_k", "recall_at_10", "file_bytes")}
    if with_map:
        from .projection import build_map

        t = time.time()
        report("map", f"laying out the map of {2 * len(products):,} points (UMAP)")
        build_map(products, image_emb, text_emb, run.heads, stage, progress=progress)
        seconds["map"] = round(time.time() - t, 2)
    seconds["total"] = round(time.time() - t_start, 2)
    manifest = {"format": INDEX_FORMAT, "fingerprint": run.fingerprint, "build_id": build_id, "dir": stage.name,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "n_products": len(products),
                "n_added": int(products["added"].sum()), "dim": run.dim, "exact_below": EXACT_BELOW,
                "indexes": forests, "map": with_map, "seconds": seconds}
    write_json(out / MANIFEST, manifest)  # the commit point
    _remove_other_builds(out, keep=build_folder(out))  # re-read: a build committed meanwhile stays
    report("done", f"indexed {len(products):,} products in {seconds['total']:.0f} s")
    return manifest


def load_index(run, backend: str = "auto") -> tuple:
    """(manifest, products, image_emb, text_emb, forests, backend) of a run's index, checked against the run.

    backend: "annoy", "exact", or "auto" = exact below EXACT_BELOW products, else Annoy. Raises IndexMissingError
    (no index) or StaleIndexError (another model, or files that don't line up), each saying what to run.
    """
    from .embed import index_dir, load_embeddings

    run_dir, out = run.run_dir, index_dir(run.run_dir)
    if backend not in ("auto", "annoy", "exact"):
        raise ValueError(f"unknown backend {backend!r}; choose auto, annoy or exact")
    if not (out / MANIFEST).is_file():
        raise IndexMissingError(f"{run_dir} has no search index yet: run `python -m huse_core index --run {run_dir}`")
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("format") != INDEX_FORMAT or manifest.get("fingerprint") != run.fingerprint:
        raise StaleIndexError(f"the index in {out} was built for another model or version of the run: "
                              f"{rebuild_hint(run_dir)}")
    folder = build_folder(out, manifest)
    products, image_emb, text_emb = load_embeddings(folder)
    if not len(products) == len(image_emb) == len(text_emb) or image_emb.shape[1:] != (run.dim,):
        raise StaleIndexError(f"the index files in {out} do not line up (an interrupted build?): "
                              f"{rebuild_hint(run_dir)}")
    if backend == "auto":
        backend = "exact" if len(products) < EXACT_BELOW else "annoy"
    forests = {}
    for name in ("image", "text") if backend == "annoy" else ():
        forests[name] = AnnoyIndex.load(folder / f"{name}.ann", run.dim, run.fingerprint, run_dir)
        if not np.array_equal(forests[name].ids, products["id"].to_numpy(dtype=object)):
            raise StaleIndexError(f"{name}.ann in {out} indexes other products than products.parquet: "
                                  f"{rebuild_hint(run_dir)}")
    return manifest, products, image_emb, text_emb, forests, backend
