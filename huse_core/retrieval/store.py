"""The store of products added after an index build: their rows, embeddings and photos under index/delta/."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from ..artifacts import atomic_write
from ..data.images import ImageError, as_image, decode_image
from ..run import Run
from .layout import DELTA, added_path, added_photo_path

SAVED_IMAGE_SIZE = 256  # added photos are kept as decoded (upright, white-padded squares) at this size
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # added ids name files: no paths, no odd characters


def read_added(out_dir: str | Path, dim: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Products added after the build: (table with absolute image paths, image_emb, text_emb); empty if none.

    One Parquet file holds the rows and both embeddings, so each addition is one atomic rename.
    """
    path = added_path(out_dir)
    if not path.is_file():
        empty = np.zeros((0, dim), np.float32)
        return pd.DataFrame(columns=["id", "title", "image", "fingerprint"]), empty, empty.copy()
    df = pd.read_parquet(path)
    as_matrix = (lambda col: np.stack(df[col].to_numpy()).astype(np.float32) if len(df)  # noqa: E731
                 else np.zeros((0, dim), np.float32))
    image_emb, text_emb = as_matrix("image_emb"), as_matrix("text_emb")
    df = df.drop(columns=["image_emb", "text_emb"])
    df["image"] = [str(path.parent / p) for p in df["image"]]  # stored relative: the run folder may move
    return df, image_emb, text_emb


def write_added(out_dir: str | Path, df: pd.DataFrame, image_emb: np.ndarray, text_emb: np.ndarray) -> Path:
    """Replace the added-products file atomically (rows + embeddings together)."""
    delta = Path(out_dir) / DELTA
    table = df.copy()
    table["image"] = [str(Path(p).relative_to(delta)) if Path(p).is_absolute() else p for p in table["image"]]
    table["image_emb"] = list(np.asarray(image_emb, np.float32))
    table["text_emb"] = list(np.asarray(text_emb, np.float32))
    return atomic_write(added_path(out_dir), lambda tmp: table.to_parquet(tmp, index=False))


def predict_labels(run: Run, image_emb: np.ndarray, text_emb: np.ndarray) -> list[dict[str, str]]:
    """Per product, each head's fused prediction (multi-label heads: the labels over 0.5, joined by "|")."""
    probs = run.probabilities(image_emb, text_emb)
    out: list[dict[str, str]] = [{} for _ in range(len(image_emb))]
    for h in run.heads:
        p = probs[h["name"]]["fused"]
        for i, row in enumerate(p):
            out[i][h["name"]] = ("|".join(c for c, q in zip(h["classes"], row) if q >= 0.5) if h["kind"] == "multi"
                                 else h["classes"][int(row.argmax())])
    return out


def refresh_added(run: Run, out_dir: str | Path, progress: bool = True) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The added products, re-embedded (from their stored photo and title) and re-labelled where an earlier
    model embedded them; saved back when anything changed."""
    df, image_emb, text_emb = read_added(out_dir, run.dim)
    old = np.flatnonzero(df["fingerprint"].to_numpy(dtype=object) != run.fingerprint) if len(df) else []
    if len(old) == 0:
        return df, image_emb, text_emb
    if image_emb.shape[1:] != (run.dim,):
        image_emb, text_emb = np.zeros((len(df), run.dim), np.float32), np.zeros((len(df), run.dim), np.float32)
    for start in tqdm(range(0, len(old), 256), desc="re-embedding added products", disable=not progress,
                      file=sys.stderr):
        rows = old[start : start + 256]
        pixels = np.stack([decode_image(df["image"].iloc[r], run.image_size) for r in rows])
        image_emb[rows] = run.encode_images(pixels)
        text_emb[rows] = run.encode_texts(list(df["title"].iloc[rows]))
        for r, labels in zip(rows, predict_labels(run, image_emb[rows], text_emb[rows])):
            for head, label in labels.items():
                df.loc[df.index[r], head] = label
    df["fingerprint"] = run.fingerprint
    write_added(out_dir, df, image_emb, text_emb)
    return df, image_emb, text_emb


def check_item(item: dict, taken: set, image_size: int) -> tuple[str, str, np.ndarray, np.ndarray]:
    """(id, title, photo, pixels) of a product to add: the photo decoded at SAVED_IMAGE_SIZE for keeping, the
    pixels at the model's `image_size`. A ValueError says what is wrong with the item.

    Without an "id" the next free `new-N` is used; `taken` holds the ids in use and gets the new one.
    """
    title, pid = str(item.get("title") or "").strip(), str(item.get("id") or "").strip()
    if not title:
        raise ValueError("empty title: every product needs a title")
    if pid and not _SAFE_ID.fullmatch(pid):
        raise ValueError(f"id {pid!r} may hold only letters, digits, '.', '_' and '-' (at most 64)")
    if pid in taken:
        raise ValueError(f"id {pid!r} is already used by another product; give a new id or none")
    if item.get("image") is None:
        raise ValueError("no image: every product needs a photo")
    try:
        photo = decode_image(as_image(item["image"]), max(SAVED_IMAGE_SIZE, image_size))
    except ImageError as err:
        raise ValueError(err.reason) from None
    if not pid:
        pid = f"new-{1 + max((int(t[4:]) for t in taken if t.startswith('new-') and t[4:].isdigit()), default=0)}"
    taken.add(pid)
    pixels = photo if len(photo) == image_size else np.asarray(
        Image.fromarray(photo).resize((image_size, image_size), Image.Resampling.LANCZOS))
    return pid, title, photo, pixels


def save_photo(out_dir: str | Path, pid: str, photo: np.ndarray) -> Path:
    """Store an added product's decoded photo as delta/images/<id>.png (atomically)."""
    path = added_photo_path(out_dir, pid)
    return atomic_write(path, lambda tmp: Image.fromarray(photo).save(tmp, format="PNG"))
