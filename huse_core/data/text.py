"""Title tokenizer: lowercase words, a vocabulary built from training titles, saved with the run."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

PAD, UNK = 0, 1  # reserved ids: padding and out-of-vocabulary words
_WORD = re.compile(r"[^\W_]+", re.UNICODE)  # runs of letters/digits in any script; punctuation splits words


def words(title: str) -> list[str]:
    """Lowercased word tokens of a title ("Men's T-Shirt" -> ["men", "s", "t", "shirt"])."""
    return _WORD.findall(str(title).lower())


class Tokenizer:
    """Maps titles to fixed-length int64 id rows; the vocabulary is plain JSON-able data."""

    def __init__(self, vocab: list[str], max_len: int):
        self.vocab = list(vocab)  # index i + 2 -> word; 0 and 1 are PAD and UNK
        self.max_len = max_len
        self._ids = {w: i + 2 for i, w in enumerate(self.vocab)}

    @classmethod
    def fit(cls, titles: Iterable[str], vocab_size: int, max_len: int) -> Tokenizer:
        """Keep the `vocab_size` most frequent words (ties broken alphabetically, so fits are deterministic)."""
        counts = Counter(w for t in titles for w in words(t))
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls([w for w, _ in ranked[:vocab_size]], max_len)

    @property
    def n_tokens(self) -> int:
        """Rows of the embedding table: the vocabulary plus PAD and UNK."""
        return len(self.vocab) + 2

    def encode(self, titles: Iterable[str]) -> np.ndarray:
        """(N, max_len) int64 ids, truncated or right-padded with PAD; an empty title is one UNK."""
        titles = list(titles)
        out = np.full((len(titles), self.max_len), PAD, dtype=np.int64)
        for row, title in enumerate(titles):
            ids = [self._ids.get(w, UNK) for w in words(title)[: self.max_len]] or [UNK]
            out[row, : len(ids)] = ids
        return out

    def to_dict(self) -> dict:
        return {"vocab": self.vocab, "max_len": self.max_len}

    @classmethod
    def from_dict(cls, data: dict) -> Tokenizer:
        return cls(data["vocab"], data["max_len"])
