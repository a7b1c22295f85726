"""The duplicate check calibrates itself on the shop's own products: it lists a few hundred of them a second time
(re-encoded, resized or cropped photo, reworded title), embeds the copies with the run's towers, and learns from
them and the catalogue's other look-alike pairs how a duplicate listing differs from a colour variant."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import numpy as np

COPIES = 300  # synthetic second listings made from the shop's own products
SEED = 20  # fixed, so an audit of one run gives the same findings every time
TAGS = ("", "", " - Original", " (New)", " | Sale", " 2 pcs", " - Free Size")


@dataclass
class Copies:
    """Synthetic duplicate listings: copy i re-lists catalogue row `source[i]`."""

    source: np.ndarray  # (M,) catalogue rows
    how: list[str]  # what was done to each photo
    titles: list[str]
    image_emb: np.ndarray  # (M, D)
    text_emb: np.ndarray  # (M, D)
    thumbs: np.ndarray  # (M, S, S, 3) as pixels.thumbnails makes them
    hashes: np.ndarray  # (M,) uint64 perceptual hashes


def reword(title: str, rng: random.Random) -> str:
    """A second listing's title: other casing, a word moved or dropped, '&' spelt out, a tag added."""
    words = str(title).split()
    if len(words) > 3 and rng.random() < 0.5:
        i = rng.randrange(1, len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    if len(words) > 4 and rng.random() < 0.3:
        del words[rng.randrange(1, len(words))]
    words = ["and" if w == "&" else w for w in words]
    out = " ".join(words)
    return rng.choice([out, out.lower(), out.title(), out.upper()]) + rng.choice(TAGS)


def perturb(im, rng: random.Random):
    """(a JPEG re-encoded, resized or cropped copy of the RGB photo `im` as a PIL image, what was done)."""
    from PIL import Image

    how = rng.choice(["reencode", "resize", "crop", "crop"])
    w, h = im.size
    if how == "resize":
        f = rng.uniform(0.6, 1.5)
        im = im.resize((max(8, round(w * f)), max(8, round(h * f))), Image.Resampling.BICUBIC)
    elif how == "crop":
        kw, kh = rng.uniform(0.8, 0.97), rng.uniform(0.8, 0.97)  # kept share of each side, up to 3 % off centre
        x0 = round(min(max((1 - kw) / 2 + rng.uniform(-0.03, 0.03), 0), 1 - kw) * w)
        y0 = round(min(max((1 - kh) / 2 + rng.uniform(-0.03, 0.03), 0), 1 - kh) * h)
        im = im.crop((x0, y0, x0 + max(8, round(kw * w)), y0 + max(8, round(kh * h))))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=rng.randint(40, 90))
    return Image.open(io.BytesIO(buf.getvalue())), how


def make_copies(inputs, n: int = COPIES, seed: int = SEED) -> Copies:
    """Up to `n` synthetic duplicate listings of seeded catalogue products whose photo opens (a product may be
    copied twice in a small catalogue), embedded by the run."""
    from PIL import Image

    from ..data.images import decode_image
    from .pixels import perceptual_hashes, thumbnails

    rng, pick = random.Random(seed), np.random.default_rng(seed)
    df, size = inputs.products, inputs.run.image_size
    source, how, titles, pixels, sizes = [], [], [], [], []
    for row in np.tile(pick.permutation(len(df)), max(1, -(-n // max(1, len(df))))):
        if len(source) >= n:
            break
        try:
            with Image.open(df["image"].iat[int(row)]) as im:
                copy, kind = perturb(im.convert("RGB"), rng)
        except (OSError, ValueError):
            continue
        source.append(int(row))
        how.append(kind)
        titles.append(reword(df["title"].iat[int(row)], rng))
        pixels.append(decode_image(copy, size))
        sizes.append(copy.size)
    pixels = np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)
    thumbs = thumbnails(pixels, np.array(sizes).reshape(-1, 2))
    return Copies(np.array(source, np.int64), how, titles, inputs.run.encode_images(pixels),
                  inputs.run.encode_texts(titles), thumbs, perceptual_hashes(thumbs))


RECALL = 0.97  # the share of the synthetic copies (scored out of fold) the cut keeps
FOLDS = 5
NEGATIVES = 100_000  # catalogue pairs (a seeded sample) the rule learns look-alikes from
TOP_NEGATIVES = 0.001  # the share of catalogue pairs taken as its most copy-like
MIN_COPIES = 30  # fewer (a tiny catalogue): a fixed rule instead of a learnt one


def features(ev: dict) -> np.ndarray:
    """(P, 6) what the rule reads of a pair: photo, title-tower and title n-gram similarity, perceptual-hash
    agreement, and the logs of the aligned colour difference and of the colour-cast difference."""
    return np.stack([ev["photo"], ev["text"], ev["title"], ev["pixels"], np.log(ev["aligned"] + 0.01),
                     np.log(ev["colour"] + 0.01)], 1)


def _fit(pos: np.ndarray, neg: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = np.concatenate([pos, neg]), np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=500)).fit(x, y)


def learn_rule(pos: np.ndarray, neg: np.ndarray, seed: int = SEED) -> tuple[object, float, np.ndarray]:
    """(model fitted on all, cut, out-of-fold scores of the copies). The cut keeps RECALL of the copies scored by
    models that did not see them; where even the catalogue's most copy-like pairs (top 0.1 %, out of fold) score
    below that, it sits halfway between the two in log-odds, so a real copy a little harder than the synthetic
    ones still passes."""
    rng = np.random.default_rng(seed)
    fp, fn = rng.permutation(len(pos)) % FOLDS, rng.permutation(len(neg)) % FOLDS
    oof, oof_neg = np.zeros(len(pos)), np.zeros(len(neg))
    for k in range(FOLDS):
        model = _fit(pos[fp != k], neg[fn != k])
        oof[fp == k] = model.predict_proba(pos[fp == k])[:, 1]
        oof_neg[fn == k] = model.predict_proba(neg[fn == k])[:, 1]
    cut, top = float(np.quantile(oof, 1 - RECALL)), float(np.quantile(oof_neg, 1 - TOP_NEGATIVES))
    if top < cut:
        logit = lambda p: np.log(np.clip(p, 1e-9, 1 - 1e-9) / (1 - np.clip(p, 1e-9, 1 - 1e-9)))  # noqa: E731
        cut = float(1 / (1 + np.exp(-(logit(cut) + logit(top)) / 2)))
    return _fit(pos, neg), cut, oof
