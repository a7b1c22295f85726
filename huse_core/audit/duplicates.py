"""Duplicate listings: exact (same photo bytes, same perceptual hash, same normalised title) and near (a re-encoded,
resized or cropped photo under a reworded title), grouped into clusters with a score."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..data.catalog import normalise_title
from ..retrieval.adding import ADD_THRESHOLD, resembling  # noqa: F401 - the add-time check, defined where it runs
from .inputs import AuditInputs
from .variants import variant_reasons

NEIGHBOURS = 10  # candidate pairs: each product's nearest photos, and its nearest titles, in the shared space
REDUCED = 128  # dimensions the candidate search runs in
THRESHOLD = 0.8  # the cut when no calibration is possible (a catalogue too small to copy from)


def photo_digests(paths, tick: Callable[[], None] | None = None) -> tuple[list[str], np.ndarray]:
    """(sha1 of each photo file's bytes, (N, 2) width and height from its header); unreadable photos get ""."""
    from PIL import Image

    shas, sizes = [], np.zeros((len(paths), 2), np.int32)
    for i, path in enumerate(paths):
        try:
            data = Path(path).read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                sizes[i] = im.size
            shas.append(hashlib.sha1(data).hexdigest())
        except (OSError, ValueError):
            shas.append("")
        if tick and i % 1000 == 999:
            tick()
    return shas, sizes


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between 64-bit hashes, elementwise."""
    x = np.bitwise_xor(a, b)
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(1)


def neighbours(emb: np.ndarray, k: int = NEIGHBOURS, block: int = 2048) -> np.ndarray:
    """(N, k) each row's k nearest other rows by cosine (exact), best first; faiss when installed."""
    k = min(k, len(emb) - 1)
    if k < 1:
        return np.zeros((len(emb), 0), np.int64)
    emb = _reduced(emb)
    try:
        import faiss

        index = faiss.IndexFlatIP(emb.shape[1])
        index.add(np.ascontiguousarray(emb, dtype=np.float32))
        _, idx = index.search(np.ascontiguousarray(emb, dtype=np.float32), k + 1)
    except ImportError:
        idx = np.zeros((len(emb), k + 1), np.int64)
        for start in range(0, len(emb), block):
            s = emb[start : start + block] @ emb.T
            top = np.argpartition(-s, k, axis=1)[:, : k + 1]
            order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
            idx[start : start + block] = np.take_along_axis(top, order, 1)
    keep = idx != np.arange(len(emb))[:, None]  # each row itself, wherever it came (ties with copies of it)
    keep[keep.all(1), -1] = False
    return idx[keep].reshape(len(emb), k)


def _reduced(emb: np.ndarray, dim: int = REDUCED) -> np.ndarray:
    """Unit rows of `emb` projected on its `dim` leading principal axes (fitted on a seeded sample): candidate
    search at a quarter of the cost; the pairs found are scored on the full embeddings."""
    if emb.shape[1] <= dim or len(emb) <= 4 * dim:
        return np.ascontiguousarray(emb, dtype=np.float32)
    sample = emb[np.random.default_rng(0).permutation(len(emb))[:8192]]
    mean = sample.mean(0)
    centred = (sample - mean).astype(np.float64)
    axes = np.linalg.eigh(centred.T @ centred)[1][:, ::-1][:, :dim].T  # leading eigenvectors of the scatter
    out = ((emb - mean) @ axes.T).astype(np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def title_vectors(titles, fit=None):
    """(unit TF-IDF rows of character 2-4-grams of the normalised titles, the vectoriser): a reworded title stays
    close. `fit`: a vectoriser already fitted (on the catalogue), to place other titles in its space."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    norm = [normalise_title(t) for t in titles]
    if fit is not None:
        return fit.transform(norm), fit
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=1)
    return vec.fit_transform(norm), vec


def exact_groups(shas, hashes, titles) -> dict:
    """{(first row, row): why} for rows sharing photo bytes, a perceptual hash or a normalised title with an
    earlier row."""
    groups: dict = {}
    for name, keys in (("same photo bytes", shas), ("same perceptual hash", [str(h) if h else "" for h in hashes]),
                       ("same title", [normalise_title(t) for t in titles])):
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key:
                j = first.setdefault(key, i)
                if j != i:
                    groups.setdefault((j, i), name)
    return groups


def candidates(inputs: AuditInputs, groups: dict) -> np.ndarray:
    """(P, 2) sorted unique row pairs worth scoring: photo and title neighbours in the shared space, exact groups."""
    parts = [np.array(list(groups), dtype=np.int64).reshape(-1, 2)]
    for emb in (inputs.image_emb, inputs.text_emb):
        idx = neighbours(emb)
        parts.append(np.stack([np.repeat(np.arange(len(emb)), idx.shape[1]), idx.ravel()], 1))
    pairs = np.concatenate(parts)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(np.sort(pairs, axis=1), axis=0)


def evidence(image_emb, text_emb, tfidf, thumbs, hashes, a, b, look=None, tick=None) -> dict:
    """What says rows a[i] and b[i] are one listing: photo and title-tower cosine, title n-gram similarity,
    perceptual-hash agreement (1 - Hamming/32), the aligned colour difference of the thumbnails (1.0 where `look`
    is False: not worth aligning), and how far apart the two products' colour casts are."""
    from .pixels import aligned_difference, ink_colours

    look = np.ones(len(a), bool) if look is None else look
    aligned = np.ones(len(a), np.float32)
    aligned[look] = aligned_difference(thumbs, a[look], b[look], tick=tick)[:, 0]
    cast = ink_colours(thumbs)
    return {"photo": np.einsum("nd,nd->n", image_emb[a], image_emb[b]),
            "colour": np.linalg.norm(cast[a] - cast[b], axis=1) / 255,
            "text": np.einsum("nd,nd->n", text_emb[a], text_emb[b]),
            "title": np.asarray(tfidf[a].multiply(tfidf[b]).sum(1)).ravel(),
            "pixels": np.clip(1 - hamming(hashes[a], hashes[b]) / 32, 0, 1), "aligned": aligned}


def duplicate_pairs(inputs: AuditInputs, tick: Callable[[], None] | None = None) -> dict:
    """Every candidate pair with its evidence: {"a", "b", "photo", "text", "title", "pixels", "aligned", "score",
    "exact", "variant", "threshold", "calibration"}; exact is "" or why the pair is an exact duplicate, variant ""
    or why the two rows are different items (their score is then 0), score how sure the calibrated rule is that
    the two rows are one listing, threshold its cut."""
    from ..data.images import decode_many
    from ..prepare import cache_dir_for
    from .pixels import perceptual_hashes, thumbnails

    df = inputs.products
    paths = df["image"].tolist()
    shas, sizes = photo_digests(paths, tick)
    pixels, _, _ = decode_many(paths, inputs.run.image_size, cache_dir_for(inputs.run.data_cfg, inputs.run_dir),
                               progress=False)  # the run's decode cache: read, not decoded again
    thumbs = thumbnails(pixels, sizes)
    hashes = perceptual_hashes(thumbs)
    groups = exact_groups(shas, hashes, df["title"])
    pairs = candidates(inputs, groups)
    exact = np.array([groups.get((int(x), int(y)), "") for x, y in pairs], dtype=object)
    out = scored(inputs, pairs[:, 0], pairs[:, 1], exact == "same photo bytes", thumbs, hashes, tick)
    variant = variant_reasons(inputs, pairs[:, 0], pairs[:, 1])  # two items, however alike: never one listing
    out["score"] = np.where(exact == "same photo bytes", 1.0, np.where(variant != "", 0.0, out["score"]))
    return {"a": pairs[:, 0], "b": pairs[:, 1], "exact": exact, "variant": variant, **out}


def scored(inputs: AuditInputs, a, b, same_file, thumbs, hashes, tick=None) -> dict:
    """The pairs' evidence and score under a rule learnt from synthetic copies of the shop's own products against
    the catalogue's other candidate pairs (but those sharing a photo file: see calibrate); a fixed weighted score
    and THRESHOLD when too few copies or look-alike pairs can be made."""
    from .calibrate import MIN_COPIES, NEGATIVES, SEED, features, learn_rule, make_copies

    tfidf, vec = title_vectors(inputs.products["title"])
    copies = make_copies(inputs) if len(inputs) > 1 else None
    n, m = len(inputs), 0 if copies is None else len(copies.source)
    if m < MIN_COPIES or (~same_file).sum() < MIN_COPIES:
        ev = evidence(inputs.image_emb, inputs.text_emb, tfidf, thumbs, hashes, a, b, tick=tick)
        score = 0.3 * ev["pixels"] + 0.4 * ev["photo"] + 0.3 * ev["title"]
        return {**ev, "score": np.clip(score, 0, 1), "threshold": THRESHOLD, "calibration": {"copies": m}}
    from scipy.sparse import vstack

    ca, cb = n + np.arange(m), copies.source
    ev_copy = evidence(np.vstack([inputs.image_emb, copies.image_emb]), np.vstack([inputs.text_emb, copies.text_emb]),
                       vstack([tfidf, title_vectors(copies.titles, vec)[0]]).tocsr(),
                       np.concatenate([thumbs, copies.thumbs]), np.concatenate([hashes, copies.hashes]), ca, cb)
    # only pairs as alike as (nearly) every copy is to its source are worth aligning pixel by pixel
    floor = {k: float(np.quantile(ev_copy[k], 0.005)) - 0.05 for k in ("photo", "title")}
    photo = np.einsum("nd,nd->n", inputs.image_emb[a], inputs.image_emb[b])
    title = np.asarray(tfidf[a].multiply(tfidf[b]).sum(1)).ravel()
    look = (photo >= floor["photo"]) & (title >= floor["title"])
    ev = evidence(inputs.image_emb, inputs.text_emb, tfidf, thumbs, hashes, a, b, look, tick)
    x = features(ev)
    neg = np.random.default_rng(SEED).permutation(np.flatnonzero(~same_file))[:NEGATIVES]
    model, cut, oof = learn_rule(features(ev_copy), x[neg])
    return {**ev, "score": model.predict_proba(x)[:, 1], "threshold": cut,
            "calibration": {"copies": m, "cut": round(cut, 4), "aligned_share": round(float(look.mean()), 4),
                            "copies_kept": round(float((oof >= cut).mean()), 4), "floors": floor}}


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


def flagged(pairs: dict, threshold: float | None = None) -> np.ndarray:
    """(P,) bool: the pairs reported as one listing twice: the same photo file bytes, or a score over `threshold`
    (default: the calibrated cut) between mutual best partners among the other pairs. A shared perceptual hash
    alone is not enough: plain shots of different products on white share one; the rule weighs it with the
    aligned pixels."""
    threshold = pairs.get("threshold", THRESHOLD) if threshold is None else threshold
    # why: docs/decisions.md#audit
    exact = pairs["exact"] == "same photo bytes"
    # the best-partner contest runs without the byte-identical pairs (flagged anyway): a listing whose photo file
    # another shares can still be a near copy of a third
    mutual = np.zeros(len(exact), bool)
    mutual[~exact] = mutual_best({k: pairs[k][~exact] for k in ("a", "b", "score")})
    return exact | ((pairs["score"] >= threshold) & mutual)


def duplicate_findings(inputs: AuditInputs, pairs: dict, threshold: float | None = None) -> list[dict]:
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
        pixels = pairs["aligned"][k] if "aligned" in pairs else 1 - pairs["pixels"][k]
        why = pairs["exact"][k] or (f"photo {pairs['photo'][k]:.2f}, pixels differ {pixels:.2f} after "
                                    f"alignment, title {pairs['title'][k]:.2f}")
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
