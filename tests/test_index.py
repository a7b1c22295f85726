"""Exact search, the Annoy wrapper and its sidecar (orders, cosines, recall, refusing mismatched indexes), builds."""

import json
import shutil

import numpy as np
import pytest

from huse_core.artifacts import read_json
from huse_core.retrieval.annoy_index import TARGET_RECALL, AnnoyIndex, cosine_from_angular
from huse_core.retrieval.build import build_index
from huse_core.retrieval.knn import exact_search
from huse_core.retrieval.layout import MANIFEST, IndexMissingError, StaleIndexError, build_folder
from huse_core.retrieval.layout import MAP, map_ready

# Gallery rows at known angles from the query e1 (degrees), stored out of order.
ANGLES = {"a": 50.0, "b": 5.0, "c": 120.0, "d": 20.0, "e": 90.0, "f": 35.0, "g": 170.0}
EXPECTED = ["b", "d", "f", "a", "e", "c", "g"]


def toy_gallery(dim: int = 8) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Unit rows in the plane of e1, e2 at ANGLES from the query e1."""
    ids = list(ANGLES)
    rad = np.radians([ANGLES[i] for i in ids])
    emb = np.zeros((len(ids), dim), np.float32)
    emb[:, 0], emb[:, 1] = np.cos(rad), np.sin(rad)
    query = np.zeros(dim, np.float32)
    query[0] = 1.0
    return emb, ids, query


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit rows around 20 centres: structured like real embeddings, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim))
    emb = centres[rng.integers(0, 20, n)] + 0.5 * rng.normal(size=(n, dim))
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)


def test_cosine_from_angular_matches_numpy_cosine(tmp_path):
    emb = clustered(50, 16, seed=1)
    index = AnnoyIndex.build(emb, range(50), tmp_path / "toy.ann", "fp", n_trees=2, progress=False)
    pairs = [(0, 1), (2, 30), (5, 5), (7, 49)]
    annoy_cos = [cosine_from_angular(index._ann.get_distance(i, j)) for i, j in pairs]
    assert np.allclose(annoy_cos, [emb[i] @ emb[j] for i, j in pairs], atol=1e-5)
    assert cosine_from_angular(0.0) == 1.0 and cosine_from_angular(np.sqrt(2)) == pytest.approx(0.0)
    assert cosine_from_angular(2.0) == pytest.approx(-1.0)  # opposite unit vectors: |a - b| = 2


def test_exact_search_returns_the_expected_order_and_cosines():
    emb, ids, query = toy_gallery()
    rows, scores = exact_search(query, emb, k=7)
    assert [ids[r] for r in rows] == EXPECTED
    assert np.allclose(scores, np.cos(np.radians([ANGLES[i] for i in EXPECTED])), atol=1e-6)
    top3, _ = exact_search(query, emb, k=3)
    assert [ids[r] for r in top3] == EXPECTED[:3]
    batch_rows, batch_scores = exact_search(np.stack([query, -query]), emb, k=2)
    assert [ids[r] for r in batch_rows[1]] == ["g", "c"]  # the opposite query ranks the far rows first
    assert batch_scores.shape == (2, 2)
    assert len(exact_search(query, emb, k=100)[0]) == 7  # k past the gallery: every row once


def test_exact_search_streams_a_gallery_larger_than_one_block_and_matches_brute_force():
    # 5,000 queries make the gallery block 8,192 rows, so 20,000 rows take three blocks and two query chunks;
    # the best rows sit in the last block, where a merge that dropped earlier blocks' winners would show.
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(20_000, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    queries = emb[-5_000:] + 0.05 * rng.normal(size=(5_000, 8)).astype(np.float32)
    rows, scores = exact_search(queries, emb, 5)
    sims = queries @ emb.T
    brute = np.sort(sims, axis=1)[:, ::-1][:, :5]
    assert np.allclose(scores, brute, atol=1e-6)
    assert np.allclose(np.take_along_axis(sims, rows, 1), scores, atol=1e-6)
    assert (rows[:, 0] == np.arange(15_000, 20_000)).mean() > 0.99  # each query's own (last-block) row first


def test_stacked_rows_read_like_their_concatenation_and_search_like_it():
    from huse_core.retrieval.knn import StackedRows

    rng = np.random.default_rng(4)
    parts = [rng.normal(size=(n, 6)).astype(np.float32) for n in (5, 0, 9, 3)]
    whole, stacked = np.concatenate(parts), StackedRows(parts)
    assert len(stacked) == 17 and stacked.shape == (17, 6)
    for a, b in ((0, 17), (3, 7), (4, 15), (14, 17), (16, 40), (8, 8)):
        assert np.array_equal(stacked[a:b], whole[a:b])
    rows = np.array([16, 0, 5, 5, 13, 4])
    assert np.array_equal(stacked[rows], whole[rows])
    with pytest.raises(IndexError):
        stacked[np.array([17])]
    unit = whole / np.linalg.norm(whole, axis=1, keepdims=True)
    split = StackedRows([unit[:5], unit[5:14], unit[14:]])
    for a, b in zip(exact_search(unit[:4], split, 5), exact_search(unit[:4], unit, 5), strict=True):
        assert np.array_equal(a, b)


def test_annoy_returns_the_expected_order_on_toy_vectors(tmp_path):
    emb, ids, query = toy_gallery()
    index = AnnoyIndex.build(emb, ids, tmp_path / "toy.ann", "fp", n_trees=4, progress=False)
    rows, scores = index.query(query, 7)
    assert [index.ids[r] for r in rows] == EXPECTED
    assert np.allclose(scores, np.cos(np.radians([ANGLES[i] for i in EXPECTED])), atol=1e-5)
    reopened = AnnoyIndex.load(tmp_path / "toy.ann", dim=8, fingerprint="fp")
    assert [reopened.ids[r] for r in reopened.query(query, 3)[0]] == EXPECTED[:3]


def test_annoy_agrees_with_exact_search_at_the_recorded_recall(tmp_path):
    emb, fresh = np.split(clustered(3300, 32, seed=2), [3000])  # fresh: queries the tuning never saw
    index = AnnoyIndex.build(emb, [f"p{i}" for i in range(3000)], tmp_path / "c.ann", "fp", n_trees=8,
                             progress=False)
    meta = json.loads((tmp_path / "c.ann.json").read_text())
    assert meta["recall_at_10_low"] >= TARGET_RECALL and meta["n_items"] == 3000 and meta["dim"] == 32
    assert meta["recall_at_10"] >= meta["recall_at_10_low"]
    assert meta["search_k"] >= 4 * 8 * 10 and meta["build_seconds"] >= 0
    assert index.recall(emb, fresh, 10) >= 0.97  # the promised 0.98, less the noise of 300 queries
    rows, _ = index.query(fresh[0], 10)
    exact_rows, _ = exact_search(fresh[0], emb, 10)
    assert len(set(rows) & set(exact_rows)) >= 8


def test_the_recall_bound_is_the_mean_less_two_standard_errors():
    from huse_core.retrieval.annoy_index import recall_bound

    r = np.array([1.0, 1.0, 0.8, 1.0])  # mean 0.95, sample std 0.1, standard error 0.05
    assert recall_bound(r) == pytest.approx(0.95 - 2 * 0.1 / 2)
    assert recall_bound(np.ones(50)) == 1.0 and recall_bound(np.array([0.7])) == pytest.approx(0.7)
    assert recall_bound(np.full(400, 0.9)) > recall_bound(np.r_[np.ones(200), np.full(200, 0.8)])  # spread costs


def test_index_of_another_dimension_is_refused_before_loading(tmp_path):
    emb, ids, _ = toy_gallery(dim=8)
    AnnoyIndex.build(emb, ids, tmp_path / "toy.ann", "fp", n_trees=2, progress=False)
    # Annoy would read a 8-dim file as 512-dim rows and crash the process; the sidecar check comes first.
    with pytest.raises(StaleIndexError, match=r"dimension 8 != expected 512.*huse_core index --run /r"):
        AnnoyIndex.load(tmp_path / "toy.ann", dim=512, fingerprint="fp", run_dir="/r")
    with pytest.raises(StaleIndexError, match=r"model fingerprint 'fp' != expected 'other'"):
        AnnoyIndex.load(tmp_path / "toy.ann", dim=8, fingerprint="other")


def test_truncated_or_missing_index_files_are_refused(tmp_path):
    emb, ids, _ = toy_gallery()
    index = AnnoyIndex.build(emb, ids, tmp_path / "toy.ann", "fp", n_trees=2, progress=False)
    data = tmp_path / index.meta["file"]
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(StaleIndexError, match="file size"):
        AnnoyIndex.load(tmp_path / "toy.ann", dim=8, fingerprint="fp")
    (tmp_path / "toy.ann.json").write_text("{not json")
    with pytest.raises(StaleIndexError, match="damaged"):
        AnnoyIndex.load(tmp_path / "toy.ann", dim=8, fingerprint="fp")
    with pytest.raises(IndexMissingError, match="python -m huse_core index"):
        AnnoyIndex.load(tmp_path / "none.ann", dim=8, fingerprint="fp")


def test_rebuilding_replaces_the_forest_file_and_drops_the_old_one(tmp_path):
    emb, ids, query = toy_gallery()
    first = AnnoyIndex.build(emb, ids, tmp_path / "toy.ann", "fp", n_trees=2, progress=False)
    second = AnnoyIndex.build(emb[::-1].copy(), ids[::-1], tmp_path / "toy.ann", "fp", n_trees=2, progress=False)
    assert first.meta["file"] != second.meta["file"]
    assert sorted(p.name for p in tmp_path.glob("*.ann")) == [second.meta["file"]]
    reopened = AnnoyIndex.load(tmp_path / "toy.ann", dim=8, fingerprint="fp")
    assert [reopened.ids[r] for r in reopened.query(query, 7)[0]] == EXPECTED  # ids follow their rows


def test_recall_counts_ties_among_identical_vectors_as_found(tmp_path):
    emb = clustered(200, 16, seed=4)
    emb[:30] = emb[0]  # 30 products with one title: which 10 of them make the top 10 is arbitrary
    index = AnnoyIndex.build(emb, range(200), tmp_path / "t.ann", "fp", n_trees=4, progress=False)
    assert index.recall(emb, emb[:1], 10) == 1.0
    assert index.recall(emb, emb[:1], 10, truth=np.ones((1, 10), np.float32) * 2.0) == 0.0  # nothing beats 2


def test_build_index_reports_rising_progress_and_its_manifest_says_whether_the_map_was_built(tiny_trained_run,
                                                                                              tmp_path):
    run_dir = shutil.copytree(tiny_trained_run, tmp_path / "run")
    events: list[dict] = []
    manifest = build_index(run_dir, progress=False, callback=events.append)
    # the keyword index, then the photo, title and product indexes
    assert [e["stage"] for e in events] == ["embed", "keyword", "annoy", "annoy", "annoy", "map", "done"]
    fractions = [e["fraction"] for e in events]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(b > a for a, b in zip(fractions, fractions[1:])), "progress must rise at every step"
    assert all(e["message"] for e in events)
    assert manifest["map"] is True and read_json(run_dir / "index" / MANIFEST)["map"] is True
    assert (build_folder(run_dir / "index") / MAP).is_file() and map_ready(run_dir)

    events.clear()
    manifest = build_index(run_dir, with_map=False, progress=False, callback=events.append)
    assert [e["stage"] for e in events] == ["embed", "keyword", "annoy", "annoy", "annoy", "done"]
    assert [e["fraction"] for e in events] == sorted({e["fraction"] for e in events}) and events[-1]["fraction"] == 1.0
    assert manifest["map"] is False and read_json(run_dir / "index" / MANIFEST)["map"] is False
    assert not (build_folder(run_dir / "index") / MAP).exists() and not map_ready(run_dir)
