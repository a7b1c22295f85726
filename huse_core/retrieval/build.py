"""Building a run's search index: embed the catalogue and added products, one Annoy forest or faiss index per
modality (or none: exact search), the map."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..artifacts import write_json
from ..data.rowfile import RowView
from ..run import load_run
from .adding import refresh_added
from .annoy_index import N_TREES, RECALL_QUERIES, AnnoyIndex
from .embed import embed_catalog, embed_products
from .ray_embed import gather_parts, parts_ready
from .faiss_index import FaissIndex, faiss_available, require_faiss
from .index import EXACT_BELOW
from .keyword_store import make_parts, save_parts
from .map import build_map
from .layout import (INDEX_FORMAT, MANIFEST, build_folder, faiss_path, forest_path, index_dir, load_embeddings,
                     load_product_emb, new_build_folder, remove_other_builds)

# A build's steps and their rough shares of its time on the demo shop, for one progress bar (at larger catalogues
# embedding takes a larger share, the map is sampled).
BUILD_STEPS = {"embed": 0.4, "keyword": 0.02, "index_image": 0.05, "index_text": 0.05, "index_product": 0.05,
               "map": 0.45}
Progress = Callable[[dict], None]
BACKENDS = ("auto", "annoy", "faiss", "exact")
# `--backend auto` builds faiss (when installed) from this many products on, Annoy (a core dependency) below,
# where both answer in under a millisecond.  # why: docs/decisions.md#index-backend
FAISS_FROM = 100_000


def choose_backend(backend: str, n_products: int) -> str:
    """The kind of index to build: `backend`, or for "auto" faiss from FAISS_FROM products on (when installed),
    else Annoy. Annoy is built below EXACT_BELOW too, where searches scan exactly: `--backend annoy` then works."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    return "faiss" if n_products >= FAISS_FROM and faiss_available() else "annoy"


def _rows(emb):
    """`emb` read row by row (RowView) where it is not already."""
    return emb if isinstance(emb, RowView) else RowView(emb)


def step_starts(backend: str, with_map: bool) -> dict[str, float]:
    """Build step -> the share of the whole build done when it starts (the steps this build runs, by cost)."""
    steps = [name for name in BUILD_STEPS if (with_map or name != "map") and (backend != "exact" or
                                                                               not name.startswith("index"))]
    shares = np.array([BUILD_STEPS[name] for name in steps])
    return dict(zip(steps, np.concatenate([[0.0], np.cumsum(shares)[:-1]]) / shares.sum()))


def build_one(kind: str, name: str, emb, queries: np.ndarray, ids, stage: Path, fingerprint: str, n_trees: int,
              progress: bool) -> dict:
    """Build one modality's faiss index or Annoy forest in `stage`; its settings and measured recall."""
    if kind == "faiss":
        built = FaissIndex.build(emb, ids, faiss_path(stage, name), fingerprint, queries=queries, progress=progress)
        keys = ("nlist", "nprobe", "rerank", "recall_at_10", "recall_at_10_low", "file_bytes")
    else:
        built = AnnoyIndex.build(emb, ids, forest_path(stage, name), fingerprint, n_trees, queries=queries,
                                 progress=progress)
        keys = ("n_trees", "search_k", "recall_at_10", "recall_at_10_low", "file_bytes")
    return {k: built.meta[k] for k in keys}  # the index itself (faiss: 512 MB at 1M rows) leaves memory here


def _store_keyword(stage: Path, stored, heads, seconds: dict) -> int:
    """Store the keyword index of the build's products (as a Searcher reads them) in `stage`; its size in bytes."""
    t = time.time()
    size = save_parts(stage, make_parts(stored, heads), stored, heads)
    seconds["keyword"] = round(time.time() - t, 2)
    return size


def build_index(run_dir: str | Path, n_trees: int = N_TREES, with_map: bool = True, progress: bool = True,
                callback: Progress | None = None, backend: str = "auto") -> dict:
    """Build a run's search index in a new `run_dir/index/build-<id>/`: catalogue + added products' embeddings, one
    Annoy forest or faiss index per modality (`backend`: see choose_backend; "exact" builds neither), the 2-D map;
    then `index/index.json` (backend, timings, recall, the folder's name) switches readers to it and older builds
    are deleted. Products added since the previous build are re-embedded with this model and folded in as ordinary
    rows (their `added` flag kept).

    `callback` gets {"stage": "embed" | "keyword" | "annoy" | "faiss" | "map" | "done", "fraction": share of the
    build done (0..1, never decreasing), "message": str} as each step starts, and "done" with fraction 1.0 once
    index.json is written. The keyword step stores the catalogue's keyword index (retrieval.keyword_store).
    """
    if n_trees < 1:
        raise ValueError(f"--n-trees must be at least 1, got {n_trees}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose {', '.join(BACKENDS)}")
    if backend == "faiss":
        require_faiss()  # missing: say how to install it before minutes of embedding
    t_start, seconds = time.time(), {}
    starts = step_starts(backend, with_map)
    emit = callback or (lambda event: None)

    def report(step: str, message: str) -> None:
        stage = kind if step.startswith("index") else step.split("_")[0]  # "annoy" | "faiss" for an index step
        emit({"stage": stage, "fraction": float(starts.get(step, 1.0)), "message": message})

    kind = backend
    report("embed", "embedding the catalogue's photos and titles")
    run = load_run(run_dir)
    out = index_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    added = refresh_added(run, out, progress)
    build_id = uuid.uuid4().hex[:12]
    stage = new_build_folder(out, build_id)
    t = time.time()
    # Parts written by `embed --engine ray|local` for this model and catalogue are read instead of re-embedding.
    products = (gather_parts(run, stage, added=added) if parts_ready(run)
                else embed_catalog(run, None, stage, progress=progress, added=added))
    seconds["embed"] = round(time.time() - t, 2)
    stored, image_emb, text_emb = load_embeddings(stage)
    report("keyword", "indexing the catalogue's words (BM25, typo vocabulary, brands)")
    keyword_bytes = _store_keyword(stage, stored, run.heads, seconds)
    del stored
    kind = choose_backend(backend, len(products))
    # Rows read through a memory map stay in the process's RSS (file-backed) until the kernel needs them back: at
    # 1M products the faiss builds and the map touched ~6.5 GB of the three embedding files that way. faiss, the
    # map and embed_products read row blocks, so they get RowViews (preadv: the page cache holds the file, the
    # process only the block). Annoy's build reads the array whole (a view of the map): it keeps the memory map.
    if kind != "annoy":
        image_emb, text_emb = RowView(image_emb), RowView(text_emb)
    if run.model.fusion is not None:  # whole products: a third kind of vector, stored and indexed like the others
        embed_products(run, image_emb, text_emb, stage)
    product_emb = load_product_emb(stage)
    if product_emb is not None and kind != "annoy":
        product_emb = RowView(product_emb)
    pick = np.sort(np.random.default_rng(0).choice(len(products), min(RECALL_QUERIES, len(products)), replace=False))
    forests = {}
    modalities = [("image", image_emb, text_emb), ("text", text_emb, image_emb)] if kind != "exact" else []
    if product_emb is not None and kind != "exact":
        modalities.append(("product", product_emb, product_emb))  # queried by products (search --product)
    for name, emb, other in modalities:
        t = time.time()
        what = {"image": "photo", "text": "title", "product": "whole-product"}[name]
        report(f"index_{name}", f"building the {what} search index ({kind})")
        # Recall is measured with the other modality's rows as queries: a title searching photos is the app's case.
        forests[name] = build_one(kind, name, emb, np.asarray(other[pick]), products["id"], stage, run.fingerprint,
                                  n_trees, progress)
        seconds[f"{kind}_{name}"] = round(time.time() - t, 2)
    if with_map:
        t = time.time()
        report("map", f"laying out the map of {2 * len(products):,} points (UMAP)"
               + (", then placing the whole products" if product_emb is not None else ""))
        build_map(products, _rows(image_emb), _rows(text_emb), run.heads, stage, progress=progress,
                  product_emb=None if product_emb is None else _rows(product_emb))
        seconds["map"] = round(time.time() - t, 2)
    seconds["total"] = round(time.time() - t_start, 2)
    manifest = {"format": INDEX_FORMAT, "fingerprint": run.fingerprint, "build_id": build_id, "dir": stage.name,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "n_products": len(products),
                "n_added": int(products["added"].sum()), "dim": run.dim, "exact_below": EXACT_BELOW,
                "backend": kind, "indexes": forests, "map": with_map, "keyword_bytes": keyword_bytes,
                "seconds": seconds}
    write_json(out / MANIFEST, manifest)  # the commit point
    remove_other_builds(out, keep=build_folder(out))  # re-read: a build committed meanwhile stays
    report("done", f"indexed {len(products):,} products in {seconds['total']:.0f} s")
    return manifest
