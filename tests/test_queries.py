"""Query sets (retrieval.queries), their metrics against hand-worked examples, and hybrid search's keyword side on
the demo shop: typos forgiven, added products found by keyword at once."""

import math

import numpy as np
import pandas as pd
import pytest

from huse_core.data.catalog import load_catalog
from huse_core.config import DataConfig
from huse_core.retrieval.hybrid import KEYWORD_WEIGHTS, Router, credit_untitled
from huse_core.retrieval.keyword import KeywordIndex, brand_terms, label_terms, terms, useless_title
from huse_core.retrieval.queries import (attribute_queries, beir_recall, hit_rate, ndcg, noisy_queries, noisy_title,
                                         photo_only_products, precision, reciprocal_rank, score)
from huse_core.retrieval.search import Searcher


def shop(n: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    brands, colours, types = ["Puma", "Nike", "Aldo", "Mango"], ["Red", "Blue", "Navy Blue", "Black"], \
        ["Tshirts", "Shoes", "Jeans", "Watches"]
    rows = []
    for i in range(n):
        b, c, t, g = (x[rng.integers(len(x))] for x in (brands, colours, types, ["Men", "Women"]))
        rows.append({"id": str(1000 + i), "title": f"{b} {g} {c} {t} style {i % 37}", "gender": g, "baseColour": c,
                     "articleType": t, "image": f"{i}.jpg", "split": ["train", "val", "test"][i % 3]})
    return pd.DataFrame(rows)


def test_query_sets_are_deterministic_and_drawn_from_test_products_only():
    df = shop()
    test_ids = set(df["id"][df["split"] == "test"])
    for make in (lambda: attribute_queries(df, "articleType", 40), lambda: noisy_queries(df, 40),
                 lambda: photo_only_products(df, 30)[1]):
        first, again = make(), make()
        assert [(q.text, q.relevant) for q in first] == [(q.text, q.relevant) for q in again]
        assert first and {q.source for q in first} <= test_ids
    other_seed = attribute_queries(df, "articleType", 40, seed=1)
    assert [q.text for q in other_seed] != [q.text for q in attribute_queries(df, "articleType", 40)]


def test_attribute_queries_judge_every_catalogue_product_by_its_labels():
    df = shop()
    for q in attribute_queries(df, "articleType", 30):
        words = q.text.split()
        src = df.set_index("id").loc[q.source]
        assert src["articleType"].lower() in words and src["gender"].lower() in words
        full = {i for i, g in q.relevant.items() if g == 2}
        expect = df[(df["articleType"].str.lower() == src["articleType"].lower())
                    & (df["gender"] == src["gender"]) & (df["baseColour"] == src["baseColour"])]
        if any(w in ("puma", "nike", "aldo", "mango") for w in words):  # a brand word: the title starts with it
            expect = expect[expect["title"].str.split().str[0] == src["title"].split()[0]]
        assert full == set(expect["id"])  # across all splits: the whole catalogue is the gallery


def test_attribute_queries_say_whether_they_name_a_brand():
    queries = attribute_queries(shop(), "articleType", 60)
    named = [any(w in ("puma", "nike", "aldo", "mango") for w in q.text.split()) for q in queries]
    assert [q.variant for q in queries] == ["brand" if b else "labels" for b in named]
    assert 0 < sum(named) < len(queries)


def test_brands_are_words_that_start_several_titles_and_name_no_label():
    titles = ["Puma Men Black Shoes"] * 5 + ["Nike Red Tshirts"] * 4 + ["Men Blue Jeans"] * 6 + ["Mango's Dress"] * 5
    labels = label_terms([{"classes": ["Men", "Women", "Tshirts", "Black"]}])
    assert labels == {"men", "women", "tshirt", "black"}
    assert brand_terms(titles, labels) == {"puma", "mango"}  # nike: 4 titles; men: a label; "mango's" -> mango


def test_the_router_reads_label_and_brand_words_as_an_attribute_query_and_others_as_a_title():
    router = Router({"men", "black", "shoe", "tshirt", "puma"})
    assert router.kind(["black", "shoe", "men"]) == router.kind(["puma", "tshirt"]) == "attribute"
    assert router.kind(["puma", "running", "shoe"]) == router.kind([]) == "title"
    assert router.weight(["men", "shoe"]) == KEYWORD_WEIGHTS["attribute"] < router.weight(["zorblax"])


def test_the_searcher_routes_typed_queries_by_the_shops_labels_and_brands(demo):
    searcher, df = demo
    single = [h for h in searcher.heads if h["kind"] != "multi"]
    product = df.iloc[0]
    labels_only = " ".join(str(product[h["name"]]) for h in single[:3]).lower()
    assert searcher.query_kind(labels_only) == "attribute"
    long = max(labels_only.split(), key=len)  # swap its last two letters: a typo the keyword side reads back
    assert len(long) >= 4 and searcher.query_kind(labels_only.replace(long, long[:-2] + long[-1] + long[-2])) == \
        "attribute"
    other = [w for t in df["title"] for w in str(t).lower().split() if searcher.query_kind(w) == "title"]
    assert other and searcher.query_kind(f"{labels_only} {other[0]}") == "title"  # a catalogue word, no label's
    assert searcher.query_kind(labels_only + " zorblax") == "attribute"  # a word no product uses counts for nothing
    title = searcher.query_kind(product["title"])
    weight = searcher.keyword_weights[title]
    top = float(searcher.keyword_scores(product["title"]).max())
    hits = searcher.search(text=product["title"], k=10)
    key = [searcher.scale * h.score + h.agreement + weight * h.keyword / top for h in hits]
    assert all(a >= b - 1e-9 for a, b in zip(key, key[1:]))


def test_noisy_titles_drop_reorder_lowercase_and_add_the_asked_typos():
    rng = np.random.default_rng(0)
    title = "Puma Men Black Running Shoes"
    clean = noisy_title(title, 0, np.random.default_rng(5))
    assert clean == clean.lower() and len(clean.split()) == 4 and set(clean.split()) < set(title.lower().split())
    typo = noisy_title(title, 1, np.random.default_rng(5))
    assert sum(a != b for a, b in zip(clean.split(), typo.split())) == 1
    assert noisy_title("Tee", 2, rng) == "tee"  # too short to change
    variants = [q for q in noisy_queries(shop(), 10)]
    assert {q.variant for q in variants} == {"partial", "typo1", "typo2"} and len(variants) == 30


def test_beir_recall_mrr_precision_and_ndcg_on_a_hand_worked_example():
    ranked = ["a", "b", "c", "d", "e"]
    relevant = {"a": 2, "c": 2, "x": 2, "y": 1}  # four relevant, two of them retrieved
    assert beir_recall(ranked, relevant, 1) == 0.25  # 1 of 4 relevant in the top 1
    assert beir_recall(ranked, relevant, 5) == 0.5  # 2 of 4
    assert hit_rate(ranked, relevant, 1) == 1.0 and hit_rate(["b"], relevant, 1) == 0.0
    assert reciprocal_rank(["b", "d", "c"], relevant) == pytest.approx(1 / 3)
    assert precision(ranked, relevant, 5) == pytest.approx(2 / 5)
    dcg = 3 / math.log2(2) + 3 / math.log2(4)  # gains 2^2 - 1 at ranks 1 and 3
    ideal = 3 / math.log2(2) + 3 / math.log2(3) + 3 / math.log2(4) + 1 / math.log2(5)
    assert ndcg(ranked, relevant, 5) == pytest.approx(dcg / ideal)
    # hit rate >= BEIR recall: one same-title product found of three counts fully as a hit
    out = score(lambda text: ["a", "q"], [type("Q", (), {"text": "", "relevant": {"a": 2, "b": 2, "c": 2},
                                                          "ignore": set()})()], k=10)
    assert out["hit@10"] == 1.0 and out["R@10"] == pytest.approx(1 / 3, abs=1e-4)


def test_the_keyword_index_reads_a_typo_as_the_catalogues_word():
    index = KeywordIndex(["Puma Men Black Running Shoes", "Nike Women Blue Jeans", "Aldo Men Brown Leather Belt"])
    assert index.query_terms("bleu jeans") == ["blue", "jean"]
    assert index.query_terms("runnign shoes") == ["running", "shoe"]
    scores = index.scores("leathr belt")
    assert scores.argmax() == 2 and scores[0] == scores[1] == 0


@pytest.fixture(scope="module")
def demo(tiny_indexed_run):
    searcher = Searcher.open(tiny_indexed_run, backend="exact")
    df = load_catalog(DataConfig(catalog=searcher.run.data_cfg.catalog), progress=False).df
    return searcher, df


def test_a_typo_query_finds_its_product_on_the_demo_shop(demo):
    searcher, df = demo
    test = df[df["split"] == "test"]
    found = []
    for queries in noisy_queries(df, 20, seed=0):
        if queries.variant != "typo1":
            continue
        hybrid = [h.id for h in searcher.search(text=queries.text, k=10)]
        found.append(any(i in queries.relevant for i in hybrid))
    assert len(found) == min(20, test["title"].str.lower().nunique())
    assert np.mean(found) >= 0.8, found


def test_an_added_product_is_found_by_keyword_at_once(indexed_run_copy):
    searcher = Searcher.open(indexed_run_copy, backend="exact")
    photo = searcher.products["image"].iloc[0]
    added = searcher.add_products([{"title": "Zorblax Quantum Poncho", "image": photo, "id": "zq-1"}])
    assert added[0]["ok"]
    assert [h.id for h in searcher.search(text="zorblax poncho", mode="keyword", k=3)] == ["zq-1"]
    assert searcher.search(text="quantum zorblaks", k=5)[0].id == "zq-1"  # hybrid, with a typo
    other = Searcher.open(indexed_run_copy, backend="exact")  # another process's view of the same store
    assert other.search(text="zorblax", mode="keyword", k=1)[0].id == "zq-1"


@pytest.mark.parametrize("title, useless", [("IMG_0231", True), ("", True), (None, True), ("nan", True),
                                            ("DSC-0012.jpg", True), ("photo 3", True), ("Shirt", False),
                                            ("Nike Men Tee 2", False)])
def test_a_title_of_file_names_and_numbers_is_useless(title, useless):
    assert useless_title(title) is useless


def test_an_untitled_product_gets_the_share_of_the_querys_label_words_its_labels_hold():
    index = KeywordIndex(["IMG_0231 Men White Tshirts", "Guerrilla Men White Tshirts Men White Tshirts",
                          "Nike Men Black Shoes", "IMG_0007 Women White Jeans"])
    labels = {"men", "women", "white", "black", "tshirt", "shoe", "jean"}
    raw = index.scores("guerrilla men white tshirt")
    assert raw.argmax() == 1 and raw[0] < raw[1]  # BM25 alone: the titled product wins the brand word
    docs = [set(terms(t)) for t in ("IMG_0231 Men White Tshirts", "IMG_0007 Women White Jeans")]  # rows 0 and 3
    share = index.label_share("guerrilla men white tshirt", labels, docs)
    idf = {t: index.idf(t) for t in ("men", "white", "tshirt")}
    assert share == pytest.approx([1.0, idf["white"] / sum(idf.values())])  # "guerrilla" is no label word
    credited = credit_untitled(raw, np.array([0, 3]), share)
    assert credited[0] == pytest.approx(raw.max()) and credited[3] == pytest.approx(share[1] * raw.max())
    assert credited[1] == raw[1] and credited[2] == raw[2]  # titled products keep their BM25
    assert not index.label_share("guerrilla", labels, docs).any()


def test_a_photo_only_product_is_labelled_from_its_photo_and_found_by_its_labels(indexed_run_copy):
    searcher = Searcher.open(indexed_run_copy, backend="exact")
    photo = searcher.products["image"].iloc[5]
    added = searcher.add_products([{"title": "IMG_0231", "image": photo, "id": "img-1"}])
    assert added[0]["ok"]
    probs = searcher.run.probabilities(image_emb=searcher.encode_image(photo)[None])
    single = [h for h in searcher.heads if h["kind"] != "multi"]
    assert {h["name"]: added[0]["labels"][h["name"]] for h in single} == \
        {h["name"]: h["classes"][int(probs[h["name"]]["image"][0].argmax())] for h in single}
    query = " ".join(added[0]["labels"][h["name"]] for h in single)
    kw = searcher.keyword_scores(query)
    assert kw[searcher.products["id"].tolist().index("img-1")] == pytest.approx(kw.max())
    assert "img-1" in [h.id for h in searcher.search(text=query, k=10)]
    assert "img-1" in [h.id for h in searcher.search(text=query, k=10, mode="keyword")] or \
        (kw >= kw.max() * (1 - 1e-6)).sum() > 10  # keyword mode: a tie with the best, shown unless 10 others tie
