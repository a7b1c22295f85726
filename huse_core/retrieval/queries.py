"""Realistic query sets drawn from a catalogue's held-out products, and the metrics that score a ranking against them.

Three kinds, each seeded and built from one split's products only (the test split by default), relevance judged
over the whole catalogue:
- "attribute": what a shopper types from the labels the shop has, `{gender} {colour} {type}` (plus a brand word
  where the product's title starts with one) in varied word order. Graded: 2 = carries every named attribute,
  1 = the type and all but one other; scored by P@10 (grade 2) and nDCG@10. Variant "brand" (a brand word named) or
  "labels" (label words only).
- "noisy": a product's title half-remembered: a word dropped, words reordered, lower-cased, and 0, 1 or 2 typos
  (variants "partial", "typo1", "typo2" of the same products). Relevant: every product with that title; MRR, R@10.
- "photo": products added with a useless title ("IMG_0231"), found from the photo alone by a query naming what it
  shows (the product's real title, half-remembered); relevant: that photo-only product; R@10.

Recall is BEIR's (the share of a query's relevant products in the top k, as the public leaderboard computes it);
hit rate (any relevant product in the top k) is reported beside it, named as such.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data.catalog import normalise_title

KINDS = ("attribute", "noisy", "photo")
NOISY_VARIANTS = ("partial", "typo1", "typo2")  # 0, 1, 2 typos on the same dropped-and-reordered title
BRAND_MIN = 5  # a title's first word counts as a brand when at least this many titles start with it
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class Query:
    """One query: its text, kind (and variant), the product it was drawn from, and graded relevance by product id."""

    text: str
    kind: str
    source: str
    relevant: dict[str, int] = field(default_factory=dict)  # product id -> grade (2 fully, 1 partly relevant)
    variant: str = ""
    ignore: set[str] = field(default_factory=set)  # product ids left out of the ranking before scoring


def attribute_columns(df: pd.DataFrame, leaf: str) -> list[str]:
    """The label columns an attribute query names: a gender-like and a colour-like column where the shop has
    them, then the leaf (the product type)."""
    cols = [c for c in df.columns if c != leaf and re.search(r"gender|sex", c, re.I)][:1]
    cols += [c for c in df.columns if c != leaf and re.search(r"colou?r", c, re.I)][:1]
    return cols + [leaf]


def _cell(value) -> str:
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()
    return "" if text.lower() in ("", "nan", "none", "other") else text


def brands(titles: pd.Series, label_words: set[str]) -> set[str]:
    """First title words (lower-cased) that start at least BRAND_MIN titles and are not label words."""
    first = Counter(str(t).split()[0].lower() for t in titles if str(t).split())
    return {w for w, n in first.items() if n >= BRAND_MIN and w not in label_words and w.isalpha() and len(w) > 2}


def _pick(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(rows, min(n, len(rows)), replace=False)) if len(rows) else rows


def attribute_queries(df: pd.DataFrame, leaf: str, n: int = 300, split: str = "test", seed: int = 0) -> list[Query]:
    """Up to n attribute queries (distinct texts) composed from `split` products' labels; see the module doc."""
    rng = np.random.default_rng(seed)
    cols = attribute_columns(df, leaf)
    values = {c: df[c].map(_cell).str.lower().to_numpy(dtype=object) for c in cols}
    label_words = {w for c in cols for v in set(values[c]) for w in str(v).split()}
    known = brands(df["title"], label_words)
    first = df["title"].map(lambda t: (str(t).split() or [""])[0].lower()).to_numpy(dtype=object)
    rows = np.flatnonzero((df["split"].to_numpy(dtype=object) == split) & (values[leaf] != ""))
    ids = df["id"].astype(str).to_numpy()
    out, seen = [], set()
    for r in rng.permutation(rows):
        attrs = {c: values[c][r] for c in cols if values[c][r]}
        if first[r] in known and rng.random() < 1 / 3:
            attrs["brand"] = first[r]
        words = list(attrs.values())
        text = " ".join(words[i] for i in rng.permutation(len(words)))
        if text in seen:
            continue
        seen.add(text)
        match = {c: (first if c == "brand" else values[c]) == v for c, v in attrs.items()}
        misses = sum((~m).astype(int) for m in match.values())
        full = misses == 0
        part = match[leaf] & (misses == 1) & (len(attrs) > 2)
        relevant = {**{i: 1 for i in ids[part]}, **{i: 2 for i in ids[full]}}
        variant = "brand" if "brand" in attrs else "labels"
        out.append(Query(text, "attribute", str(df["id"].iloc[r]), relevant, variant))
        if len(out) >= n:
            break
    return out


def typo(word: str, rng: np.random.Generator) -> str:
    """One edit inside a word of four or more letters: swap two neighbours, drop, replace or insert a letter."""
    i = int(rng.integers(1, len(word) - 1))  # never the first letter: people rarely get it wrong
    op = int(rng.integers(4))
    if op == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op == 1:
        return word[:i] + word[i + 1:]
    letter = _LETTERS[int(rng.integers(26))]
    if op == 2:
        return word[:i] + (letter if letter != word[i] else _LETTERS[(ord(letter) - 96) % 26]) + word[i + 1:]
    return word[:i] + letter + word[i:]


def noisy_title(title: str, typos: int, rng: np.random.Generator) -> str:
    """A title half-remembered: lower-cased, one word dropped (of three or more), two neighbours swapped (of three
    or more left), then `typos` typos in distinct words of four or more letters."""
    words = str(title).lower().split()
    if len(words) >= 3:
        words.pop(int(rng.integers(len(words))))
    if len(words) >= 3:
        i = int(rng.integers(len(words) - 1))
        words[i], words[i + 1] = words[i + 1], words[i]
    long = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    for i in rng.permutation(long)[:typos]:
        words[i] = typo(words[i], rng)
    return " ".join(words)


def _distinct_titles(df: pd.DataFrame, n: int, split: str, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(every product's normalised title, up to n `split` rows with distinct titles of two or more words, every
    product's id as text)."""
    norm = df["title"].map(normalise_title).to_numpy(dtype=object)
    rows = np.flatnonzero((df["split"].to_numpy(dtype=object) == split)
                          & (df["title"].map(lambda t: len(str(t).split())).to_numpy() >= 2))
    _, first = np.unique(norm[rows].astype(str), return_index=True)
    return norm, _pick(rows[first], n, rng), df["id"].astype(str).to_numpy()


def noisy_queries(df: pd.DataFrame, n: int = 300, split: str = "test", seed: int = 0) -> list[Query]:
    """For up to n `split` products with distinct titles of two or more words, the variants of NOISY_VARIANTS; all
    variants of a product share its random draws, so they differ only in the typos."""
    rng = np.random.default_rng(seed)
    norm, picks, ids = _distinct_titles(df, n, split, rng)
    by_title: dict[str, list[str]] = {}
    for i, t in zip(ids, norm):
        by_title.setdefault(t, []).append(i)
    out = []
    for r in picks:
        state = rng.integers(2**32)
        for typos, variant in enumerate(NOISY_VARIANTS):
            text = noisy_title(df["title"].iloc[r], typos, np.random.default_rng(state))
            out.append(Query(text, "noisy", ids[r], {i: 2 for i in by_title[norm[r]]}, variant))
    return out


def photo_only_products(df: pd.DataFrame, n: int = 200, split: str = "test",
                        seed: int = 0) -> tuple[list[dict], list[Query]]:
    """(products to add with a useless title: {"id", "title", "image"}, one query each naming what its photo shows:
    its real title half-remembered, as `noisy_title` without typos). Relevant: the photo-only copy (id "photo-" +
    the catalogue's); the catalogue's products with that title are left out of the ranking before scoring (`ignore`),
    as a shop whose product has no usable title has no titled twin."""
    rng = np.random.default_rng(seed)
    norm, picks, ids = _distinct_titles(df, n, split, rng)
    items, out = [], []
    for r in picks:
        item = {"id": f"photo-{ids[r]}", "title": f"IMG_{int(rng.integers(10000)):04d}", "image": df["image"].iloc[r]}
        items.append(item)
        twins = set(ids[norm == norm[r]])
        out.append(Query(noisy_title(df["title"].iloc[r], 0, rng), "photo", ids[r], {item["id"]: 2}, ignore=twins))
    return items, out


# -- metrics ------------------------------------------------------------------------------------------------------


def beir_recall(ranked: list[str], relevant: dict[str, int], k: int) -> float:
    """BEIR recall@k: the share of the query's relevant products (grade > 0) among the top k."""
    rel = {i for i, g in relevant.items() if g > 0}
    return len(rel.intersection(ranked[:k])) / len(rel) if rel else 0.0


def hit_rate(ranked: list[str], relevant: dict[str, int], k: int) -> float:
    """1 if any relevant product is in the top k (what "R@k" meant in the instance tables before BEIR)."""
    return float(any(relevant.get(i, 0) > 0 for i in ranked[:k]))


def reciprocal_rank(ranked: list[str], relevant: dict[str, int]) -> float:
    """1 / rank of the first relevant product in `ranked`; 0 when none is there."""
    return next((1.0 / (r + 1) for r, i in enumerate(ranked) if relevant.get(i, 0) > 0), 0.0)


def precision(ranked: list[str], relevant: dict[str, int], k: int, grade: int = 2) -> float:
    """The share of the top k that are relevant at `grade` or more (k in the denominator, as trec_eval's P@k)."""
    return sum(relevant.get(i, 0) >= grade for i in ranked[:k]) / k


def ndcg(ranked: list[str], relevant: dict[str, int], k: int) -> float:
    """nDCG@k with gains 2^grade - 1 and log2 discounts, against the ideal order of all the relevant products."""
    gains = [2 ** relevant.get(i, 0) - 1 for i in ranked[:k]]
    ideal = sorted((2**g - 1 for g in relevant.values() if g > 0), reverse=True)[:k]
    dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains))
    best = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    return dcg / best if best else 0.0


def score(rank: Callable[[str], list[str]], queries: list[Query], k: int = 10) -> dict[str, float]:
    """The mean metrics of `rank` (query text -> product ids, best first) over queries: P@k, nDCG@k, BEIR R@1/R@k,
    hit@1/@k and MRR."""
    rows = []
    for q in queries:
        ranked = [i for i in rank(q.text) if i not in q.ignore]
        rows.append({f"P@{k}": precision(ranked, q.relevant, k), f"nDCG@{k}": ndcg(ranked, q.relevant, k),
                     "R@1": beir_recall(ranked, q.relevant, 1), f"R@{k}": beir_recall(ranked, q.relevant, k),
                     "hit@1": hit_rate(ranked, q.relevant, 1), f"hit@{k}": hit_rate(ranked, q.relevant, k),
                     "MRR": reciprocal_rank(ranked, q.relevant)})
    return {m: round(float(np.mean([r[m] for r in rows])), 4) for m in rows[0]} if rows else {}
