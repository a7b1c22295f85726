"""Pixel evidence for duplicate listings: small colour thumbnails of each photo, and how far one photo is from a
re-encoded, resized or cropped copy of the other after the best crop alignment."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SIZE = 32  # thumbnail side: each photo's own area (padding cut off) squeezed to SIZE x SIZE
COMPARE = 16  # side at which the crop is searched for
FINAL = 8  # side at which the aligned thumbnails are compared (finer: crops line up worse)
SCALES = np.round(np.arange(1.0, 0.79, -0.02), 2)  # kept fraction of a side a crop may leave
SHIFTS = (-0.04, -0.02, 0.0, 0.02, 0.04)  # off-centre crops, as a fraction of the side


def photo_sizes(paths) -> np.ndarray:
    """(N, 2) width, height of each photo file from its header (0, 0 when unreadable)."""
    from PIL import Image

    out = np.zeros((len(paths), 2), np.int32)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                out[i] = im.size
        except (OSError, ValueError):
            pass
    return out


def thumbnails(pixels, sizes: np.ndarray, size: int = SIZE) -> np.ndarray:
    """(N, size, size, 3) uint8: each decoded photo (square, white-padded, longer side = the square's side) cut back
    to the photo's own area and resized to size x size, so a crop of it is a sub-rectangle of this thumbnail."""
    from PIL import Image

    n, side = len(pixels), pixels.shape[1]
    out = np.full((n, size, size, 3), 255, np.uint8)
    for i in range(n):
        w, h = (int(v) for v in sizes[i])
        if w < 1 or h < 1:
            w = h = side
        scale = side / max(w, h)
        nw, nh = max(1, min(side, round(w * scale))), max(1, min(side, round(h * scale)))
        x0, y0 = (side - nw) // 2, (side - nh) // 2
        area = np.asarray(pixels[i, y0 : y0 + nh, x0 : x0 + nw])
        out[i] = np.asarray(Image.fromarray(area).resize((size, size), Image.Resampling.BOX))
    return out


def crop_list() -> list[tuple[float, float]]:
    """(kept fraction, start) of every crop tried on one axis: centred and off-centre."""
    return sorted({(float(s), round(min(max((1 - s) / 2 + d, 0.0), 1 - s), 3)) for s in SCALES for d in SHIFTS})


def _linear(crops, size: int, out: int) -> np.ndarray:
    """(K, out, size): resample a side of `size` samples over each crop to `out` (linear interpolation)."""
    mats = np.zeros((len(crops), out, size), np.float32)
    for k, (s, start) in enumerate(crops):
        pos = np.clip((start + s * (np.arange(out) + 0.5) / out) * size - 0.5, 0, size - 1)
        lo = np.floor(pos).astype(int)
        w = (pos - lo).astype(np.float32)
        mats[k, np.arange(out), lo] += 1 - w
        mats[k, np.arange(out), np.minimum(lo + 1, size - 1)] += w
    return mats


def _area(crops, size: int, out: int) -> np.ndarray:
    """(K, out, size): average a side of `size` pixels over each crop into `out` cells (each cell the mean of the
    pixels it covers, partly covered ones weighted), so the crop is shrunk without aliasing."""
    mats = np.zeros((len(crops), out, size), np.float32)
    edges = np.arange(size + 1, dtype=np.float64)
    for k, (s, start) in enumerate(crops):
        cuts = (start + s * np.arange(out + 1) / out) * size
        for j in range(out):
            cover = np.clip(np.minimum(edges[1:], cuts[j + 1]) - np.maximum(edges[:-1], cuts[j]), 0, None)
            mats[k, j] = cover / cover.sum()
    return mats


def _best(profile_q: np.ndarray, profile_p: np.ndarray, mats: np.ndarray) -> np.ndarray:
    """(B,) index of the crop whose resampled `profile_p` is nearest `profile_q` (both (B, L)), least squares."""
    k, out, size = mats.shape
    cand = (profile_p @ mats.reshape(k * out, size).T).reshape(len(profile_p), k, out)
    return (np.einsum("bkl,bkl->bk", cand, cand) - 2 * np.einsum("bkl,bl->bk", cand, profile_q)).argmin(1)


def _area_rows(scale: np.ndarray, start: np.ndarray, size: int, out: int) -> np.ndarray:
    """(B, out, size) per crop (B kept fractions and starts): `_area`'s matrices, vectorised."""
    cuts = (start[:, None] + scale[:, None] * np.arange(out + 1, dtype=np.float32) / out) * size
    edges = np.arange(size + 1, dtype=np.float32)
    cover = np.clip(np.minimum(edges[1:], cuts[:, 1:, None]) - np.maximum(edges[:-1], cuts[:, :-1, None]), 0, None)
    return cover / np.maximum(cover.sum(-1, keepdims=True), 1e-6)


def _area_profile(cum: np.ndarray, scale: np.ndarray, start: np.ndarray, out: int) -> np.ndarray:
    """(B, K, out) profiles averaged over crops (B, K) into `out` cells, from their running sums `cum` (B, S+1)
    (a cell's mean is the rise of the sum across it over its width)."""
    size = cum.shape[1] - 1
    pos = (start[..., None] + scale[..., None] * np.arange(out + 1, dtype=np.float32) / out) * size  # (B, K, O+1)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, size - 1)
    w = pos - lo
    flat = cum[np.arange(len(cum))[:, None, None], lo]
    nxt = cum[np.arange(len(cum))[:, None, None], lo + 1]
    at = flat + w * (nxt - flat)
    return np.diff(at, axis=-1) / np.maximum(np.diff(pos, axis=-1), 1e-6)


def _refine(prof_q: np.ndarray, prof_p: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """(B, 2) the crop near `crop` (B, 2: kept fraction, start) whose area-averaged `prof_p` (B, S) is nearest
    `prof_q` (B, L), on a finer grid than the first search."""
    steps = np.array([-0.01, -0.005, 0.0, 0.005, 0.01], np.float32)
    sc = np.clip(crop[:, :1, None] + steps[None, :, None], 0.5, 1.0)  # (B, 5, 1)
    st = np.clip(crop[:, 1:, None] + steps[None, None, :], 0.0, 1.0 - sc)  # (B, 5, 5)
    sc = np.broadcast_to(sc, st.shape).reshape(len(crop), -1)
    st = st.reshape(len(crop), -1)
    cum = np.concatenate([np.zeros((len(prof_p), 1), np.float32), np.cumsum(prof_p, 1)], 1)
    err = ((_area_profile(cum, sc, st, prof_q.shape[1]) - prof_q[:, None]) ** 2).sum(2)
    best = err.argmin(1)
    rows = np.arange(len(crop))
    return np.stack([sc[rows, best], st[rows, best]], 1)


class _Photos:
    """What the alignment reads of each photo, computed once: darkness (white = 0) at COMPARE and at the
    thumbnails' size, their row and column profiles, the colour thumbnail pooled to FINAL."""

    def __init__(self, thumbs: np.ndarray):
        n, side = len(thumbs), thumbs.shape[1]
        self.thumbs = thumbs
        self.big = 255 - thumbs.mean(3, dtype=np.float32)  # (N, S, S)
        f = side // COMPARE
        self.dark = self.big.reshape(n, COMPARE, f, COMPARE, f).mean((2, 4))
        self.rows, self.cols = self.dark.mean(2), self.dark.mean(1)
        g = side // FINAL
        self.final = thumbs.reshape(n, FINAL, g, FINAL, g, 3).mean((2, 4), dtype=np.float32)


def _one_way(ph: _Photos, q: np.ndarray, p: np.ndarray, search: np.ndarray, crops: np.ndarray) -> np.ndarray:
    """(B, 2) how far photo q is from the crop of photo p that best matches it: the mean absolute colour
    difference over the photos' ink (mean darkness of the two), and that difference alone (0-1). The crop is
    found on 1-D darkness profiles (rows, columns, then both again given the other; then on a finer grid at the
    thumbnails' full size), and compared at FINAL."""
    qy, qx, dp = ph.rows[q], ph.cols[q], ph.dark[p]
    ky, kx = _best(qy, ph.rows[p], search), _best(qx, ph.cols[p], search)
    kx = _best(qx, np.einsum("by,byx->bx", search[ky].mean(1), dp), search)  # given the rows kept, and back
    ky = _best(qy, np.einsum("byx,bx->by", dp, search[kx].mean(1)), search)
    big, side = ph.big[p], ph.big.shape[1]
    cy, cx = crops[ky], crops[kx]
    wy = _area_rows(cy[:, 0], cy[:, 1], side, 1)[:, 0]  # (B, S): the rows the crop keeps
    cx = _refine(qx, np.einsum("by,byx->bx", wy, big), cx)
    wx = _area_rows(cx[:, 0], cx[:, 1], side, 1)[:, 0]
    cy = _refine(qy, np.einsum("byx,bx->by", big, wx), cy)
    ry, rx = _area_rows(cy[:, 0], cy[:, 1], side, FINAL), _area_rows(cx[:, 0], cx[:, 1], side, FINAL)
    pf = ph.thumbs[p].astype(np.float32).reshape(len(p), side, -1)
    rows = np.matmul(ry, pf).reshape(len(p), FINAL, side, 3)  # (B, O, S, 3)
    aligned = np.einsum("bosc,bxs->boxc", rows, rx)
    qo = ph.final[q]
    diff = np.abs(aligned - qo).mean((1, 2, 3))
    ink = (510 - aligned.mean((1, 2, 3)) - qo.mean((1, 2, 3))) / 2
    return np.stack([diff / np.maximum(ink, 1.0), diff / 255], 1)


def aligned_difference(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray, block: int = 4096,
                       tick: Callable[[], None] | None = None) -> np.ndarray:
    """(P, 2) for each pair (a[i], b[i]), the way (a from b, b from a) that fits better: the aligned colour
    difference over the ink, and alone (0 both: one photo is a re-encoded, resized or cropped copy of the other;
    a colour variant or another shot of the item is far)."""
    ph = _Photos(thumbs)
    crops = np.array(crop_list(), np.float32)
    search = _linear(crops, COMPARE, COMPARE)
    out = np.zeros((len(a), 2), np.float32)
    for start in range(0, len(a), block):
        ia, ib = a[start : start + block], b[start : start + block]
        one, two = _one_way(ph, ia, ib, search, crops), _one_way(ph, ib, ia, search, crops)
        out[start : start + block] = np.where((one[:, :1] <= two[:, :1]), one, two)
        if tick and (start // block) % 2 == 1:
            tick()
    return out


def perceptual_hashes(thumbs: np.ndarray) -> np.ndarray:
    """(N,) uint64 64-bit perceptual hashes of the thumbnails: imagehash's pHash (grey 32 x 32, 2-D DCT, the 8 x 8
    lowest frequencies against their median), computed for all photos in one pass."""
    from scipy.fft import dct

    grey = thumbs.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # PIL's "L" weights
    if grey.shape[1] != 32:
        raise ValueError(f"perceptual hashes need 32 x 32 thumbnails, got {grey.shape[1]}")
    low = dct(dct(grey, axis=1, norm=None), axis=2, norm=None)[:, :8, :8].reshape(len(grey), 64)
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def ink_colours(thumbs: np.ndarray) -> np.ndarray:
    """(N, 3) each photo's colour cast: the darkness-weighted mean colour of its pixels (the product, not the white
    around it) less its grey level. A copy keeps it; a colour variant shot alike does not."""
    rgb = thumbs.reshape(len(thumbs), -1, 3).astype(np.float32)
    weight = 255 - rgb.mean(2, keepdims=True)
    mean = (weight * rgb).sum(1) / np.maximum(weight.sum(1), 1.0)
    return mean - mean.mean(1, keepdims=True)
