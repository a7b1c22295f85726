"""Search on the queries people type: attribute, noisy-title and photo-only query sets, hybrid vs vector vs keyword
vs a BM25 peer, in one process, plus the search's latency.

    python bench/search_queries.py RUN [--n 300] [--photo 200] [--split test] [--variant NAME] [--sweep-only]

Query sets: huse_core.retrieval.queries (seeded, drawn from `--split` products only; relevance over the whole
catalogue). Every ranking goes through Searcher.search on a copy of RUN (the photo-only products are added to the
copy's store with useless titles, as a shop would add them); the peer is bm25s over the catalogue's titles (its own
tokenizer and English stop words), the engine a shop would use instead. Attribute queries are also scored by shape
(label words only; with a brand word) beside the ideal ranking (every fully relevant product first: P@10 < 1 where a
query has fewer than 10). `--sweep-only` scores the hybrid rule's variants (weighted sum at
several keyword weights, the same for both query kinds; reciprocal-rank fusion) on the validation split's queries of
every set, with the share of each set the router reads as attribute queries: the per-kind weights are chosen on it.
Latency: each Searcher.search call timed in process (p50, p95), k = 10, and the vector side's 1,000-candidate lookup
alone: the index as search uses it, as it was before, and exact.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import write_result

from huse_core.data.catalog import load_catalog, normalise_title
from huse_core.retrieval.hybrid import hybrid_top
from huse_core.retrieval.index import top_matches
from huse_core.retrieval.knn import exact_search
from huse_core.retrieval.queries import NOISY_VARIANTS, attribute_queries, noisy_queries, photo_only_products, score
from huse_core.retrieval.search import Searcher
from huse_core.retrieval.rerank import CANDIDATES, class_log_probs
from huse_core.run import load_run
from huse_core.training.evaluate import catalog_picks, ranked_hits

DEPTH = 100  # ranks looked at for MRR
# (rule, keyword weight of attribute queries, of titles): each kind's weight varied with the other's at its default
SWEEP = [("sum", 128.0, w) for w in (128.0, 256.0, 512.0, 1024.0, 4096.0)] + \
    [("sum", w, 1024.0) for w in (32.0, 64.0, 256.0, 1024.0)] + [("rrf", 0.0, 0.0)]


def bm25_peer(products):
    """Query text -> product ids, best first: bm25s over titles alone (what a shop's keyword engine does)."""
    import bm25s

    ids = products["id"].astype(str).to_numpy()
    model = bm25s.BM25()
    model.index(bm25s.tokenize(products["title"].astype(str).tolist(), stopwords="en", show_progress=False),
                show_progress=False)

    def rank(text: str) -> list[str]:
        tokens = bm25s.tokenize([text], stopwords="en", show_progress=False)
        if not tokens.vocab:
            return []
        docs, scores = model.retrieve(tokens, k=min(DEPTH, len(ids)), show_progress=False)
        return [ids[d] for d, s in zip(docs[0], scores[0]) if s > 0]

    return rank


def ranker(searcher: Searcher, mode: str, timings: list | None = None, **kw):
    def rank(text: str) -> list[str]:
        t0 = time.perf_counter()
        hits = searcher.search(text=text, k=DEPTH if timings is None else 10, mode=mode, **kw)
        if timings is not None:
            timings.append(time.perf_counter() - t0)
        return [h.id for h in hits]

    return rank


def copy_run(run_dir: Path, to: Path) -> Path:
    """run.json, model.pt and the index folder (not last.pt): the copy the photo-only products are added to."""
    to.mkdir(parents=True)
    for name in ("run.json", "model.pt"):
        shutil.copy2(run_dir / name, to / name)
    shutil.copytree(run_dir / "index", to / "index")
    return to


def rankers(searcher: Searcher, peer) -> dict:
    return {"hybrid": ranker(searcher, "hybrid"), "vector (labels)": ranker(searcher, "vector"),
            "photo embedding only": ranker(searcher, "vector", use_labels=False),
            "keyword (ours)": ranker(searcher, "keyword"), "BM25 titles (bm25s)": peer}


def table(name: str, results: dict, metrics: tuple) -> list[str]:
    lines = [f"### {name}", "", "| ranking | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    lines += [f"| {r} | " + " | ".join(f"{m[x]:.3f}" for x in metrics) + " |" for r, m in results.items()]
    return lines + [""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--n", type=int, default=300, help="attribute queries and noisy-title products")
    ap.add_argument("--photo", type=int, default=200, help="photo-only products added")
    ap.add_argument("--split", default="test", choices=["val", "test"])
    ap.add_argument("--variant", default=None, help="result file name (default: the run folder's name)")
    ap.add_argument("--sweep-only", action="store_true", help="score the hybrid rule's variants on val queries "
                    "(the default weights are chosen on it)")
    ap.add_argument("--latency", type=int, default=200, help="queries timed per mode")
    ap.add_argument("--weight", default=None, help="the hybrid rule's keyword weight, ATTRIBUTE[,TITLE] per query "
                    "kind (default: the search's)")
    args = ap.parse_args()
    t0 = time.time()
    run = load_run(args.run)
    df = load_catalog(run.data_cfg, progress=False).df
    payload: dict = {"run": str(args.run), "n_products": len(df), "split": args.split, "sets": {}}
    md = [f"# Search on realistic queries: {args.run} ({len(df):,} products, "
          f"{'val' if args.sweep_only else args.split} queries)", ""]
    with tempfile.TemporaryDirectory(prefix="search-queries-") as tmp:
        searcher = Searcher.open(copy_run(Path(args.run), Path(tmp) / "run"))
        if args.weight is not None:
            weights = [float(w) for w in args.weight.split(",")]
            searcher.keyword_weights = dict(zip(searcher.keyword_weights, weights + weights[-1:]))
        payload["fusion"] = [searcher.fusion, searcher.keyword_weights]
        peer = bm25_peer(searcher.products)
        if args.sweep_only:
            payload["sweep"] = sweep(searcher, df, run.leaf, args.n, args.photo)
            md += table("hybrid rule on val queries (keyword weight w of attribute queries / of titles; the share "
                        f"of each set read as attribute queries: {payload['sweep']['routed']})",
                        payload["sweep"]["results"], tuple(next(iter(payload["sweep"]["results"].values()))))
            print(write_result("search_queries", args.variant or Path(args.run).name + "-sweep", payload,
                               "\n".join(md)))
            return 0
        payload["whole_catalogue"] = whole_catalogue(searcher, df, args.split)
        print(payload["whole_catalogue"], flush=True)
        sets = {"attribute": attribute_queries(df, run.leaf, args.n, args.split),
                "noisy": noisy_queries(df, args.n, args.split)}
        for kind, queries in sets.items():
            groups = {"": queries, **{v: [q for q in queries if q.variant == v] for v in ("labels", "brand")},
                      # where a perfect P@10 is possible: 10 or more products carry every label named
                      "10+ relevant": [q for q in queries if sum(g == 2 for g in q.relevant.values()) >= 10]} if \
                kind == "attribute" else {v: [q for q in queries if q.variant == v] for v in NOISY_VARIANTS}
            for variant, qs in groups.items():
                name = f"{kind} {variant}".strip()
                found = {r: score(f, qs) for r, f in rankers(searcher, peer).items()}
                if kind == "attribute":
                    found["ideal ranking"] = score(ideal(qs), qs)
                payload["sets"][name] = {"n_queries": len(qs), "examples": [q.text for q in qs[:5]], "results": found,
                                         "routed_attribute": routed(searcher, qs)}
                print(name, payload["sets"][name]["results"]["hybrid"], flush=True)
        items, photo = photo_only_products(df, args.photo, args.split)
        added = searcher.add_products(items)
        bad = [r for r in added if not r["ok"]]
        payload["sets"]["photo-only"] = {"n_queries": len(photo), "n_products": len(items) - len(bad),
                                         "examples": [q.text for q in photo[:5]],
                                         "results": {r: score(f, photo) for r, f in
                                                     rankers(searcher, bm25_peer(searcher.products)).items()}}
        payload["latency_ms"] = latency(searcher, [q.text for q in sets["attribute"] + sets["noisy"]],
                                        args.latency)
    payload["seconds"] = round(time.time() - t0, 1)
    for name, entry in payload["sets"].items():
        metrics = ("P@10", "nDCG@10") if name.startswith("attribute") else ("MRR", "R@10", "hit@10") if \
            name.startswith("noisy") else ("R@10", "hit@10", "MRR")
        md += table(f"{name} ({entry['n_queries']} queries, e.g. " + "; ".join(f"`{e}`" for e in
                                                                              entry["examples"][:3]) + ")",
                    entry["results"], metrics)
    wc = payload["whole_catalogue"]
    md += table(f"whole catalogue, {wc['n_queries']:,} distinct {args.split} titles against all {wc['n_gallery']:,}"
                " photos (recall = BEIR recall, the leaderboard's metric; hit = any same-title product)",
                {k: v for k, v in wc.items() if isinstance(v, dict)}, ("recall@1", "recall@10", "MRR", "hit@1",
                                                                       "hit@10"))
    md += ["### latency per Searcher.search call, k = 10, and of the vector side's candidate lookup alone (ms)", "",
           "| call | p50 | p95 | recall of the exact 1,000 |", "|---|---:|---:|---:|"]
    md += [f"| {m} | {v['p50']:.1f} | {v['p95']:.1f} | {v['recall']:.3f} |" if "recall" in v else
           f"| search, {m} | {v['p50']:.1f} | {v['p95']:.1f} | |" for m, v in payload["latency_ms"].items()] + [""]
    print(write_result("search_queries", args.variant or Path(args.run).name, payload, "\n".join(md)))
    return 0


def ideal(queries: list) -> object:
    """The ranking that puts every query's relevant products first, best grade first: the best any search can do."""
    best = {q.text: sorted(q.relevant, key=lambda i: -q.relevant[i]) for q in queries}
    return lambda text: best[text]


def routed(searcher: Searcher, queries: list) -> float:
    """The share of the queries the hybrid search reads as attribute queries (hybrid.Router)."""
    return round(float(np.mean([searcher.query_kind(q.text) == "attribute" for q in queries])), 3)


def sweep(searcher: Searcher, df, leaf: str, n: int, n_photo: int) -> dict:
    """The hybrid rule's variants on the validation split's queries of every set; the photo-only products are
    added after the other sets are scored (as in the test run: they would otherwise join those rankings)."""
    sets = {"attribute": attribute_queries(df, leaf, n, "val", seed=1)}
    noisy = noisy_queries(df, n, "val", seed=1)
    sets.update({f"noisy {v}": [q for q in noisy if q.variant == v] for v in NOISY_VARIANTS})
    items, photo = photo_only_products(df, n_photo, "val", seed=1)
    out, before = {"routed": {k: routed(searcher, qs) for k, qs in sets.items()}}, searcher.keyword_weights
    rows: dict = {}
    for stage in ("titled", "photo-only"):
        if stage == "photo-only":
            searcher.add_products(items)
            sets = {"photo-only": photo}
            out["routed"]["photo-only"] = routed(searcher, photo)
        for rule, attribute, title in SWEEP:
            searcher.fusion, searcher.keyword_weights = rule, {"attribute": attribute, "title": title}
            label = f"{rule} w = {attribute:g} / {title:g}" if rule == "sum" else rule
            f, row = ranker(searcher, "hybrid"), rows.setdefault(label, {})
            for name, qs in sets.items():
                m = score(f, qs)
                row.update({f"{name} P@10": m["P@10"], f"{name} nDCG@10": m["nDCG@10"]} if name == "attribute" else
                           {f"{name} MRR": m["MRR"]} if name.startswith("noisy") else {f"{name} R@10": m["R@10"]})
            print(label, row, flush=True)
    searcher.fusion, searcher.keyword_weights = "sum", before
    return {**out, "results": rows}


def whole_catalogue(searcher: Searcher, df, split: str) -> dict:
    """evaluate's whole-catalogue protocol (the KAGL leaderboard's) on the index: up to 2,000 distinct `split`
    titles against every photo, ranked by the photo embedding alone, as the search ranks (labels) and hybrid."""
    products = searcher.products
    norm = np.array([normalise_title(t) for t in products["title"]], dtype=object)
    row_of = {pid: i for i, pid in enumerate(products["id"].astype(str))}
    rows = np.array([row_of[i] for i in df["id"].astype(str)[df["split"] == split] if i in row_of])
    picks = catalog_picks(norm, rows)
    titles = products["title"].iloc[picks].astype(str).tolist()
    image_emb = np.asarray(searcher._emb["image"], np.float32)
    text_emb = searcher.run.encode_texts(titles)
    log_probs = class_log_probs(searcher.run.probabilities(text_emb=text_emb, titles=titles))
    codes = searcher._label_codes(searcher._current())
    router, index = searcher.router(), searcher._keyword(searcher._current())
    top = hybrid_top(text_emb, image_emb, titles, searcher.keyword_scores, log_probs, codes, searcher.scale,
                     weight_of=lambda t: router.weight(index.query_terms(t)))
    return {"n_queries": len(picks), "n_gallery": len(image_emb),
            "photo embedding only": ranked_hits(text_emb, image_emb, norm[picks], norm),
            "as the search ranks (labels)": ranked_hits(text_emb, image_emb, norm[picks], norm,
                                                        rerank=(log_probs, codes, searcher.scale)),
            "hybrid": ranked_hits(text_emb, image_emb, norm[picks], norm, top=top)}


def latency(searcher: Searcher, texts: list[str], n: int) -> dict:
    """p50 / p95 milliseconds of Searcher.search per mode over the first n query texts (after one warm-up)."""
    out = {}
    for mode in ("hybrid", "vector", "keyword"):
        timings: list[float] = []
        f = ranker(searcher, mode, timings)
        f(texts[0])
        timings.clear()
        for t in texts[:n]:
            f(t)
        out[mode] = {"p50": round(float(np.percentile(timings, 50)) * 1000, 2),
                     "p95": round(float(np.percentile(timings, 95)) * 1000, 2), "n": len(timings)}
    out.update(pool_lookup(searcher, texts[:n]))
    return out


def pool_lookup(searcher: Searcher, texts: list[str]) -> dict:
    """The vector side's 1,000-candidate lookup alone, three ways, on the same queries: the photo index with only
    the 10 shown tuned (search's), with search_k scaled to all 1,000 (before), and exact; recall = the share of the
    exact 1,000 found."""
    emb, forest = searcher._emb["image"], searcher._forests.get("image")
    queries = [searcher.query_vector(t) for t in texts]
    truth = [set(exact_search(q, emb, CANDIDATES)[0].tolist()) for q in queries]
    ways = {"exact": lambda q: exact_search(q, emb, CANDIDATES)}
    if forest is not None:
        ways = {f"{searcher.backend}, 10 tuned": lambda q: top_matches(q, emb, forest, CANDIDATES, tuned_for=10),
                f"{searcher.backend}, all tuned": lambda q: top_matches(q, emb, forest, CANDIDATES), **ways}
    out = {}
    for name, f in ways.items():
        timings, recall = [], []
        for q, t in zip(queries, truth):
            t0 = time.perf_counter()
            rows, _ = f(q)
            timings.append(time.perf_counter() - t0)
            recall.append(len(t.intersection(rows.tolist())) / len(t))
        out[f"pool: {name}"] = {"p50": round(float(np.percentile(timings, 50)) * 1000, 2),
                                "p95": round(float(np.percentile(timings, 95)) * 1000, 2), "n": len(timings),
                                "recall": round(float(np.mean(recall)), 4)}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
