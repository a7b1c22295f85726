"""The audit benchmark's duplicate measures (bench/audit.py): recall and precision of the flagged pairs with the
catalogue's own duplicates (same original title, or photo files byte-identical originally or as audited) counted
apart, the cut moved for the record, a seeded sample of each class, and the data scientist's peer (imagehash pHash
or normalised title)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from huse_core.audit.duplicates import flagged, photo_digests
from huse_core.data.catalog import normalise_title


def original_photos(truth: dict) -> dict:
    """{id: sha1 of its photo in the un-injected catalogue}; an injected copy gets its source's."""
    import hashlib

    import pandas as pd

    src = pd.read_csv(truth["source"], dtype=str, keep_default_na=False)
    root, lay = Path(truth["source"]).parent, truth["layout"]
    out = {}
    for pid, rel in zip(src[lay["id"]], src[lay["image"]]):
        try:
            out[pid] = hashlib.sha1((root / rel).read_bytes()).hexdigest()
        except OSError:
            out[pid] = f"missing {pid}"
    return out | {t["id"]: out.get(t["source"], "") for t in truth["duplicates"]}


def peer_pairs(inputs) -> dict:
    """The data scientist's exact-duplicate check: rows sharing imagehash's pHash of the photo file or the
    normalised title, each joined to the first row of its group; all flagged."""
    import imagehash
    from PIL import Image

    from huse_core.audit.duplicates import exact_groups

    hashes = []
    for path in inputs.products["image"]:
        try:
            with Image.open(path) as im:
                hashes.append(str(imagehash.phash(im.convert("L"))))
        except OSError:
            hashes.append("")
    groups = exact_groups([""] * len(hashes), hashes, inputs.products["title"])
    ab = np.array(sorted(groups), dtype=np.int64).reshape(-1, 2)
    return {"a": ab[:, 0], "b": ab[:, 1]}


def _count(ids, a, b, flag, source, same_title, same_photo, injected_pair) -> dict:
    """Recall and precision of the flagged pairs, the catalogue's own duplicates counted apart."""
    found = {ids[x] if ids[x] in source else ids[y] for x, y in zip(a[flag & injected_pair], b[flag & injected_pair])}
    n_flag, n_inj = int(flag.sum()), int((flag & injected_pair).sum())
    n_title = int((flag & same_title & ~injected_pair).sum())
    n_own = int((flag & (same_title | same_photo) & ~injected_pair).sum())
    return {"flagged_pairs": n_flag, "injected_found": len(found), "recall": round(len(found) / max(1, len(source)), 4),
            "same_title_in_catalogue": n_title,
            "same_photo_in_catalogue": int((flag & same_photo & ~injected_pair).sum()),
            "catalogue_duplicates": n_own, "other": n_flag - n_inj - n_own,
            "precision": round(n_inj / max(1, n_flag), 4),
            "precision_without_same_title": round(n_inj / max(1, n_flag - n_title), 4),
            "precision_without_catalogue_duplicates": round(n_inj / max(1, n_flag - n_own), 4)}


def measure_duplicates(inputs, truth, pairs, original_titles: dict, photos: dict, peer: dict | None = None) -> dict:
    """Flagged pairs: injected duplicates; the catalogue's own duplicates (same original title, or photo files
    byte-identical originally or as audited), counted apart; other. The peer (imagehash pHash or normalised title)
    on its own pairs."""
    ids = inputs.products["id"].astype(str).to_numpy()
    source = {t["id"]: t["source"] for t in truth["duplicates"]}
    now = photo_digests(inputs.products["image"])[0]  # byte-identical photo files as audited (a swap can make them)

    def classes(a, b):
        same_title = np.array([normalise_title(original_titles.get(ids[x], "")) == normalise_title(
            original_titles.get(ids[y], "#")) for x, y in zip(a, b)], dtype=bool)
        same_photo = np.array([photos.get(ids[x], "") == photos.get(ids[y], "#") or now[x] == now[y] != ""
                               for x, y in zip(a, b)], dtype=bool)
        injected = np.array([source.get(ids[x]) == ids[y] or source.get(ids[y]) == ids[x] for x, y in zip(a, b)],
                            dtype=bool)
        return same_title, same_photo, injected

    same_title, same_photo, injected_pair = classes(pairs["a"], pairs["b"])
    out = {"candidate_pairs": int(len(pairs["a"])), "injected": len(source),
           "injected_among_candidates": int(injected_pair.sum()),
           "pair_auroc": round(float(roc_auc_score(injected_pair, pairs["score"])), 4),
           "calibration": pairs.get("calibration", {}),
           "huse": _count(ids, pairs["a"], pairs["b"], flagged(pairs), source, same_title, same_photo, injected_pair)}
    # the cut moved, for the record (the product's cut is calibrated on synthetic copies, never on this truth)
    out["cut_sweep"] = {str(cut): {k: v for k, v in _count(ids, pairs["a"], pairs["b"], flagged(pairs, cut), source,
                                                           same_title, same_photo, injected_pair).items()
                                   if k in ("recall", "other", "precision_without_catalogue_duplicates")}
                        for cut in (0.8, 0.9, 0.95, 0.99)}
    if peer is not None:
        out["phash_or_title"] = _count(ids, peer["a"], peer["b"], np.ones(len(peer["a"]), bool), source,
                                       *classes(peer["a"], peer["b"]))
    sample = {}
    for name, mask in (("same_title_sample", same_title & ~same_photo), ("same_photo_sample", same_photo),
                       ("other_sample", ~same_title & ~same_photo)):
        rows = np.flatnonzero(flagged(pairs) & mask & ~injected_pair)
        rows = np.random.default_rng(0).permutation(rows)[: 30 if name == "other_sample" else 8]  # 30: by eye
        sample[name] = [{"a": ids[pairs["a"][k]], "b": ids[pairs["b"][k]],
                         "title": original_titles.get(ids[pairs["a"][k]], ""),
                         "title_b": original_titles.get(ids[pairs["b"][k]], ""),
                         "score": round(float(pairs["score"][k]), 3), "exact": str(pairs["exact"][k])} for k in rows]
    return out | sample
