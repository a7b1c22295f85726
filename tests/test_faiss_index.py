"""The faiss backend: IVF-SQ8 + exact re-rank against exact search, its sidecar checks, builds, the Searcher on it."""

import json
import shutil
import sys

import numpy as np
import pytest

from huse_core.artifacts import read_json
from huse_core.cli import main
from huse_core.retrieval import build as build_module
from huse_core.retrieval.build import build_index, choose_backend
from huse_core.retrieval.annoy_index import TARGET_RECALL
from huse_core.retrieval.faiss_index import FaissIndex, faiss_available, n_lists, require_faiss
from huse_core.retrieval.knn import exact_search
from huse_core.retrieval.layout import MANIFEST, IndexMissingError, StaleIndexError
from huse_core.retrieval.search import Searcher

from test_index import ANGLES, EXPECTED, clustered, toy_gallery  # tests/ is on sys.path (rootdir conftest)

needs_faiss = pytest.mark.skipif(not faiss_available(),
                                 reason="faiss is not installed: pip install -r requirements-faiss.txt")


@needs_faiss
def test_faiss_returns_the_expected_order_and_exact_cosines_on_toy_vectors(tmp_path):
    emb, ids, query = toy_gallery()
    index = FaissIndex.build(emb, ids, tmp_path / "toy.faiss", "fp", progress=False)
    rows, scores = index.query(query, 7)
    assert [index.ids[r] for r in rows] == EXPECTED
    assert np.allclose(scores, np.cos(np.radians([ANGLES[i] for i in EXPECTED])), atol=1e-6)  # re-ranked: exact
    reopened = FaissIndex.load(tmp_path / "toy.faiss", emb, "fp")
    assert [reopened.ids[r] for r in reopened.query(query, 3)[0]] == EXPECTED[:3]
    assert len(reopened.query(query, 100)[0]) == 7  # k past the index: every row once, no -1 padding


@needs_faiss
def test_faiss_agrees_with_exact_search_at_the_recorded_recall(tmp_path):
    emb, fresh = np.split(clustered(5300, 64, seed=2), [5000])  # fresh: queries the tuning never saw
    index = FaissIndex.build(emb, [f"p{i}" for i in range(5000)], tmp_path / "c.faiss", "fp", progress=False)
    meta = json.loads((tmp_path / "c.faiss.json").read_text())
    assert meta["recall_at_10_low"] >= TARGET_RECALL and meta["n_items"] == 5000 and meta["dim"] == 64
    assert meta["recall_at_10"] >= meta["recall_at_10_low"]
    assert meta["nlist"] == n_lists(5000) and 1 <= meta["nprobe"] < meta["nlist"]  # tuned, not a full scan
    assert meta["rerank"] >= 10 and meta["build_seconds"] >= 0 and meta["recall_queries"] == 200
    assert meta["file_bytes"] < emb.nbytes / 2  # 8-bit codes: about a quarter of the float32 rows
    assert index.recall(fresh, 10) >= 0.97  # the promised 0.98, less the noise of 300 queries
    rows, scores = index.query(fresh[0], 10)
    exact_rows, _ = exact_search(fresh[0], emb, 10)
    assert len(set(rows) & set(exact_rows)) >= 8 and np.all(np.diff(scores) <= 0)
    assert np.allclose(scores, emb[rows] @ fresh[0], atol=1e-5)  # the scores are the rows' exact cosines
    assert index.recall(fresh, 10, nprobe=1, rerank=10) < index.recall(fresh, 10)  # tuning bought recall


@needs_faiss
def test_a_candidate_pool_re_ranks_k_rows_and_keeps_the_tuned_best(tmp_path):
    emb, fresh = np.split(clustered(5300, 64, seed=4), [5000])
    index = FaissIndex.build(emb, [f"p{i}" for i in range(5000)], tmp_path / "p.faiss", "fp", progress=False)
    assert index._plan(500, None, None, tuned_for=10)[0] == 500 < index._plan(500, None, None)[0]
    for q in fresh[:20]:
        top, top_scores = index.query(q, 10)
        pool, pool_scores = index.query(q, 500, tuned_for=10)
        assert len(pool) == 500 and np.all(np.diff(pool_scores) <= 0)
        assert np.all(pool_scores[:10] >= top_scores - 1e-6)  # the best 10 at least as near as the tuned query's


@needs_faiss
def test_a_memory_mapped_build_re_ranks_from_the_file_with_the_same_answers(tmp_path):
    # Builds open their embeddings memory-mapped; re-ranking reads its candidate rows with preadv (RowView), not
    # through the map, whose readahead pulled ~1 MB from disk a row at 10M vectors. Same rows, same cosines.
    emb, fresh = np.split(clustered(3100, 32, seed=5), [3000])
    np.save(tmp_path / "emb.npy", emb)
    mapped = np.load(tmp_path / "emb.npy", mmap_mode="r")
    ids = [f"p{i}" for i in range(3000)]
    FaissIndex.build(mapped, ids, tmp_path / "m.faiss", "fp", progress=False)
    on_disk, in_memory = FaissIndex.load(tmp_path / "m.faiss", mapped, "fp"), FaissIndex.load(tmp_path / "m.faiss",
                                                                                             emb, "fp")
    assert on_disk._rows._file is not None and in_memory._rows._file is None  # file reads only for a map
    for a, b in zip(on_disk.search(fresh, 10), in_memory.search(fresh, 10), strict=True):
        assert np.array_equal(a, b)
    rows, scores = on_disk.search(fresh[:5], 10)
    assert np.allclose(scores, np.einsum("qd,qkd->qk", fresh[:5], emb[rows]), atol=1e-5)


@needs_faiss
def test_faiss_index_of_another_model_or_dimension_is_refused_with_the_rebuild_command(tmp_path):
    emb, ids, _ = toy_gallery(dim=8)
    FaissIndex.build(emb, ids, tmp_path / "toy.faiss", "fp", progress=False)
    wider = np.zeros((len(emb), 16), np.float32)
    with pytest.raises(StaleIndexError, match=r"dimension 8 != expected 16.*huse_core index --run /r --backend faiss"):
        FaissIndex.load(tmp_path / "toy.faiss", wider, "fp", run_dir="/r")
    with pytest.raises(StaleIndexError, match=r"model fingerprint 'fp' != expected 'other'"):
        FaissIndex.load(tmp_path / "toy.faiss", emb, "other")
    with pytest.raises(StaleIndexError, match=r"rows 7 != expected 6"):
        FaissIndex.load(tmp_path / "toy.faiss", emb[:6], "fp")
    data = tmp_path / json.loads((tmp_path / "toy.faiss.json").read_text())["file"]
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(StaleIndexError, match="file size"):
        FaissIndex.load(tmp_path / "toy.faiss", emb, "fp")
    with pytest.raises(IndexMissingError, match="--backend faiss"):
        FaissIndex.load(tmp_path / "none.faiss", emb, "fp")


@needs_faiss
def test_rebuilding_replaces_the_faiss_file_and_drops_the_old_one(tmp_path):
    emb, ids, query = toy_gallery()
    first = FaissIndex.build(emb, ids, tmp_path / "toy.faiss", "fp", progress=False)
    second = FaissIndex.build(emb[::-1].copy(), ids[::-1], tmp_path / "toy.faiss", "fp", progress=False)
    assert first.meta["file"] != second.meta["file"]
    assert sorted(p.name for p in tmp_path.glob("*.faiss")) == [second.meta["file"]]
    reopened = FaissIndex.load(tmp_path / "toy.faiss", emb[::-1].copy(), "fp")
    assert [reopened.ids[r] for r in reopened.query(query, 7)[0]] == EXPECTED  # ids follow their rows


def test_a_missing_faiss_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(RuntimeError, match=r"pip install -r requirements-faiss.txt"):
        require_faiss()
    assert not faiss_available()
    assert choose_backend("auto", 10**9) == "annoy"  # auto falls back rather than failing
    with pytest.raises(RuntimeError, match="requirements-faiss.txt"):
        build_index("/nowhere", backend="faiss", progress=False)  # before any embedding


def test_auto_picks_faiss_from_the_threshold_on(monkeypatch):
    monkeypatch.setattr(build_module, "FAISS_FROM", 1000)
    monkeypatch.setattr(build_module, "faiss_available", lambda: True)
    assert [choose_backend("auto", n) for n in (999, 1000)] == ["annoy", "faiss"]
    assert choose_backend("exact", 10**9) == "exact" and choose_backend("annoy", 10**9) == "annoy"
    with pytest.raises(ValueError, match="unknown backend 'hnsw'"):
        choose_backend("hnsw", 10)


@pytest.fixture(scope="module")
def faiss_run(tiny_indexed_run, tmp_path_factory):
    """A copy of the indexed tiny run rebuilt with `--backend faiss` (no map). Read-only: copy before writing."""
    if not faiss_available():
        pytest.skip("faiss is not installed: pip install -r requirements-faiss.txt")
    run_dir = shutil.copytree(tiny_indexed_run, tmp_path_factory.mktemp("faiss") / "run")
    build_index(run_dir, with_map=False, progress=False, backend="faiss")
    return run_dir


def test_the_manifest_records_the_backend_and_the_tuned_parameters(faiss_run):
    manifest = read_json(faiss_run / "index" / MANIFEST)
    assert manifest["backend"] == "faiss" and set(manifest["indexes"]) == {"image", "text", "product"}
    for ix in manifest["indexes"].values():
        assert ix["recall_at_10"] >= TARGET_RECALL and 1 <= ix["nprobe"] <= ix["nlist"] and ix["rerank"] >= 10
    searcher = Searcher.open(faiss_run, backend="faiss")
    assert searcher.backend == "faiss" and isinstance(searcher._forests["image"], FaissIndex)
    assert Searcher.open(faiss_run).backend == "exact"  # 240 products: below EXACT_BELOW, auto scans exactly
    with pytest.raises(IndexMissingError, match=r"built with --backend faiss, not annoy.*--backend annoy"):
        Searcher.open(faiss_run, backend="annoy")


def test_faiss_and_exact_find_the_same_products_with_and_without_filters(faiss_run):
    faiss_s, exact_s = Searcher.open(faiss_run, backend="faiss"), Searcher.open(faiss_run, backend="exact")
    for query in ("blue jeans", "black leather watch", "floral summer dress"):
        got, want = ([h.id for h in s.search(text=query, k=10)] for s in (faiss_s, exact_s))
        assert got[0] == want[0] and len(set(got) & set(want)) >= 9
    counts = faiss_s.products["articleType"].value_counts()
    common, rare = counts.index[0], counts.index[-1]
    hits = faiss_s.search(text="red sneakers", k=10, filters={"articleType": common})
    assert len(hits) == 10 and {h.labels["articleType"] for h in hits} == {common}
    assert [h.id for h in hits][:3] == [h.id for h in exact_s.search(text="red sneakers", k=10,
                                                                     filters={"articleType": common})][:3]
    assert len(faiss_s.search(text="red sneakers", k=50, filters={"articleType": rare})) == counts[rare] < 50


def test_added_products_are_found_beside_a_faiss_index(faiss_run, tmp_path):
    run_dir = shutil.copytree(faiss_run, tmp_path / "run")
    searcher = Searcher.open(run_dir, backend="faiss")
    source = searcher.products.iloc[5]
    results = searcher.add_products([{"title": "Brand New Red Sneakers", "image": source["image"], "id": "sku-9"}])
    assert results[0]["ok"], results
    hits = searcher.search(image=source["image"], k=3)
    assert "sku-9" in [h.id for h in hits] and next(h for h in hits if h.id == "sku-9").added
    label = results[0]["labels"]["articleType"]
    assert "sku-9" in [h.id for h in searcher.search(image=source["image"], k=3, filters={"articleType": label})]
    build_index(run_dir, with_map=False, progress=False, backend="faiss")  # folded in as an ordinary row
    rebuilt = Searcher.open(run_dir, backend="faiss")
    assert rebuilt._state.n_index == len(rebuilt.products) and "sku-9" in set(rebuilt.products["id"])
    assert "sku-9" in [h.id for h in rebuilt.search(image=source["image"], k=3)]


def test_an_index_from_before_faiss_opens_as_annoy(tiny_indexed_run, tmp_path):
    run_dir = shutil.copytree(tiny_indexed_run, tmp_path / "run")
    manifest = run_dir / "index" / MANIFEST
    old = {k: v for k, v in read_json(manifest).items() if k != "backend"}  # annoy-only manifests had no backend
    manifest.write_text(json.dumps(old))
    assert Searcher.open(run_dir, backend="annoy").search(text="blue jeans", k=5)
    with pytest.raises(IndexMissingError, match=r"built with --backend annoy, not faiss.*--backend faiss"):
        Searcher.open(run_dir, backend="faiss")


def test_an_exact_only_build_has_no_forests_and_cli_index_takes_the_backend(indexed_run_copy, capsys):
    manifest = build_index(indexed_run_copy, with_map=False, progress=False, backend="exact")
    assert manifest["backend"] == "exact" and manifest["indexes"] == {}
    assert not [p for p in (indexed_run_copy / "index").rglob("*") if p.suffix in (".ann", ".faiss")]
    assert Searcher.open(indexed_run_copy).search(text="blue jeans", k=3)
    with pytest.raises(IndexMissingError, match="--backend annoy"):
        Searcher.open(indexed_run_copy, backend="annoy")
    if faiss_available():
        assert main(["index", "--run", str(indexed_run_copy), "--no-map", "--quiet", "--backend", "faiss"]) == 0
        out = capsys.readouterr().out
        assert "(faiss)" in out and "nprobe" in out and "rerank" in out
        assert Searcher.open(indexed_run_copy, backend="faiss").backend == "faiss"


FILE_RSS_SCRIPT = """
import sys
import numpy as np
from huse_core.data.rowfile import RowView
from huse_core.retrieval.build import _rows
from huse_core.retrieval.faiss_index import FaissIndex

def rss_file_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024

emb = np.load(sys.argv[1], mmap_mode="r")
rows = _rows(emb) if sys.argv[2] == "rows" else emb
warm = np.array(emb[:5000])  # a first build loads faiss's and BLAS's code pages, which count as file-backed too
FaissIndex.build(warm, range(len(warm)), sys.argv[3] + ".warm", "fp", progress=False)
before = rss_file_mb()
FaissIndex.build(rows, range(len(emb)), sys.argv[3], "fp", progress=False)
print(rss_file_mb() - before)
"""


@needs_faiss
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_faiss_build_from_row_views_keeps_the_embedding_file_out_of_its_memory(tmp_path):
    # What `index` hands faiss (build._rows): read by preadv, the 51 MB of rows stay in the page cache, not in the
    # process's resident memory; through the memory map they would (at 1M products: GBs of RSS per modality).
    import subprocess

    path = tmp_path / "emb.npy"
    np.save(path, clustered(100_000, 128, seed=3))
    grown = {}
    for how in ("rows", "map"):
        out = subprocess.run([sys.executable, "-c", FILE_RSS_SCRIPT, str(path), how, str(tmp_path / f"{how}.faiss")],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        grown[how] = float(out.stdout.split()[-1])
    file_mb = path.stat().st_size / 2**20
    assert grown["map"] > 0.5 * file_mb  # the memory map's touched pages count: the measure can see the file
    assert grown["rows"] < 0.2 * file_mb, grown
