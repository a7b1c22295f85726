"""Title tokenizer: lowercase words, a vocabulary from training titles, optional hashed n-grams; saved with the run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np

from .ngrams import NgramSettings, titles_idf, words

__all__ = ["PAD", "UNK", "Tokenizer", "words"]
PAD, UNK = 0, 1  # reserved ids: padding and out-of-vocabulary words


class Tokenizer:
    """Maps titles to fixed-length int64 id rows; the vocabulary is plain JSON-able data.

    With `ngrams` settings it also maps titles to hashed n-gram ids and counts (`encode_ngrams`); `idf` is then
    the IDF of the titles it was fitted on, for the model's state (a tokenizer read back from a run has none:
    the run's model.pt holds it).
    """

    def __init__(self, vocab: list[str], max_len: int, ngrams: NgramSettings | None = None,
                 idf: np.ndarray | None = None):
        self.vocab = list(vocab)  # index i + 2 -> word; 0 and 1 are PAD and UNK
        self.max_len = max_len
        self.ngrams, self.idf = ngrams, idf
        self._ids = {w: i + 2 for i, w in enumerate(self.vocab)}

    @classmethod
    def fit(cls, titles: Iterable[str], vocab_size: int, max_len: int,
            ngrams: NgramSettings | None = None) -> Tokenizer:
        """Keep the `vocab_size` most frequent words (ties broken alphabetically, so fits are deterministic);
        with `ngrams`, cut its max_features to what these titles need and learn their IDF."""
        titles = [str(t) for t in titles]
        counts = Counter(w for t in titles for w in words(t))
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        idf = None
        if ngrams is not None:
            ngrams = ngrams.fitted(titles)
            idf = titles_idf(ngrams, titles)
        return cls([w for w, _ in ranked[:vocab_size]], max_len, ngrams, idf)

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

    def encode_ngrams(self, titles: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """(N, G) int32 hashed n-gram ids and (N, G) float32 counts (0 = padding); see NgramSettings.encode."""
        if self.ngrams is None:
            raise ValueError("this tokenizer has no n-gram settings (the run's text tower reads words only)")
        return self.ngrams.encode(str(t) for t in titles)

    def to_dict(self) -> dict:
        """JSON-able settings; runs without n-grams keep the dict they always had (no "ngrams" key)."""
        out = {"vocab": self.vocab, "max_len": self.max_len}
        return out | ({"ngrams": self.ngrams.to_dict()} if self.ngrams is not None else {})

    @classmethod
    def from_dict(cls, data: dict) -> Tokenizer:
        """A saved tokenizer; a dict without "ngrams" (every run before them) gives word ids only."""
        ngrams = None
        if data.get("ngrams") is not None:
            ngrams = NgramSettings.from_dict(data["ngrams"])
        return cls(data["vocab"], data["max_len"], ngrams)
