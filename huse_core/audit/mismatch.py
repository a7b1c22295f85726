"""Photo ↔ title mismatches: the photo's out-of-sample predictions disagree with the title's, and the two sit apart
in the shared space."""

from __future__ import annotations

import numpy as np

from .inputs import AuditInputs

FLAGGED = 0.01  # the share of the catalogue flagged (the operating point: recall at 1 % flagged) ...
MIN_FLAGGED = 20  # ... but at least this many in a small shop


def surprise(p_image: np.ndarray, p_text: np.ndarray) -> np.ndarray:
    """(N,) -log of how usual the photo's prediction is given the title's, across the catalogue: with the joint
    J[t, a] = mean p_text(t) p_image(a) and its lift L = J / (J_t J_a), score = -log sum p_text(t) L[t, a] p_image(a).
    Confusions the catalogue makes all the time (shirt vs t-shirt) score low; a watch photo on a shirt title high."""
    joint = (p_text.T @ p_image) / max(len(p_image), 1) + 1e-6
    lift = joint / (joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True))
    return -np.log(np.einsum("nt,ta,na->n", p_text, lift, p_image) + 1e-9)


def mismatch_heads(inputs: AuditInputs, probs: dict) -> list[str]:
    """Every single-label head: levels and attributes (on a small test shop the coarser levels caught swaps the
    leaf alone missed)."""
    return [h.name for h in inputs.run.heads if h.name in probs]


def mismatch_scores(inputs: AuditInputs, p_image: dict[str, np.ndarray], p_text: dict[str, np.ndarray]
                    ) -> tuple[np.ndarray, list[str]]:
    """(N,) score (high: the photo shows something else than the title says) and the heads used: the sum over
    heads of each head's surprise, as independent evidence adds (measured: docs/audit.md)."""
    # why: docs/decisions.md#audit
    heads = mismatch_heads(inputs, p_image)
    return np.sum([surprise(p_image[h], p_text[h]) for h in heads], axis=0).astype(np.float32), heads


def _describe(inputs: AuditInputs, probs: dict[str, np.ndarray], heads: list[str], i: int) -> str:
    return ", ".join(inputs.run.heads[[h.name for h in inputs.run.heads].index(name)].classes[probs[name][i]
                     .argmax()] for name in heads)


def mismatch_findings(inputs: AuditInputs, p_image: dict[str, np.ndarray], p_text: dict[str, np.ndarray],
                      share: float = FLAGGED) -> list[dict]:
    """The `share` of products scoring highest, with what the photo seems to show and what the title says."""
    score, heads = mismatch_scores(inputs, p_image, p_text)
    rows = []
    for i in np.argsort(-score)[: max(MIN_FLAGGED, round(share * len(score)))]:
        shows, says = _describe(inputs, p_image, heads, i), _describe(inputs, p_text, heads, i)
        rows.append({"kind": "mismatch", "head": "photo/title", "row": int(i), "current": says, "suggested": shows,
                     "score": round(float(score[i]), 4), "confidence": round(float(1 - np.exp(-score[i])), 4),
                     "reason": f"the photo looks like {shows}; the title says {says}"})
    return rows
