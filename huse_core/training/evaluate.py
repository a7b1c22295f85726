"""Evaluation of a run: per-head accuracy / macro-F1 for image, text and fused, R@K retrieval, modality gap."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ..artifacts import write_json
from ..data.catalog import normalise_title
from ..prepare import cache_dir_for, embed, prepare
from ..retrieval.knn import top_k
from ..run import load_run

KS = (1, 5, 10)


def recall_at_k(hits: np.ndarray, ks=KS) -> dict[str, float]:
    """hits: (Q, K) bool, True where the ranked item is relevant -> {"R@k": share of queries with a hit in top k}."""
    return {f"R@{k}": round(float(hits[:, :k].any(1).mean()), 4) for k in ks}


def retrieval_metrics(image_emb: np.ndarray, text_emb: np.ndarray, labels: np.ndarray, titles: list[str]) -> dict:
    """Class-level R@K in four directions (a same-leaf-class item, query's own product excluded) and instance
    R@K across modalities (the paired item, or one with the identical normalised title)."""
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
    return {"class_level": class_level, "instance": instance}


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


def split_predictions(run, split: str = "test", progress: bool = False) -> dict:
    """A loaded run's embeddings and predictions on one split of its catalogue (read with the run's own
    tokenizer and class lists), for evaluation, confusion matrices and per-class accuracy.

    Returns {"ids", "titles": lists, "labels": {head: (N,) int64 or (N, C) multi-hot},
    "image_emb", "text_emb": (N, D) float32, "probs": {head: {"image"|"text"|"fused": (N, C) float32}}}.
    """
    prep = prepare(run.data_cfg, run.model_cfg, cache_dir_for(run.data_cfg, run.run_dir), progress=progress,
                   tokenizer=run.meta["tokenizer"], heads=run.heads)
    rows = prep.split(split)
    image_emb, text_emb = (e.numpy() for e in embed(run.model, prep, rows, torch.device("cpu")))
    df = prep.catalog.df.iloc[rows]
    return {"ids": df["id"].astype(str).tolist(), "titles": df["title"].tolist(),
            "labels": {h: y[rows] for h, y in prep.labels.items()}, "image_emb": image_emb, "text_emb": text_emb,
            "probs": run.classify(image_emb, text_emb)}


def evaluate(run_dir: str | Path, split: str = "test", progress: bool = True) -> dict:
    """Evaluate a run on one split of its catalogue; the figures are also saved in run.json under "metrics"."""
    run = load_run(run_dir)
    pred = split_predictions(run, split, progress)
    n = len(pred["ids"])
    if n < 2:
        raise ValueError(f"the {split} split has {n} products; evaluation needs at least 2")
    if progress:
        print(f"evaluated {run.run_dir} on {n} {split} products", file=sys.stderr)
    labels, image_np, text_np = pred["labels"], pred["image_emb"], pred["text_emb"]
    result = {
        f"n_{split}": int(n),
        "classification": classification_metrics(pred["probs"], labels, run.heads),
        "retrieval": retrieval_metrics(image_np, text_np, labels[run.leaf], pred["titles"]),
        "modality_gap": {"mean_pair_cosine": round(float((image_np * text_np).sum(1).mean()), 4)},
        "leaf": run.leaf,
        "split": split,
    }
    meta = dict(run.meta)
    meta.setdefault("metrics", {})[split] = result
    write_json(run.run_dir / "run.json", meta)
    return result


def format_tables(result: dict) -> str:
    """Readable tables of an evaluation result, for the terminal."""
    split = result.get("split", "test")
    lines = [f"{result[f'n_{split}']} {split} products; leaf head: {result['leaf']}", "",
             f"{'head':<20}{'image acc':>11}{'text acc':>11}{'fused acc':>11}{'fused F1':>11}"]
    for head, per in result["classification"].items():
        columns = (("image", "accuracy"), ("text", "accuracy"), ("fused", "accuracy"), ("fused", "macro_f1"))
        cells = [f"{per[m][k] * 100:10.2f}%" if m in per else f"{'-':>11}" for m, k in columns]
        lines.append(f"{head:<20}" + "".join(cells))
    for kind in ("class_level", "instance"):
        lines += ["", f"retrieval, {kind.replace('_', '-')}:", f"{'':<8}{'R@1':>8}{'R@5':>8}{'R@10':>8}"]
        for direction, r in result["retrieval"][kind].items():
            lines.append(f"{direction:<8}" + "".join(f"{r[f'R@{k}']:8.3f}" for k in KS))
    lines += ["", f"modality gap: mean paired cosine {result['modality_gap']['mean_pair_cosine']:.3f}"]
    return "\n".join(lines)
