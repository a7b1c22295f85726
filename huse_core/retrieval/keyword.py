"""The keyword side of search: BM25 (bm25s) over each product's title and label text, typo-tolerant by a fuzzy
vocabulary (a query word the catalogue never uses is read as the catalogue's words within one or two edits).

Why bm25s: a sparse BM25 in numpy, scoring a query against 44k titles in well under a millisecond, with no server.
Its index is built once over the index build's products; products added afterwards are scored by the same formula
(Lucene BM25) with the index's statistics (document frequencies, average length), so an added product is found by
keyword at once and its scores compare with the index's. Why a fuzzy vocabulary and not character n-grams: BM25
over char n-grams scores every product sharing a few letter triples (a typo'd brand matches half the catalogue
weakly); mapping the unknown word to the catalogue's nearest words keeps BM25's exact-word precision.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..data.catalog import OTHER
from ..data.ngrams import words

K1, B = 1.5, 0.75  # bm25s's defaults (Lucene BM25)
_COMPOUND = re.compile(r"[^\W_]+(?:-[^\W_]+)+", re.UNICODE)  # "t-shirt": also indexed as "tshirt"
_BLANK = {"", "nan", "none", OTHER}


@lru_cache(maxsize=1 << 17)  # a catalogue's words repeat: a million titles hold tens of thousands of words
def stem(word: str) -> str:
    """A light plural stem: "shoes" -> "shoe", "tshirts" -> "tshirt", "watches" -> "watch", "dresses" -> "dress";
    "dress", "status", "chinos"... stay near."""
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def terms(text: str) -> list[str]:
    """The keyword terms of a text: lower-cased words of two or more characters (digits: any), light-stemmed,
    plus hyphenated compounds joined ("T-Shirt" -> "t", "shirt" are dropped/kept as words, and "tshirt" added)."""
    text = str(text)
    out = [stem(w) for w in words(text) if len(w) > 1 or w.isdigit()]
    out += [stem(m.replace("-", "")) for m in _COMPOUND.findall(text.lower())]
    return out


# Words of camera, scanner and export file names: a title made of these and numbers says nothing of the product
FILE_WORDS = {"img", "image", "dsc", "dscn", "dscf", "dcim", "pxl", "photo", "pic", "picture", "screenshot", "scan",
              "untitled", "copy", "jpg", "jpeg", "png", "heic", "webp", "gif", "tif", "tiff", "bmp", "whatsapp", "file",
              "new", "final", "edit", "edited", "product", "item", "sku"}


def useless_title(title) -> bool:
    """Whether a title carries no word about the product: empty, or only numbers, ids and file-name words
    ("IMG_0231", "DSC-0012.jpg", "photo 3"). Such a product is found by keyword through its labels alone."""
    text = "" if title is None else str(title).strip()
    if text.lower() in _BLANK:
        return True
    return not any(t.isalpha() and len(t) >= 2 and t not in FILE_WORDS for t in terms(text))


def product_text(title: str, labels: dict[str, str]) -> str:
    """A product's keyword document: its title and its label words (multi-label cells "a|b": each label)."""
    parts = [str(title)]
    for value in labels.values():
        parts += [v for v in str(value).split("|") if v.strip().lower() not in _BLANK]
    return " ".join(parts)


def label_terms(heads) -> set[str]:
    """The keyword terms of the shop's class names (every head's): the words a query can name a label by."""
    return {t for h in heads for c in h["classes"] for t in terms(product_text("", {"": c}))}


def brand_terms(titles, labels: set[str], least: int = 5) -> set[str]:
    """Terms that start at least `least` titles and name no label: the catalogue's brands ("puma", "nike"), read
    from the titles where the shop has no brand column."""
    counts: Counter = Counter()
    for word, n in Counter((str(title).split() or [""])[0].lower() for title in titles).items():
        first = terms(word)[:1]
        counts.update({first[0]: n} if first else {})
    return {w for w, n in counts.items() if n >= least and w not in labels and w.isalpha() and len(w) > 2}


def max_edits(word: str) -> int:
    """Edits a query word may be from a catalogue word: none up to 3 letters, 1 up to 7, else 2."""
    return 0 if len(word) <= 3 else 1 if len(word) <= 7 else 2


def edit_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance (insert, delete, replace, swap of neighbours), or limit + 1 past limit."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


def _deletes(word: str, depth: int) -> set[str]:
    """The strings `depth` or fewer single-letter deletions from `word` (itself included)."""
    found, frontier = {word}, {word}
    for _ in range(depth):
        frontier = {w[:i] + w[i + 1:] for w in frontier for i in range(len(w))} - found
        found |= frontier
    return found


@dataclass
class FuzzyVocabulary:
    """Catalogue words by their one-deletion variants (SymSpell's idea): a query word's variants up to two
    deletions meet every catalogue word within `max_edits`, checked with `edit_distance`."""

    df: dict[str, int]  # word -> documents holding it
    by_delete: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self):
        for w in self.df:
            if len(w) >= 4:
                for d in _deletes(w, 1):
                    self.by_delete.setdefault(d, []).append(w)

    def nearest(self, word: str, most: int = 3) -> list[str]:
        """The catalogue words nearest `word` (fewest edits, then most frequent), at most `most`; [] if none are
        within max_edits."""
        limit = max_edits(word)
        if limit == 0:
            return []
        candidates = {c for d in _deletes(word, limit) for c in self.by_delete.get(d, ())}
        scored = sorted((dist, -self.df[c], c) for c in candidates
                        if (dist := edit_distance(word, c, limit)) <= limit)
        return [c for dist, _, c in scored if dist == scored[0][0]][:most] if scored else []


class KeywordIndex:
    """BM25 over the index build's products (bm25s), plus products added since (scored here with its statistics).

    `scores(query)` gives every product's BM25 score, index rows first then added rows, in their order."""

    def __init__(self, texts: list[str]):
        import bm25s  # here: only searches with words need it

        docs = [terms(t) for t in texts]
        bm25 = bm25s.BM25(k1=K1, b=B, method="lucene")
        bm25.index(docs if docs else [[]], show_progress=False)
        avgdl = max(float(np.mean([len(d) for d in docs])) if docs else 1.0, 1e-9)
        self._take(bm25, dict(Counter(w for d in docs for w in set(d))), len(docs), avgdl)

    @classmethod
    def from_parts(cls, bm25, df: dict[str, int], n_docs: int, avgdl: float) -> KeywordIndex:
        """The index of `n_docs` products from its parts: a bm25s BM25 (as `bm25s.BM25.load` reads it back), each
        term's document frequency, the average document length (retrieval.keyword_store stores them)."""
        index = cls.__new__(cls)
        index._take(bm25, df, n_docs, avgdl)
        return index

    def _take(self, bm25, df: dict[str, int], n_docs: int, avgdl: float) -> None:
        self.bm25, self.df, self.n_docs, self.avgdl = bm25, df, int(n_docs), float(avgdl)
        self._shared: dict = {}  # the typo vocabulary, made on first need and shared by with_added's views
        self._added: list[Counter] = []  # term counts of products added after the build
        self._added_vocab: dict[str, int] = {}
        self._added_fuzzy: FuzzyVocabulary | None = None

    @property
    def fuzzy(self) -> FuzzyVocabulary:
        """The index's words by their deletions, made on the first query word no product uses (a fifth of a
        second per 10,000 words on 2 cores)."""
        if "fuzzy" not in self._shared:
            self._shared["fuzzy"] = FuzzyVocabulary(dict(self.df))
        return self._shared["fuzzy"]

    def add(self, texts: list[str]) -> None:
        """Take in products added after the build (their scores follow the index's rows, in this order)."""
        new = [Counter(terms(t)) for t in texts]
        self._added += new
        for c in new:
            for w in c:
                self._added_vocab[w] = self._added_vocab.get(w, 0) + 1
        self._added_fuzzy = None

    def with_added(self, texts: list[str]) -> KeywordIndex:
        """A view sharing this index's BM25 and statistics with `texts` as the products added after the build (in
        place of any this one holds): one per search snapshot, made in O(added products)."""
        view = copy.copy(self)
        view._added, view._added_vocab, view._added_fuzzy = [], {}, None
        view.add(texts)
        return view

    def __len__(self) -> int:
        return self.n_docs + len(self._added)

    def query_terms(self, query: str) -> list[str]:
        """The query's terms, each one that no product uses replaced by the catalogue's nearest words (typos)."""
        out = []
        for t in terms(query):
            if t in self.df or t in self._added_vocab:
                out.append(t)
                continue
            if self._added_fuzzy is None:
                self._added_fuzzy = FuzzyVocabulary(dict(self._added_vocab))
            near = self.fuzzy.nearest(t) or self._added_fuzzy.nearest(t)
            out += near
        return out

    def idf(self, term: str) -> float:
        """Lucene BM25's IDF of a term in the index's products (as bm25s computes it); a term only added
        products use counts as held by those products."""
        df = self.df.get(term) or self._added_vocab.get(term, 0)
        return float(np.log(1 + (self.n_docs - df + 0.5) / (df + 0.5)))

    def scores(self, query: str) -> np.ndarray:
        """(len(self),) float32 BM25 score of each product for `query` (0 where no term matches)."""
        return self.term_scores(self.query_terms(query))

    def label_share(self, query: str, label_terms: set[str], docs: list) -> np.ndarray:
        """For products whose keyword documents hold the terms `docs` (a set or Counter each): the IDF-weighted
        share of the query's label words (terms in `label_terms`) each one holds; 0 for every product when the
        query names no label word. Reads only those documents: a handful of untitled products in a catalogue of
        millions costs microseconds."""
        named = list(dict.fromkeys(t for t in self.query_terms(query) if t in label_terms))
        weights = np.array([self.idf(t) for t in named], np.float64)
        if not named or weights.sum() <= 0:
            return np.zeros(len(docs), np.float64)
        held = np.array([[t in d for t in named] for d in docs], np.float64).reshape(len(docs), len(named))
        return held @ weights / weights.sum()

    def term_scores(self, q: list[str]) -> np.ndarray:
        """(len(self),) float32 BM25 score of each product for query terms `q` (as query_terms returns them)."""
        known = [t for t in q if t in self.df]  # bm25s fails on a query none of whose terms it indexed
        main = self.bm25.get_scores(known) if known and self.n_docs else np.zeros(self.n_docs, np.float32)
        if not self._added:
            return np.asarray(main, np.float32)
        return np.concatenate([np.asarray(main, np.float32), self.score_docs(q, self._added)])

    def score_docs(self, q: list[str], docs: list[Counter]) -> np.ndarray:
        """BM25 of query terms `q` in documents given as term counts, with the index's statistics."""
        out = np.zeros(len(docs), np.float32)
        for i, d in enumerate(docs):
            length = sum(d.values())
            norm = K1 * (1 - B + B * length / self.avgdl)
            out[i] = sum(self.idf(t) * d[t] / (d[t] + norm) for t in q if t in d)
        return out
