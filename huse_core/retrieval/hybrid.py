"""Hybrid ranking of a typed query: the vector side (s * cosine + label agreement, retrieval.rerank) and the keyword
side (BM25 over titles and label text, retrieval.keyword) on one candidate list, one score.

    score(q, x) = s * cos(q, x) + agreement(q, x) + w * bm25(q, x) / max_x' bm25(q, x')

The candidates are the vector side's K nearest and the keyword side's K best; a candidate gets both sides' scores
(its cosine is computed where only the keyword side found it). BM25 is divided by the query's best BM25 so w means
the same for a two-word query as for a whole title. w depends on what the query looks like (Router): naming only
labels and brands, the words pick the products that carry them and the labels order them (w moderate); a title's
words decide and the shared space only breaks their ties (w large). The rule and both w were chosen on validation
queries of the real catalogue (attribute queries, noisy titles, photo-only products; bench/search_queries.py
--sweep-only), where reciprocal-rank fusion was the alternative. Used by the Searcher and, through
hybrid_top, by evaluate's whole-catalogue protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

MODES = ("hybrid", "vector", "keyword")  # search --mode; the Searcher's and the Search page's setting
DEFAULT_MODE = "hybrid"  # why: docs/decisions.md#hybrid-search
QUERY_KINDS = ("attribute", "title")  # what a typed query looks like (Router.kind)
# w, the keyword side's weight in the hybrid score, per query kind. why: docs/decisions.md#hybrid-search
KEYWORD_WEIGHTS = {"attribute": 128.0, "title": 1024.0}
RRF_K = 60  # reciprocal-rank fusion's constant (the usual 60), for the rule compared on validation
KEYWORD_CANDIDATES = 1000  # the keyword side's best products joined to the vector side's candidates


@dataclass
class Router:
    """The keyword weight a typed query gets by its kind: "attribute" when every word names a label the shop has or
    a brand (`facet_terms`: `green tshirts men`, `puma shoes black`), where the labels order what the words leave
    tied; "title" otherwise (`guerrilla wanted t-shirt white`), where the words decide and the shared space breaks
    ties. Terms are the keyword side's (typos already read as catalogue words)."""

    facet_terms: set[str]
    weights: dict[str, float] = field(default_factory=lambda: dict(KEYWORD_WEIGHTS))

    def kind(self, query_terms: list[str]) -> str:
        return "attribute" if query_terms and all(t in self.facet_terms for t in query_terms) else "title"

    def weight(self, query_terms: list[str]) -> float:
        return float(self.weights[self.kind(query_terms)])


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown search mode {mode!r}; choose {', '.join(MODES)}")
    return mode


def keyword_top(kw: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Rows of the k best BM25 scores (> 0 only; `allowed` rows only when given), best first, ties by row."""
    kw = np.asarray(kw)
    live = np.flatnonzero(kw > 0) if allowed is None else np.flatnonzero((kw > 0) & allowed)
    if len(live) > k:
        live = live[np.argpartition(-kw[live], k - 1)[:k]]
    return live[np.lexsort((live, -kw[live]))]


def credit_untitled(kw: np.ndarray, rows: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Every product's BM25 `kw` with products `rows` (useless titles) raised to share x the query's best BM25,
    `share` the part of the query's label words their labels hold: an untitled white t-shirt matches "guerrilla
    white t-shirt" as well as the best-matching titled product does (its title cannot name the brand), and the
    vector side orders them. why: docs/decisions.md#hybrid-search"""
    kw = np.array(kw, np.float32)
    if len(rows) and len(kw):
        kw[rows] = np.maximum(kw[rows], np.asarray(share, np.float32) * float(kw.max()))
    return kw


def hybrid_order(rows: np.ndarray, cos: np.ndarray, kw: np.ndarray, cos_of: Callable[[np.ndarray], np.ndarray],
                 agree_of: Callable[[np.ndarray], np.ndarray] | None, scale: float,
                 weight: float = KEYWORD_WEIGHTS["attribute"], rule: str = "sum", allowed: np.ndarray | None = None,
                 k_keyword: int = KEYWORD_CANDIDATES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cosines, keys) best first: the vector candidates `rows` (cosines `cos`) joined with the keyword side's
    best of `kw` (every product's BM25; `allowed` rows only), scored by the hybrid rule.

    cos_of(rows) -> cosines of rows the vector side did not return; agree_of(rows) -> label agreement (None: 0).
    rule "sum": s * cos + agreement + weight * bm25 / max bm25; "rrf": sum of 1 / (RRF_K + rank) of the two
    sides' rankings (the vector side's by s * cos + agreement, over the same candidates)."""
    rows, cos = np.asarray(rows, np.int64), np.asarray(cos, np.float64)
    extra = np.setdiff1d(keyword_top(kw, k_keyword, allowed), rows, assume_unique=False)
    if len(extra):
        rows, cos = np.concatenate([rows, extra]), np.concatenate([cos, np.asarray(cos_of(extra), np.float64)])
    vec = scale * cos + (agree_of(rows) if agree_of is not None and len(rows) else 0.0)
    bm = np.asarray(kw, np.float64)[rows]
    top = float(np.max(kw)) if len(kw) else 0.0
    if rule == "sum":
        key = vec + (weight * bm / top if top > 0 else 0.0)
    elif rule == "rrf":
        key = 1.0 / (RRF_K + _ranks(vec)) + np.where(bm > 0, 1.0 / (RRF_K + _ranks(bm)), 0.0)
    else:
        raise ValueError(f"unknown fusion rule {rule!r}; choose 'sum' or 'rrf'")
    order = np.argsort(-key, kind="stable")
    return rows[order], cos[order], key[order]


def _ranks(score: np.ndarray) -> np.ndarray:
    """1-based rank of each entry when sorted by score, best first (ties keep their order)."""
    ranks = np.empty(len(score), np.float64)
    ranks[np.argsort(-score, kind="stable")] = np.arange(1, len(score) + 1)
    return ranks


def hybrid_top(query_emb: np.ndarray, gallery_emb: np.ndarray, texts: list[str], keyword_scores,
               log_probs: dict[str, np.ndarray] | None, codes: dict[str, np.ndarray], scale: float,
               k: int = 1000, weight_of: Callable[[str], float] | None = None, rule: str = "sum") -> np.ndarray:
    """(Q, k) gallery rows, best first, as the hybrid search ranks typed `texts` (exact, for evaluation): each
    query's k nearest by cosine joined with its keyword side's best (keyword_scores(text) -> every gallery row's
    BM25), scored by `hybrid_order` with the label agreement of `log_probs` {head: (Q, C)} (None: no labels) and
    the keyword weight weight_of(text) (default: a title's)."""
    from .rerank import agreement

    k = min(k, len(gallery_emb))
    out = np.empty((len(texts), k), np.int64)
    for i, text in enumerate(texts):
        sims = gallery_emb @ query_emb[i]
        cand = np.argpartition(-sims, k - 1)[:k]
        lp = None if log_probs is None else {h: p[i : i + 1] for h, p in log_probs.items()}
        agree_of = None if lp is None else (lambda r, lp=lp: agreement(r[None], lp, codes)[0])
        weight = KEYWORD_WEIGHTS["title"] if weight_of is None else weight_of(text)
        rows, _, _ = hybrid_order(cand, sims[cand], keyword_scores(text), sims.__getitem__, agree_of, scale,
                                  weight=weight, rule=rule)
        out[i] = rows[:k]
    return out
