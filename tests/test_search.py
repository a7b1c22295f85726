"""The Searcher on a tiny trained run: hits, filters, multimodal queries, labels, added products, the CLI."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from huse_core.cli import main
from huse_core.retrieval.build import build_index
from huse_core.retrieval.search import IndexMissingError, Searcher, StaleIndexError

BACKENDS = ["annoy", "exact"]


@pytest.fixture(scope="module")
def searchers(tiny_indexed_run):
    return {b: Searcher.open(tiny_indexed_run, backend=b) for b in BACKENDS}


@pytest.fixture(scope="module")
def searcher(searchers):
    return searchers["annoy"]


def ids(hits) -> list[str]:
    return [h.id for h in hits]


def photo_bytes(product_image: str) -> bytes:
    buf = io.BytesIO()
    Image.open(product_image).convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()


def test_text_search_returns_k_hits_best_first_with_all_fields(searcher):
    hits = searcher.search(text="red sneakers", k=7, mode="vector")
    assert len(hits) == 7 and len(set(ids(hits))) == 7
    key = [searcher.scale * h.score + h.agreement for h in hits]  # a title ranks by cosine + its classes
    assert all(a >= b - 1e-9 for a, b in zip(key, key[1:]))
    top = float(searcher.keyword_scores("red sneakers").max())  # hybrid: + w * bm25 / the query's best bm25
    mixed = searcher.search(text="red sneakers", k=7)
    weight = searcher.keyword_weights[searcher.query_kind("red sneakers")]  # w by what the words look like
    key = [searcher.scale * h.score + h.agreement + (weight * h.keyword / top if top else 0.0) for h in mixed]
    assert all(a >= b - 1e-9 for a, b in zip(key, key[1:])), [(h.score, h.agreement, h.keyword, top) for h in mixed]
    plain = searcher.search(text="red sneakers", k=7, use_labels=False, mode="vector")
    assert all(a.score >= b.score for a, b in zip(plain, plain[1:]))
    first = hits[0]
    assert first.modality == "image" and not first.added and first.image.startswith("/")
    assert set(first.labels) == {h["name"] for h in searcher.heads}
    assert searcher.search(text="red sneakers", target="text", k=3)[0].modality == "text"


def test_annoy_and_exact_backends_find_the_same_products(searchers):
    for query in ("blue jeans", "black leather watch", "floral summer dress"):
        annoy_ids, exact_ids = (ids(searchers[b].search(text=query, k=10)) for b in BACKENDS)
        assert annoy_ids[0] == exact_ids[0] and len(set(annoy_ids) & set(exact_ids)) >= 9


@pytest.mark.parametrize("backend", BACKENDS)
def test_filters_return_k_hits_with_the_label_and_fewer_only_when_fewer_exist(searchers, backend):
    searcher = searchers[backend]
    counts = searcher.products["articleType"].value_counts()
    common, rare = counts.index[0], counts.index[-1]
    hits = searcher.search(text="red sneakers", k=10, filters={"articleType": common})
    assert len(hits) == 10 and {h.labels["articleType"] for h in hits} == {common}
    hits = searcher.search(text="red sneakers", k=50, filters={"articleType": rare})
    assert len(hits) == counts[rare] < 50
    both = searcher.search(text="shirt", k=5, filters={"masterCategory": "apparel", "gender": "Women"})
    assert all(h.labels["masterCategory"] == "Apparel" and h.labels["gender"] == "Women" for h in both)
    unfiltered_top = searcher.search(text="red sneakers", k=100)
    expected = [h.id for h in unfiltered_top if h.labels["articleType"] == common][:10]
    assert ids(searcher.search(text="red sneakers", k=10, filters={"articleType": common}))[:3] == expected[:3]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"text": ""}, "empty query"), ({"text": "   \n"}, "empty query"), ({}, "empty query"),
    ({"product": "no-such-id"}, "unknown product id 'no-such-id'"),
    ({"text": "x", "target": "audio"}, "unknown target 'audio'"), ({"text": "x", "k": 0}, "k must be at least 1"),
    ({"text": "x", "filters": {"colour": "Red"}}, "unknown filter head 'colour'; heads are: masterCategory"),
    ({"text": "x", "filters": {"masterCategory": "Cars"}}, "no class 'Cars' in head 'masterCategory'"),
    ({"text": "x", "image_weight": 1.5}, "image_weight must be between 0 and 1"),
])
def test_bad_queries_raise_clear_errors(searcher, kwargs, message):
    with pytest.raises(ValueError, match=message):
        searcher.search(**kwargs)


def test_image_weight_one_is_the_pure_image_query_and_zero_the_pure_text_query(searcher):
    product = searcher.products.iloc[3]
    title, image = "navy blue striped shirt", product["image"]
    pure_image = ids(searcher.search(image=image, k=10))
    assert ids(searcher.search(text=title, image=image, image_weight=1.0, k=10)) == pure_image
    # weight 0 is the title's vector alone; a photo is given, so the title's classes do not re-rank (rerank)
    assert ids(searcher.search(text=title, image=image, image_weight=0.0, k=10)) == \
        ids(searcher.search(text=title, k=10, use_labels=False, mode="vector"))
    mixed = searcher.query_vector(title, image, 0.5)
    assert np.linalg.norm(mixed) == pytest.approx(1.0, abs=1e-5)


def test_image_queries_accept_paths_bytes_pil_and_arrays(searcher):
    path = searcher.products.iloc[0]["image"]
    expected = ids(searcher.search(image=path, k=5))
    pil = Image.open(path)
    assert ids(searcher.search(image=pil, k=5)) == expected
    assert ids(searcher.search(image=np.asarray(pil.convert("RGB")), k=5)) == expected
    assert searcher.search(image=photo_bytes(path), k=1)[0].score > 0.9  # JPEG re-encoding moves it slightly


def test_a_product_query_leaves_the_product_out_and_its_photo_finds_itself(searcher):
    pid, image = searcher.products.iloc[10][["id", "image"]]
    assert pid not in ids(searcher.search(product=pid, k=20))
    own = searcher.search(image=image, k=1)[0]
    assert own.id == pid and own.score == pytest.approx(1.0, abs=1e-4)
    by_photo = ids(searcher.search(product=pid, image_weight=1.0, k=5))
    assert by_photo == [i for i in ids(searcher.search(image=image, k=6)) if i != pid][:5]


def test_neighbours_in_four_directions_leave_the_product_out(searcher):
    pid = searcher.products.iloc[20]["id"]
    found = searcher.neighbours(pid, k=6)
    assert set(found) == {"i2i", "i2t", "t2i", "t2t", "p2p"}  # p2p: whole products (the fusion layer)
    assert all(len(hits) == 6 and pid not in ids(hits) for hits in found.values())
    assert {h.modality for h in found["p2p"]} == {"product"}
    assert {h.modality for h in found["i2t"]} == {"text"} and {h.modality for h in found["t2i"]} == {"image"}


def test_whole_product_search_uses_the_fusion_layer_vectors(searcher):
    run = searcher.run
    product = searcher.products.iloc[12]
    rows = searcher.products.index[:50]
    image_emb, text_emb = np.asarray(searcher._emb["image"][rows]), np.asarray(searcher._emb["text"][rows])
    vectors = run.encode_products(image_emb, text_emb)
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # A product id against whole products: its own vector's nearest others, itself left out
    hits = searcher.search(product=product["id"], target="product", k=5)
    assert len(hits) == 5 and product["id"] not in ids(hits) and {h.modality for h in hits} == {"product"}
    own = searcher._emb["product"][12]
    assert hits[0].score == pytest.approx(float(np.max(np.delete(searcher._emb["product"] @ own, 12))), abs=1e-5)
    # A photo and words together are fused into one product query; the product itself comes first
    both = searcher.search(text=product["title"], image=product["image"], target="product", k=3)
    query = run.encode_products(run.encode_image(product["image"]), run.encode_texts(product["title"]))[0]
    assert both[0].score == pytest.approx(float(np.max(searcher._emb["product"] @ query)), abs=1e-5)
    with pytest.raises(ValueError, match="'product'"):
        searcher.search(text="x", target="everything")



def test_the_build_stores_and_indexes_the_whole_product_vectors(searchers):
    from huse_core.retrieval.layout import load_product_emb

    searcher = searchers["annoy"]
    stored = load_product_emb(searcher.index_dir)
    assert stored is not None and stored.shape == searcher._emb["image"].shape
    assert np.allclose(stored, searcher.run.encode_products(searcher._emb["image"], searcher._emb["text"]), atol=1e-6)
    assert set(searcher.manifest["indexes"]) == {"image", "text", "product"}
    assert "product" in searcher._forests and "product" not in searchers["exact"]._forests
    assert searcher.manifest["indexes"]["product"]["recall_at_10"] >= 0.95  # tuned against exact search
    for pid in searcher.products["id"][:5]:  # (this toy run's product vectors sit within cosine 0.003 of each other)
        via_forest, scanned = (searchers[b].search(product=pid, target="product", k=10) for b in BACKENDS)
        assert via_forest[0].score == pytest.approx(scanned[0].score, abs=1e-4)


def test_classify_gives_ranked_probabilities_and_taxonomy_paths(searcher):
    product = searcher.products.iloc[0]
    result = searcher.classify(image=product["image"], text=product["title"], top=3)
    assert set(result) == {h["name"] for h in searcher.heads}
    for per in result.values():
        assert set(per) == {"image", "text", "fused"}
        probs = [p["prob"] for p in per["fused"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
    article = result["articleType"]["fused"][0]
    assert article["path"].endswith(f" › {article['label']}") and article["path"].count(" › ") == 2
    assert result["gender"]["fused"][0]["path"] == result["gender"]["fused"][0]["label"]
    assert set(searcher.classify(text="blue jeans")["articleType"]) == {"text"}
    with pytest.raises(ValueError, match="nothing to classify"):
        searcher.classify(text="  ")


def test_zero_shot_ranks_the_label_the_query_names_first(searcher):
    labels = ["Jeans", "Watch", "Boots"]  # title words of the demo shop, so all three are in the vocabulary
    assert all(label.lower() in searcher.run.tokenizer.vocab for label in labels)
    ranked = searcher.zero_shot(labels, text="boots")
    assert ranked[0][0] == "Boots" and ranked[0][1] == pytest.approx(1.0, abs=1e-5) and ranked[1][1] < 0.9999
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    with pytest.raises(ValueError, match="at least one non-empty label"):
        searcher.zero_shot([" ", ""], text="boots")


def test_added_products_are_searchable_persist_and_survive_a_rebuild(indexed_run_copy):
    searcher = Searcher.open(indexed_run_copy, backend="annoy")
    source, fingerprint = searcher.products.iloc[5], searcher.fingerprint
    first_id = searcher.products.iloc[0]["id"]
    results = searcher.add_products([
        {"title": "Brand New Red Sneakers", "image": photo_bytes(source["image"])},
        {"title": "Second New Item", "image": source["image"], "id": "sku-2"},
        {"title": "Not a photo", "image": b"hello"},
        {"title": "   ", "image": source["image"]},
        {"title": "Taken id", "image": source["image"], "id": first_id},
        {"title": "Bad id", "image": source["image"], "id": "../x"},
    ])
    assert [r["ok"] for r in results] == [True, True, False, False, False, False]
    assert results[0]["id"] == "new-1" and results[1]["id"] == "sku-2"
    assert "not an image" in results[2]["error"] and "empty title" in results[3]["error"]
    assert "already used" in results[4]["error"] and "only letters" in results[5]["error"]
    assert set(results[0]["labels"]) == {h["name"] for h in searcher.heads}
    assert searcher.fingerprint != fingerprint  # app caches keyed on it see the new products
    hit = searcher.search(image=source["image"], k=3, filters={"articleType": results[1]["labels"]["articleType"]})
    assert "sku-2" in ids(hit) and next(h for h in hit if h.id == "sku-2").added
    assert "sku-2" in ids(searcher.search(product="new-1", image_weight=1.0, k=3))  # the same photo

    reopened = Searcher.open(indexed_run_copy, backend="annoy")  # a restart keeps them
    assert {"new-1", "sku-2"} <= set(reopened.products["id"]) and reopened.products["added"].sum() == 2
    assert reopened.search(image=source["image"], k=3)[0].id in {source["id"], "new-1", "sku-2"}
    assert reopened.add_products([{"title": "Third", "image": source["image"]}])[0]["id"] == "new-2"

    build_index(indexed_run_copy, with_map=False, progress=False)  # folded in as ordinary rows
    rebuilt = Searcher.open(indexed_run_copy, backend="annoy")
    added = rebuilt.products[rebuilt.products["added"]]
    searcher.refresh()  # the first Searcher reads the store too: it has taken in new-2 from `reopened`
    assert set(added["id"]) == {"new-1", "sku-2", "new-2"} and len(rebuilt.products) == len(searcher.products)
    assert rebuilt._state.n_index == len(rebuilt.products)  # nothing left in the delta
    assert "sku-2" in ids(rebuilt.search(product="new-1", image_weight=1.0, k=3))


def test_opening_without_an_index_or_with_a_stale_one_says_to_run_index(tiny_trained_run, indexed_run_copy, tmp_path):
    with pytest.raises(IndexMissingError, match=r"python -m huse_core index --run"):
        Searcher.open(tiny_trained_run)
    manifest = indexed_run_copy / "index" / "index.json"
    meta = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**meta, "fingerprint": "0" * 16}))
    with pytest.raises(StaleIndexError, match=r"another model.*python -m huse_core index --run"):
        Searcher.open(indexed_run_copy)
    assert main(["search", "--run", str(tiny_trained_run), "--text", "shirt"]) == 2


def test_cli_search_json_lists_hits_with_their_fields(tiny_indexed_run, capsys):
    assert main(["search", "--run", str(tiny_indexed_run), "--text", "blue jeans", "-k", "4", "--json",
                 "--filter", "masterCategory=Apparel"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 4 and all(h["agreement"] <= 0 for h in hits)  # a title's classes rank too (rerank)
    assert all({"id", "title", "image", "score", "modality", "labels", "agreement"} <= set(h) for h in hits)
    assert main(["search", "--run", str(tiny_indexed_run), "--text", "blue jeans", "-k", "4", "--json",
                 "--filter", "masterCategory=Apparel", "--cosine-only"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert [h["score"] for h in plain] == sorted((h["score"] for h in plain), reverse=True)
    assert all(h["agreement"] is None for h in plain)
    assert main(["search", "--run", str(tiny_indexed_run), "--text", "blue jeans", "-k", "3"]) == 0
    assert "predicted classes" in capsys.readouterr().out  # the printed list says how it is ranked
    assert main(["search", "--run", str(tiny_indexed_run), "--text", "blue jeans", "-k", "3", "--cosine-only"]) == 0
    assert "predicted classes" not in capsys.readouterr().out
    assert {h["labels"]["masterCategory"] for h in hits} == {"Apparel"}
    assert main(["search", "--run", str(tiny_indexed_run), "--product", hits[0]["id"], "--text", "x"]) == 2
    assert "leave out --text" in capsys.readouterr().err


def test_cli_classify_prints_heads_and_zero_shot_rankings(tiny_indexed_run, capsys):
    assert main(["classify", "--run", str(tiny_indexed_run), "--text", "blue jeans", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["articleType"]["text"][0]["prob"] > 0
    assert main(["classify", "--run", str(tiny_indexed_run), "--text", "watch", "--labels", "Jeans,Watch",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["label"] == "Watch"
    assert main(["classify", "--run", str(tiny_indexed_run)]) == 2
    assert "nothing to classify" in capsys.readouterr().err


def test_cli_index_rebuilds_and_reports_timings_and_recall(indexed_run_copy, capsys):
    shutil.rmtree(indexed_run_copy / "index")
    assert main(["index", "--run", str(indexed_run_copy), "--no-map", "--n-trees", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "recall@10 vs exact: image" in out and "times: embed" in out
    assert Searcher.open(indexed_run_copy, backend="annoy")._forests["image"].meta["n_trees"] == 4


def test_embedding_a_catalog_chunk_by_chunk_matches_the_cached_prepared_path(tiny_indexed_run, tmp_path):
    from huse_core.retrieval.embed import embed_catalog
    from huse_core.retrieval.layout import load_embeddings
    from huse_core.run import load_run

    run = load_run(tiny_indexed_run)
    products = embed_catalog(run, run.load_catalog(), tmp_path, batch_size=64, progress=False)
    built, image_emb, text_emb = load_embeddings(tiny_indexed_run / "index")
    _, chunked_image, chunked_text = load_embeddings(tmp_path)
    assert list(products["id"]) == list(built["id"]) and not products["added"].any()
    assert np.allclose(chunked_image, image_emb, atol=1e-5) and np.allclose(chunked_text, text_emb, atol=1e-5)
    assert np.allclose(np.linalg.norm(chunked_image, axis=1), 1.0, atol=1e-5)
    assert chunked_image.dtype == np.float32
