"""Title search that reads the classifier (retrieval.rerank): s * cosine + sum_h log p(product's class | title)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from huse_core.retrieval.rerank import (FLOOR, agreement, class_log_probs, label_codes, reranked_top, rescore,
                                        search_scale)
from huse_core.retrieval.search import Searcher
from huse_core.training.evaluate import catalog_retrieval, ranked_hits

HEADS = [{"name": "colour", "kind": "single", "classes": ["Black", "Red", "other"]},
         {"name": "gender", "kind": "single", "classes": ["Men", "Women"]},
         {"name": "tags", "kind": "multi", "classes": ["x", "y"]}]


def unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_label_codes_map_labels_to_classes_rare_ones_to_other_and_blanks_to_none():
    values = {"colour": np.array(["Red", "Black", "Mauve", ""], dtype=object),
              "gender": np.array(["Women", "Unisex", "Men", "nan"], dtype=object),
              "tags": np.array(["x|y", "", "x", "y"], dtype=object)}
    codes = label_codes(values, HEADS)
    assert codes["colour"].tolist() == [1, 0, 2, -1]  # "Mauve" was merged into "other"
    assert codes["gender"].tolist() == [1, -1, 0, -1]  # no "other" class: an unknown label is no label
    assert "tags" not in codes  # multi-label heads are not read


def test_rescore_adds_each_heads_log_probability_of_the_products_class():
    codes = {"colour": np.array([0, 1, -1]), "gender": np.array([1, 1, 0])}
    log_probs = {"colour": np.log([[0.7, 0.2, 0.1]]), "gender": np.log([[0.4, 0.6]]), "unread": np.zeros((1, 5))}
    rows, cos = np.array([[2, 0, 1]]), np.array([[0.5, 0.4, 0.3]])
    expected = [10 * 0.5 + 0 + math.log(0.4),  # row 2: no colour label, gender Men
                10 * 0.4 + math.log(0.7) + math.log(0.6),
                10 * 0.3 + math.log(0.2) + math.log(0.6)]
    assert rescore(cos, rows, log_probs, codes, 10.0)[0] == pytest.approx(expected)
    assert agreement(rows, log_probs, {}) == pytest.approx(np.zeros((1, 3)))  # a run whose index has no labels
    probs = {"colour": {"text": np.array([[1.0, 0.0, 0.0]])}}
    assert class_log_probs(probs)["colour"][0, 1] == pytest.approx(math.log(FLOOR))  # floored, never -inf


def test_reranked_top_lets_the_title_classes_overturn_a_small_cosine_lead():
    gallery = unit([[1, 0.10], [1, 0.12], [0, 1]])  # rows 0 and 1 near the query, row 2 far
    query = unit([[1, 0.1]])
    codes = {"colour": np.array([0, 1, 1])}  # row 0 Black, rows 1-2 Red
    red = {"colour": np.log([[0.05, 0.9, 0.05]])}
    assert reranked_top(query, gallery, red, codes, scale=20.0)[0].tolist() == [1, 0, 2]
    assert reranked_top(query, gallery, {}, codes, scale=20.0)[0].tolist() == [0, 1, 2]  # cosine alone
    # a large scale makes the classes a tie-breaker only: the far red product stays last
    assert reranked_top(query, gallery, red, codes, scale=1e7)[0].tolist() == [0, 1, 2]
    assert reranked_top(unit([[1, 0.1], [0, 1]]), gallery, {"colour": np.log([[0.05, 0.9, 0.05]] * 2)}, codes, 20.0,
                        exclude_self=True, k=2).shape == (2, 2)


def test_search_scale_is_the_alignment_terms_last_scale_else_the_classifier_scale():
    run = SimpleNamespace(meta={"history": [{"nce_scale": 20.0}, {"nce_scale": 31.5}]},
                          model_cfg=SimpleNamespace(logit_scale=16.0))
    assert search_scale(run) == 31.5
    run.meta = {"history": [{"loss": {}}]}
    assert search_scale(run) == 16.0


def test_the_catalogue_protocol_ranks_as_the_search_does():
    gallery = unit([[1, 0.10], [1, 0.12], [0, 1], [1, 0.11]])
    keys = np.array(["black tee", "red tee", "red cap", "grey tee"])
    query = unit([[1, 0.1]])
    codes = {"colour": np.array([0, 1, 1, 2])}
    red = {"colour": np.log([[0.05, 0.9, 0.05]])}
    assert ranked_hits(query, gallery, np.array(["red tee"]), keys)["R@1"] == 0.0  # cosine: rank 3
    got = ranked_hits(query, gallery, np.array(["red tee"]), keys, rerank=(red, codes, 20.0))
    assert {m: got[m] for m in ("R@1", "R@10", "MRR")} == {"R@1": 1.0, "R@10": 1.0, "MRR": 1.0}
    titles = ["Black Tee", "Red Tee", "Red Cap", "Grey Tee"]
    image_emb, text_emb = gallery, np.vstack([query, query, gallery[2:3], query])
    out = catalog_retrieval(image_emb, text_emb, titles, np.array([1]),
                            rerank=(lambda rows: {"colour": np.log([[0.05, 0.9, 0.05]] * len(rows))}, codes, 20.0))
    assert out["t2i"]["R@1"] == 0.0 and out["t2i_labels"]["R@1"] == 1.0


def test_a_typed_title_ranks_by_cosine_plus_agreement_and_can_opt_out(tiny_indexed_run):
    searcher = Searcher.open(tiny_indexed_run, backend="exact")
    hits = searcher.search(text="red sneakers", k=8, mode="vector")
    assert all(h.agreement is not None and h.agreement <= 0 for h in hits)
    key = [searcher.scale * h.score + h.agreement for h in hits]
    assert all(a >= b - 1e-9 for a, b in zip(key, key[1:]))
    plain = searcher.search(text="red sneakers", k=8, use_labels=False, mode="vector")
    assert all(h.agreement is None for h in plain)
    assert all(a.score >= b.score for a, b in zip(plain, plain[1:]))
    # photo and product queries rank by cosine alone
    assert all(h.agreement is None for h in searcher.search(image=hits[0].image, k=3))
    assert all(h.agreement is None for h in searcher.search(product=hits[0].id, k=3))
