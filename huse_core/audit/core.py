"""audit(): the catalogue audit of a trained, indexed run, as plain rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .colours import pixel_colour_probs
from .crossfit import FOLDS, fold_of, out_of_fold, pool, title_features
from .duplicates import duplicate_findings, duplicate_pairs
from .inputs import AuditError, AuditInputs, load_inputs
from .labels import label_findings
from .mismatch import mismatch_findings
from .words import photo_title_words

KINDS = ("labels", "mismatch", "duplicates")
COLUMNS = ("kind", "id", "title", "image", "head", "current", "suggested", "score", "confidence", "reason",
           "cluster", "others")
# The work of each kind, in rough shares of an audit's time (progress bars and callbacks).
STEPS = {"labels": 0.3, "mismatch": 0.3, "duplicates": 0.4}
Progress = Callable[[dict], None]


def parse_kinds(kinds) -> list[str]:
    """A list or comma-separated string of kinds, checked; None or "" = all."""
    if not kinds:
        return list(KINDS)
    names = [k.strip() for k in (kinds.split(",") if isinstance(kinds, str) else kinds) if k.strip()]
    wrong = [k for k in names if k not in KINDS]
    if wrong:
        raise AuditError(f"unknown audit kind {', '.join(map(repr, wrong))}; choose from {', '.join(KINDS)}")
    return names


def _single_heads(inputs: AuditInputs) -> tuple[list, list[np.ndarray], list[int]]:
    """(single-label heads, each head's catalogue class codes, its class count)."""
    heads = [h for h in inputs.run.heads if h.kind == "single"]
    return heads, [inputs.codes(h) for h in heads], [len(h.classes) for h in heads]


def photo_probs(inputs: AuditInputs, tick=None) -> dict[str, np.ndarray]:
    """{head: (N, C) out-of-sample probabilities} of the single-label heads from K-fold prototype heads on the photo
    embeddings."""
    heads, labels, sizes = _single_heads(inputs)
    return {h.name: p for h, p in zip(heads, out_of_fold(inputs.image_emb, labels, sizes, tick=tick))}


def label_probs(inputs: AuditInputs, tick=None) -> dict[str, np.ndarray]:
    """Out-of-sample label probabilities, the mean of two views: every source pooled (K-fold prototype heads on the
    towers' embeddings and on the titles' TF-IDF, naive Bayes on that TF-IDF; crossfit.pool) and the title sources
    alone pooled (`title_probs`). The towers saw every training label, so a label they memorised sits in the
    embeddings and can win the first view; the title features never saw a label, so it cannot hide in the second.
    The first view's weights are fitted on the products the run held out of training (val and test), whose labels
    the towers never saw, so memorising does not earn the embeddings weight (measured: docs/audit.md)."""
    # why: docs/decisions.md#audit
    heads, labels, sizes = _single_heads(inputs)
    towers = out_of_fold(np.hstack([inputs.image_emb, inputs.text_emb]), labels, sizes, tick=tick)
    titles, by_titles = _title_sources(inputs, tick), title_probs(inputs)
    fold, out = fold_of(len(inputs)), {}
    held_out = inputs.products["split"].to_numpy(dtype=object) != "train" if "split" in inputs.products else None
    for i, h in enumerate(heads):
        out[h.name] = (pool([towers[i], *(t[i] for t in titles)], labels[i], fold, fit_rows=held_out)
                       + by_titles[h.name]) / 2
    return out


def title_probs(inputs: AuditInputs, tick=None) -> dict[str, np.ndarray]:
    """{head: (N, C)} what the titles alone say of each single-label head, out of sample: K-fold prototype heads and
    naive Bayes on the titles' TF-IDF, pooled (crossfit.pool). Features no model fitted to the labels, so a label
    the towers memorised is not in them; pooled, they read 94 % of the clean 44k catalogue's articleTypes right
    against 85 % for the prototypes alone (docs/audit.md). Made once per inputs: labels and mismatches share it."""
    if "title_probs" not in inputs.memo:
        heads, labels, _ = _single_heads(inputs)
        sources, fold = _title_sources(inputs, tick), fold_of(len(inputs))
        inputs.memo["title_probs"] = {h.name: pool([s[i] for s in sources], labels[i], fold)
                                      for i, h in enumerate(heads)}
    return inputs.memo["title_probs"]


def title_tfidf(inputs: AuditInputs):
    """The titles' TF-IDF rows (crossfit.title_features), made once per inputs: the title sources and the
    mismatch kind's predicted titles (words.py) read the same rows."""
    if "title_tfidf" not in inputs.memo:
        inputs.memo["title_tfidf"] = title_features(inputs.products["title"])
    return inputs.memo["title_tfidf"]


def _title_sources(inputs: AuditInputs, tick=None) -> list[list[np.ndarray]]:
    """[prototype heads, naive Bayes] on the titles' TF-IDF: per source, each head's out-of-fold probabilities
    (made once per inputs)."""
    if "title_sources" not in inputs.memo:
        _, labels, sizes = _single_heads(inputs)
        words = title_tfidf(inputs)
        inputs.memo["title_sources"] = [out_of_fold(words, labels, sizes, tick=tick),
                                        out_of_fold(words, labels, sizes, head="bayes")]
    return inputs.memo["title_sources"]


def mismatch_probs(inputs: AuditInputs, bar=None) -> tuple[dict, dict, tuple | None, tuple | None]:
    """What the mismatch kind compares: out-of-sample photo probabilities (K-fold heads on image_emb), title
    probabilities (`title_probs`: the text tower memorised the training labels, wrong ones too), the colour the
    photo's pixels show (None without a colour attribute) and the title each photo predicts out of fold beside the
    titles' words (words.py; None when titles share too few words)."""
    share = STEPS["mismatch"] / FOLDS / 3
    tick = (lambda: bar.advance(share, "photo/title mismatches")) if bar else None  # noqa: E731
    p_image, p_title = photo_probs(inputs, tick), title_probs(inputs, tick)
    pixels, words = pixel_colour_probs(inputs), photo_title_words(inputs, title_tfidf(inputs))
    if bar:
        bar.advance(STEPS["mismatch"] / 3, "photo/title mismatches")
    return p_image, p_title, pixels, words


class _Bar:
    """One progress bar (stderr) and/or callback over the audit's steps."""

    def __init__(self, kinds: list[str], progress: bool, callback: Progress | None):
        from tqdm.auto import tqdm

        self.total = sum(STEPS[k] for k in kinds)
        self.done, self.callback = 0.0, callback
        self.bar = tqdm(total=100, desc="auditing", disable=not progress, bar_format="{l_bar}{bar}| {elapsed}")

    def advance(self, share: float, message: str) -> None:
        self.done = min(self.total, self.done + share)
        self.bar.n = round(100 * self.done / self.total)
        self.bar.set_postfix_str(message)
        if self.callback:
            self.callback({"fraction": self.done / self.total, "message": message})

    def close(self) -> None:
        self.bar.close()


def _rows(inputs: AuditInputs, findings: list[dict], top: int | None) -> list[dict]:
    df = inputs.products
    findings = sorted(findings, key=lambda f: -f["score"])[: top or None]
    out = []
    for f in findings:
        i = f.pop("row")
        row = {"id": str(df["id"].iat[i]), "title": str(df["title"].iat[i]), "image": str(df["image"].iat[i])}
        out.append({c: (row | f).get(c, "") for c in COLUMNS})
    return out


def audit(run_dir: str | Path, kinds=None, top: int | None = None, progress: bool = False,
          callback: Progress | None = None, inputs: AuditInputs | None = None) -> list[dict]:
    """Audit a trained, indexed run's catalogue: label issues (per head, out-of-sample), photo/title mismatches and
    duplicate listings. Returns plain rows, each kind's best `top` (None: all), highest score first:
    {kind, id, title, image, head, current, suggested, score, confidence, reason, cluster, others}.

    Raises AuditError with one line saying what to do: no index, a catalogue changed since training, a wrong kind."""
    kinds = parse_kinds(kinds)
    inputs = inputs or load_inputs(run_dir)
    bar = _Bar(kinds, progress, callback)
    rows: list[dict] = []
    try:
        if "labels" in kinds:
            share = STEPS["labels"] / FOLDS / 2
            rows += _rows(inputs, label_findings(inputs, label_probs(inputs, lambda: bar.advance(share, "labels"))),
                          top)
        if "mismatch" in kinds:
            rows += _rows(inputs, mismatch_findings(inputs, *mismatch_probs(inputs, bar)), top)
        if "duplicates" in kinds:
            n_ticks = max(1, len(inputs) // 1000)
            pairs = duplicate_pairs(inputs, lambda: bar.advance(STEPS["duplicates"] / n_ticks / 2, "duplicates"))
            rows += _rows(inputs, duplicate_findings(inputs, pairs), top)
        bar.advance(bar.total, "done")
    finally:
        bar.close()
    return rows
