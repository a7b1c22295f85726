"""Tests of the synthetic demo catalogue: determinism, schema, taxonomy, images, titles, colours, silhouettes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from huse_core.data.demo import COLOURS, COLUMNS, GENDERS, PATTERNS, SEASONS, generate_demo

N = 200


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("demo")
    csv = generate_demo(out, n_products=N, seed=0, progress=False)
    return out, pd.read_csv(csv)


def _pixels(root: Path, rel: str) -> np.ndarray:
    return np.asarray(Image.open(root / rel).convert("RGB"))


def _product_mask(img: np.ndarray, thr: float = 20.0) -> np.ndarray:
    """Pixels far from a plane fitted to the 2-px border: the background is flat or a linear gradient."""
    h, w, _ = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    border = np.zeros((h, w), bool)
    border[:2], border[-2:], border[:, :2], border[:, -2:] = True, True, True, True
    design = np.stack([np.ones(h * w), xx.ravel(), yy.ravel()], 1)
    coef, *_ = np.linalg.lstsq(design[border.ravel()], img[border].astype(float), rcond=None)
    diff = np.linalg.norm(img.reshape(-1, 3) - design @ coef, axis=1).reshape(h, w)
    return diff > thr


def test_deterministic_by_seed(demo, tmp_path):
    out, df = demo
    again = generate_demo(tmp_path / "again", n_products=N, seed=0, progress=False)
    assert again.read_text() == (out / "metadata.csv").read_text()
    for rel in df["image"]:  # every image, pixel for pixel
        assert np.array_equal(_pixels(out, rel), _pixels(tmp_path / "again", rel))
    other = generate_demo(tmp_path / "other", n_products=N, seed=1, progress=False)
    assert other.read_text() != again.read_text()
    same = sum(np.array_equal(_pixels(out, rel), _pixels(tmp_path / "other", rel)) for rel in df["image"][:20])
    assert same == 0


def test_columns_ids_and_values(demo):
    out, df = demo
    assert list(df.columns) == COLUMNS
    assert len(df) == N and df["id"].is_unique and df["id"].min() >= 10000
    assert (df["image"] == "images/" + df["id"].astype(str) + ".png").all()
    assert set(df["gender"]) <= set(GENDERS) and set(df["season"]) <= set(SEASONS)
    assert set(df["pattern"]) == set(PATTERNS)
    assert set(df["baseColour"]) <= set(COLOURS) and df["baseColour"].nunique() >= 10
    assert df.notna().all().all()
    assert not list(out.rglob("*.tmp"))  # atomic writes leave nothing behind


def test_taxonomy_tree_and_balance(demo):
    _, df = demo
    assert df["articleType"].nunique() >= 14
    assert df["masterCategory"].nunique() >= 3 and df["subCategory"].nunique() >= 6
    parents = df.groupby("articleType")[["masterCategory", "subCategory"]].nunique()
    assert (parents == 1).all().all()  # each leaf has exactly one parent path
    assert (df.groupby("subCategory")["masterCategory"].nunique() == 1).all()
    shares = df["articleType"].value_counts(normalize=True)
    assert shares.min() >= 0.02 and shares.max() > 2 * shares.min()  # imbalanced, but no leaf starves


def test_gender_is_plausible(demo):
    _, df = demo
    womenswear = df[df["articleType"].isin(["Skirts", "Dresses", "Heels"])]
    assert len(womenswear) and womenswear["gender"].isin(["Women", "Girls"]).all()


def test_images_exist_and_decode(demo, tmp_path):
    out, df = demo
    for rel in df["image"]:
        with Image.open(out / rel) as im:
            assert im.mode == "RGB" and im.size == (96, 96)
    small = pd.read_csv(generate_demo(tmp_path, n_products=20, seed=3, image_size=64, progress=False))
    assert all(Image.open(tmp_path / rel).size == (64, 64) for rel in small["image"])


def test_titles_are_informative_not_labels(demo):
    _, df = demo
    titles = df["title"]
    assert titles.map(lambda t: isinstance(t, str) and len(t.split()) >= 2).all()
    assert titles.nunique() > 0.8 * len(df)
    colour_words = {"Navy Blue": ("navy", "dark blue"), "Grey": ("grey", "gray", "charcoal"),
                    "Brown": ("brown", "tan", "chocolate")}
    hits = [any(w in t.lower() for w in colour_words.get(c, (c.lower(),)))
            for t, c in zip(titles, df["baseColour"])]
    assert np.mean(hits) > 0.7  # the colour is usually named (synonyms allowed)
    assert (titles.str.lower() != df["articleType"].str.lower()).all()


def _erode(mask: np.ndarray) -> np.ndarray:
    """Drop a 1-px ring: the outline and the anti-aliased edge are not the product's colour."""
    m = np.pad(mask, 1)
    return mask & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]


def _colour_ranks(out: Path, df: pd.DataFrame, labels: pd.Series) -> np.ndarray:
    """Rank of each label in a plurality vote: every product pixel votes for its nearest palette colour."""
    names, palette = list(COLOURS), np.array(list(COLOURS.values()), float)
    ranks = []
    for rel, label in zip(df["image"], labels):
        img = _pixels(out, rel)
        px = img[_erode(_product_mask(img))].astype(float)
        votes = np.bincount(np.linalg.norm(px[:, None] - palette[None], axis=2).argmin(1), minlength=len(names))
        ranks.append(int((votes > votes[names.index(label)]).sum()))  # colours with more votes than the label
    return np.array(ranks)


def test_images_show_their_colour(demo):
    out, df = demo
    ranks = _colour_ranks(out, df, df["baseColour"])
    assert (ranks == 0).mean() >= 0.95  # the colour covering most of the product is the label
    assert ranks.max() <= 2  # and never far off (a busy pattern, a white sole or watch dial)
    shuffled = df["baseColour"].sample(frac=1, random_state=0).reset_index(drop=True)
    assert (_colour_ranks(out, df, shuffled) == 0).mean() < 0.4  # the check can fail: wrong labels do


def test_article_types_have_distinct_silhouettes(demo):
    out, df = demo
    feats = []
    for rel in df["image"]:
        mask = _product_mask(_pixels(out, rel))
        ys, xs = np.nonzero(mask)
        crop = Image.fromarray(mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.uint8) * 255)
        aspect = (np.ptp(ys) + 1) / (np.ptp(xs) + 1)
        feats.append(np.append(np.asarray(crop.resize((20, 20), Image.BILINEAR), float).ravel() / 255, aspect))
    feats, labels = np.array(feats), df["articleType"].to_numpy()
    classes = sorted(set(labels))
    sums = {c: feats[labels == c].sum(0) for c in classes}
    counts = {c: (labels == c).sum() for c in classes}
    correct = 0
    for f, y in zip(feats, labels):  # leave-one-out nearest mean silhouette
        cents = [(sums[c] - (f if c == y else 0)) / (counts[c] - (c == y)) for c in classes]
        correct += classes[int(np.argmin([np.abs(f - m).sum() for m in cents]))] == y
    assert correct / len(feats) >= 0.8  # shapes alone tell most article types apart
    means = np.array([sums[c] / counts[c] for c in classes])
    gaps = np.abs(means[:, None] - means[None]).mean(-1)[np.triu_indices(len(classes), 1)]
    assert gaps.min() > 0.03  # every pair of article types has different mean silhouettes
