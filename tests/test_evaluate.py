"""The whole-catalogue retrieval protocol (KAGL leaderboard) on hand-made vectors with duplicate titles."""

import numpy as np
import pytest

from huse_core.training.evaluate import catalog_retrieval, ranked_hits


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_ranked_hits_counts_any_same_title_product_as_a_hit():
    gallery = unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1]])
    keys = np.array(["red shirt", "blue shirt", "red shirt", "jeans"])
    queries = unit([[1, 0.05, 0], [0, 0.2, 1]])
    # query 0 ("blue shirt"): ranks gallery 0 (red) first, then 1 (blue) -> rank 2
    # query 1 ("red shirt"): gallery 3 (jeans) first, then 2 (a red shirt twin) -> rank 2
    got = ranked_hits(queries, gallery, np.array(["blue shirt", "red shirt"]), keys)
    assert {m: got[m] for m in ("R@1", "R@10", "MRR")} == {"R@1": 0.0, "R@10": 1.0, "MRR": 0.5}
    got = ranked_hits(queries[:1], gallery, np.array(["red shirt"]), keys)
    assert got["R@1"] == 1.0 and got["MRR"] == 1.0


def test_beir_recall_is_the_share_of_the_titles_products_found_and_hit_rate_stands_beside_it():
    gallery = unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1]])
    keys = np.array(["red shirt", "blue shirt", "red shirt", "jeans"])
    # "red shirt" has two products (0 and 2); the query finds 0 first, 2 last of four
    got = ranked_hits(unit([[1, 0, 0]]), gallery, np.array(["red shirt"]), keys)
    assert got["recall@1"] == 0.5 and got["hit@1"] == got["R@1"] == 1.0 and got["recall@10"] == 1.0
    # twelve products share one title: the top 10 hold 10 of the 12
    many = ranked_hits(unit(np.eye(12))[:1], unit(np.eye(12)), np.array(["x"]), np.array(["x"] * 12))
    assert many["recall@10"] == pytest.approx(10 / 12, abs=1e-4) and many["hit@10"] == 1.0
    # a ranking given from elsewhere (the hybrid search's) is scored the same way
    given = ranked_hits(unit([[1, 0, 0]]), gallery, np.array(["red shirt"]), keys, top=np.array([[3, 2, 1, 0]]))
    assert given["recall@1"] == 0.0 and given["MRR"] == 0.5 and given["recall@10"] == 1.0


def test_a_query_whose_title_is_not_in_the_gallery_ranks_last():
    gallery = unit(np.eye(12))
    got = ranked_hits(gallery[:1], gallery, np.array(["nowhere"]), np.array([f"t{i}" for i in range(12)]))
    assert got["R@10"] == 0.0 and got["MRR"] == pytest.approx(1 / 12, abs=1e-4)


def test_catalog_protocol_queries_distinct_test_titles_against_every_photo():
    rng = np.random.default_rng(0)
    n, d = 60, 8
    image_emb = unit(rng.normal(size=(n, d)))
    text_emb = image_emb.copy()  # perfectly aligned pairs ...
    titles = [f"Product {i // 2}" for i in range(n)]  # ... where every title is shared by two products
    test_rows = np.arange(40, 60)
    got = catalog_retrieval(image_emb, text_emb, titles, test_rows)
    assert got["n_queries"] == 10 and got["n_gallery"] == n  # one query per distinct title
    assert got["t2i"]["R@1"] == 1.0 and got["i2t"]["MRR"] == 1.0
    # Titles lower-cased / spaced differently are the same title (normalised)
    titles[41] = "  product 20 "
    assert catalog_retrieval(image_emb, text_emb, titles, test_rows)["n_queries"] == 10
    # Shuffled text vectors: the protocol sees it
    shuffled = catalog_retrieval(image_emb, text_emb[rng.permutation(n)], titles, test_rows)
    assert shuffled["t2i"]["R@1"] < 0.5
    assert catalog_retrieval(image_emb, text_emb, titles, test_rows, n_queries=4)["n_queries"] == 4
