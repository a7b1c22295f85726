"""Photo <-> title mismatches: the photo's out-of-sample predictions and pixels disagree with what the title says, and,
for a photo swapped between two listings, swapping the photos back makes both listings fit.

Evidence for "photo a belongs with title b", each a log-likelihood ratio:
- per single-label head, log(FLOOR + (1 - FLOOR) sum_t p_title_b(t) p_photo_a(t) / prior(t)): how much likelier the
  two readings are if photo and title show the same class than if they were unrelated, with the floor the share of
  matched pairs whose readings are unrelated anyway (a wrong catalogue label, a confident misreading). The photo
  side's probabilities are out of sample and so calibrated: classes the catalogue confuses (shirt vs t-shirt) share
  their mass and cost little, a confident reading of another class costs up to log(1 / FLOOR). Photo side: K-fold
  heads on image_emb; title side: K-fold heads on the titles' TF-IDF (the text tower memorised the training labels,
  wrong ones too; TF-IDF heads never saw them);
- the colour the photo's pixels show (colours.py) against the title's colour, the same way;
- the cosine of photo a's and title b's embeddings in the shared space (memorised for a training photo that sat
  beside the wrong title), and of the title photo a predicts out of fold (words.py) with title b's words (not).
A product's misfit is minus its own pair's evidence. Among the likeliest products (the worst misfits, and the worst
colour misfits) every pair (a, b) gets the gain of swapping their photos; a mutual best pair with a gain is a swap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .inputs import AuditInputs

FLAGGED = 0.01  # the share of the catalogue flagged (the operating point: recall at 1 % flagged) ...
MIN_FLAGGED = 20  # ... but at least this many in a small shop
CANDIDATES = 0.09  # the share of worst misfits searched for swap partners ...
COLOUR_CANDIDATES = 0.18  # ... and of worst colour misfits (a colour swap barely moves the other heads)
MAX_CANDIDATES = 4000  # per list, times (1, 2): the pair matrix stays under ~0.6 GB however large the shop
MIN_CANDIDATES = 200
BLOCK = 2048
# why: docs/decisions.md#audit
COSINE_WEIGHT = 80.0  # shared-space cosine -> the scale of the heads' log-likelihood ratios
WORDS_WEIGHT = 40.0  # cosine of the title a photo predicts with a title's words -> the same scale
FLOOR = 0.03  # the share of matched pairs whose photo and title readings are unrelated anyway
GAIN_WEIGHT = 1.0  # a partner's swap gain added to the misfit (twice when the pair is mutual)


@dataclass
class Evidence:
    """Per head/source: the photo side's and the title side's (N, C) probabilities and the (C, C) agreement
    matrix `agreement` makes of them."""

    names: list[str]
    photo: list[np.ndarray]
    title: list[np.ndarray]
    agree: list[np.ndarray]
    words: tuple[np.ndarray, np.ndarray] | None = None  # (title each photo predicts, each title's words): words.py

    def own(self) -> np.ndarray:
        """(S, N) log-likelihood ratio of each product's photo with its own title, per source."""
        return np.stack([np.log(np.einsum("nt,ta,na->n", t, agree, p) + 1e-9)
                         for p, t, agree in zip(self.photo, self.title, self.agree)])

    def pairs(self, rows: np.ndarray) -> np.ndarray:
        """(R, R) float32 summed log-likelihood ratio of photo rows[i] with title rows[j]."""
        out = np.zeros((len(rows), len(rows)), np.float32)
        for p, t, agree in zip(self.photo, self.title, self.agree):
            fit = (p[rows] @ agree.T).astype(np.float32) @ t[rows].T.astype(np.float32)
            fit += 1e-9
            out += np.log(fit, out=fit)
        return out


def agreement(p_photo: np.ndarray, floor: float = FLOOR) -> np.ndarray:
    """(C, C) A with sum_t p_title(t) A[t, a] p_photo(a) = floor + (1 - floor) sum_t p_title(t) p_photo(t) / prior(t):
    the photo side's posterior over its prior (the catalogue's mean prediction) is the likelihood of what it saw."""
    prior = p_photo.mean(0) + 1e-6
    return (1 - floor) * np.diag(1 / prior) + floor


def evidence(inputs: AuditInputs, p_image: dict, p_title: dict, pixel_colour: tuple | None = None,
             words: tuple | None = None) -> Evidence:
    """Every single-label head (levels and attributes) the photo and title sides both predict, the pixels' colour
    against the title's colour when given as (head name, probabilities), and the photos' predicted titles against
    the titles' words when given (words.photo_title_words)."""
    names = [h.name for h in inputs.run.heads if h.name in p_image and h.name in p_title]
    photo, title = [p_image[n] for n in names], [p_title[n] for n in names]
    if pixel_colour is not None and pixel_colour[0] in p_title:
        names.append(f"pixels:{pixel_colour[0]}")
        photo.append(pixel_colour[1])
        title.append(p_title[pixel_colour[0]])
    return Evidence(names, photo, title, [agreement(p) for p in photo], words)


@dataclass
class Scores:
    """score (N,): high = the photo shows something else than the title says; partner (N,): the listing whose
    title the photo fits and whose photo fits this title (-1: none found); mutual (N,) bool; heads used."""

    score: np.ndarray
    partner: np.ndarray
    mutual: np.ndarray
    heads: list[str]


def candidates(ev: Evidence, own: np.ndarray, misfit: np.ndarray) -> np.ndarray:
    """The rows searched for swap partners: the worst misfits, and the worst colour misfits (a colour swap within
    a category barely moves the other heads)."""
    n = len(misfit)
    size = lambda share, cap: min(n, max(MIN_CANDIDATES, min(cap, round(share * n))))  # noqa: E731
    colour = [k for k, name in enumerate(ev.names) if any(w in name.lower() for w in ("colour", "color"))]
    rows = [np.argsort(-misfit, kind="stable")[: size(CANDIDATES, MAX_CANDIDATES)]]
    if colour:
        rows.append(np.argsort(own[colour].sum(0), kind="stable")[: size(COLOUR_CANDIDATES, 2 * MAX_CANDIDATES)])
    return np.unique(np.concatenate(rows))


def best_partners(fit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For fit[i, j] = how well photo i fits title j: each row's partner j maximising the gain of swapping their
    photos, fit[i, j] + fit[j, i] - fit[i, i] - fit[j, j], and that gain (block by block: memory stays ~fit)."""
    mine = np.diag(fit).copy()
    best, gain = np.zeros(len(fit), np.int64), np.zeros(len(fit), np.float32)
    for start in range(0, len(fit), BLOCK):
        block = fit[start : start + BLOCK] + fit[:, start : start + BLOCK].T
        block -= mine[start : start + BLOCK, None]
        block -= mine[None, :]
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
        best[start : start + len(block)] = block.argmax(1)
        gain[start : start + len(block)] = block[np.arange(len(block)), best[start : start + len(block)]]
    return best, gain


def mismatch_scores(inputs: AuditInputs, ev: Evidence) -> Scores:
    """The misfit of each product's photo with its title, plus, for candidates, the gain of swapping photos with
    their best partner (measured: docs/audit.md)."""
    # why: docs/decisions.md#audit
    n = len(inputs.image_emb)
    if not ev.names:  # no single-label head to compare: nothing to say
        return Scores(np.zeros(n, np.float32), np.full(n, -1), np.zeros(n, bool), [])
    own = ev.own()
    misfit = -own.sum(0)
    rows = candidates(ev, own, misfit)
    fit = ev.pairs(rows)
    fit += COSINE_WEIGHT * (inputs.image_emb[rows] @ inputs.text_emb[rows].T)
    if ev.words is not None:
        fit += WORDS_WEIGHT * (ev.words[0][rows] @ ev.words[1][rows].T)
    best, best_gain = best_partners(fit)
    best_gain = np.maximum(best_gain, 0)
    mutual = (best[best] == np.arange(len(rows))) & (best_gain > 0)
    score = misfit.astype(np.float64)
    score[rows] += GAIN_WEIGHT * best_gain * (1 + mutual)
    partner, is_mutual = np.full(len(score), -1), np.zeros(len(score), bool)
    partner[rows] = np.where(best_gain > 0, rows[best], -1)
    is_mutual[rows] = mutual
    return Scores(score.astype(np.float32), partner, is_mutual, ev.names)


def _describe(inputs: AuditInputs, probs: dict[str, np.ndarray], heads: list[str], i: int) -> str:
    by_name = {h.name: h for h in inputs.run.heads}
    return ", ".join(by_name[name].classes[probs[name][i].argmax()] for name in heads if name in by_name)


def _reason(inputs: AuditInputs, shows: str, says: str, partner: int, mutual: bool) -> str:
    reason = f"the photo looks like {shows}; the title says {says}"
    if partner < 0:
        return reason
    other = f"listing {inputs.products['id'].iat[partner]} (\"{inputs.products['title'].iat[partner]}\")"
    if mutual:
        return f"{reason}; photos swapped? it fits {other}, whose photo fits this title"
    return f"{reason}; it fits {other} better"


def mismatch_findings(inputs: AuditInputs, p_image: dict[str, np.ndarray], p_title: dict[str, np.ndarray],
                      pixel_colour: tuple | None = None, words: tuple | None = None,
                      share: float = FLAGGED) -> list[dict]:
    """The `share` of products scoring highest, with what the photo seems to show, what the title says and the
    listing the photo seems to belong to."""
    ev = evidence(inputs, p_image, p_title, pixel_colour, words)
    s = mismatch_scores(inputs, ev)
    heads = [n for n in ev.names if n in p_image]
    shown = dict(p_image)
    if pixel_colour is not None and pixel_colour[0] in shown:
        shown[pixel_colour[0]] = pixel_colour[1]  # what colour the photo shows: the pixels say it better
    rows = []
    for i in np.argsort(-s.score, kind="stable")[: max(MIN_FLAGGED, round(share * len(s.score)))]:
        shows, says = _describe(inputs, shown, heads, i), _describe(inputs, p_title, heads, i)
        partner, score = int(s.partner[i]), float(s.score[i])
        rows.append({"kind": "mismatch", "head": "photo/title", "row": int(i), "current": says, "suggested": shows,
                     "score": round(score, 4), "confidence": round(1 - float(np.exp(-max(0.0, score))), 4),
                     "reason": _reason(inputs, shows, says, partner, bool(s.mutual[i])),
                     "others": str(inputs.products["id"].iat[partner]) if partner >= 0 else ""})
    return rows
