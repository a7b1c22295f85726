"""Fitting the wide head (model.wide): a linear SVM per head on the train titles' TF-IDF n-grams, weighed on val.

A convex solver and not the optimiser: trained by gradient beside the towers the n-gram table memorises the
training titles, where liblinear's regularised fit generalises, in seconds.
"""
# why: docs/decisions.md#wide-head

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..data.ngrams import NGRAM_BACKBONES
from ..model.fusion_rule import wide_target
from ..model.wide import MAX_CELLS
from ..prepare import Prepared, embed

log = logging.getLogger(__name__)

# t in z = deep + t * SVM margin, chosen per head on validation (0 = the deep prediction alone).
SCALES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
# The SVMs read a seeded sample of the train titles past either cap: liblinear's time and memory grow with the
# n-grams it holds (16 bytes each: 20M n-grams ~ 0.3 GB, ~200,000 short titles or ~40,000 long descriptions).
MAX_TRAIN, MAX_NGRAMS = 200_000, 20_000_000
MAX_FIT_THREADS = 4  # heads fitted at once: each holds liblinear's copy of the sample (<= ~0.3 GB at MAX_NGRAMS)
UNSEEN = -30.0  # the margin given to a class no train title has: the SVM never proposes it


def tfidf_rows(model, prep: Prepared, rows: np.ndarray, chunk: int = 20_000):
    """scipy CSR (len(rows), n_buckets) of the titles' TF-IDF vectors, exactly as the towers weigh them."""
    from scipy.sparse import csr_matrix, vstack

    bag = model.text.ngrams
    parts = []
    for i in range(0, len(rows), chunk):
        r = rows[i : i + chunk]
        ids = torch.from_numpy(np.asarray(prep.ngram_ids[r], np.int64))
        with torch.no_grad():
            w = bag.weights(ids, torch.from_numpy(np.asarray(prep.ngram_counts[r], np.float32))).numpy()
        n, g = ids.shape
        m = csr_matrix((w.ravel(), ids.numpy().ravel(), np.arange(0, n * g + 1, g)), shape=(n, bag.idf.numel()))
        m.sum_duplicates()
        m.eliminate_zeros()
        parts.append(m)
    return vstack(parts, format="csr") if parts else csr_matrix((0, bag.idf.numel()))


def train_sample(prep: Prepared, rows: np.ndarray, seed: int = 0) -> np.ndarray:
    """`rows`, or a seeded sample of them in order, holding at most MAX_TRAIN titles and ~MAX_NGRAMS n-grams."""
    rng = np.random.default_rng(seed)
    probe = rows if len(rows) <= 2_000 else rng.choice(rows, 2_000, replace=False)
    per_title = max(1.0, float((np.asarray(prep.ngram_counts[np.sort(probe)]) > 0).sum(1).mean()))
    cap = min(MAX_TRAIN, int(MAX_NGRAMS / per_title))
    return rows if len(rows) <= cap else np.sort(rng.choice(rows, cap, replace=False))


def _svm_columns(x, y: np.ndarray, kind: str, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(W (F, C), b (C,)) of linear SVMs whose decision values are the head's per-class margins (liblinear's
    shuffling seeded, so a run's fit repeats)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    w, b = np.zeros((x.shape[1], n_classes), np.float32), np.zeros(n_classes, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if kind == "multi":  # one binary SVM per label that has both positive and negative train titles
            for c in range(n_classes):
                yc = np.asarray(y[:, c]).astype(int)
                if 0 < yc.sum() < len(yc):
                    svm = LinearSVC(random_state=seed).fit(x, yc)
                    w[:, c], b[c] = svm.coef_[0], svm.intercept_[0]
            return w, b
        known = y >= 0
        seen = np.unique(y[known])
        b[:] = UNSEEN
        if len(seen) < 2:  # nothing to separate: no opinion
            b[seen] = 0.0
            return w, b
        svm = LinearSVC(random_state=seed).fit(x[known], y[known])
        if len(seen) == 2:  # one decision value: +m for the second class, -m for the first
            w[:, seen[1]], w[:, seen[0]] = svm.coef_[0] / 2, -svm.coef_[0] / 2
            b[seen[1]], b[seen[0]] = svm.intercept_[0] / 2, -svm.intercept_[0] / 2
        else:
            w[:, seen], b[seen] = svm.coef_.T, svm.intercept_
    return w, b


def _log_loss(z: torch.Tensor, y: np.ndarray, kind: str) -> float:
    """Mean cross-entropy of logits z on labels y (binary per label for a multi-label head; -1 rows left out)."""
    if kind == "multi":
        return float(torch.nn.functional.binary_cross_entropy_with_logits(z, torch.from_numpy(np.asarray(y)).to(z)))
    known = y >= 0
    if not known.any():
        return 0.0  # nothing to weigh: every t ties and the smallest, 0, is kept
    return float(torch.nn.functional.cross_entropy(z[torch.from_numpy(known)], torch.from_numpy(y[known])))


def _accuracy(z: torch.Tensor, y: np.ndarray, kind: str) -> float:
    if kind == "multi":
        return float(((z > 0).numpy() == (np.asarray(y) > 0)).mean())
    known = y >= 0
    return float((z.argmax(1).numpy()[known] == y[known]).mean()) if known.any() else 0.0


def choose_scale(deep: torch.Tensor, margin: torch.Tensor, y: np.ndarray, kind: str) -> tuple[float, dict]:
    """(t, {t: validation log-loss}) for logits deep + t * margin: the t in SCALES with the least log-loss, ties
    going to the smaller t (so 0, the deep prediction alone, where the margins add nothing)."""
    loss = {t: _log_loss((deep + t * margin).cpu(), y, kind) for t in SCALES}
    return min(SCALES, key=lambda t: (round(loss[t], 6), t)), loss


@torch.inference_mode()
def fit_wide_head(model, prep: Prepared, train_rows: np.ndarray, val_rows: np.ndarray, device: torch.device,
                  seed: int = 0, progress: bool = False) -> dict[str, float]:
    """Fit model.wide in place; returns {head: t}, the scale of its SVM margins chosen on validation.

    Per head, t in SCALES minimises the validation log-loss of the prediction that fuses
    (fusion_rule.wide_target: the fusion layer's deep + t * margin, the title's where the model has no fusion
    layer), ties going to the smaller t, so t = 0 (the deep prediction alone) stays where the margins add nothing.
    Log-loss and not accuracy: accuracy moves by whole products on a small validation set, so a rule on it either
    chases noise or, with a minimum gain, ignores the SVM where it helps."""
    # why: docs/decisions.md#wide-head
    wide = model.wide
    if wide is None:
        if progress and model.cfg.wide_head and model.cfg.text_backbone in NGRAM_BACKBONES:
            cells = model.cfg.ngram_buckets * sum(len(h["classes"]) for h in model.heads)
            log.warning(f"wide head: left out ({cells * 4 / 1e6:,.0f} MB of n-gram table for this many classes, "
                        f"over {MAX_CELLS * 4 / 1e6:,.0f} MB; --ngram-buckets lower makes it fit)")
        return {}
    t0 = time.perf_counter()
    train_rows = train_sample(prep, train_rows, seed)
    model.eval()
    x_train, x_val = tfidf_rows(model, prep, train_rows), tfidf_rows(model, prep, val_rows)
    if wide_target(model.fusion is not None) == "product":  # the fusion layer's, which reads photo and title
        reads = "fusion layer"
        deep = model.logits(model.encode_product(*embed(model, prep, val_rows, device)))
    else:
        reads = "title"
        deep = model.logits(torch.cat([model.encode_text(prep.text_input(val_rows[i : i + 2048]).to(device))
                                       for i in range(0, len(val_rows), 2048)]))
    chosen, cols = {}, wide.offsets()
    # One SVM per head, fitted side by side: liblinear releases the GIL, so threads use every core.
    with ThreadPoolExecutor(max(1, min(len(model.heads), os.cpu_count() or 1, MAX_FIT_THREADS))) as pool:
        fits = list(pool.map(lambda h: _svm_columns(x_train, prep.labels[h["name"]][train_rows], h["kind"],
                                                    len(h["classes"]), seed), model.heads))
    for h, (w, b) in zip(model.heads, fits, strict=True):
        name, kind = h["name"], h["kind"]
        margin = torch.from_numpy(np.asarray(x_val @ w) + b).to(deep[name])
        y_val = prep.labels[name][val_rows]
        t, loss = choose_scale(deep[name], margin, y_val, kind)
        wide.bag.weight[:, cols[name]] = torch.from_numpy(t * w).to(wide.bag.weight)
        wide.bag.weight[0, cols[name]] = 0.0  # the padding bucket stays empty
        wide.bias[cols[name]] = torch.from_numpy(t * b).to(wide.bias)
        chosen[name] = t
        if progress:
            log.info(f"wide head {name}: linear SVM on {len(train_rows):,} train titles, validation {reads} log-loss "
                     f"{loss[0.0]:.4f} -> {loss[t]:.4f}, accuracy {_accuracy(deep[name].cpu(), y_val, kind):.4f} -> "
                     f"{_accuracy((deep[name] + t * margin).cpu(), y_val, kind):.4f} (t = {t:g})")
    if progress:
        log.info(f"wide head fitted in {time.perf_counter() - t0:.0f} s")
    return chosen
