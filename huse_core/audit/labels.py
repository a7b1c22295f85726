"""Label issues: products whose catalogue label the out-of-sample heads doubt (cleanlab), and inconsistent paths."""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np

from .inputs import AuditInputs

SEP = " › "
DOUBT = 0.6  # a label is doubted when the out-of-sample heads give it less than this (or prefer another class)
# A path is hierarchy-inconsistent when its leaf sits under other parents in at least this share of the products.
MAJORITY = 0.9


def quality(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """cleanlab's label-quality score of each row (self-confidence: p(catalogue label)); NaN where unlabelled."""
    from cleanlab.rank import get_label_quality_scores

    out = np.full(len(labels), np.nan)
    ok = labels >= 0
    if ok.any():
        out[ok] = get_label_quality_scores(labels[ok], probs[ok], method="self_confidence")
    return out


def issues(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Rows cleanlab's confident learning flags as label issues (find_label_issues, prune by noise rate)."""
    from cleanlab.filter import find_label_issues

    flagged = np.zeros(len(labels), bool)
    ok = np.flatnonzero(labels >= 0)
    if len(ok) < 10:
        return flagged
    with warnings.catch_warnings():  # classes rare in one fold: cleanlab warns, the flags stay valid
        warnings.simplefilter("ignore")
        flagged[ok] = find_label_issues(labels[ok], probs[ok], filter_by="prune_by_noise_rate")
    return flagged


def _paths(inputs: AuditInputs) -> dict[str, str]:
    """Leaf class -> its most common full path in the catalogue, joined by SEP."""
    counts = Counter(zip(*(inputs.products[level].astype(str) for level in inputs.run.levels)))
    best: dict[str, tuple[int, tuple]] = {}
    for path, n in counts.items():
        if n > best.get(path[-1], (0, ()))[0]:
            best[path[-1]] = (n, path)
    out = {p[-1]: SEP.join(p) for _, p in best.values()}
    for path in inputs.run.meta.get("leaf_paths", []):  # classes merged away in the catalogue still get a path
        if path:
            out.setdefault(path[-1], SEP.join(path))
    return out


def label_findings(inputs: AuditInputs, probs: dict[str, np.ndarray]) -> list[dict]:
    """One finding per product and head whose catalogue label the out-of-sample heads doubt (give it under DOUBT),
    suggesting their most likely other class:
    for the hierarchy, the leaf head's finding names the whole path (current and suggested); attributes each on
    their own. Score = 1 - cleanlab's label quality (self-confidence); the reason says when cleanlab's confident
    learning flags it too (its flags alone missed labels the towers had memorised: docs/audit.md)."""
    run, df, rows = inputs.run, inputs.products, []
    levels = run.levels
    paths = _paths(inputs) if levels else {}
    for head in run.heads:
        name = head.name
        if head.kind != "single" or name not in probs or (name in levels and name != levels[-1]):
            continue
        y, p = inputs.codes(head), probs[name]
        q, flagged = quality(y, p), issues(y, p)
        other = p.copy()
        other[np.flatnonzero(y >= 0), y[y >= 0]] = -1
        best = other.argmax(1)  # the most likely class besides the catalogue's
        for i in np.flatnonzero((y >= 0) & (q < DOUBT)):
            suggested = head.classes[best[i]]
            is_path = name in levels
            current = SEP.join(inputs.path_of(i)) if is_path else str(df[name].iat[i])
            rows.append({"kind": "labels", "head": "category path" if is_path else name, "row": int(i),
                         "current": current, "suggested": paths.get(suggested, suggested) if is_path else suggested,
                         "score": round(float(1 - q[i]), 4), "confidence": round(float(p[i, best[i]]), 4),
                         "reason": f"out-of-sample heads give the catalogue label {q[i]:.0%}, "
                                   f"'{suggested}' {p[i, best[i]]:.0%}"
                                   + ("; cleanlab flags it" if flagged[i] else "")})
    return rows + hierarchy_findings(inputs)


def hierarchy_findings(inputs: AuditInputs) -> list[dict]:
    """Products whose leaf sits under other parents than in (nearly) all other products with that leaf."""
    levels = inputs.run.levels
    if len(levels) < 2:
        return []
    paths = [inputs.path_of(i) for i in range(len(inputs))]
    by_leaf: dict[str, Counter] = {}
    for p in paths:
        by_leaf.setdefault(p[-1], Counter())[p] += 1
    rows = []
    for i, p in enumerate(paths):
        counts = by_leaf[p[-1]]
        total = sum(counts.values())
        main, n_main = counts.most_common(1)[0]
        if p != main and n_main / total >= MAJORITY:
            rows.append({"kind": "labels", "head": "hierarchy", "row": i, "current": SEP.join(p),
                         "suggested": SEP.join(main), "score": round(1 - counts[p] / total, 4),
                         "confidence": round(n_main / total, 4),
                         "reason": f"'{p[-1]}' sits under {SEP.join(main[:-1])} in {n_main:,} of {total:,} "
                                   f"products, under {SEP.join(p[:-1])} here"})
    return rows
