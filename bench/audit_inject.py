"""Seeded catalogue errors for the audit benchmark: wrong category paths, swapped photos, near-duplicate listings.

Used by bench/audit.py (`python bench/audit.py inject ...`). The noisy copy is written outside the repository with the
original photos reached through a symlinked folder, new photos only for the duplicates, and the injected ground
truth as truth.json beside it.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class Layout:
    """Which columns of a catalogue hold what (the fashion data's own, or the other shop's)."""

    id: str
    title: str
    image: str
    levels: list[str]  # hierarchy columns, top first; one column with `sep` when the path is one string
    colour: str
    sep: str | None = None

    def paths(self, df: pd.DataFrame) -> list[tuple[str, ...]]:
        if self.sep:
            return [tuple(p.split(self.sep)) for p in df[self.levels[0]]]
        return list(zip(*(df[c] for c in self.levels)))

    def set_path(self, df: pd.DataFrame, i: int, path: tuple[str, ...]) -> None:
        if self.sep:
            df.iat[i, df.columns.get_loc(self.levels[0])] = self.sep.join(path)
        else:
            for c, v in zip(self.levels, path):
                df.iat[i, df.columns.get_loc(c)] = v


LAYOUTS = {
    "fashion": Layout("id", "title", "image", ["masterCategory", "subCategory", "articleType"], "baseColour"),
    "other": Layout("sku", "product_name", "photo", ["category_path"], "colour", " >> "),
}

SYNONYMS = {"men": "mens", "women": "womens", "tshirt": "t-shirt", "tshirts": "t-shirts", "t-shirt": "tee",
            "shoes": "footwear", "casual": "everyday", "sports": "sport", "watch": "wrist watch",
            "black": "jet black", "white": "off white", "blue": "navy", "bag": "carry bag", "top": "top wear",
            "kurta": "kurti", "jeans": "denims", "sunglasses": "shades", "handbag": "hand bag"}


def reword(title: str, rng: random.Random) -> str:
    """The same item's title as a second listing might write it: a synonym, a moved word, other casing, a tag."""
    words = title.split()
    idx = [i for i, w in enumerate(words) if w.lower() in SYNONYMS]
    if idx:
        i = rng.choice(idx)
        words[i] = SYNONYMS[words[i].lower()]
    if len(words) > 3:  # move one middle word one place
        i = rng.randrange(1, len(words) - 2)
        words[i], words[i + 1] = words[i + 1], words[i]
    out = " ".join(words)
    out = rng.choice([out, out.lower(), out.title()])
    return out + rng.choice(["", " - New", " (Pack of 1)", " | Original"])


def perturb_photo(src: Path, dst: Path, rng: random.Random) -> str:
    """Re-encode, resize or crop `src` into dst (JPEG); returns what was done."""
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGB")
        kind = rng.choice(["reencode", "resize", "crop"])
        if kind == "resize":
            f = rng.uniform(0.7, 1.4)
            im = im.resize((max(8, round(im.width * f)), max(8, round(im.height * f))), Image.Resampling.BICUBIC)
        elif kind == "crop":
            w, h = im.size
            dx, dy = round(w * rng.uniform(0.03, 0.10)), round(h * rng.uniform(0.03, 0.10))
            im = im.crop((dx, dy, w - dx, h - dy))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=rng.randint(45, 80))
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(buf.getvalue())
    return kind


def confusable(titles: pd.Series, leaves: np.ndarray, eligible: list[str]) -> dict[str, str]:
    """For each eligible leaf, the other eligible leaf a title classifier (TF-IDF + logistic regression, fitted on
    the catalogue) puts the most probability on for that leaf's products: the class it is most confused with."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    keep = np.isin(leaves, eligible)
    x = TfidfVectorizer(min_df=2, sublinear_tf=True).fit_transform(titles[keep].str.lower())
    y = leaves[keep]
    clf = LogisticRegression(C=2.0, max_iter=300).fit(x, y)
    proba = clf.predict_proba(x)
    classes = list(clf.classes_)
    mass = np.vstack([proba[y == c].sum(axis=0) for c in classes])
    np.fill_diagonal(mass, -1)
    return {c: classes[int(mass[k].argmax())] for k, c in enumerate(classes)}


def inject(csv: Path, out: Path, layout: Layout, seed: int = 0, label_rate: float = 0.03, swap_rate: float = 0.01,
           dup_rate: float = 0.01, min_class: int = 30) -> dict:
    """Write out/<csv name> with seeded errors and out/truth.json; returns the truth."""
    rng, prng = np.random.default_rng(seed), random.Random(seed)
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df = df[(df[layout.title] != "") & (df[layout.image] != "")].reset_index(drop=True)
    src_root = csv.parent.resolve()
    out.mkdir(parents=True, exist_ok=True)
    top = Path(df[layout.image].iloc[0]).parts[0]  # images/ or photos/: symlink the originals' folder
    link = out / top
    if not link.exists():
        os.symlink(src_root / top, link)
    paths = layout.paths(df)
    leaves = np.array([p[-1] for p in paths], dtype=object)
    counts = pd.Series(leaves).value_counts()
    eligible = sorted(counts.index[counts >= min_class])
    path_counts = Counter(paths)
    common_path = {leaf: max((p for p in path_counts if p[-1] == leaf), key=path_counts.__getitem__)
                   for leaf in eligible}
    near = confusable(df[layout.title], leaves, eligible)
    n = len(df)
    order = [int(i) for i in rng.permutation(np.flatnonzero(np.isin(leaves, eligible)))]
    used: set[int] = set()
    take = iter(order)

    truth: dict = {"seed": seed, "source": str(csv), "n_rows_before": n, "labels": [], "swaps": [], "duplicates": []}
    n_labels = round(label_rate * n)
    for k in range(n_labels):
        i = next(take)
        used.add(i)
        kind = "confusable" if k < n_labels // 2 else "random"
        old = paths[i]
        target = near[old[-1]] if kind == "confusable" else prng.choice([c for c in eligible if c != old[-1]])
        layout.set_path(df, i, common_path[target])
        truth["labels"].append({"id": df[layout.id].iat[i], "kind": kind, "true": list(old),
                                "noisy": list(common_path[target])})

    n_pairs = round(swap_rate * n / 2)
    colours = df[layout.colour].to_numpy()
    pool = [i for i in order if i not in used]
    by_leaf: dict[str, list[int]] = {}
    for i in pool:
        by_leaf.setdefault(leaves[i], []).append(i)
    img = df.columns.get_loc(layout.image)
    for k in range(n_pairs):
        kind = "across" if k < n_pairs // 2 else "colour"
        while True:
            a = pool.pop()
            if a in used:
                continue
            cands = by_leaf[leaves[a]] if kind == "colour" else pool[-200:]
            match = [b for b in cands if b not in used and b != a and (
                colours[b] != colours[a] if kind == "colour" else leaves[b] != leaves[a])]
            if match:
                b = match[prng.randrange(len(match))]
                break
        used.update((a, b))
        pa, pb = df.iat[a, img], df.iat[b, img]
        df.iat[a, img], df.iat[b, img] = pb, pa
        for x, y in ((a, b), (b, a)):
            truth["swaps"].append({"id": df[layout.id].iat[x], "partner": df[layout.id].iat[y], "kind": kind})

    n_dups = round(dup_rate * n)
    rows = []
    numeric = df[layout.id].str.fullmatch(r"\d+").all()
    next_id = int(df[layout.id].astype(int).max()) + 1 if numeric else 0
    for k in range(n_dups):
        i = next(x for x in (pool.pop() for _ in iter(int, 1)) if x not in used)
        used.add(i)
        row = df.iloc[i].copy()
        new_id = str(next_id + k) if numeric else f"DUP-{k:05d}"
        rel = f"dups/{new_id}.jpg"
        how = perturb_photo(src_root / df.iat[i, img], out / rel, prng)
        row[layout.id], row[layout.image] = new_id, rel
        row[layout.title] = reword(row[layout.title], prng)
        rows.append(row)
        truth["duplicates"].append({"id": new_id, "source": df[layout.id].iat[i], "photo": how,
                                    "title": row[layout.title], "source_title": df[layout.title].iat[i]})
    noisy = pd.concat([df, pd.DataFrame(rows)], ignore_index=True)
    noisy = noisy.iloc[rng.permutation(len(noisy))]  # the duplicates are not all at the end
    noisy.to_csv(out / csv.name, index=False)
    truth["n_rows"] = len(noisy)
    truth["layout"] = {k: v for k, v in layout.__dict__.items()}
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def normalise_title(title: str) -> str:
    """Lower case, punctuation to spaces, words sorted: the exact-duplicate key a data scientist would use."""
    return " ".join(sorted(re.sub(r"[^a-z0-9]+", " ", title.lower()).split()))
