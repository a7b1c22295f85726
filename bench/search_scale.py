"""Search latency at scale: a synthetic catalogue of N products grown from a trained run, searched through
Searcher.search in process (hybrid, vector, keyword), with build times and memory.

    python bench/search_scale.py RUN [--sizes 250000,1000000] [--queries 300] [--variant NAME] [--dir DIR]
                                     [--keyword stored|memory]

The run's own index build gives the seed catalogue (products, photo and title embeddings). N rows are its rows
followed by N - n copies of seeded random rows: each copy's embeddings are the source's plus Gaussian noise,
renormalised (cosine `--copy-cos` to the source, 0.9 by default), its title the source's with one word replaced by
a word drawn from the catalogue's titles (by frequency) and, half the time, two neighbours swapped; its labels are
the source's. The index is built as `index` builds one of that size (faiss IVF-SQ8 with exact re-ranking from
100,000 products, tuned to recall@10 0.98 on title queries; the photo index only: typed queries search photos),
written as a build folder of a copy of the run, with the keyword index (BM25 over titles and label words, brand
words, untitled rows) stored as `index` stores it (`--keyword stored`, the default; its build time and size are
reported) or not (`--keyword memory`: the Searcher's first word search builds it, as for a build from before it was
stored), and opened by a Searcher. Queries: the attribute and noisy-title
query sets of the seed catalogue's test split (bench/search_queries.py's), mixed, each timed once per mode after one
warm-up (k = 10), wall clock and process CPU time. Peak RSS is the process's (VmHWM, restarted per size). Writes
bench/results/search_queries/<variant>.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import write_result

from huse_core.data.catalog import load_catalog
from huse_core.data.rowfile import RowView
from huse_core.retrieval.build import choose_backend
from huse_core.retrieval.faiss_index import FaissIndex
from huse_core.retrieval.keyword_store import make_parts, save_parts
from huse_core.retrieval.annoy_index import AnnoyIndex, RECALL_QUERIES, N_TREES
from huse_core.retrieval.layout import (IMAGE_EMB, MANIFEST, PRODUCTS, TEXT_EMB, build_folder, faiss_path,
                                        forest_path, index_dir, load_embeddings, new_build_folder)
from huse_core.retrieval.queries import attribute_queries, noisy_queries
from huse_core.retrieval.search import Searcher
from huse_core.run import load_run
from huse_core.artifacts import write_json

CHUNK = 100_000  # rows generated at a time
MODES = ("hybrid", "vector", "keyword")


def reset_peak() -> None:
    """Restart the peak-RSS count at the current RSS (Linux clear_refs), so each size's peak is its own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def rss_gb() -> dict:
    """Current and peak resident memory of this process, GB."""
    status = Path("/proc/self/status").read_text()
    kb = {k: int(status.split(f"{k}:")[1].split()[0]) for k in ("VmRSS", "VmHWM")}
    return {"rss_gb": round(kb["VmRSS"] / 2**20, 2), "peak_gb": round(kb["VmHWM"] / 2**20, 2)}


def noisy_copies(emb: np.ndarray, sources: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    """Rows emb[sources] plus Gaussian noise of the norm that leaves cosine ~cos to the source, unit length."""
    base = np.asarray(emb[np.sort(sources)], np.float32)[np.argsort(np.argsort(sources))]
    sigma = np.sqrt((1 / cos**2 - 1) / emb.shape[1])
    out = base + rng.standard_normal(base.shape, dtype=np.float32) * np.float32(sigma)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def varied_titles(titles: np.ndarray, vocab: np.ndarray, weights: np.ndarray, rng: np.random.Generator) -> list:
    """Each title with one word replaced by a catalogue word (drawn by frequency) and, half the time, two
    neighbouring words swapped."""
    out = []
    draws = rng.choice(len(vocab), len(titles), p=weights)
    pos, swap = rng.random(len(titles)), rng.random(len(titles))
    for t, d, p, s in zip(titles, draws, pos, swap):
        words = str(t).split() or [""]
        words[int(p * len(words))] = vocab[d]
        if s < 0.5 and len(words) > 2:
            i = int(p * (len(words) - 1))
            words[i], words[i + 1] = words[i + 1], words[i]
        out.append(" ".join(words))
    return out


def synthesize(seed_dir: Path, stage: Path, n: int, cos: float, seed: int = 0) -> dict:
    """Write products.parquet, image_emb.npy and text_emb.npy of an n-product catalogue into `stage`."""
    products, image_emb, text_emb = load_embeddings(seed_dir)
    n0, rng = len(products), np.random.default_rng(seed)
    sources = np.concatenate([np.arange(min(n, n0)), rng.integers(0, n0, max(0, n - n0))])
    words = [w for t in products["title"].astype(str) for w in t.split()]
    vocab, counts = np.unique(np.array(words, dtype=object), return_counts=True)
    frame = products.iloc[sources].reset_index(drop=True)
    copy = np.arange(n) >= n0
    frame.loc[copy, "id"] = [f"{i}~{j}" for i, j in zip(frame["id"][copy], np.flatnonzero(copy))]
    frame.loc[copy, "title"] = varied_titles(frame["title"][copy].to_numpy(), vocab, counts / counts.sum(), rng)
    stage.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(stage / PRODUCTS)
    for name, emb in ((IMAGE_EMB, image_emb), (TEXT_EMB, text_emb)):
        out = np.lib.format.open_memmap(stage / name, mode="w+", dtype=np.float32, shape=(n, emb.shape[1]))
        for lo in range(0, n, CHUNK):
            part = sources[lo : lo + CHUNK]
            out[lo : lo + len(part)] = np.where(copy[lo : lo + CHUNK, None], noisy_copies(emb, part, cos, rng),
                                                np.asarray(emb[np.sort(part)])[np.argsort(np.argsort(part))])
        out.flush()
        del out
    return {"n": n, "seed_products": n0, "copies": int(copy.sum()), "copy_cos": cos}


def open_scaled(run_dir: Path, n: int, cos: float, work: Path, keyword: str = "stored") -> tuple[Searcher, dict]:
    """A copy of the run whose index is an n-product synthetic build (photo index only; with its keyword index
    stored unless `keyword` is "memory"), and its Searcher."""
    run = load_run(run_dir)
    seed_dir = build_folder(index_dir(run_dir))
    to = work / f"run-{n}"
    to.mkdir(parents=True)
    for name in ("run.json", "model.pt"):
        shutil.copy2(run_dir / name, to / name)
    run = load_run(to)
    build_id = f"{n:012x}"[-12:]
    stage = new_build_folder(index_dir(to), build_id)
    steps: dict = {}
    t = time.time()
    steps["synthesize"] = synthesize(seed_dir, stage, n, cos)
    steps["synthesize"]["seconds"] = round(time.time() - t, 1)
    products, image_emb, text_emb = load_embeddings(stage)
    steps["keyword"] = {"stored": keyword == "stored"}
    if keyword == "stored":  # as build_index stores it
        t = time.time()
        steps["keyword"]["bytes"] = save_parts(stage, make_parts(products, run.heads), products, run.heads)
        steps["keyword"].update(seconds=round(time.time() - t, 1), **rss_gb())
    kind = choose_backend("auto", n)
    pick = np.sort(np.random.default_rng(0).choice(n, min(RECALL_QUERIES, n), replace=False))
    t = time.time()
    if kind == "faiss":
        forest = FaissIndex.build(RowView(image_emb), products["id"], faiss_path(stage, "image"), run.fingerprint,
                                  queries=np.asarray(text_emb[pick]), progress=False)
        keys = ("nlist", "nprobe", "rerank", "recall_at_10", "recall_at_10_low", "file_bytes")
    else:
        forest = AnnoyIndex.build(image_emb, products["id"], forest_path(stage, "image"), run.fingerprint, N_TREES,
                                  queries=np.asarray(text_emb[pick]), progress=False)
        keys = ("n_trees", "search_k", "recall_at_10", "recall_at_10_low", "file_bytes")
    steps["index"] = {"backend": kind, "seconds": round(time.time() - t, 1), **{k: forest.meta[k] for k in keys},
                      **rss_gb()}
    manifest = {"format": 1, "fingerprint": run.fingerprint, "build_id": build_id, "dir": stage.name,
                "n_products": n, "n_added": 0, "dim": run.dim, "backend": kind, "indexes": {"image": steps["index"]}}
    write_json(index_dir(to) / MANIFEST, manifest)
    del forest
    forests = {"image": (FaissIndex.load(faiss_path(stage, "image"), image_emb, run.fingerprint, to)
                         if kind == "faiss" else AnnoyIndex.load(forest_path(stage, "image"), run.dim,
                                                                 run.fingerprint, to))}
    t = time.time()
    searcher = Searcher(run, manifest, image_emb, text_emb, products, forests, kind)
    steps["open"] = {"seconds": round(time.time() - t, 2), **rss_gb()}
    return searcher, steps


def time_modes(searcher: Searcher, texts: list[str]) -> tuple[dict, dict]:
    """(first call per mode: seconds, incl. the keyword index build on the first word search; p50/p95 ms per mode)."""
    first, out = {}, {}
    for mode in MODES:
        t = time.time()
        searcher.search(text=texts[0], k=10, mode=mode)
        first[mode] = {"seconds": round(time.time() - t, 2), **rss_gb()}
        if mode == "hybrid":
            first[mode]["keyword_source"] = searcher.keyword_source
        wall, cpu = [], []
        for text in texts:
            t0, c0 = time.perf_counter(), time.process_time()
            searcher.search(text=text, k=10, mode=mode)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        ms, cpu_ms = np.array(wall) * 1000, np.array(cpu) * 1000
        out[mode] = {"p50": round(float(np.percentile(ms, 50)), 2), "p95": round(float(np.percentile(ms, 95)), 2),
                     "mean": round(float(ms.mean()), 2), "cpu_p50": round(float(np.percentile(cpu_ms, 50)), 2),
                     "cpu_p95": round(float(np.percentile(cpu_ms, 95)), 2), "n": len(ms)}
        print(mode, out[mode], flush=True)
    return first, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--sizes", default="1000000", help="catalogue sizes, comma-separated")
    ap.add_argument("--queries", type=int, default=300, help="query texts timed per mode")
    ap.add_argument("--copy-cos", type=float, default=0.9, help="cosine of a synthetic copy to its source")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--variant", default="scale", help="result file name")
    ap.add_argument("--keyword", choices=("stored", "memory"), default="stored",
                    help="store the keyword index with the build (as `index` does) or let the first search build it")
    args = ap.parse_args()
    run = load_run(args.run)
    df = load_catalog(run.data_cfg, progress=False).df
    attr = attribute_queries(df, run.leaf, args.queries, "test")
    noisy = noisy_queries(df, args.queries, "test")
    texts = [q.text for pair in zip(attr, noisy[::3], noisy[1::3]) for q in pair][: args.queries]
    payload: dict = {"run": str(args.run), "queries": len(texts), "examples": texts[:6], "keyword": args.keyword,
                     "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="search-scale-", dir=args.dir) as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            t0 = time.time()
            reset_peak()
            searcher, steps = open_scaled(args.run, n, args.copy_cos, Path(tmp), args.keyword)
            first, latency = time_modes(searcher, texts)
            payload["sizes"][str(n)] = {"build": steps, "first_search": first, "latency_ms": latency,
                                        "seconds": round(time.time() - t0, 1), **rss_gb()}
            print(n, payload["sizes"][str(n)], flush=True)
            del searcher
            shutil.rmtree(Path(tmp) / f"run-{n}")
    md = [f"# Search latency at scale: synthetic catalogues grown from {args.run}", "",
          f"{len(texts)} typed queries (attribute and noisy titles, test split), Searcher.search, k = 10, in process; "
          "wall clock and the process's CPU time per call (what an idle machine's wall clock would be, about). "
          "Keyword index: " + ("stored with the build." if args.keyword == "stored" else
                               "not stored: built by the first word search."),
          "", "| products | index | mode | p50 ms | p95 ms | CPU p50 ms | CPU p95 ms | index build s | "
          "keyword build s | keyword MB | open s | first word search s | peak RSS GB |",
          "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, r in payload["sizes"].items():
        kw = r["build"]["keyword"]
        kw_cells = f"{kw['seconds']:.1f} | {kw['bytes'] / 1e6:.1f}" if kw["stored"] else "- | -"
        for mode, v in r["latency_ms"].items():
            md.append(f"| {int(n):,} | {r['build']['index']['backend']} | {mode} | {v['p50']:.1f} | {v['p95']:.1f} | "
                      f"{v['cpu_p50']:.1f} | {v['cpu_p95']:.1f} | {r['build']['index']['seconds']:.0f} | {kw_cells} | "
                      f"{r['build']['open']['seconds']:.2f} | {r['first_search']['hybrid']['seconds']:.2f} | "
                      f"{r['peak_gb']:.1f} |")
    print(write_result("search_queries", args.variant, payload, "\n".join(md) + "\n"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
