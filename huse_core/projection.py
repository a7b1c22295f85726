"""The 2-D map of a catalogue: one UMAP over image and text embeddings together, saved as map.parquet.

Points past the fit sample, and products added later, are placed at the mean map position of their 5 nearest
fitted points (cosine). We keep no fitted UMAP object: storing one means a pickle, and loading a pickle can run
code; and `UMAP.transform` measured ~20 ms a point on 2 cores (99 s for 5,000), slower than the fit itself.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .artifacts import atomic_write
from .index import exact_search

MAP = "map.parquet"
FIT_LIMIT = 20_000  # points UMAP is fitted on; ~70 s on 2 cores at 20k, and it grows faster than linearly
NEIGHBOURS = 5  # fitted points whose positions place one extra point
UMAP_ARGS = {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine"}
MAP_COLUMNS = ["id", "modality", "x", "y", "title", "image"]


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
                 progress: bool = False, chunk: int = 4096) -> np.ndarray:
    """(M, 2) positions of unit rows `emb`: the mean of the map positions `ref_xy` of their k nearest `ref_emb`."""
    emb = np.asarray(emb, np.float32)
    out = np.zeros((len(emb), 2), np.float32)
    if len(ref_emb) == 0:
        return out
    for start in tqdm(range(0, len(emb), chunk), desc="placing map points", disable=not progress, file=sys.stderr):
        rows, _ = exact_search(emb[start : start + chunk], ref_emb, k)
        out[start : start + chunk] = ref_xy[rows].mean(axis=1)
    return out


def fit_xy(points: np.ndarray, seed: int = 0, fit_limit: int = FIT_LIMIT, progress: bool = True) -> np.ndarray:
    """(P, 2) map positions of unit rows: UMAP on all of them, or on a seeded sample of `fit_limit` + placement."""
    points = np.asarray(points, np.float32)
    n = len(points)
    if n < 4:  # too few for a neighbour graph: spread them on a line
        return np.stack([np.arange(n, dtype=np.float32), np.zeros(n, np.float32)], axis=1)
    fit = np.arange(n) if n <= fit_limit else np.sort(np.random.default_rng(seed).choice(n, fit_limit, replace=False))
    t0 = time.time()
    if progress:
        print(f"map: fitting UMAP on {len(fit):,} of {n:,} points", file=sys.stderr)
    args = {**UMAP_ARGS, "n_neighbors": min(UMAP_ARGS["n_neighbors"], len(fit) - 1)}
    reducer = _umap().UMAP(n_components=2, random_state=seed, **args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": seeded is single-threaded by design
        fit_xy_ = reducer.fit_transform(points[fit]).astype(np.float32)
    if progress:
        print(f"map: UMAP fit took {time.time() - t0:.1f}s", file=sys.stderr)
    if len(fit) == n:
        return fit_xy_
    xy = np.zeros((n, 2), np.float32)
    xy[fit] = fit_xy_
    rest = np.setdiff1d(np.arange(n), fit)
    xy[rest] = place_points(points[rest], points[fit], fit_xy_, progress=progress)
    return xy


def map_frame(products: pd.DataFrame, xy: np.ndarray, heads: list[dict]) -> pd.DataFrame:
    """Map rows: every product's image point, then its text point: id, modality, x, y, title, image, heads, added.

    `xy` is (2N, 2): image points first, then text points, both in `products` order.
    """
    n = len(products)
    both = pd.concat([products, products], ignore_index=True)
    frame = pd.DataFrame({"id": both["id"].to_numpy(), "modality": ["image"] * n + ["text"] * n,
                          "x": xy[:, 0], "y": xy[:, 1], "title": both["title"].to_numpy(),
                          "image": both["image"].to_numpy()})
    for h in heads:
        frame[h["name"]] = both[h["name"]].to_numpy()
    frame["added"] = both["added"].to_numpy(dtype=bool) if "added" in both else False
    return frame


def build_map(products: pd.DataFrame, image_emb: np.ndarray, text_emb: np.ndarray, heads: list[dict],
              out_dir: str | Path, seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """Fit the map of all products (image and text points together) and save `map.parquet` atomically."""
    xy = fit_xy(np.concatenate([image_emb, text_emb]), seed=seed, progress=progress)
    frame = map_frame(products, xy, heads)
    atomic_write(Path(out_dir) / MAP, lambda tmp: frame.to_parquet(tmp, index=False))
    return frame


def extend_map(base: pd.DataFrame, image_emb: np.ndarray, text_emb: np.ndarray, added: pd.DataFrame,
               added_image: np.ndarray, added_text: np.ndarray, heads: list[dict]) -> pd.DataFrame:
    """The saved map plus points for products added since: each at the mean of its 5 nearest mapped points.

    `base` lists image points then text points in the order of `image_emb` / `text_emb` (as build_map wrote it).
    """
    if len(added) == 0:
        return base
    ref_emb = np.concatenate([image_emb, text_emb])
    xy = place_points(np.concatenate([added_image, added_text]), ref_emb, base[["x", "y"]].to_numpy(np.float32))
    return pd.concat([base, map_frame(added, xy, heads)], ignore_index=True)


def load_map(out_dir: str | Path) -> pd.DataFrame | None:
    """The saved map of an index folder, or None when it was built with --no-map."""
    path = Path(out_dir) / MAP
    return pd.read_parquet(path) if path.is_file() else None
