"""A few catalogue errors planted in the demo shop, so the Audit page has findings from the first start.

Each kind the audit looks for: products filed under another category (the whole path moved), photos swapped between
two listings of different articles, and listings repeated under a new id with a re-encoded photo and a reworded
title. What was planted is written to planted.json beside the catalogue.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
from PIL import Image

AUTO_FROM = 1000  # generate_demo plants errors by default from this many products on
PER_KIND = 5  # errors of each kind in the demo shop


def _reword(title: str, r: random.Random) -> str:
    words = title.split()
    if len(words) > 3:
        i = r.randrange(1, len(words) - 2)
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words).lower() + r.choice([" - new", " (pack of 1)", ""])


def plant_errors(csv: str | Path, per_kind: int = PER_KIND, seed: int = 0) -> dict:
    """Plant `per_kind` errors of each kind into the demo catalogue `csv` (rewritten in place, photos beside it);
    returns and writes planted.json: {"labels": [...], "swaps": [...], "duplicates": [...]} with the ids."""
    csv = Path(csv)
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    r = random.Random(seed + 7)
    levels = ["masterCategory", "subCategory", "articleType"]
    paths = {row.articleType: (row.masterCategory, row.subCategory, row.articleType) for row in df.itertuples()}
    order = list(range(len(df)))
    r.shuffle(order)
    picks = iter(order)
    truth: dict = {"labels": [], "swaps": [], "duplicates": []}
    for _ in range(per_kind):
        i = next(picks)
        old = tuple(df.loc[i, levels])
        new = paths[r.choice([a for a in paths if paths[a][0] != old[0]])]  # another department: clearly wrong
        df.loc[i, levels] = list(new)
        truth["labels"].append({"id": df.at[i, "id"], "true": list(old), "planted": list(new)})
    for _ in range(per_kind):
        a = next(picks)
        b = next(j for j in picks if df.at[j, "articleType"] != df.at[a, "articleType"])
        df.loc[a, "image"], df.loc[b, "image"] = df.at[b, "image"], df.at[a, "image"]
        truth["swaps"].append({"id": df.at[a, "id"], "partner": df.at[b, "id"]})
    rows, next_id = [], max(int(i) for i in df["id"]) + 1
    for k in range(per_kind):
        i = next(picks)
        row = df.loc[i].copy()
        new_id, rel = str(next_id + k), f"images/{next_id + k}.jpg"
        with Image.open(csv.parent / row["image"]) as im:
            im = im.convert("RGB")
            w, h = im.size
            im.crop((w // 20, h // 20, w - w // 20, h - h // 20)).save(csv.parent / rel, "JPEG", quality=70)
        row["id"], row["image"], row["title"] = new_id, rel, _reword(row["title"], r)
        rows.append(row)
        truth["duplicates"].append({"id": new_id, "source": df.at[i, "id"]})
    out = pd.concat([df, pd.DataFrame(rows)], ignore_index=True)
    tmp = csv.with_name(csv.name + ".tmp")
    out.to_csv(tmp, index=False)
    tmp.replace(csv)
    (csv.parent / "planted.json").write_text(json.dumps(truth, indent=1))
    return truth
