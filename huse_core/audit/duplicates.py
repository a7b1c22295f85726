"""Duplicate listings: exact (same photo bytes, same perceptual hash, same normalised title) and near (a re-encoded,
resized or cropped photo under a reworded title), grouped into clusters with a score."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..data.catalog import normalise_title
from ..retrieval.adding import ADD_THRESHOLD, resembling  # noqa: F401 - the add-time check, defined where it runs
from .inputs import AuditInputs

NEIGHBOURS = 8  # candidate pairs: each product's nearest photos in the shared space
# why: docs/decisions.md#audit
THRESHOLD = 0.8  # a pair whose duplicate score reaches this is one listing twice


def photo_digests(paths, tick: Callable[[], None] | None = None) -> tuple[list[str], np.ndarray]:
    """(sha1 of each photo file's bytes, (N,) uint64 64-bit perceptual hash); unreadable photos get "" and 0."""
    import imagehash
    from PIL import Image

    shas, hashes = [], np.zeros(len(paths), np.uint64)
    for i, path in enumerate(paths):
        try:
            data = Path(path).read_bytes()
            with Image.open(__import__("io").BytesIO(data)) as im:
                bits = imagehash.phash(im.convert("L")).hash.flatten()
            shas.append(hashlib.sha1(data).hexdigest())
            hashes[i] = int("".join("1" if b else "0" for b in bits), 2)
        except (OSError, ValueError):
            shas.append("")
        if tick and i % 1000 == 999:
            tick()
    return shas, hashes


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between 64-bit hashes, elementwise."""
    x = np.bitwise_xor(a, b)
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(1)


def neighbours(emb: np.ndarray, k: int = NEIGHBOURS, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(idx, sim): each row's k nearest other rows by cosine (exact, blockwise), best first."""
    k = min(k, len(emb) - 1)
    idx, sim = np.zeros((len(emb), k), np.int64), np.zeros((len(emb), k), np.float32)
    for start in range(0, len(emb), block):
        s = emb[start : start + block] @ emb.T
        s[np.arange(len(s)), np.arange(start, start + len(s))] = -np.inf
        top = np.argpartition(-s, k, axis=1)[:, :k]
        vals = np.take_along_axis(s, top, 1)
        order = np.argsort(-vals, axis=1)
        idx[start : start + block], sim[start : start + block] = (np.take_along_axis(top, order, 1),
                                                                  np.take_along_axis(vals, order, 1))
    return idx, sim


def title_vectors(titles):
    """Unit TF-IDF rows of character 2-4-grams of the normalised titles: a reworded title stays close."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=1).fit_transform(
        [normalise_title(t) for t in titles])


def pair_scores(inputs: AuditInputs, a: np.ndarray, b: np.ndarray, hashes: np.ndarray, tfidf) -> dict:
    """The evidence that rows a[i] and b[i] are one listing: photo (shared space), pixels (perceptual hash), title."""
    photo = np.einsum("nd,nd->n", inputs.image_emb[a], inputs.image_emb[b])
    pixels = 1 - hamming(hashes[a], hashes[b]) / 32  # 0 bits: 1.0; 32 bits (unrelated photos): 0
    title = np.asarray(tfidf[a].multiply(tfidf[b]).sum(1)).ravel()
    score = np.clip(0.3 * np.clip(pixels, 0, 1) + 0.4 * photo + 0.3 * title, 0, 1)
    return {"photo": photo, "pixels": pixels, "title": title, "score": score}


def duplicate_pairs(inputs: AuditInputs, tick: Callable[[], None] | None = None) -> dict:
    """Every candidate pair with its evidence: {"a", "b", "photo", "pixels", "title", "score", "exact"}; exact is
    "" or why the pair is an exact duplicate."""
    df = inputs.products
    shas, hashes = photo_digests(df["image"].tolist(), tick)
    idx, _ = neighbours(inputs.image_emb)
    a = np.repeat(np.arange(len(df)), idx.shape[1])
    b = idx.ravel()
    groups = {}
    for name, keys in (("same photo bytes", shas), ("same perceptual hash", [str(h) if h else "" for h in hashes]),
                       ("same title", [normalise_title(t) for t in df["title"]])):
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key:
                j = first.setdefault(key, i)
                if j != i:
                    groups.setdefault((j, i), name)
    extra = np.array(list(groups), dtype=np.int64).reshape(-1, 2)
    a, b = np.concatenate([a, extra[:, 0]]), np.concatenate([b, extra[:, 1]])
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    pairs = np.unique(np.stack([lo, hi], 1), axis=0)
    out = pair_scores(inputs, pairs[:, 0], pairs[:, 1], hashes, title_vectors(df["title"]))
    exact = np.array([groups.get((int(x), int(y)), "") for x, y in pairs], dtype=object)
    for k, why in enumerate(exact):
        if why in ("same photo bytes", "same perceptual hash"):
            out["score"][k] = 1.0 if why == "same photo bytes" else max(out["score"][k], 0.99)
    return {"a": pairs[:, 0], "b": pairs[:, 1], "exact": exact, **out}


def mutual_best(pairs: dict) -> np.ndarray:
    """(P,) bool: pairs whose two products are each other's best-scoring partner, so clusters cannot chain through
    a row of look-alikes (colour variants shot alike)."""
    a, b, s = pairs["a"], pairs["b"], pairs["score"]
    n = int(max(a.max(initial=-1), b.max(initial=-1))) + 1
    best, arg = np.full(n, -np.inf), np.full(n, -1)
    for x, y in ((a, b), (b, a)):
        order = np.lexsort((s, x))  # per x ascending score: the last one is its best
        last = np.r_[x[order][1:] != x[order][:-1], True] if len(order) else np.zeros(0, bool)
        xs, ys, ss = x[order][last], y[order][last], s[order][last]
        better = ss > best[xs]
        best[xs[better]], arg[xs[better]] = ss[better], ys[better]
    return (arg[a] == b) & (arg[b] == a)


def flagged(pairs: dict, threshold: float = THRESHOLD) -> np.ndarray:
    """(P,) bool: the pairs reported as one listing twice: the same photo (bytes or perceptual hash), or a score over
    `threshold` between mutual best partners."""
    # why: docs/decisions.md#audit
    exact = np.isin(pairs["exact"], ["same photo bytes", "same perceptual hash"])
    return exact | ((pairs["score"] >= threshold) & mutual_best(pairs))


def duplicate_findings(inputs: AuditInputs, pairs: dict, threshold: float = THRESHOLD) -> list[dict]:
    """Clusters of products joined by flagged pairs; one finding per product but the cluster's first (catalogue
    order), suggesting to remove it as a duplicate of that one."""
    keep = flagged(pairs, threshold)
    a, b, n = pairs["a"][keep], pairs["b"][keep], len(inputs)
    if not len(a):
        return []
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    best: dict[int, tuple[float, str, str]] = {}  # row -> its best pair's score, evidence
    for k in np.flatnonzero(keep):
        why = pairs["exact"][k] or (f"photo {pairs['photo'][k]:.2f}, pixels {pairs['pixels'][k]:.2f}, "
                                    f"title {pairs['title'][k]:.2f}")
        for row in (int(pairs["a"][k]), int(pairs["b"][k])):
            if pairs["score"][k] > best.get(row, (-1.0, "", ""))[0]:
                best[row] = (float(pairs["score"][k]), why, "")
    ids = inputs.products["id"].astype(str).to_numpy()
    members: dict[int, list[int]] = {}
    for row in sorted(best):
        members.setdefault(int(comp[row]), []).append(row)
    rows = []
    for cluster, rows_in in members.items():
        first = rows_in[0]
        for row in rows_in[1:]:
            score, why, _ = best[row]
            rows.append({"kind": "duplicates", "head": "listing", "row": row, "current": ids[row],
                         "suggested": f"duplicate of {ids[first]}", "score": round(score, 4),
                         "confidence": round(score, 4), "cluster": f"c{cluster}",
                         "others": ",".join(ids[r] for r in rows_in if r != row),
                         "reason": f"{len(rows_in)} listings alike ({why})"})
    return rows
