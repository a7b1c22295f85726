"""Photo ↔ title mismatches: the photo's out-of-sample predictions disagree with the title's, and the two sit apart
in the shared space."""

from __future__ import annotations

import numpy as np

from .inputs import AuditInputs

# Heads whose photo and title predictions agree on at least this share of the catalogue take part: a head neither
# modality reads reliably (season, usage) would only add noise.
MIN_AGREEMENT = 0.6


def agreement(p_image: np.ndarray, p_text: np.ndarray) -> np.ndarray:
    """(N,) probability that the photo's and the title's predictions name the same class: sum_c p_i(c) p_t(c)."""
    return np.einsum("nc,nc->n", p_image, p_text)


def mismatch_scores(inputs: AuditInputs, p_image: dict[str, np.ndarray], p_text: dict[str, np.ndarray]
                    ) -> tuple[np.ndarray, list[str]]:
    """(N,) score in 0..1 (high: the photo shows something else than the title says) and the heads used.

    Per usable head, 1 - agreement; the score is the largest of them (one head in clear disagreement is enough:
    a shirt titled as shoes, a red photo on a blue title), averaged with the photo-title distance in the shared
    space (1 - cosine, halved) so products the heads cannot separate still rank by how far apart they sit."""
    heads = [h["name"] for h in inputs.run.heads if h["name"] in p_image and h["name"] in p_text]
    usable = [h for h in heads if (p_image[h].argmax(1) == p_text[h].argmax(1)).mean() >= MIN_AGREEMENT] or heads
    disagree = np.max([1 - agreement(p_image[h], p_text[h]) for h in usable], axis=0)
    distance = (1 - np.einsum("nd,nd->n", inputs.image_emb, inputs.text_emb)) / 2
    return (0.8 * disagree + 0.2 * distance).astype(np.float32), usable


def _describe(inputs: AuditInputs, probs: dict[str, np.ndarray], heads: list[str], i: int) -> str:
    return ", ".join(inputs.run.heads[[h["name"] for h in inputs.run.heads].index(name)]["classes"][probs[name][i]
                     .argmax()] for name in heads)


def mismatch_findings(inputs: AuditInputs, p_image: dict[str, np.ndarray], p_text: dict[str, np.ndarray],
                      threshold: float = 0.5) -> list[dict]:
    """Products scoring over `threshold`, with what the photo seems to show and what the title says."""
    score, heads = mismatch_scores(inputs, p_image, p_text)
    rows = []
    for i in np.flatnonzero(score >= threshold):
        shows, says = _describe(inputs, p_image, heads, i), _describe(inputs, p_text, heads, i)
        rows.append({"kind": "mismatch", "head": "photo/title", "row": int(i), "current": says, "suggested": shows,
                     "score": round(float(score[i]), 4), "confidence": round(float(score[i]), 4),
                     "reason": f"the photo looks like {shows}; the title says {says}"})
    return rows
