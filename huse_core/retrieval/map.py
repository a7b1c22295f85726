"""The 2-D map of a catalogue: one UMAP over image and text embeddings together, saved as map.parquet.

With a fusion layer, each product's whole-product vector is placed on the same map (never fitted: the photo and
title layout stays the one UMAP found), so the Map page can show where whole products sit between the two.

Points past the fit sample, and products added later, are placed at the mean map position of their 5 nearest
fitted points (cosine). We keep no fitted UMAP object: storing one means a pickle, and loading a pickle can run
code; and `UMAP.transform` is slower per point than the fit itself (why: docs/decisions.md#map-sample).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..artifacts import atomic_write
from .knn import StackedRows, exact_search
from .layout import MAP

log = logging.getLogger(__name__)

# Points UMAP is fitted on; the rest are placed (place_points). Its exact neighbour graph grows with the square of
# this, placement linearly in it.  # why: docs/decisions.md#map-sample
FIT_LIMIT = 20_000
# Neighbours (UMAP's graph and placement) are found on the top PCA_DIMS principal directions of the fitted points, as
# scanpy finds them on 50 PCs: 4x fewer multiply-adds than 512 dims, as many same-class neighbours on the map.
# why: docs/decisions.md#map-sample
PCA_DIMS = 128
NEIGHBOURS = 5  # fitted points whose positions place one extra point
PLACE_CHUNK = 65_536  # points read, projected and placed at a time (~128 MB at dim 512)
# n_epochs 200: umap-learn's default for graphs over 10k points, used below that too (500) for the same picture.
# why: docs/decisions.md#map-sample
UMAP_ARGS = {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine", "n_epochs": 200}
# Products the Map page draws at most (2-3 points each): a browser's WebGL scatter stays responsive at ~100k
# points, while 1M products would send 3M points and their hover titles (~300 MB) to it. Past this, a seeded sample.
MAP_PRODUCTS = 40_000
MAP_COLUMNS = ["id", "modality", "x", "y", "title", "image"]  # then one per head, and "added" (map_frame)
STORED_COLUMNS = ["id", "modality", "x", "y"]  # what map.parquet holds (stored_map)
MAP_KINDS = np.array(["image", "text", "product"])  # a map's kinds, in row-block order


def _umap():
    # numba compiles umap's kernels on first use; a per-user cache means once per machine, not per process
    os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "huse" / "numba"))
    try:
        import umap
    except ImportError as err:
        raise RuntimeError("the map needs the `umap-learn` package: `pip install umap-learn`, or build the "
                           "index without a map (`python -m huse_core index --run RUN --no-map`)") from err
    return umap


def place_points(emb: np.ndarray, ref_emb: np.ndarray, ref_xy: np.ndarray, k: int = NEIGHBOURS,
                 progress: bool = False, chunk: int = 2048) -> np.ndarray:
    """(M, 2) positions of unit rows `emb`: the mean of the map positions `ref_xy` of their k nearest `ref_emb`."""
    emb = np.asarray(emb, np.float32)
    out = np.zeros((len(emb), 2), np.float32)
    if len(ref_emb) == 0:
        return out
    for start in tqdm(range(0, len(emb), chunk), desc="placing map points", disable=not progress, file=sys.stderr):
        rows, _ = exact_search(emb[start : start + chunk], ref_emb, k)
        out[start : start + chunk] = ref_xy[rows].mean(axis=1)
    return out


def principal_axes(fit_points: np.ndarray, dims: int = PCA_DIMS) -> np.ndarray | None:
    """(dims, D) top right singular vectors of the fitted rows; None when D <= dims (nothing to reduce)."""
    if fit_points.shape[1] <= dims:
        return None
    return np.linalg.svd(fit_points, full_matrices=False)[2][:dims]


def project(points: np.ndarray, axes: np.ndarray | None) -> np.ndarray:
    """Rows projected on `axes` (principal_axes) and made unit again; unchanged when axes is None."""
    if axes is None:
        return points
    reduced = points @ axes.T
    return reduced / np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)


def knn_graph(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosine distances), both (P, k), of each unit row's k nearest rows, itself included, by exact search.

    Handed to UMAP as `precomputed_knn`: umap's own search (pynndescent) JIT-compiles for 20-50 s in every new
    process, most of a demo map's time, while one chunked matrix product over <= FIT_LIMIT rows takes seconds.
    """
    rows, cos = exact_search(points, points, k)
    return rows.astype(np.int32), np.maximum(0.0, 1.0 - cos).astype(np.float32)


def fit_xy(points, seed: int = 0, fit_limit: int = FIT_LIMIT, progress: bool = True,
           n_fit: int | None = None) -> np.ndarray:
    """(P, 2) map positions of unit rows: UMAP on all of them, or on a seeded sample of `fit_limit` + placement.
    Only the first `n_fit` rows (default: all) may be fitted; the rows after them are always placed. `points`: an
    array, memory-mapped or not, or a knn.StackedRows of several."""
    n = len(points)
    n_fit = n if n_fit is None else min(int(n_fit), n)
    if n_fit < 4:  # too few for a neighbour graph: spread them on a line
        return np.stack([np.arange(n, dtype=np.float32), np.zeros(n, np.float32)], axis=1)
    fit = (np.arange(n_fit) if n_fit <= fit_limit
           else np.sort(np.random.default_rng(seed).choice(n_fit, fit_limit, replace=False)))
    t0 = time.time()
    if progress:
        log.info(f"map: fitting UMAP on {len(fit):,} of {n:,} points")
    args = {**UMAP_ARGS, "n_neighbors": min(UMAP_ARGS["n_neighbors"], len(fit) - 1)}
    fit_raw = np.asarray(points[fit], np.float32)
    axes = principal_axes(fit_raw)
    fit_points = project(fit_raw, axes)
    knn = knn_graph(fit_points, args["n_neighbors"])
    reducer = _umap().UMAP(n_components=2, random_state=seed, precomputed_knn=(*knn, None), **args)
    with warnings.catch_warnings():
        # "n_jobs overridden by random_state": seeded is single-threaded by design; "no NNDescent object":
        # UMAP.transform is unavailable, and we never call it (module docstring)
        warnings.simplefilter("ignore")
        fit_xy_ = reducer.fit_transform(fit_points).astype(np.float32)
    if progress:
        log.info(f"map: UMAP fit took {time.time() - t0:.1f}s")
    if len(fit) == n:
        return fit_xy_
    xy = np.zeros((n, 2), np.float32)
    xy[fit] = fit_xy_
    placed = np.ones(n, dtype=bool)
    placed[fit] = False
    # The other points, PLACE_CHUNK rows at a time: read, projected, placed; never all of them in memory at 512 dims.
    for start in tqdm(range(0, n, PLACE_CHUNK), desc="placing map points", disable=not progress, file=sys.stderr):
        rows = np.flatnonzero(placed[start : start + PLACE_CHUNK])
        if len(rows):
            block = np.asarray(points[start : start + PLACE_CHUNK], np.float32)[rows]
            xy[start + rows] = place_points(project(block, axes), fit_points, fit_xy_)
    return xy


def map_frame(products: pd.DataFrame, xy: np.ndarray, heads: list[dict]) -> pd.DataFrame:
    """Map rows: every product's image point, then its text point (then its product point when `xy` has 3N rows):
    id, modality, x, y, title, image, heads, added. `xy` is (2N or 3N, 2), each kind in `products` order."""
    frame = stored_map(products, xy)
    reps = len(frame) // max(1, len(products))  # kinds of point: each column repeats once a kind
    for col in ["title", "image"] + [h["name"] for h in heads]:
        frame[col] = np.tile(products[col].to_numpy(), reps)
    frame["added"] = np.tile(products["added"].to_numpy(dtype=bool), reps) if "added" in products else False
    return frame


def stored_map(products: pd.DataFrame, xy: np.ndarray) -> pd.DataFrame:
    """What map.parquet holds (STORED_COLUMNS): id, modality, x, y, in map_frame's row order. Titles, photos and
    labels are joined from the build's products.parquet when the map is read (full_map): at 1M products the wide
    frame of 3M rows and its Parquet conversion took ~1 GB more of the build's memory than these four columns."""
    n = len(products)
    kinds = MAP_KINDS[: len(xy) // n] if n else MAP_KINDS[:2]
    return pd.DataFrame({"id": np.tile(products["id"].to_numpy(), len(kinds)), "modality": np.repeat(kinds, n),
                         "x": xy[:, 0], "y": xy[:, 1]})


def full_map(stored: pd.DataFrame, products: pd.DataFrame, heads: list[dict]) -> pd.DataFrame:
    """The map with the columns the app shows (map_frame's): a map.parquet of STORED_COLUMNS joined with its
    build's `products` in row order; a map written by older versions already holds them and is returned as is."""
    if "title" in stored:
        return stored
    frame = map_frame(products, stored[["x", "y"]].to_numpy(np.float32), heads)
    if len(frame) != len(stored) or not np.array_equal(frame["id"].astype(str).to_numpy(),
                                                       stored["id"].astype(str).to_numpy()):
        raise ValueError("map.parquet does not list the products of its build in order")
    return frame


def build_map(products: pd.DataFrame, image_emb: np.ndarray, text_emb: np.ndarray, heads: list[dict],
              out_dir: str | Path, seed: int = 0, progress: bool = True,
              product_emb: np.ndarray | None = None) -> pd.DataFrame:
    """Fit the map of all products (image and text points together), place their whole-product points when
    `product_emb` is given, and save `map.parquet` (stored_map's columns) atomically; returns what it saved.
    `heads` is kept for callers; the labels are joined when the map is read (full_map)."""
    parts = [image_emb, text_emb] + ([product_emb] if product_emb is not None else [])
    xy = fit_xy(StackedRows(parts), seed=seed, progress=progress, n_fit=2 * len(products))
    frame = stored_map(products, xy)
    atomic_write(Path(out_dir) / MAP, lambda tmp: frame.to_parquet(tmp, index=False))
    return frame


def sample_map(frame: pd.DataFrame, max_products: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The map rows of at most `max_products` products, every point of each: all of them when there are no more,
    else the products added since the build (frame["added"]; the latest max_products of them at most) and a seeded
    sample of the others, the same on every call. `max_products` defaults to MAP_PRODUCTS."""
    max_products = MAP_PRODUCTS if max_products is None else int(max_products)
    ids = pd.unique(frame["id"])
    if len(ids) <= max_products:
        return frame
    added = pd.unique(frame.loc[frame["added"].to_numpy(bool), "id"]) if "added" in frame else ids[:0]
    added = added[len(added) - min(len(added), max_products):]  # the latest, if even they are too many
    rest = ids[~pd.Index(ids).isin(added)]
    room = max(0, max_products - len(added))
    pick = np.sort(np.random.default_rng(seed).choice(len(rest), min(room, len(rest)), replace=False))
    return frame[frame["id"].isin(np.concatenate([added, rest[pick]]))]


def extend_map(base: pd.DataFrame, ref: list[np.ndarray], added: pd.DataFrame,
               added_vectors: list[np.ndarray], heads: list[dict]) -> pd.DataFrame:
    """The saved map plus points for products added since: each at the mean of its 5 nearest mapped points.

    `ref` holds the embeddings of `base`'s kinds in its order (image, text[, product], as build_map wrote them);
    `added_vectors` the added products' embeddings of the same kinds.
    """
    if len(added) == 0:
        return base
    xy = place_points(np.concatenate(added_vectors), StackedRows(ref), base[["x", "y"]].to_numpy(np.float32))
    return pd.concat([base, map_frame(added, xy, heads)], ignore_index=True)
