"""What title a photo predicts: the titles' TF-IDF on its leading axes, regressed on the photo embeddings out of fold.

The shared space's cosine of a photo and its own title is partly memorised: a photo the towers were trained beside
the wrong title sits close to it. A ridge regression from the photo embeddings to the titles' words, fitted on the
other folds, never saw that pair: the title it predicts for a photo is what the rest of the shop's titles say of
photos like it, so photo a can be compared with title b in words no model fitted on either listing.
"""

from __future__ import annotations

import numpy as np

from .crossfit import fold_of, title_features

DIMS = 128  # leading axes of the titles' TF-IDF kept
RIDGE = 1.0  # the regression's L2 penalty (on unit photo embeddings)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-9)).astype(np.float32)


def title_axes(words) -> np.ndarray | None:
    """(N, <= DIMS) unit rows: each title's TF-IDF row `words` (crossfit.title_features) on the catalogue's leading
    axes (truncated SVD), or None when there are too few words to have any."""
    from sklearn.decomposition import TruncatedSVD

    dims = min(DIMS, words.shape[1] - 1, words.shape[0] - 1)
    if dims < 2:
        return None
    return _unit(TruncatedSVD(dims, random_state=0).fit_transform(words))


def predicted_titles(image_emb: np.ndarray, titles: np.ndarray) -> np.ndarray:
    """(N, dims) unit rows: the title vector a ridge regression fitted on the other folds predicts from each photo."""
    from sklearn.linear_model import Ridge

    fold, out = fold_of(len(image_emb)), np.zeros_like(titles)
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        out[test] = Ridge(alpha=RIDGE).fit(image_emb[train], titles[train]).predict(image_emb[test])
    return _unit(out)


def photo_title_words(inputs, words=None) -> tuple[np.ndarray, np.ndarray] | None:
    """(what title each photo predicts, each title's own vector), both (N, dims) unit rows; None when the titles
    have too few shared words. `words`: the titles' TF-IDF rows when already made (core.title_tfidf)."""
    if words is None:
        try:
            words = title_features(inputs.products["title"])
        except ValueError:  # no word occurs twice
            return None
    titles = title_axes(words)
    if titles is None:
        return None
    return predicted_titles(np.asarray(inputs.image_emb, np.float32), titles), titles
