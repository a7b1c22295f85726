"""Two listings of different items that look alike (colour variants, shades, models shot the same way): what the
catalogue and the titles say that no photo comparison can.

One item listed twice carries the same catalogue labels, and its second title rewords the first (other casing,
words moved, dropped or added, a common word swapped for a synonym). Titles that each name something the other does
not (a number, such as a shade or model number, a brand, or a word few of the shop's titles use, such as a model
name) name two items, however alike their photos.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from ..data.catalog import normalise_title
from .inputs import AuditInputs

DISTINCT_SHARE = 0.005  # a title word in fewer than this share of the shop's titles names one item, not a kind
BRAND_TITLES = 5  # a word leading this many titles is a brand (as the search's brand words: retrieval.keyword)
WORD = re.compile(r"\w+")


def title_words(titles) -> list[frozenset[str]]:
    """Each title's set of lower-case words (letters and digits), punctuation dropped."""
    return [frozenset(WORD.findall(normalise_title(t))) for t in titles]


def distinct_words(words: list[frozenset[str]], share: float = DISTINCT_SHARE) -> frozenset[str]:
    """The words that name one item: any word with a digit, and words in fewer than `share` of the titles (at
    least: in one title only)."""
    counts = Counter(w for ws in words for w in ws)
    cut = max(1.0, share * len(words))
    return frozenset(w for w, k in counts.items() if k <= cut or any(ch.isdigit() for ch in w))


def brand_words(titles, labels: frozenset[str] = frozenset(), least: int = BRAND_TITLES) -> frozenset[str]:
    """Words that lead at least `least` titles and name no label: the shop's brands ("puma", "nike"), read from the
    titles where the shop has no brand column."""
    first = Counter(next(iter(WORD.findall(normalise_title(t))), "") for t in titles)
    return frozenset(w for w, k in first.items() if k >= least and w not in labels and w.isalpha() and len(w) > 2)


def title_conflicts(titles, a: np.ndarray, b: np.ndarray, share: float = DISTINCT_SHARE,
                    labels: frozenset[str] = frozenset()) -> np.ndarray:
    """(P,) object: "" or why titles[a[i]] and titles[b[i]] name two items: each has a distinct word the other
    lacks (a number, a brand, or a word in fewer than `share` of the titles; `labels`: the words of the shop's class
    names, never brands). A reworded second listing adds or drops words, or swaps a common one, so one side at most
    has a distinct word of its own."""
    words = title_words(titles)
    distinct = distinct_words(words, share) | brand_words(titles, labels)
    out = np.full(len(a), "", dtype=object)
    for i, (x, y) in enumerate(zip(a, b)):
        only_a, only_b = (words[int(x)] - words[int(y)]) & distinct, (words[int(y)] - words[int(x)]) & distinct
        if only_a and only_b:
            out[i] = f"titles name different items ({min(only_a)} / {min(only_b)})"
    return out


def label_conflicts(codes: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(P,) object: "" or the first head whose catalogue label differs between rows a[i] and b[i]; `codes` maps a
    head to each row's class index (-1, unknown, differs from nothing)."""
    out = np.full(len(a), "", dtype=object)
    for name, code in codes.items():
        differ = (code[a] != code[b]) & (code[a] >= 0) & (code[b] >= 0) & (out == "")
        out[differ] = f"filed under different {name}"
    return out


def variant_reasons(inputs: AuditInputs, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(P,) object: "" where rows a[i] and b[i] could be one item listed twice, else why they are two items: a
    single-label head the catalogue fills differently for them, or titles naming different items."""
    # why: docs/decisions.md#audit
    codes = {h.name: inputs.codes(h) for h in inputs.run.heads if h.kind == "single"}
    out = label_conflicts(codes, a, b)
    rest = np.flatnonzero(out == "")
    labels = frozenset(w for h in inputs.run.heads for c in h.classes for w in WORD.findall(str(c).lower()))
    out[rest] = title_conflicts(inputs.products["title"], a[rest], b[rest], labels=labels)
    return out
