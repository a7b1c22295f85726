"""Search by title that also reads the classifier: score = s * cosine + sum over heads of log p(item's class | title).

A typed title's nearest photos by cosine are mostly of the right kind but not the right product: the shared space
is trained to tell classes apart, and the alignment term to tell products apart only as far as a from-scratch photo
tower sees detail. The title's own class predictions (97 % on the leaf of the 44k catalogue, with the wide head)
know more about the product than its vector does: its colour, gender, usage, season. Each product of the index
carries its labels from the catalogue (predicted labels for added products), so the search can ask, per head, how
likely the title thinks the product's class is, and rank by

    score(q, x) = s * cos(q, x) + sum_h log p_h(y_h(x) | q)

with s the alignment term's learned scale (the temperature of the model's own softmax over products; the shared
classifier's logit scale for a run trained without it): a product of experts of the two things the model knows,
no weight to tune. Heads where the product has no label (or the run no such head) add nothing. The candidates
are the K products nearest by cosine (the index's answer), re-ordered; those past K keep their cosine order.

Photo queries are not re-ranked: the photo's own predictions are weaker, and re-ranking by them lowered
photo -> title recall on validation (why: docs/decisions.md#search-rerank).
"""

from __future__ import annotations

import numpy as np

from ..data.catalog import OTHER
from ..data.heads import Head, as_heads

CANDIDATES = 1000  # products re-ranked per query: the K nearest by cosine  # why: docs/decisions.md#search-rerank
BLANK = ("", "nan", "None")  # label cells that mean "no label"
FLOOR = 1e-6  # the least probability a head gives a class (log p >= -13.8): a sure, wrong head costs a bounded amount


def label_codes(values: dict[str, np.ndarray], heads: list[Head] | list[dict]) -> dict[str, np.ndarray]:
    """Per single-label head, each product's class index from its label strings (rows of `values[head]`): a label
    outside the head's classes is `other` where rare classes were merged into it, else -1 (no label), as is ""."""
    import pandas as pd

    codes = {}
    for h in as_heads(heads):
        if h.kind != "single" or h.name not in values:
            continue
        index = {c: i for i, c in enumerate(h.classes)}
        labels = pd.Series(np.asarray(values[h.name], dtype=object)).astype(str)
        found = labels.map(index).to_numpy(dtype=np.float64)  # NaN: not one of the classes
        blank = labels.isin(BLANK).to_numpy()
        codes[h.name] = np.where(np.isnan(found), np.where(blank, -1, index.get(OTHER, -1)), found).astype(np.int64)
    return codes


def search_scale(run) -> float:
    """s: the alignment term's learned scale at the run's last epoch, else the shared classifier's logit scale."""
    scales = [h["nce_scale"] for h in run.meta.get("history", []) if h.get("nce_scale")]
    return float(scales[-1]) if scales else float(run.model_cfg.logit_scale)


def class_log_probs(probs: dict[str, dict[str, np.ndarray]], modality: str = "text") -> dict[str, np.ndarray]:
    """{head: (Q, C) log p} of `modality`'s predictions in Run.probabilities' output, floored at FLOOR."""
    return {h: np.log(np.clip(per[modality], FLOOR, 1.0)) for h, per in probs.items() if modality in per}


def agreement(rows: np.ndarray, log_probs: dict[str, np.ndarray], codes: dict[str, np.ndarray]) -> np.ndarray:
    """(Q, K) sum over heads of log p_h(class of row | query) for candidate `rows` (Q, K) of queries whose class
    log-probabilities are log_probs {head: (Q, C)}; heads without codes, and rows without a label, add 0."""
    total = np.zeros(np.shape(rows), np.float64)
    for head, lp in log_probs.items():
        if head in codes:
            cls = codes[head][rows]
            total += np.where(cls >= 0, np.take_along_axis(lp, np.maximum(cls, 0), 1), 0.0)
    return total


def rescore(cosines: np.ndarray, rows: np.ndarray, log_probs: dict[str, np.ndarray], codes: dict[str, np.ndarray],
            scale: float) -> np.ndarray:
    """(Q, K) search scores s * cosine + agreement of candidate `rows` (Q, K) whose cosines are `cosines`."""
    return scale * np.asarray(cosines, np.float64) + agreement(rows, log_probs, codes)


def reranked_top(queries: np.ndarray, gallery: np.ndarray, log_probs: dict[str, np.ndarray],
                 codes: dict[str, np.ndarray], scale: float, exclude_self: bool = False, k: int = CANDIDATES,
                 chunk: int = 256) -> np.ndarray:
    """(Q, K) gallery rows, best first, as the search ranks them: each query's K nearest by cosine (K = min(k,
    gallery)), re-ordered by `rescore`. Exact, for evaluation; `exclude_self` drops gallery row i for query i."""
    k = min(k, len(gallery) - int(exclude_self))
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        sims = queries[start : start + chunk] @ gallery.T
        if exclude_self:
            sims[np.arange(len(sims)), np.arange(len(sims)) + start] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        scores = rescore(np.take_along_axis(sims, top, 1), top,
                         {h: lp[start : start + chunk] for h, lp in log_probs.items()}, codes, scale)
        out[start : start + chunk] = np.take_along_axis(top, np.argsort(-scores, 1, kind="stable"), 1)
    return out
