"""Evaluation of a run: per-head accuracy / macro-F1 for image, text and fused, R@K retrieval, modality gap.

Over 300 lines: one report — each metric beside the driver that computes it and the formatter that prints it,
sharing their names (KS, LABELS, SHORT); the numerics it shares with search live in retrieval.knn / rerank.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..artifacts import write_json
from ..data.catalog import normalise_title
from ..prepare import Prepared, cache_dir_for, embed, prepare, title_logits
from ..retrieval.hybrid import Router, hybrid_top
from ..retrieval.keyword import KeywordIndex, brand_terms, label_terms, product_text
from ..retrieval.knn import top_k
from ..retrieval.rerank import CANDIDATES, class_log_probs, label_codes, reranked_top, search_scale
from ..run import load_run
from .baseline import NAME as BASELINE_NAME
from .baseline import fit_predict, verdict
from .baseline import format_lines as baseline_lines

log = logging.getLogger(__name__)

KS = (1, 5, 10)
LABELS = "t2i_labels"  # title -> photo ranked as the search ranks a typed title (retrieval.rerank)
LABELS_NOTE = "t2i as the search ranks a title (+ its class predictions)"
HYBRID = "t2i_hybrid"  # title -> photo as the hybrid search ranks it (+ BM25 of its words, retrieval.hybrid)
NOTES = {"t2i": "photo embedding only (the leaderboard's ranking)", LABELS: LABELS_NOTE,
         HYBRID: "t2i as the hybrid search ranks a title (+ labels + BM25)"}
# Short names in format_tables: the fusion layer's whole-product vector; title -> photo as the search ranks it
SHORT = {"product": "layer", LABELS: "t2i+cls", HYBRID: "hybrid"}


def recall_at_k(hits: np.ndarray, ks=KS) -> dict[str, float]:
    """hits: (Q, K) bool, True where the ranked item is relevant -> {"R@k": share of queries with a hit in top k}."""
    return {f"R@{k}": round(float(hits[:, :k].any(1).mean()), 4) for k in ks}


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray, labels: np.ndarray, titles: list[str],
                      rerank: tuple | None = None) -> dict:
    """Class-level R@K in four directions (a same-leaf-class item, query's own product excluded) and instance
    R@K across modalities (the paired item, or one with the identical normalised title).

    `rerank` = (log_probs {head: (N, C)} of the titles' class predictions, codes {head: (N,)} of the products'
    labels, scale): also "t2i_labels", title -> photo as the search ranks it (retrieval.rerank)."""
    emb = {"i": image_emb, "t": text_emb}
    k = max(KS)
    class_level = {}
    for q in "it":
        for g in "it":
            ranked = top_k(emb[q], emb[g], k, exclude_self=True)
            class_level[f"{q}2{g}"] = recall_at_k(labels[ranked] == labels[:, None])
    norm = np.array([normalise_title(t) for t in titles], dtype=object)
    instance = {}
    for q, g in (("i", "t"), ("t", "i")):
        ranked = top_k(emb[q], emb[g], k, exclude_self=False)
        instance[f"{q}2{g}"] = recall_at_k(norm[ranked] == norm[:, None])
    if rerank is not None:
        ranked = reranked_top(text_emb, image_emb, *rerank, exclude_self=True)[:, :k]
        class_level[LABELS] = recall_at_k(labels[ranked] == labels[:, None])
        ranked = reranked_top(text_emb, image_emb, *rerank)[:, :k]
        instance[LABELS] = recall_at_k(norm[ranked] == norm[:, None])
    return {"class_level": class_level, "instance": instance}


CATALOG_QUERIES = 2000  # the public KAGL protocol's query count (marqo-ai/marqo-FashionCLIP, LEADERBOARD.md)


def ranked_hits(query_emb: np.ndarray, gallery_emb: np.ndarray, query_keys: np.ndarray, gallery_keys: np.ndarray,
                chunk: int = 256, rerank: tuple | None = None, candidates: int = CANDIDATES,
                top: np.ndarray | None = None) -> dict[str, float]:
    """Retrieval of queries against a gallery where a hit is any gallery row whose key (a normalised title) equals
    the query's: BEIR recall "recall@1", "recall@10" (the share of a query's hits in the top k: the public
    leaderboard's metric), "MRR", and the hit rate (any hit in the top k) as "R@1", "R@10" (also "hit@1", "hit@10").
    The rank of a query's first hit = 1 + the gallery rows scoring above its best hit, so MRR is exact over the
    whole gallery; a query with no hit in the gallery ranks last.

    `rerank` = (log_probs {head: (Q, C)} of the queries, codes {head: (G,)} of the gallery, scale): rank as the
    search does (retrieval.rerank): the K = `candidates` nearest by cosine re-ordered, the rows past K in cosine
    order. `top` (Q, K): a ranking made elsewhere (the hybrid search's), rows past K in cosine order."""
    codes = np.unique(np.concatenate([query_keys, gallery_keys]).astype(str), return_inverse=True)[1]
    q_code, g_code = codes[: len(query_keys)], codes[len(query_keys):]
    ranks = _cosine_ranks(query_emb, gallery_emb, q_code, g_code, chunk)
    if rerank is not None:
        top = reranked_top(query_emb, gallery_emb, *rerank, k=candidates, chunk=chunk)
    if top is not None:
        hit = g_code[top] == q_code[:, None]
        ranks = np.where(hit.any(1), hit.argmax(1) + 1, ranks)  # a first hit past K keeps its cosine rank (> K)
    else:
        hit = g_code[top_k(query_emb, gallery_emb, 10, exclude_self=False)] == q_code[:, None]
    n_rel = np.maximum(np.bincount(g_code, minlength=codes.max() + 1)[q_code], 1)
    out = {f"recall@{k}": round(float((hit[:, :k].sum(1) / n_rel).mean()), 4) for k in (1, 10)}
    out["MRR"] = round(float((1.0 / ranks).mean()), 4)
    out.update({f"R@{k}": round(float((ranks <= k).mean()), 4) for k in (1, 10)})
    return {**out, "hit@1": out["R@1"], "hit@10": out["R@10"]}


def _cosine_ranks(query_emb, gallery_emb, q_code: np.ndarray, g_code: np.ndarray, chunk: int) -> np.ndarray:
    """Per query, the cosine rank of its best-scoring hit (the gallery's length where it has none)."""
    ranks = np.empty(len(query_emb), dtype=np.int64)
    for start in range(0, len(query_emb), chunk):
        sims = query_emb[start : start + chunk] @ gallery_emb.T  # (q, G)
        hit = g_code[None, :] == q_code[start : start + chunk, None]
        best = np.where(hit, sims, -np.inf).max(1)
        ranks[start : start + chunk] = np.where(np.isfinite(best), (sims > best[:, None]).sum(1) + 1,
                                                len(gallery_emb))
    return ranks


def catalog_picks(norm: np.ndarray, query_rows: np.ndarray, n_queries: int = CATALOG_QUERIES,
                  seed: int = 0) -> np.ndarray:
    """The protocol's queries: one of `query_rows` per distinct normalised title (`norm`, every catalogue row's),
    a seeded sample of `n_queries` where there are more, in catalogue order."""
    _, first = np.unique(norm[query_rows].astype(str), return_index=True)
    picks = np.sort(query_rows[first])
    if len(picks) > n_queries:
        picks = np.sort(np.random.default_rng(seed).choice(picks, n_queries, replace=False))
    return picks


def catalog_retrieval(image_emb: np.ndarray, text_emb: np.ndarray, titles: list[str], query_rows: np.ndarray,
                      n_queries: int = CATALOG_QUERIES, seed: int = 0, rerank: tuple | None = None,
                      hybrid=None) -> dict:
    """The whole-catalogue protocol of the public KAGL leaderboard: up to `n_queries` distinct titles of
    `query_rows` (the test split) each query every photo of the catalogue (t2i), a hit = any product with the same
    normalised title; i2t: the same products' photos query every title of the catalogue.

    image_emb, text_emb, titles: the whole catalogue, row-aligned. One product stands for each distinct title.
    `rerank` = (log_probs_of, codes, scale): log_probs_of(rows) -> {head: (len(rows), C)} the class
    log-probabilities of those rows' titles (asked for the query rows only), codes {head: (N,)} every product's
    labels: also "t2i_labels", title -> photo as the search ranks it (retrieval.rerank). `hybrid(picks, log_probs)`
    -> (Q, K) photo rows as the hybrid search ranks those titles (retrieval.hybrid): also "t2i_hybrid".
    """
    norm = np.array([normalise_title(t) for t in titles], dtype=object)
    picks = catalog_picks(norm, query_rows, n_queries, seed)
    out = {"gallery": "whole catalogue", "n_queries": int(len(picks)), "n_gallery": int(len(image_emb)),
           "t2i": ranked_hits(text_emb[picks], image_emb, norm[picks], norm),
           "i2t": ranked_hits(image_emb[picks], text_emb, norm[picks], norm)}
    if rerank is not None:
        log_probs_of, codes, scale = rerank
        log_probs = log_probs_of(picks)
        out[LABELS] = ranked_hits(text_emb[picks], image_emb, norm[picks], norm, rerank=(log_probs, codes, scale))
        if hybrid is not None:
            out[HYBRID] = ranked_hits(text_emb[picks], image_emb, norm[picks], norm, top=hybrid(picks, log_probs))
    return out


def classification_metrics(probs: dict, labels: dict, heads: list[dict]) -> dict:
    """{head: {modality: {"accuracy", "macro_f1"}}}; rows with a missing label (-1) are left out."""
    from sklearn.metrics import accuracy_score, f1_score  # here, not at import: the app starts faster

    out = {}
    for h in heads:
        y, per = labels[h["name"]], {}
        for modality, p in probs[h["name"]].items():
            if h["kind"] == "multi":
                pred, true = (p >= 0.5).astype(int), y.astype(int)
            else:
                known = y >= 0
                pred, true = p.argmax(1)[known], y[known]
            if len(true) == 0:
                continue
            per[modality] = {"accuracy": round(float(accuracy_score(true, pred)), 4),
                             "macro_f1": round(float(f1_score(true, pred, average="macro", zero_division=0)), 4)}
        out[h["name"]] = per
    return out


def confusion_matrix(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(C, C) int64 counts of a single-label head, row = true class, column = predicted (the top class of
    `probs` (N, C)); rows with a missing label (-1) are left out."""
    n = probs.shape[1]
    known = labels >= 0
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (labels[known], probs.argmax(1)[known]), 1)
    return cm


def class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Per true class of a confusion matrix, the share predicted right (0 for a class without products)."""
    return np.diag(cm) / np.maximum(cm.sum(1), 1)


def split_predictions(run, split: str = "test", progress: bool = False, prep: Prepared | None = None) -> dict:
    """A loaded run's embeddings and predictions on one split of its catalogue (read with the run's own
    tokenizer and class lists), for evaluation, confusion matrices and per-class accuracy.

    Returns {"ids", "titles": lists, "labels": {head: (N,) int64 or (N, C) multi-hot},
    "image_emb", "text_emb": (N, D) float32, "probs": {head: {"image"|"text"|"fused": (N, C) float32}}}.
    `prep`: the run's catalogue already prepared (`prepare_run`), else it is prepared here.
    """
    prep = prepare_run(run, progress) if prep is None else prep
    rows, cpu = prep.split(split), torch.device("cpu")
    image_emb, text_emb = (e.numpy() for e in embed(run.model, prep, rows, cpu))
    df = prep.catalog.df.iloc[rows]
    return {"ids": df["id"].astype(str).tolist(), "titles": df["title"].tolist(),
            "labels": {h: y[rows] for h, y in prep.labels.items()}, "image_emb": image_emb, "text_emb": text_emb,
            "probs": run.probabilities(image_emb, text_emb, wide=title_logits(run.model, prep, rows, cpu))}


def prepare_run(run, progress: bool = False) -> Prepared:
    """A loaded run's catalogue, read with the run's own tokenizer and class lists (rows and split as trained); with
    a frozen photo backbone, its features too (the cache training wrote: the backbone does not run again)."""
    prep = prepare(run.data_cfg, run.model_cfg, cache_dir_for(run.data_cfg, run.run_dir), progress=progress,
                   tokenizer=run.meta["tokenizer"], heads=run.heads)
    if run.model.image.frozen:
        prep.compute_features(run.model, torch.device("cpu"), progress)
    return prep


def baseline_metrics(prep: Prepared, split: str, heads: list[dict], classification: dict) -> dict:
    """The title baseline (training/baseline.py) fitted on the train split, scored on `split`'s rows with the
    model's metric; per head its accuracy / macro-F1 and a verdict on the model's fused figures."""
    train_rows, rows = prep.split("train"), prep.split(split)
    titles = prep.catalog.df["title"]
    preds, seconds = fit_predict(titles.iloc[train_rows].tolist(), {h: y[train_rows] for h, y in prep.labels.items()},
                                 titles.iloc[rows].tolist(), heads)
    scored = classification_metrics({h: {"baseline": p} for h, p in preds.items()},
                                    {h: prep.labels[h][rows] for h in preds}, [h for h in heads if h["name"] in preds])
    per = {h: m["baseline"] for h, m in scored.items() if "baseline" in m}
    fused = {h: classification[h]["fused"] for h in per if "fused" in classification.get(h, {})}
    return {"model": BASELINE_NAME, "n_train": int(len(train_rows)), "seconds": round(seconds, 2), "heads": per,
            "fused_minus_baseline_points": {h: round((f["accuracy"] - per[h]["accuracy"]) * 100, 2)
                                            for h, f in fused.items()},
            "verdict": {h: verdict(h, f, per[h]) for h, f in fused.items()}}


def whole_catalog_retrieval(run, prep: Prepared, split: str, progress: bool = False) -> dict:
    """`catalog_retrieval` for a run: every product of its catalogue embedded, `split`'s titles as queries."""
    everything = np.arange(len(prep.catalog.df))
    if progress:
        log.info(f"embedding all {len(everything)} products for the whole-catalogue protocol")
    cpu = torch.device("cpu")
    image_emb, text_emb = (e.numpy() for e in embed(run.model, prep, everything, cpu))
    log_probs_of = lambda rows: title_log_probs(run, prep, rows, text_emb[rows])  # noqa: E731 - queries only
    codes, scale, df = product_codes(run, prep, everything), search_scale(run), prep.catalog.df
    keyword = KeywordIndex([product_text(t, {h["name"]: df[h["name"]].iloc[r] for h in run.heads if h["name"] in df})
                            for r, t in enumerate(df["title"])])
    labels = label_terms(run.heads)
    router = Router(labels | brand_terms(df["title"], labels))  # a title's keyword weight, as the search's
    hybrid = lambda rows, lp: hybrid_top(text_emb[rows], image_emb, df["title"].iloc[rows].tolist(),  # noqa: E731
                                         keyword.scores, lp, codes, scale,
                                         weight_of=lambda t: router.weight(keyword.query_terms(t)))
    return catalog_retrieval(image_emb, text_emb, df["title"].tolist(), prep.split(split),
                             rerank=(log_probs_of, codes, scale), hybrid=hybrid)


def title_log_probs(run, prep: Prepared, rows: np.ndarray, text_emb: np.ndarray) -> dict[str, np.ndarray]:
    """{head: (len(rows), C)} class log-probabilities of catalogue `rows`' titles (with the wide head), as the
    search computes them for a typed title (retrieval.rerank)."""
    wide = title_logits(run.model, prep, rows, torch.device("cpu"))
    return class_log_probs(run.probabilities(None, text_emb, wide=wide))


def product_codes(run, prep: Prepared, rows: np.ndarray) -> dict[str, np.ndarray]:
    """{head: (len(rows),)} class codes of catalogue `rows`' labels, as the search reads them (retrieval.rerank)."""
    df = prep.catalog.df
    return label_codes({h["name"]: df[h["name"]].to_numpy()[rows] for h in run.heads if h["name"] in df}, run.heads)


def evaluate(run_dir: str | Path, split: str = "test", progress: bool = True, baseline: bool = True) -> dict:
    """Evaluate a run on one split of its catalogue; the figures are also saved in run.json under "metrics".

    With `baseline` the TF-IDF title baseline is fitted on the run's train split and reported beside the model.
    """
    run = load_run(run_dir)
    prep = prepare_run(run, progress)
    pred = split_predictions(run, split, progress, prep=prep)
    n = len(pred["ids"])
    if n < 2:
        raise ValueError(f"the {split} split has {n} products; evaluation needs at least 2")
    if progress:
        log.info(f"evaluated {run.run_dir} on {n} {split} products")
    labels, image_np, text_np = pred["labels"], pred["image_emb"], pred["text_emb"]
    result = {
        f"n_{split}": int(n),
        "classification": classification_metrics(pred["probs"], labels, run.heads),
        # the split's title predictions (with the wide head) are the ones the search computes for a typed title
        "retrieval": retrieval_metrics(image_np, text_np, labels[run.leaf], pred["titles"],
                                       rerank=(class_log_probs(pred["probs"]), product_codes(run, prep,
                                               prep.split(split)), search_scale(run))),
        "modality_gap": {"mean_pair_cosine": round(float((image_np * text_np).sum(1).mean()), 4)},
        "retrieval_catalog": whole_catalog_retrieval(run, prep, split, progress),
        "leaf": run.leaf,
        "split": split,
        # t per head: the weight of the title's n-gram SVM (model.wide; 0 = unused); {} for a run without one
        "wide_head": dict(run.meta.get("wide_head") or {}) if run.model.wide is not None else {},
    }
    if baseline:
        result["baseline"] = baseline_metrics(prep, split, run.heads, result["classification"])
        if progress:
            log.info(f"title baseline fitted on {result['baseline']['n_train']} train titles in "
                     f"{result['baseline']['seconds']:.1f}s")
    meta = dict(run.meta)
    meta.setdefault("metrics", {})[split] = result
    write_json(run.run_dir / "run.json", meta)
    return result


def wide_line(result: dict) -> str | None:
    """One sentence on the heads whose title and layer predictions read the wide head (model.wide); None if none."""
    wide = {h: t for h, t in (result.get("wide_head") or {}).items() if t}
    if not wide:
        return None
    return ("text and layer read the wide head too: t x a linear SVM of the title's n-grams, t chosen on "
            "validation (" + ", ".join(f"{h} {t:g}" for h, t in wide.items()) + "; other heads 0)")


def format_tables(result: dict) -> str:
    """Readable tables of an evaluation result, for the terminal."""
    split = result.get("split", "test")
    base = (result.get("baseline") or {}).get("heads")
    # product: the fusion layer's whole-product vector; base: the TF-IDF title baseline
    has_layer = any("product" in per for per in result["classification"].values())
    modalities = ("image", "text") + (("product",) if has_layer else ()) + ("fused",) + (("base",) if base else ())
    lines = [f"{result[f'n_{split}']} {split} products; leaf head: {result['leaf']}", "",
             f"{'head':<20}" + "".join(f"{f'{SHORT.get(m, m)} {k}':>10}" for m in modalities for k in ("acc", "F1"))]
    for head, per in result["classification"].items():
        per = {**per, "base": base[head]} if base and head in base else per
        cells = [f"{per[m][k] * 100:9.2f}%" if m in per else f"{'-':>10}" for m in modalities
                 for k in ("accuracy", "macro_f1")]
        lines.append(f"{head:<20}" + "".join(cells))
    lines += ["", wide_line(result)] if wide_line(result) else []
    lines += baseline_lines(result)
    for kind in ("class_level", "instance"):
        lines += ["", f"retrieval, {kind.replace('_', '-')} (gallery: {split} split):",
                  f"{'':<8}{'R@1':>8}{'R@5':>8}{'R@10':>8}"]
        for direction, r in result["retrieval"][kind].items():
            lines.append(f"{SHORT.get(direction, direction):<8}" + "".join(f"{r[f'R@{k}']:8.3f}" for k in KS)
                         + (f"   {LABELS_NOTE}" if direction == LABELS else ""))
    cat = result.get("retrieval_catalog")
    if cat:
        lines += ["", f"retrieval, instance (gallery: whole catalogue, {cat['n_gallery']} products; "
                      f"{cat['n_queries']} {split} titles as queries, a hit = same title):",
                  "recall = BEIR recall (share of the title's products in the top k, the leaderboard's metric); "
                  "hit = any of them in the top k",
                  f"{'':<8}{'rec@1':>8}{'rec@10':>8}{'MRR':>8}{'hit@1':>8}{'hit@10':>8}"]
        lines += [f"{SHORT.get(d, d):<8}" + "".join(f"{cat[d].get(m, float('nan')):8.3f}" for m in
                                                   ("recall@1", "recall@10", "MRR", "R@1", "R@10"))
                  + (f"   {NOTES[d]}" if d in NOTES else "") for d in ("t2i", LABELS, HYBRID, "i2t") if d in cat]
    lines += ["", f"modality gap: mean paired cosine {result['modality_gap']['mean_pair_cosine']:.3f}"]
    return "\n".join(lines)
