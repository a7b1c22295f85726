"""Building a run's search index: embed the catalogue and added products, one Annoy forest per modality, the map."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..artifacts import write_json
from ..run import load_run
from .annoy_index import N_TREES, RECALL_QUERIES, AnnoyIndex
from .embed import embed_catalog
from .index import EXACT_BELOW
from .map import build_map
from .layout import (INDEX_FORMAT, MANIFEST, build_folder, forest_path, index_dir, load_embeddings, new_build_folder,
                     remove_other_builds)
from .store import refresh_added

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
    stage = new_build_folder(out, build_id)
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
        forest = AnnoyIndex.build(emb, products["id"], forest_path(stage, name), run.fingerprint, n_trees,
                                  queries=np.asarray(other[pick]), progress=progress)
        seconds[f"annoy_{name}"] = round(time.time() - t, 2)
        forests[name] = {k: forest.meta[k] for k in ("n_trees", "search_k", "recall_at_10", "file_bytes")}
    if with_map:
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
    remove_other_builds(out, keep=build_folder(out))  # re-read: a build committed meanwhile stays
    report("done", f"indexed {len(products):,} products in {seconds['total']:.0f} s")
    return manifest
