"""The 2-D map: photo, title and whole-product points, seeded layouts, placement, added products, older maps."""

import os

import numpy as np
import pandas as pd
import pytest

from huse_core.retrieval.layout import MAP, build_folder, load_map
from huse_core.retrieval.map import STORED_COLUMNS, build_map, fit_xy, full_map, place_points, sample_map
from huse_core.retrieval.search import Searcher


def test_map_file_has_every_kind_of_point_of_every_product(tiny_indexed_run):
    index_dir = build_folder(tiny_indexed_run / "index")  # the current build's files
    products = pd.read_parquet(index_dir / "products.parquet")
    stored = load_map(index_dir)
    assert list(stored.columns) == STORED_COLUMNS  # lean on disk: titles, photos and labels come from products
    frame = Searcher.open(tiny_indexed_run).map_frame()  # ... joined when the map is read
    assert frame[["id", "x", "y"]].equals(stored[["id", "x", "y"]])
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


def test_the_map_places_added_products_near_their_neighbours(indexed_run_copy):
    searcher = Searcher.open(indexed_run_copy)
    before = searcher.map_frame()
    n = len(searcher.products)
    assert list(before["modality"].value_counts().sort_index()) == [n, n, n]  # image, product, text: one each
    source = searcher.products.iloc[7]
    searcher.add_products([{"title": source["title"], "image": source["image"], "id": "twin"}])
    after = searcher.map_frame()
    assert len(after) == len(before) + 3 and set(after[after["id"] == "twin"]["modality"]) == {"image", "text",
                                                                                                 "product"}
    spread = np.ptp(before[["x", "y"]].to_numpy(), axis=0)
    for kind in ("image", "product"):
        twin = after[(after["id"] == "twin") & (after["modality"] == kind)][["x", "y"]].to_numpy()[0]
        near = before[before["id"] == source["id"]][["x", "y"]].to_numpy()
        assert np.abs(near - twin).min(axis=0).max() < 0.25 * spread.max()  # by its own product, not elsewhere


def test_whole_product_points_land_among_their_class_and_older_maps_still_open(indexed_run_copy, tmp_path):
    # Hand-made space: 4 classes; a product's photo and title scatter around its class centre, its whole-product
    # vector is their normalised mean. Placed (never fitted), it must land among its own class's points.
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    labels = np.repeat(np.arange(4), 30)

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    image, text = (unit(centres[labels] + 0.4 * rng.normal(size=(120, 16))) for _ in range(2))
    products = pd.DataFrame({"id": [f"p{i}" for i in range(120)], "title": "t", "image": "i.jpg", "cls": labels})
    frame = build_map(products, image, text, [{"name": "cls"}], tmp_path, progress=False,
                      product_emb=unit(image + text))
    assert list(frame["modality"]) == ["image"] * 120 + ["text"] * 120 + ["product"] * 120
    assert pd.read_parquet(tmp_path / "map.parquet").equals(frame)
    xy = frame[["x", "y"]].to_numpy()
    fitted, placed = xy[:240], xy[240:]
    nearest = np.linalg.norm(placed[:, None] - fitted[None], axis=2).argsort(axis=1)[:, :5]
    assert (np.tile(labels, 2)[nearest] == labels[:, None]).mean() > 0.9
    wide = full_map(frame, products, [{"name": "cls"}])  # read back: joined with the products in row order
    assert list(wide["title"]) == ["t"] * 360 and list(wide["cls"]) == list(labels) * 3
    with pytest.raises(ValueError, match="in order"):
        full_map(frame.iloc[::-1].reset_index(drop=True), products, [{"name": "cls"}])
    # A build from before whole-product points and lean maps (photo and title rows, every column) still opens.
    searcher = Searcher.open(indexed_run_copy)
    wide = searcher.map_frame()
    build = next(p for p in (indexed_run_copy / "index").iterdir() if (p / "map.parquet").is_file())
    wide[wide["modality"] != "product"].to_parquet(build / "map.parquet", index=False)
    reopened = Searcher.open(indexed_run_copy)
    assert set(reopened.map_frame()["modality"]) == {"image", "text"}
    assert len(reopened.map_frame()) == 2 * len(reopened.products)
    assert reopened.map_frame()["title"].equals(wide[wide["modality"] != "product"]["title"].reset_index(drop=True))


def test_a_map_sample_keeps_every_point_of_its_products_and_every_added_product():
    n = 100
    frame = pd.DataFrame({"id": [f"p{i}" for i in range(n)] * 2, "modality": ["image"] * n + ["text"] * n,
                          "x": np.arange(2 * n, dtype=np.float32), "y": 0.0, "added": [i >= 95 for i in range(n)] * 2})
    assert sample_map(frame, n) is frame  # under the limit: everything
    sample = sample_map(frame, 30)
    assert sample["id"].nunique() == 30 and len(sample) == 60  # both points of each sampled product
    assert {f"p{i}" for i in range(95, 100)} <= set(sample["id"])  # the 5 added products are all there
    assert sample.equals(sample_map(frame, 30))  # the same sample on every call
    assert sample_map(frame, 3)["id"].nunique() == 3  # more added products than room: the latest ones
    assert set(sample_map(frame, 3)["id"]) == {"p97", "p98", "p99"}
