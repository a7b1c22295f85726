"""The title baseline `evaluate` sets beside the model: TF-IDF word 1-2 + char_wb 2-5-grams and a LinearSVC per head.

It is the classifier a shop's data scientist would write in ten lines, fitted on the run's own train-split titles
only and scored on the same rows, with the same metric, as the model. LinearSVC (liblinear, one-vs-rest) fits the
44k-product catalogue's three levels in under a minute of CPU where LogisticRegression(saga) takes ~25 minutes, as
accurate; SGDClassifier is twice as fast there but 5-14 points worse on a 1,000-product shop's finest level. A
multi-label head gets one LinearSVC per label.
"""

from __future__ import annotations

import time

import numpy as np

NAME = "TF-IDF word 1-2 + char_wb 2-5-grams + LinearSVC"
TIE_POINTS = 0.05  # accuracy differences below this (in points) read as a tie: 1 product in 2,000


def _vectorizer(n_train: int):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union

    min_df = 2 if n_train >= 100 else 1  # n-grams seen once are noise at scale; a tiny shop needs every one
    return make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=min_df),
                      TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=min_df))


def fit_predict(train_titles: list[str], train_labels: dict[str, np.ndarray], test_titles: list[str],
                heads: list[dict]) -> tuple[dict[str, np.ndarray], float]:
    """Fit the baseline on the train titles and predict the test titles, per head.

    Labels follow `Catalog.labels`: single -> (N,) int64 with -1 for missing (left out of the fit), multi ->
    (N, C) multi-hot. Returns ({head: (M, C) float32 0/1 predictions, shaped like the model's probabilities so
    the model's metric applies unchanged}, fit + predict seconds). A head with no labelled train row is left out.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import LinearSVC

    t0 = time.perf_counter()
    train_titles = np.array([str(t) for t in train_titles], dtype=object)
    vec = _vectorizer(len(train_titles))
    x_train = vec.fit_transform(train_titles)
    x_test = vec.transform([str(t) for t in test_titles])
    out: dict[str, np.ndarray] = {}
    for h in heads:
        y, n_classes = np.asarray(train_labels[h["name"]]), len(h["classes"])
        pred = np.zeros((x_test.shape[0], n_classes), dtype=np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # 1,000 iterations are plenty for ranking classes
            warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
            warnings.filterwarnings("ignore", message="Label not .* present in all training examples")
            if h["kind"] == "multi":
                cols = np.flatnonzero(y.any(0))  # labels never seen in train are never predicted
                if len(cols):
                    model = OneVsRestClassifier(LinearSVC()).fit(x_train, y[:, cols].astype(int))
                    pred[:, cols] = model.predict(x_test)
            else:
                known = y >= 0
                seen = np.unique(y[known])
                if len(seen) == 0:
                    continue
                if len(seen) == 1:  # one class in train: the only sensible guess
                    pred[:, seen[0]] = 1.0
                else:
                    model = LinearSVC().fit(x_train[known], y[known])
                    pred[np.arange(len(pred)), model.predict(x_test)] = 1.0
        out[h["name"]] = pred
    return out, time.perf_counter() - t0


def verdict(head: str, model: dict, baseline: dict, modality: str = "fused") -> str:
    """One line: does the model's `modality` beat the title baseline on `head`? Points of accuracy (+ macro-F1)."""
    gap = (model["accuracy"] - baseline["accuracy"]) * 100
    f1_gap = (model["macro_f1"] - baseline["macro_f1"]) * 100
    word = "ties" if abs(gap) < TIE_POINTS else "beats" if gap > 0 else "trails"
    return f"{head}: {modality} {word} the title baseline by {gap:+.2f} accuracy points (macro-F1 {f1_gap:+.2f})"


def comparison_rows(result: dict) -> list[dict]:
    """Per head: the model's photo / title / fused accuracy and macro-F1 beside the baseline's, and the verdict.

    `result` is what `evaluate` returns; [] when it was run without the baseline.
    """
    base = result.get("baseline") or {}
    rows = []
    for head, per in result.get("classification", {}).items():
        b = base.get("heads", {}).get(head)
        if b is None:
            continue
        row = {"head": head}
        for modality, label in (("image", "photo"), ("text", "title"), ("fused", "fused"), (None, "baseline")):
            m = b if modality is None else per.get(modality)
            row[f"{label} acc"] = m["accuracy"] if m else None
            row[f"{label} F1"] = m["macro_f1"] if m else None
        row["verdict"] = base.get("verdict", {}).get(head, "").removeprefix(f"{head}: ")
        rows.append(row)
    return rows


def comparison_table(result: dict):
    """`comparison_rows` as a pandas DataFrame (percentages), for the app's Train & evaluate page."""
    import pandas as pd

    df = pd.DataFrame(comparison_rows(result))
    if df.empty:
        return df
    figures = [c for c in df.columns if c.endswith((" acc", " F1"))]
    df[figures] = (df[figures].astype(float) * 100).round(2)
    return df.set_index("head")


def format_lines(result: dict) -> list[str]:
    """The baseline's description and one verdict per head (for `format_tables`); [] when evaluate ran without it."""
    base = result.get("baseline")
    if not base:
        return []
    return ["", f"base = the title baseline: {base['model']}, fitted on {base['n_train']} train titles in "
                f"{base['seconds']:.1f}s", *base["verdict"].values()]
