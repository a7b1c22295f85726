"""What colour a photo shows: colour histograms of the product's pixels and a cross-fitted colour classifier.

The photo tower's colour is weak (prototype heads on its embeddings get 40 % of the 44k catalogue's colours right
out of sample), and on a training photo it has partly memorised the listing's colour label, right or wrong. The
pixels never saw a label: a hue / saturation / value histogram of the non-background pixels, beside the photo
embedding, classified by softmax regressions fitted on the other folds, says what colour the photo shows (69 %).
"""

from __future__ import annotations

import numpy as np

from ..data.images import decode_many
from ..prepare import cache_dir_for
from .inputs import AuditInputs

HUES, SATS, VALUES, GREYS = 12, 3, 3, 6  # chromatic bins hue x saturation x value, plus grey levels
MIN_SAT = 48 / 255  # below this saturation a pixel counts as grey/black/white
BACKGROUND = 232  # a pixel whose every channel is above this is the white studio background
BLOCK = 2048
FOLDS = 5
ITERATIONS = 30  # L-BFGS steps per fold: past ~30 the out-of-fold accuracy no longer moves


def colour_histograms(pixels: np.ndarray) -> np.ndarray:
    """(N, 115) float32: each photo's share of non-background pixels in each colour bin, then the non-background
    share. `pixels` (N, H, W, 3) uint8 (a memory map is read a block at a time; every second pixel is used)."""
    n_bins = HUES * SATS * VALUES + GREYS
    out = np.zeros((len(pixels), n_bins + 1), np.float32)
    for start in range(0, len(pixels), BLOCK):
        block = np.asarray(pixels[start : start + BLOCK, ::2, ::2])
        b, per = len(block), block.shape[1] * block.shape[2]
        rgb = block.reshape(-1, 3).astype(np.float32) / 255
        rows = np.repeat(np.arange(b), per)
        top, low = rgb.max(1), rgb.min(1)
        span = top - low
        sat = np.where(top > 0, span / np.maximum(top, 1e-6), 0)
        r, g, bl = rgb.T
        safe = np.maximum(span, 1e-6)
        hue = np.where(top == r, (g - bl) / safe, np.where(top == g, 2 + (bl - r) / safe, 4 + (r - g) / safe))
        h = np.minimum((((hue / 6) % 1.0) * HUES).astype(np.int64), HUES - 1)
        s = np.clip(((sat - MIN_SAT) / (1 - MIN_SAT) * SATS).astype(np.int64), 0, SATS - 1)
        v = np.minimum((top * VALUES).astype(np.int64), VALUES - 1)
        grey = HUES * SATS * VALUES + np.minimum((top * GREYS).astype(np.int64), GREYS - 1)
        bins = np.where(sat >= MIN_SAT, (h * SATS + s) * VALUES + v, grey)
        fg = low <= BACKGROUND / 255
        hist = np.bincount(rows[fg] * n_bins + bins[fg], minlength=b * n_bins).reshape(b, n_bins).astype(np.float32)
        total = hist.sum(1, keepdims=True)
        out[start : start + b, :n_bins] = hist / np.maximum(total, 1)
        out[start : start + b, n_bins] = total[:, 0] / per
    return out


def photo_pixels(inputs: AuditInputs) -> np.ndarray:
    """(N, S, S, 3) uint8 decoded photos of the catalogue rows: the decode cache that train and index filled (read
    memory-mapped), or decoded now into it."""
    run = inputs.run
    pixels, _, _ = decode_many(list(inputs.products["image"]), run.image_size,
                               cache_dir_for(run.data_cfg, run.run_dir), progress=False)
    return pixels


def _fit_softmax(x, y, n: int):
    """A softmax regression of y on x (torch tensors), full batch, L-BFGS, a little weight decay."""
    import torch

    head = torch.nn.Linear(x.shape[1], n)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=ITERATIONS, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y) + 1e-4 * head.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def softmax_oof(x: np.ndarray, y: np.ndarray, n: int, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """(N, n) float32 out-of-fold probabilities of a softmax regression fitted on the other folds' rows with a
    label (y >= 0); x is standardised first."""
    import torch

    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
    fold_of = np.random.default_rng(seed).permutation(len(x)) % max(2, folds)
    out = np.full((len(x), n), 1.0 / n, np.float32)
    torch.manual_seed(seed)
    for k in range(max(2, folds)):
        train = torch.from_numpy(np.flatnonzero((fold_of != k) & (y >= 0)))
        test = np.flatnonzero(fold_of == k)
        if len(train) and len(test):
            head = _fit_softmax(xt[train], yt[train], n)
            with torch.no_grad():
                out[test] = torch.softmax(head(xt[test]), dim=1).numpy()
    return out


def colour_head(inputs: AuditInputs):
    """The run's single-label colour attribute (a head named like colour/color), or None."""
    return next((h for h in inputs.run.heads if h.kind == "single" and any(
        w in h.name.lower() for w in ("colour", "color"))), None)


def pixel_colour_probs(inputs: AuditInputs, pixels: np.ndarray | None = None) -> tuple[str, np.ndarray] | None:
    """(colour head name, (N, C) out-of-sample probabilities of the colour the photo's pixels show), or None when
    the run has no colour attribute."""
    head = colour_head(inputs)
    if head is None:
        return None
    hist = colour_histograms(photo_pixels(inputs) if pixels is None else pixels)
    features = np.hstack([np.sqrt(hist), inputs.image_emb])  # the embedding adds the product's shape and parts
    return head.name, softmax_oof(features, inputs.codes(head), len(head.classes))
