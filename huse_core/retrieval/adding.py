"""Adding products after an index build: check, embed and label them with the run's model, then store them (the
app's Searcher.add_products and the `add` command's add_catalog both come here); re-embedding them for a new model."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from ..config import DataConfig
from ..data.catalog import MAX_TITLE, _cells, _check_rows, _image_paths
from ..data.images import ImageError, as_image, decode_image
from ..data.tables import TEXT_COLS, pick_column, read_table
from ..run import Run, load_run
from .index import load_index
from .keyword import useless_title
from .layout import IndexMissingError, added_photo_path, index_dir
from .store import IndexIds, check_files, count_added, insert_added, read_added, stored_keys, write_added

SAVED_IMAGE_SIZE = 256  # added photos are kept as decoded (upright, white-padded squares) at this size
ADD_BATCH = 256  # products embedded and stored together by `add`: one transaction each
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # added ids name files: no paths, no odd characters


class AddInterrupted(KeyboardInterrupt):
    """`add` stopped by the user (Ctrl-C); the message says what was stored and how to go on."""


def check_item(item: dict, taken: Callable[[str], bool], image_size: int) -> tuple[str | None, str, np.ndarray,
                                                                                   np.ndarray]:
    """(id or None for an automatic one, title, photo, pixels) of a product to add: the photo decoded at
    SAVED_IMAGE_SIZE for keeping, the pixels at the model's `image_size`. A ValueError says what is wrong with the
    item; `taken(id)` says whether an id is in use (the store checks again when it writes)."""
    title, pid = str(item.get("title") or "").strip(), str(item.get("id") or "").strip()
    if not title:
        raise ValueError("empty title: every product needs a title")
    if pid and not _SAFE_ID.fullmatch(pid):
        raise ValueError(f"id {pid!r} may hold only letters, digits, '.', '_' and '-' (at most 64)")
    if pid and taken(pid):
        raise ValueError(f"id {pid!r} is already used by another product; give a new id or none")
    if item.get("image") is None:
        raise ValueError("no image: every product needs a photo")
    try:
        photo = decode_image(as_image(item["image"]), max(SAVED_IMAGE_SIZE, image_size))
    except ImageError as err:
        raise ValueError(err.reason) from None
    pixels = photo if len(photo) == image_size else np.asarray(
        Image.fromarray(photo).resize((image_size, image_size), Image.Resampling.LANCZOS))
    return pid or None, title, photo, pixels


def stage_photo(out_dir: str | Path, photo: np.ndarray) -> Path:
    """Write an added product's decoded photo as PNG under a temp name in delta/images/, flushed to disk; the store
    renames it to <id>.png just before the product's row is written."""
    folder = added_photo_path(out_dir, "x").parent
    check_files(out_dir)  # no planted link at delta/ or delta/images/ to write through
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".staged-", suffix=".png.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(photo).save(f, format="PNG", compress_level=1)  # 4x faster than the default 6, 15% larger
            f.flush()
            os.fsync(f.fileno())
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)  # a full disk leaves no half-written photo behind
        if isinstance(err, OSError) and err.filename is None:
            err.filename = tmp  # the message names the file that could not be written
        raise
    return Path(tmp)


def content_key(source: str, row, title: str, photo: np.ndarray) -> str:
    """A product's content as 32 hex digits: the table it came from, its row there, its title and its decoded
    photo's pixels. A product without an id is not stored again when the same table brings the same row back (a
    re-run of the same file, a second click), while two equal rows of one table are two products as before."""
    digest = hashlib.blake2b(f"{source}\0{row}".encode("utf-8", "surrogatepass"), digest_size=16)
    for part in (title.encode("utf-8", "surrogatepass"), np.ascontiguousarray(photo).tobytes()):
        digest.update(b"\0")
        digest.update(part)
    return digest.hexdigest()


def add_products(run: Run, out_dir: str | Path, items: list, index: IndexIds, source: str | None = None,
                 resembles=None) -> list[dict]:
    """Embed, label and store new products ({"title", "image", optional "id"}) in the index folder `out_dir`'s store,
    in one transaction; `index` holds the ids the index serves. Bad items are reported and skipped. `source`: the
    table the items come from (`add`, the app's bulk upload; items then carry their "row"): a product without an
    id that this row of this table already added (the same title and photo) is reported, not stored twice, so
    re-running an interrupted `add` is safe.

    Returns per item {"id", "title", "ok", "error", "labels": {head: predicted fused label}, "resembles"}:
    resembles is {"id", "score"} of a catalogue product the new one looks like (`resembles(image_emb, text_emb)`,
    e.g. resembling below over the catalogue's embeddings), else None.
    """
    results, good, photos, pixels, rows, batch = [], [], [], [], [], set()
    for item in items:
        item = item if isinstance(item, dict) else {"title": "", "image": None}  # reported: empty title
        result = {"id": str(item.get("id") or "").strip() or None, "ok": False, "error": None,
                  "title": str(item.get("title") or "").strip(), "labels": {}}
        results.append(result)
        try:
            pid, result["title"], photo, small = check_item(item, lambda p: p in index.ids or p in batch,
                                                            run.image_size)
        except ValueError as err:
            result["error"] = str(err)
            continue
        batch.add(pid)
        good.append(result)
        photos.append(photo)
        pixels.append(small)
        rows.append(item.get("row"))
    keys = [content_key(source, row, r["title"], p) if source is not None and r["id"] is None else None
            for r, row, p in zip(good, rows, photos)]
    known = stored_keys(out_dir, [k for k in keys if k])  # re-added ones are not embedded again
    for i in reversed([i for i, k in enumerate(keys) if k in known]):
        good[i]["error"] = f"already added as {known[keys[i]]} from this row of this table (the same title and photo)"
        del good[i], photos[i], pixels[i], rows[i], keys[i]
    if not good:
        return results
    image_emb = run.encode_images(np.stack(pixels))
    text_emb = run.encode_texts([r["title"] for r in good])
    labels = predict_labels(run, image_emb, text_emb, [r["title"] for r in good])
    staged: list[Path] = []
    try:
        for photo in photos:
            staged.append(stage_photo(out_dir, photo))
        products = [{"id": r["id"], "title": r["title"], "labels": lab, "fingerprint": run.fingerprint,
                     "content_key": key} for r, lab, key in zip(good, labels, keys)]
        stored = insert_added(out_dir, products, image_emb, text_emb, staged, index)
    finally:
        for path in staged:  # renamed ones are gone; these are refused products' photos
            path.unlink(missing_ok=True)
    alike = resembles(image_emb, text_emb) if resembles else [None] * len(good)
    for result, lab, (pid, error), like in zip(good, labels, stored, alike):
        result.update(id=pid or result["id"], ok=pid is not None, error=error, labels=lab if pid else {},
                      resembles=like if pid else None)
    return results


# A new product whose photo and title cosine to one catalogue product are both at least this is flagged at `add`
# time as resembling it (a duplicate listing?); the audit's own duplicate check reads pixels and titles too.
ADD_THRESHOLD = 0.93


def resembling(image_emb: np.ndarray, text_emb: np.ndarray, cat_image: np.ndarray, cat_text: np.ndarray,
               ids, threshold: float = ADD_THRESHOLD) -> list[dict | None]:
    """Per new product, {"id", "score"} of the catalogue product it resembles (photo and title cosine both at least
    `threshold`; score = the smaller), else None."""
    out: list[dict | None] = []
    if not len(cat_image):
        return [None] * len(image_emb)
    for u, v in zip(np.atleast_2d(image_emb), np.atleast_2d(text_emb)):
        both = np.minimum(np.asarray(cat_image) @ u, np.asarray(cat_text) @ v)
        j = int(both.argmax())
        out.append({"id": str(ids[j]), "score": round(float(both[j]), 4)} if both[j] >= threshold else None)
    return out


def predict_labels(run: Run, image_emb: np.ndarray, text_emb: np.ndarray, titles: list[str]) -> list[dict[str, str]]:
    """Per product, each head's fused prediction (multi-label heads: the labels over 0.5, joined by "|"); a
    product whose title says nothing ("IMG_0231": keyword.useless_title) gets its photo's prediction, which a
    meaningless title would only pull off."""
    probs = run.probabilities(image_emb, text_emb, titles)
    out: list[dict[str, str]] = [{} for _ in range(len(image_emb))]
    untitled = np.array([useless_title(t) for t in titles], bool)[:, None]
    for h in run.heads:
        p = np.where(untitled, probs[h["name"]]["image"], probs[h["name"]]["fused"])
        for i, row in enumerate(p):
            out[i][h["name"]] = ("|".join(c for c, q in zip(h["classes"], row) if q >= 0.5) if h["kind"] == "multi"
                                 else h["classes"][int(row.argmax())])
    return out


def refresh_added(run: Run, out_dir: str | Path, progress: bool = True) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The added products, re-embedded (from their stored photo and title) and re-labelled where an earlier
    model embedded them; those are written back (updated in place, so products added meanwhile stay)."""
    df, image_emb, text_emb = read_added(out_dir, run.dim)
    old = np.flatnonzero(df["fingerprint"].to_numpy(dtype=object) != run.fingerprint) if len(df) else []
    if len(old) == 0:
        return df, image_emb, text_emb
    for start in tqdm(range(0, len(old), 256), desc="re-embedding added products", disable=not progress,
                      file=sys.stderr):
        rows = old[start : start + 256]
        pixels = np.stack([decode_image(df["image"].iloc[r], run.image_size) for r in rows])
        image_emb[rows] = run.encode_images(pixels)
        text_emb[rows] = run.encode_texts(list(df["title"].iloc[rows]))
        for r, labels in zip(rows, predict_labels(run, image_emb[rows], text_emb[rows],
                                                     list(df["title"].iloc[rows]))):
            for head, label in labels.items():
                df.loc[df.index[r], head] = label
    df["fingerprint"] = run.fingerprint
    write_added(out_dir, df.iloc[old], image_emb[old], text_emb[old])
    return df, image_emb, text_emb


def read_new_products(cfg: DataConfig) -> tuple[list[dict], list[dict]]:
    """(items to add, skipped rows) of a table of new products, read like a training catalogue (data.catalog):
    the same column flags and bad-row rules (missing or duplicate id, empty title, no image path, a path outside
    the table's folder, a missing file). No label columns are needed: the run predicts the labels.

    Items: {"row" (1 = the first data row), "id" (None without an id column), "title", "image" (absolute)};
    skipped: {"row", "id", "title", "error"}.
    """
    path = Path(cfg.catalog).expanduser()
    raw = read_table(path)
    undecoded = raw.attrs.get("bad_rows", {})
    raw.columns = [str(c).strip() for c in raw.columns]
    raw = raw.reset_index(drop=True)
    cols = list(raw.columns)
    root = Path(os.path.abspath(Path(cfg.images_root).expanduser() if cfg.images_root else path.parent))
    try:
        text_col = pick_column(cols, cfg.text_col, TEXT_COLS, "title", "--text-col")
        if text_col is None:
            raise ValueError(f"no title column found (looked for {', '.join(TEXT_COLS)}); columns are: "
                             f"{', '.join(cols)} — pass --text-col <column>")
        id_col = pick_column(cols, cfg.id_col, ("id",), "id", "--id-col")
        ids = _cells(raw[id_col]) if id_col else np.full(len(raw), "", dtype=object)
        rel = _image_paths(raw, cfg, ids, bool(id_col), root)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    df = pd.DataFrame({"id": ids, "title": _cells(raw[text_col])})
    keep, full, _ = _check_rows(df, rel, [], bool(id_col), root, undecoded)
    items, skipped = [], []
    for i in range(len(df)):
        row = {"row": i + 1, "id": ids[i] or None, "title": df["title"][i][:MAX_TITLE]}
        if keep[i]:
            items.append({**row, "image": full[i]})
            continue
        # The loader names the first problem of each bad row; alone, a row is only refused for its own faults,
        # so one it keeps alone repeats an id an earlier row has.
        _, _, alone = _check_rows(df.iloc[[i]].reset_index(drop=True), rel[[i]], [], bool(id_col), root,
                                  {0: undecoded[i]} if i in undecoded else None)
        prefix = f"row 1 (id {ids[i] or '?'}): "
        skipped.append({**row, "error": alone.examples[0][len(prefix):] if alone.examples else "duplicate id"})
    return items, skipped


def add_catalog(run_dir: str | Path, catalog: str | Path, columns: dict | None = None,
                progress: bool = False) -> dict:
    """The `add` command: embed, label and store the products of a CSV/Parquet table in the run's added-products
    store, where searches find them at once; the next `index` folds them in. The run needs its search index (new
    ids are checked against it). `columns`: DataConfig fields (text_col, image_col, id_col, images_root) over the
    run's own; photo paths are relative to the table's folder unless images_root says otherwise.

    Returns {"added": n, "skipped": [{"row", "id", "title", "error"}], "added_total": products in the store,
    "resembling": [{"id", "like", "score"}]: new products that look like a catalogue product}.
    """
    run = load_run(run_dir)
    try:
        _, products, image_emb, text_emb, *_ = load_index(run, backend="exact")
    except IndexMissingError as err:
        raise type(err)(f"{err}, then `add` again: added products are kept beside the run's search index and "
                        "checked against it") from None
    cfg = dataclasses.replace(run.data_cfg, catalog=str(catalog), images_root="", **(columns or {}))
    items, skipped = read_new_products(cfg)
    index, out, added, done, alike = IndexIds.of(products["id"]), index_dir(run_dir), 0, 0, []
    ids = products["id"].to_numpy(dtype=object)

    def resembles(u, v):
        return resembling(u, v, image_emb, text_emb, ids)

    source = str(Path(catalog).expanduser().resolve())
    count_added(out)  # a damaged or linked store is named before any work starts
    try:
        for start in tqdm(range(0, len(items), ADD_BATCH), desc="adding products", disable=not progress,
                          file=sys.stderr):
            chunk = items[start : start + ADD_BATCH]
            for item, result in zip(chunk, add_products(run, out, chunk, index, source, resembles)):
                added += result["ok"]
                if result.get("resembles"):
                    alike.append({"id": result["id"], "like": result["resembles"]["id"],
                                  "score": result["resembles"]["score"]})
                if not result["ok"]:
                    skipped.append({k: item[k] for k in ("row", "id", "title")} | {"error": result["error"]})
            done = chunk[-1]["row"]
    except KeyboardInterrupt:  # each batch is one transaction: the finished ones are stored, the one cut off is not
        upto = f" (up to row {done:,})" if done else ""
        raise AddInterrupted(f"interrupted: {added:,} products of {catalog} were stored{upto}, the rest were not; "
                             "run the same `add` on the same file again to add the rest: rows it already stored (the "
                             "same id, or the same row, title and photo) are not stored twice") from None
    return {"added": added, "skipped": sorted(skipped, key=lambda s: s["row"]), "added_total": count_added(out),
            "resembling": alike}
