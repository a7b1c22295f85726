"""The keyword index stored by `index`: the same results as building it in memory, its fallback when missing or
stale, and its crash-safe write."""

import json
import logging
import shutil

import numpy as np
import pytest

from huse_core.retrieval import search as search_module
from huse_core.retrieval.build import build_index
from huse_core.retrieval.keyword_store import META, load_parts, make_parts, save_parts
from huse_core.retrieval.layout import MANIFEST, build_folder, index_dir, keyword_path, load_embeddings
from huse_core.retrieval.search import Searcher


def swap_letters(word: str) -> str:
    """The word with its last two letters swapped: a typo within one edit."""
    return word[:-2] + word[-1] + word[-2]


@pytest.fixture(scope="module")
def rebuilt_run(tiny_indexed_run, tmp_path_factory):
    """The tiny run with an untitled and a new-word product folded into its index, and one more added after."""
    run_dir = shutil.copytree(tiny_indexed_run, tmp_path_factory.mktemp("kw") / "run")
    searcher = Searcher.open(run_dir, backend="exact")
    photos = searcher.products["image"]
    added = searcher.add_products([{"title": "IMG_0231", "image": photos.iloc[3], "id": "img-1"},
                                   {"title": "Zorblax Quantum Poncho", "image": photos.iloc[4], "id": "zq-1"}])
    assert all(a["ok"] for a in added)
    build_index(run_dir, with_map=False, progress=False)  # both become index rows
    assert Searcher.open(run_dir).add_products([{"title": "Quasar Tunic", "image": photos.iloc[6],
                                                 "id": "qt-1"}])[0]["ok"]
    return run_dir


def queries(searcher: Searcher) -> list[str]:
    """Attribute, title-with-a-typo, brand and untitled-credit queries read from the shop itself."""
    products, single = searcher.products, [h for h in searcher.heads if h["kind"] != "multi"]
    first = products.iloc[0]
    attribute = " ".join(str(first[h["name"]]) for h in single[:3]).lower()
    title = str(products.iloc[7]["title"]).lower().split()
    long = max(range(len(title)), key=lambda i: len(title[i]))
    title[long] = swap_letters(title[long])
    brand = sorted(searcher._keyword_side().brands)[0]
    untitled = products[products["id"] == "img-1"].iloc[0]
    credit = " ".join(str(untitled[h["name"]]) for h in single[:2]).lower()
    return [attribute, " ".join(title), brand, f"{brand} {attribute}", credit, "zorblaks poncho", "quasar tunik"]


def answers(searcher: Searcher, texts: list[str]) -> list:
    """Every field that ranks a hit, for each query in each mode that reads words, and the raw keyword scores."""
    out = []
    for text in texts:
        out.append(("scores", text, searcher.keyword_scores(text).tolist(), searcher.query_kind(text)))
        for mode in ("keyword", "hybrid"):
            out.append((mode, text, [(h.id, h.score, h.keyword, h.agreement) for h in
                                     searcher.search(text=text, k=10, mode=mode)]))
    return out


def test_the_stored_keyword_index_gives_the_same_results_as_building_it_in_memory(rebuilt_run, monkeypatch):
    stored = Searcher.open(rebuilt_run, backend="exact")
    texts = queries(stored)
    assert stored.keyword_source == "stored" and "img-1" in set(stored.products["id"].iloc[
        stored._keyword_side().untitled])  # the untitled product is an index row, found by the build
    assert stored._state.n_index < len(stored.products)  # and "qt-1" an added one
    got = answers(stored, texts)
    monkeypatch.setattr(search_module, "load_parts", lambda *a: (None, "is not stored with this build"))
    memory = Searcher.open(rebuilt_run, backend="exact")
    expected = answers(memory, texts)
    assert memory.keyword_source == "memory"
    assert got == expected
    ranked = {(e[0], e[1]): [h[0] for h in e[2]] for e in got if e[0] != "scores"}
    assert ranked["keyword", "zorblaks poncho"][0] == "zq-1"  # a typo read back: an index row since the rebuild
    assert ranked["keyword", "quasar tunik"][0] == "qt-1"  # and an added row
    assert ranked["keyword", texts[2]] and "img-1" in ranked["hybrid", texts[4]]  # the brand; the label credit


def corrupt(folder, how: str) -> None:
    path = keyword_path(folder)
    meta = json.loads((path / META).read_text())
    if how == "missing":
        shutil.rmtree(path)
    elif how == "other rows":
        (path / META).write_text(json.dumps({**meta, "rows": "0" * 64}))
    elif how == "fewer rows":
        (path / META).write_text(json.dumps({**meta, "n_docs": meta["n_docs"] - 1}))
    elif how == "older format":
        (path / META).write_text(json.dumps({**meta, "format": 0}))
    elif how == "truncated":
        data = path / "data.csc.index.npy"
        data.write_bytes(data.read_bytes()[:200])
    elif how == "not json":
        (path / META).write_text("{")


@pytest.mark.parametrize("how", ["missing", "other rows", "fewer rows", "older format", "truncated", "not json"])
def test_a_missing_or_stale_stored_keyword_index_is_built_in_memory_with_a_notice(indexed_run_copy, how, caplog):
    fresh = Searcher.open(indexed_run_copy, backend="exact")
    text = str(fresh.products["title"].iloc[2])
    expected = [(h.id, h.score, h.keyword) for h in fresh.search(text=text, k=10)]
    assert fresh.keyword_source == "stored"
    corrupt(build_folder(index_dir(indexed_run_copy)), how)
    with caplog.at_level(logging.WARNING, logger=search_module.__name__):
        stale = Searcher.open(indexed_run_copy, backend="exact")
        assert [(h.id, h.score, h.keyword) for h in stale.search(text=text, k=10)] == expected
    assert stale.keyword_source == "memory"
    notices = [r.getMessage() for r in caplog.records if r.name == search_module.__name__]
    assert len(notices) == 1 and f"python -m huse_core index --run {indexed_run_copy}" in notices[0]
    stale.search(text="black shoes", k=3)
    assert len([r for r in caplog.records if r.name == search_module.__name__]) == 1  # once per Searcher

    build_index(indexed_run_copy, with_map=False, progress=False)  # `index` again stores it
    assert Searcher.open(indexed_run_copy, backend="exact")._keyword_side() and \
        load_parts(build_folder(index_dir(indexed_run_copy)), *_rows(indexed_run_copy))[0] is not None


def _rows(run_dir):
    products = load_embeddings(index_dir(run_dir))[0]
    return products, Searcher.open(run_dir, backend="exact").heads


def test_the_build_stores_the_keyword_index_in_its_folder_and_says_what_it_took(tiny_indexed_run):
    manifest = json.loads((index_dir(tiny_indexed_run) / MANIFEST).read_text())
    folder = build_folder(index_dir(tiny_indexed_run))
    files = {p.name for p in keyword_path(folder).iterdir()}
    assert {META, "data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy", "vocab.index.json",
            "params.index.json"} <= files and not any(p.suffix == ".tmp" for p in folder.iterdir())
    assert manifest["keyword_bytes"] == sum(p.stat().st_size for p in keyword_path(folder).iterdir()) > 0
    assert manifest["seconds"]["keyword"] >= 0
    products, heads = _rows(tiny_indexed_run)
    parts, why = load_parts(folder, products, heads)
    assert why == "" and parts.index.n_docs == len(products)
    assert not np.load(keyword_path(folder) / "data.csc.index.npy", allow_pickle=False).dtype.hasobject


def test_a_write_that_fails_midway_leaves_no_keyword_folder_and_no_temp_files(tiny_indexed_run, tmp_path,
                                                                               monkeypatch):
    products, heads = _rows(tiny_indexed_run)
    parts = make_parts(products, heads)
    real = parts.index.bm25.save

    def half(path, **kwargs):
        real(path, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(parts.index.bm25, "save", half)
    with pytest.raises(OSError, match="disk full"):
        save_parts(tmp_path, parts, products, heads)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(parts.index.bm25, "save", real)
    assert save_parts(tmp_path, parts, products, heads) > 0 and load_parts(tmp_path, products, heads)[1] == ""
    assert [p.name for p in tmp_path.iterdir()] == ["keyword"]
