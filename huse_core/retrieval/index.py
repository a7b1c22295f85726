"""Opening a run's built index (embeddings, products, Annoy forests or faiss indexes), checked against the run;
filtered top-k."""

from __future__ import annotations

import numpy as np

from ..artifacts import read_json
from .annoy_index import AnnoyIndex
from .faiss_index import FaissIndex
from .knn import exact_search
from .layout import (INDEX_FORMAT, MANIFEST, IndexMissingError, StaleIndexError, build_folder, faiss_path, forest_path,
                     index_dir, load_embeddings, load_product_emb, rebuild_hint)

# Below this many products the Searcher scans exactly by default: under a millisecond a query, and it never misses;
# the forests are built anyway, so growing past it needs no flag.  # why: docs/decisions.md#index-backend
EXACT_BELOW = 5_000


OVERFETCH = 2000  # most Annoy / faiss candidates fetched to satisfy a filter before exact search over the matches


def top_matches(query: np.ndarray, emb: np.ndarray, forest: AnnoyIndex | FaissIndex | None, k: int,
                mask: np.ndarray | None = None, tuned_for: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cosines) of the k rows of `emb` nearest `query`, via `forest` (Annoy or faiss) when given, among
    `mask` rows only. tuned_for < k: the k rows are a re-ranking's candidate pool, of which only the best
    `tuned_for` need the index's tuned recall (AnnoyIndex.query).

    A filter over-fetches from the forest (k / share of matching rows, x1.5); when that still finds fewer than k
    matches (a rare label), exact search over just the matching rows answers: cheap, since they are few. So k
    rows come back whenever k rows match.
    """
    if mask is None:
        return forest.query(query, k, tuned_for=tuned_for) if forest else exact_search(query, emb, k)
    match = np.flatnonzero(mask)
    if len(match) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    fetch = min(len(emb), int(k * len(emb) / len(match) * 1.5) + 10)
    if forest and fetch <= OVERFETCH:
        rows, scores = forest.query(query, fetch, tuned_for=tuned_for and fetch * tuned_for // k)
        keep = mask[rows]
        if keep.sum() >= min(k, len(match)):
            return rows[keep][:k], scores[keep][:k]
    rows, scores = exact_search(query, np.asarray(emb[match]), k)
    return match[rows], scores


def load_index(run, backend: str = "auto") -> tuple:
    """(manifest, products, image_emb, text_emb, forests, backend) of a run's index, checked against the run.

    backend: "annoy", "faiss", "exact", or "auto" = exact below EXACT_BELOW products, else the kind the manifest
    says was built (manifests from before faiss name none: Annoy). Raises IndexMissingError (no index, or not of
    the kind asked for) or StaleIndexError (another model, or files that don't line up), each saying what to run.
    """
    run_dir, out = run.run_dir, index_dir(run.run_dir)
    if backend not in ("auto", "annoy", "faiss", "exact"):
        raise ValueError(f"unknown backend {backend!r}; choose auto, annoy, faiss or exact")
    if not (out / MANIFEST).is_file():
        raise IndexMissingError(f"{run_dir} has no search index yet: run `python -m huse_core index --run {run_dir}`")
    try:
        manifest = read_json(out / MANIFEST)
    except ValueError as err:
        raise StaleIndexError(f"{err}: the index is damaged: {rebuild_hint(run_dir)}") from None
    if manifest.get("format") != INDEX_FORMAT or manifest.get("fingerprint") != run.fingerprint:
        raise StaleIndexError(f"the index in {out} was built for another model or version of the run: "
                              f"{rebuild_hint(run_dir)}")
    folder = build_folder(out, manifest)
    products, image_emb, text_emb = load_embeddings(folder)
    if not len(products) == len(image_emb) == len(text_emb) or image_emb.shape[1:] != (run.dim,):
        raise StaleIndexError(f"the index files in {out} do not line up (an interrupted build?): "
                              f"{rebuild_hint(run_dir)}")
    built = manifest.get("backend", "annoy")
    if backend == "auto":
        backend = "exact" if len(products) < EXACT_BELOW else built
    elif backend not in (built, "exact"):
        raise IndexMissingError(f"the index in {out} was built with --backend {built}, not {backend}: "
                                f"{rebuild_hint(run_dir, backend)}")
    forests = {}
    kinds = [("image", image_emb), ("text", text_emb)]
    if "product" in manifest.get("indexes", {}):  # builds since whole-product vectors are stored and indexed
        kinds.append(("product", load_product_emb(folder)))
    for name, emb in kinds if backend in ("annoy", "faiss") else ():
        if backend == "faiss":
            forests[name] = FaissIndex.load(faiss_path(folder, name), emb, run.fingerprint, run_dir)
        else:
            forests[name] = AnnoyIndex.load(forest_path(folder, name), run.dim, run.fingerprint, run_dir)
        if not np.array_equal(forests[name].ids, products["id"].to_numpy(dtype=object)):
            raise StaleIndexError(f"the {backend} index of {name} in {out} indexes other products than "
                                  f"products.parquet: {rebuild_hint(run_dir)}")
    return manifest, products, image_emb, text_emb, forests, backend
