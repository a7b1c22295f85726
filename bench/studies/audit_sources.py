"""What the audit's label and mismatch scoring rests on, measured without any answer key, on trained, indexed runs.

    python -m bench.studies.audit_sources RUN [RUN ...] [--variant audit-sources]

For the finest hierarchy level of each run: the out-of-fold accuracy, against the catalogue's own labels, of the
title side's sources (TF-IDF prototypes, naive Bayes) and of their pool (core.title_probs); and the pool exponents of
the three label sources (tower embeddings, TF-IDF prototypes, naive Bayes), mean over the folds, when fitted on
every product and when fitted on the products the run held out of training (crossfit.pool's fit_rows). A run's
catalogue must still be where it was trained.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from bench.common import write_result
from scipy.optimize import minimize

from huse_core.audit.core import _title_sources, title_probs
from huse_core.audit.crossfit import fold_of, out_of_fold
from huse_core.audit.inputs import load_inputs


def exponents(probs: list[np.ndarray], y: np.ndarray, fold: np.ndarray, fit: np.ndarray) -> list[float]:
    """The mean over the folds of the pool's exponents (as crossfit.pool fits them) on the `fit` rows."""
    logs = np.stack([np.log(np.maximum(p, 1e-7)) for p in probs])
    out = []
    for k in range(fold.max() + 1):
        rows = np.flatnonzero((fold != k) & (y >= 0) & fit)
        rows = rows[:: max(1, len(rows) // 10000)]

        def loss(w, rows=rows):
            z = np.tensordot(w, logs[:, rows], axes=1)
            z -= z.max(1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(1, keepdims=True)
            return float(-np.log(np.maximum(p[np.arange(len(rows)), y[rows]], 1e-12)).mean())

        out.append(minimize(loss, np.full(len(probs), 1 / len(probs)), method="L-BFGS-B",
                            bounds=[(0.0, 5.0)] * len(probs)).x)
    return [round(float(v), 3) for v in np.mean(out, 0)]


def study(run_dir: str) -> dict:
    inputs = load_inputs(run_dir)
    leaf = inputs.run.leaf_head
    heads = [h for h in inputs.run.heads if h.kind == "single"]
    i = [h.name for h in heads].index(leaf.name)
    y = inputs.codes(leaf)
    proto, bayes = (s[i] for s in _title_sources(inputs))
    pooled = title_probs(inputs)[leaf.name]
    towers = out_of_fold(np.hstack([inputs.image_emb, inputs.text_emb]), [y], [len(leaf.classes)])[0]
    fold = fold_of(len(inputs))
    held = inputs.products["split"].to_numpy(dtype=object) != "train"
    ok = y >= 0

    def accuracy(p):
        return round(float((p[ok].argmax(1) == y[ok]).mean()), 4)

    return {"head": leaf.name, "n_products": len(inputs), "held_out": int(held.sum()),
            "title_side_accuracy": {"tfidf_prototypes": accuracy(proto), "naive_bayes": accuracy(bayes),
                                    "pool": accuracy(pooled)},
            "exponents_towers_prototypes_bayes": {
                "fitted_on_every_product": exponents([towers, proto, bayes], y, fold, np.ones(len(y), bool)),
                "fitted_on_held_out": exponents([towers, proto, bayes], y, fold, held)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--variant", default="audit-sources")
    args = ap.parse_args()
    result = {str(Path(r)): study(r) for r in args.runs}
    lines = ["# Audit sources: title-side accuracy and label pool exponents (no answer key)", "",
             "| run | head | title side: prototypes / naive Bayes / pool | exponents fitted on every product "
             "(towers, prototypes, NB) | on held-out products |", "|---|---|---|---|---|"]
    for run, r in result.items():
        t, e = r["title_side_accuracy"], r["exponents_towers_prototypes_bayes"]
        lines.append(f"| {run} | {r['head']} | {t['tfidf_prototypes']} / {t['naive_bayes']} / {t['pool']} | "
                     f"{e['fitted_on_every_product']} | {e['fitted_on_held_out']} |")
    print(write_result("studies", args.variant, result, "\n".join(lines) + "\n"))


if __name__ == "__main__":
    main()
