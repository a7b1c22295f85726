"""Hashed word and character n-grams of titles (TF-IDF's features), the same ids in every process and machine."""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import numpy as np

_WORD = re.compile(r"[^\W_]+", re.UNICODE)  # runs of letters/digits in any script; punctuation splits words


def words(title: str) -> list[str]:
    """Lowercased word tokens of a title ("Men's T-Shirt" -> ["men", "s", "t", "shirt"]); the tokenizer's too."""
    return _WORD.findall(str(title).lower())


NGRAM_VERSION = 1  # bump when the grams or their hashing change: ids from another version mean other n-grams


def bucket(gram: str, n_buckets: int) -> int:
    """The bucket of one n-gram string: 1 + CRC-32 of its UTF-8 bytes mod (n_buckets - 1); 0 is padding.

    CRC-32 (zlib), unlike Python's salted hash(), gives the same bucket in every process and on every machine.
    """
    return 1 + zlib.crc32(gram.encode("utf-8")) % (n_buckets - 1)


def char_grams(word: str, lo: int, hi: int) -> list[str]:
    """Character lo..hi-grams of one word padded with a space each side, like scikit-learn's char_wb analyzer
    ("shirt", 3, 4 -> " sh", "shi", "hir", "irt", "rt ", " shi", "shir", "hirt", "irt ")."""
    padded = f" {word} "
    return [padded[i : i + n] for n in range(lo, hi + 1) for i in range(len(padded) - n + 1)]


def word_grams(ws: list[str], lo: int, hi: int) -> list[str]:
    """Word lo..hi-grams, the words joined by one space."""
    return [" ".join(ws[i : i + n]) for n in range(lo, hi + 1) for i in range(len(ws) - n + 1)]


@lru_cache(maxsize=1 << 17)
def _word_char_buckets(word: str, lo: int, hi: int, n_buckets: int) -> tuple[int, ...]:
    """Buckets of one word's char n-grams, cached: titles repeat the same few thousand words."""
    return tuple(bucket("c|" + g, n_buckets) for g in char_grams(word, lo, hi))


@dataclass(frozen=True)
class NgramSettings:
    """How titles become hashed n-gram ids; stored in run.json with the tokenizer (the IDF weights live in
    model.pt). Word grams hash as "w|red shirt", char grams as "c| re", so the two kinds never share a string."""

    n_buckets: int = 1 << 16  # hash buckets (rows of the n-gram embedding table, bucket 0 = padding)
    word: tuple[int, int] = (1, 2)  # word n-gram lengths, inclusive
    char: tuple[int, int] = (3, 5)  # char n-gram lengths within word boundaries, inclusive
    max_features: int = 512  # distinct buckets kept per title (words first, then bigrams, then char grams)
    version: int = NGRAM_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NgramSettings:
        if data.get("version") != NGRAM_VERSION:
            raise ValueError(f"n-gram settings of version {data.get('version')!r}; this version reads "
                             f"{NGRAM_VERSION}: retrain the run")
        return cls(int(data["n_buckets"]), tuple(data["word"]), tuple(data["char"]), int(data["max_features"]))

    def title_buckets(self, title: str) -> Counter:
        """bucket -> count of one title's n-grams, in first-seen order: word grams, then char grams."""
        ws = words(title)
        counts = Counter(bucket("w|" + g, self.n_buckets) for g in word_grams(ws, *self.word))
        for w in ws:
            counts.update(_word_char_buckets(w, *self.char, self.n_buckets))
        return counts

    def encode(self, titles: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, counts): (N, max_features) buckets and term counts, padded with 0, in the smallest types that
        hold them: uint16 ids up to 65,536 buckets (else int32) and uint8 counts (a title repeats no n-gram 255
        times). A catalogue keeps these rows in memory for training: 3 bytes an n-gram instead of 8 (at 1M
        products, ~1 GB less). TextInput.from_numpy widens a batch to int32 / float32.

        A title with more distinct buckets keeps the first `max_features` (char grams of its last words go
        first); a title without words has none (all padding)."""
        titles = list(titles)
        ids = np.zeros((len(titles), self.max_features), np.uint16 if self.n_buckets <= 1 << 16 else np.int32)
        counts = np.zeros((len(titles), self.max_features), np.uint8)
        for row, title in enumerate(titles):
            items = list(self.title_buckets(title).items())[: self.max_features]
            if items:
                grams, n = zip(*items)
                ids[row, : len(items)], counts[row, : len(items)] = grams, np.minimum(n, 255)
        return ids, counts

    def fitted(self, titles: list[str]) -> NgramSettings:
        """These settings with max_features cut to the most any of `titles` needs (never above the cap)."""
        most = max((len(self.title_buckets(t)) for t in titles), default=1)
        return replace(self, max_features=max(1, min(self.max_features, most)))


def inverse_document_frequency(ids: np.ndarray, n_buckets: int) -> np.ndarray:
    """(n_buckets,) float32 smoothed IDF of training rows' buckets, as TfidfVectorizer computes it:
    ln((1 + n) / (1 + df)) + 1, where df counts the rows holding the bucket (padding 0 is ignored)."""
    return _idf(document_frequency(ids, n_buckets), len(ids))


def document_frequency(ids: np.ndarray, n_buckets: int) -> np.ndarray:
    """(n_buckets,) int64: how many rows of `ids` hold each bucket (each row lists a bucket once; 0 is padding)."""
    return np.bincount(ids[ids > 0].ravel(), minlength=n_buckets)[:n_buckets]


def _idf(df: np.ndarray, n_rows: int) -> np.ndarray:
    return (np.log((1 + n_rows) / (1 + df)) + 1).astype(np.float32)


IDF_CHUNK = 20_000  # titles encoded at a time while learning the IDF: ~10 MB in flight, not the whole catalogue's


def titles_idf(settings: NgramSettings, titles: list[str]) -> np.ndarray:
    """inverse_document_frequency of `titles`' n-grams, encoded IDF_CHUNK titles at a time: learning it on 800k
    training titles held ~1.7 GB of ids, masks and bincount's int64 copy at once; chunked, ~10 MB."""
    df = np.zeros(settings.n_buckets, np.int64)
    for start in range(0, len(titles), IDF_CHUNK):
        df += document_frequency(settings.encode(titles[start : start + IDF_CHUNK])[0], settings.n_buckets)
    return _idf(df, len(titles))


NGRAM_BACKBONES = ("ngram", "conv+ngram")  # ModelConfig.text_backbone values whose tower reads n-grams


def settings_for(model_cfg) -> NgramSettings | None:
    """The n-gram settings a ModelConfig asks for; None when its text tower reads no n-grams."""
    if model_cfg.text_backbone not in NGRAM_BACKBONES:
        return None
    return NgramSettings(model_cfg.ngram_buckets, (1, model_cfg.ngram_word_max),
                         (model_cfg.ngram_char_min, model_cfg.ngram_char_max), model_cfg.ngram_max_features)
