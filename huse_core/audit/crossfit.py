"""Out-of-sample class probabilities: K-fold heads on the trained towers' embeddings.

A run's own heads saw every training product's catalogue label and fit it, wrong ones too; a head fitted on the
other K-1 folds never saw a product's label, so its probabilities say what the rest of the catalogue implies.
Three kinds of head: "prototype" (default: each class's mean unit embedding in the other folds, softmax over scaled
cosines; one matrix product a fold), "bayes" (multinomial naive Bayes on sparse TF-IDF rows; one sparse product a
fold) and "linear" (softmax regression trained with Adam; much slower). `pool` stacks several heads' probabilities.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

FOLDS = 5
EPOCHS = 12
BATCH = 512


def _fit(x: torch.Tensor, ys: list[torch.Tensor], sizes: list[int], seed: int) -> torch.nn.ModuleList:
    """One linear softmax head per label set, trained together (Adam, cross-entropy, rows with label -1 ignored)."""
    gen = torch.Generator().manual_seed(seed)
    heads = torch.nn.ModuleList(torch.nn.Linear(x.shape[1], n) for n in sizes)
    opt = torch.optim.AdamW(heads.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(EPOCHS):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), BATCH):
            rows = order[start : start + BATCH]
            loss = sum(torch.nn.functional.cross_entropy(h(x[rows]), y[rows], ignore_index=-1)
                       for h, y in zip(heads, ys) if (y[rows] >= 0).any())
            if isinstance(loss, torch.Tensor):
                opt.zero_grad()
                loss.backward()
                opt.step()
    return heads


ALPHAS = (0.01, 0.03, 0.1)  # naive Bayes smoothing: each head's is picked from these by its out-of-fold log-loss
SCALES = (5.0, 10.0, 20.0, 40.0, 80.0)  # prototype heads: the softmax scale is picked from these on the train folds


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    np.exp(z, out=z)
    return z / z.sum(1, keepdims=True)


def _prototypes(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, n: int) -> np.ndarray:
    """(len(test), n) probabilities from class-mean prototypes of the train rows (classes absent there: never)."""
    rows = train[y[train] >= 0]
    from scipy.sparse import csr_matrix, issparse

    onehot = csr_matrix((np.ones(len(rows), np.float32), (y[rows], np.arange(len(rows)))), shape=(n, len(rows)))
    means = onehot @ x[rows]
    means = np.asarray(means.toarray() if issparse(means) else means, dtype=np.float32)
    present = np.linalg.norm(means, axis=1) > 0
    means[present] /= np.linalg.norm(means[present], axis=1, keepdims=True)
    fit = rows[:: max(1, len(rows) // 5000)]  # the scale is one number: a sample of train rows picks it
    sims_fit = np.asarray(x[fit] @ means.T)
    sims_fit[:, ~present] = -np.inf
    loss = [-np.log(np.maximum(_softmax(s * sims_fit)[np.arange(len(fit)), y[fit]], 1e-12)).mean() for s in SCALES]
    sims = np.asarray(x[test] @ means.T)
    sims[:, ~present] = -np.inf
    return _softmax(SCALES[int(np.argmin(loss))] * sims).astype(np.float32)


def title_features(titles):
    """Unit TF-IDF rows (words 1-2, sparse) of the titles: features no model has fitted to the labels, so a label the
    text tower memorised from its own title is not in them."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, dtype=np.float32).fit_transform(
        [str(t).lower() for t in titles])


def fold_of(n: int, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """(n,) fold number of each row (seeded, balanced): the split every out-of-fold step here shares."""
    return np.random.default_rng(seed).permutation(n) % max(2, folds)


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean -log p(label) over the labelled rows (the catalogue's labels: no truth needed)."""
    ok = np.flatnonzero(y >= 0)
    return float(-np.log(np.maximum(probs[ok, y[ok]], 1e-12)).mean()) if len(ok) else 0.0


def _bayes(x, y: np.ndarray, fold: np.ndarray, n: int) -> np.ndarray:
    """(N, n) out-of-fold multinomial naive Bayes probabilities, smoothing picked from ALPHAS by log-loss."""
    from sklearn.naive_bayes import MultinomialNB

    best, best_loss = None, np.inf
    for alpha in ALPHAS:
        out = np.zeros((x.shape[0], n), np.float32)
        for k in range(fold.max() + 1):
            train, test = np.flatnonzero((fold != k) & (y >= 0)), np.flatnonzero(fold == k)
            if len(train):
                clf = MultinomialNB(alpha=alpha).fit(x[train], y[train])
                out[np.ix_(test, clf.classes_)] = clf.predict_proba(x[test])
        if (loss := log_loss(out, y)) < best_loss:
            best, best_loss = out, loss
    return best


def pool(probs: list[np.ndarray], y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Log-linear pool of several heads' out-of-fold probabilities: p ∝ Π p_s ** w_s, the exponents of each fold's
    rows fitted (log-loss of the catalogue labels, w_s in [0, 5]) on the other folds' rows: a cross-fitted second
    level, so no row's own label picks its weights."""
    from scipy.optimize import minimize

    logs = np.stack([np.log(np.maximum(p, 1e-7)) for p in probs])  # (S, N, C)

    def mix(w: np.ndarray, rows: np.ndarray) -> np.ndarray:
        z = np.tensordot(w, logs[:, rows], axes=1)
        return _softmax(z)

    def loss(w: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray]:
        p, mine = mix(w, rows), logs[:, rows, y[rows]]  # (S, R): each source's log p(label)
        expected = np.einsum("src,rc->sr", logs[:, rows], p)
        return (float(-np.log(np.maximum(p[np.arange(len(rows)), y[rows]], 1e-12)).mean()),
                -(mine - expected).mean(1))

    out = np.empty_like(probs[0])
    start = np.full(len(probs), 1.0 / len(probs))
    for k in range(fold.max() + 1):
        test = np.flatnonzero(fold == k)
        train = np.flatnonzero((fold != k) & (y >= 0))
        train = train[:: max(1, len(train) // 10000)]  # a few exponents: a sample of rows fits them
        w = start if not len(train) else minimize(loss, start, args=(train,), jac=True, method="L-BFGS-B",
                                                  bounds=[(0.0, 5.0)] * len(probs)).x
        out[test] = mix(w, test)
    return out


def out_of_fold(features: np.ndarray, labels: list[np.ndarray], sizes: list[int], folds: int = FOLDS,
                seed: int = 0, tick: Callable[[], None] | None = None, head: str = "prototype") -> list[np.ndarray]:
    """Per label set, (N, C) float32 probabilities of each row from heads fitted on the other folds' rows.

    features (N, F); labels: (N,) int64 class indices (-1 = unknown); sizes: class counts."""
    if head == "bayes":  # non-negative (TF-IDF) features
        fold = fold_of(features.shape[0], folds, seed)
        return [_bayes(features, np.asarray(y), fold, n) for y, n in zip(labels, sizes)]
    if head == "prototype":
        from scipy.sparse import issparse

        x = features.tocsr() if issparse(features) else np.ascontiguousarray(features, dtype=np.float32)
        if not issparse(x):
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        fold = fold_of(x.shape[0], folds, seed)
        out = [np.zeros((x.shape[0], n), np.float32) for n in sizes]
        for k in range(max(2, folds)):
            test, train = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
            for y, n, o in zip(labels, sizes, out):
                o[test] = _prototypes(x, np.asarray(y), train, test, n)
            if tick:
                tick()
        return out
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    ys = [torch.from_numpy(np.asarray(y, dtype=np.int64)) for y in labels]
    fold = fold_of(len(x), folds, seed)
    out = [np.zeros((len(x), n), np.float32) for n in sizes]
    for k in range(max(2, folds)):
        test, train = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        heads = _fit(x[train], [y[train] for y in ys], sizes, seed + k)
        with torch.no_grad():
            for h, o in zip(heads, out):
                o[test] = torch.softmax(h(x[test]), dim=1).numpy()
        if tick:
            tick()
    return out
