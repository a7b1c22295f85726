"""The 2-D map: photo, title and whole-product points, seeded layouts, sampling past the fit limit, placement."""

import os

import numpy as np
import pandas as pd

from huse_core.retrieval.layout import MAP, build_folder, load_map
from huse_core.retrieval.map import fit_xy, place_points


def test_map_file_has_every_kind_of_point_of_every_product(tiny_indexed_run):
    index_dir = build_folder(tiny_indexed_run / "index")  # the current build's files
    products = pd.read_parquet(index_dir / "products.parquet")
    frame = load_map(index_dir)
    assert (index_dir / MAP).is_file() and len(frame) == 3 * len(products)  # + whole products (fusion layer)
    for modality in ("image", "text", "product"):
        points = frame[frame["modality"] == modality]
        assert list(points["id"]) == list(products["id"])  # one point per product and modality, in order
        assert list(points["articleType"]) == list(products["articleType"])
    assert {"id", "modality", "x", "y", "title", "image", "added"} <= set(frame.columns)
    assert np.isfinite(frame[["x", "y"]].to_numpy()).all() and frame[["x", "y"]].std().min() > 0
    assert os.environ["NUMBA_CACHE_DIR"]  # set before umap was imported: kernels compile once per machine


def test_place_points_puts_a_point_at_the_mean_of_its_five_nearest_mapped_points():
    angles = np.radians([0, 10, 20, 30, 40, 90, 100, 180, 200, 270])
    ref_emb = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    ref_xy = np.arange(20, dtype=np.float32).reshape(10, 2)
    new = np.array([[np.cos(np.radians(15)), np.sin(np.radians(15))]], np.float32)  # nearest: 10, 20, 0, 30, 40 deg
    assert np.allclose(place_points(new, ref_emb, ref_xy), ref_xy[:5].mean(axis=0))
    assert place_points(new, ref_emb[:0], ref_xy[:0]).shape == (1, 2)  # nothing mapped yet: no crash


def test_fit_is_seeded_and_points_past_the_fit_limit_are_placed_near_their_neighbours():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3
    points = centres.repeat(40, axis=0) + rng.normal(size=(120, 16))
    points = (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)
    xy = fit_xy(points, seed=1, fit_limit=60, progress=False)
    assert xy.shape == (120, 2) and np.isfinite(xy).all()
    assert np.array_equal(xy, fit_xy(points, seed=1, fit_limit=60, progress=False))
    spread = np.ptp(xy, axis=0).max()
    for c in range(3):  # every cluster, fitted and placed points alike, stays together on the map
        cluster = xy[c * 40 : (c + 1) * 40]
        assert np.ptp(cluster, axis=0).max() < 0.6 * spread


def test_a_map_of_several_stacked_arrays_equals_the_map_of_their_concatenation(monkeypatch):
    # build_map hands photo, title and whole-product rows as one StackedRows (never concatenated: 6 GB at 1M
    # products); points past the fit sample are read, projected and placed PLACE_CHUNK rows at a time.
    from huse_core.retrieval import map as map_module
    from huse_core.retrieval.knn import StackedRows

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 160)) * 3  # 160 dims: over PCA_DIMS, so the projection runs too
    points = centres.repeat(50, axis=0) + rng.normal(size=(150, 160))
    points = (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)
    whole = fit_xy(points, seed=2, fit_limit=70, progress=False, n_fit=100)
    monkeypatch.setattr(map_module, "PLACE_CHUNK", 16)
    stacked = fit_xy(StackedRows([points[:40], points[40:100], points[100:]]), seed=2, fit_limit=70,
                     progress=False, n_fit=100)
    assert np.allclose(stacked, whole, atol=1e-5)
    assert np.isfinite(stacked).all() and np.ptp(stacked[100:], axis=0).min() > 0  # rows past n_fit were placed
