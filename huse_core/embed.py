"""Embeddings of a run's catalogue (aligned .npy + products.parquet) and the store of products added later."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from .artifacts import atomic_write
from .catalog import Catalog
from .data import Prepared, cache_dir_for, embed, prepare
from .images import ImageError, decode_image, decode_many
from .run import Run

PRODUCTS, IMAGE_EMB, TEXT_EMB = "products.parquet", "image_emb.npy", "text_emb.npy"
DELTA = "delta"  # products added after the build: delta/added.parquet and delta/images/<id>.png
ADDED_SPLIT = "added"  # the `split` value of added products
SAVED_IMAGE_SIZE = 256  # added photos are kept as decoded (upright, white-padded squares) at this size
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # added ids name files: no paths, no odd characters


def index_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "index"


def head_values(df: pd.DataFrame, heads: list[dict]) -> pd.DataFrame:
    """One text column per head; multi-label cells (lists) become "a|b" so every label is one string."""
    out = df.copy()
    for h in heads:
        if h["kind"] == "multi":
            out[h["name"]] = ["|".join(v) if isinstance(v, (list, tuple, np.ndarray)) else str(v or "")
                              for v in out[h["name"]]]
    return out


def products_frame(df: pd.DataFrame, heads: list[dict], added: bool) -> pd.DataFrame:
    """The products table the index serves: id, title, image, split, one column per head, added."""
    cols = ["id", "title", "image", "split"] + [h["name"] for h in heads]
    out = head_values(df, heads)
    for c in cols:
        if c not in out:
            out[c] = ADDED_SPLIT if c == "split" else ""
    out = out[cols].astype({c: str for c in cols}).reset_index(drop=True)
    out["added"] = added
    return out


def _catalog_chunks(run: Run, source, batch_size: int, progress: bool):
    """(products, chunks): chunks yields (rows, image_emb, text_emb) in order, each (len(rows), D) float32."""
    device = torch.device("cpu")
    if source is None:  # the run's own catalogue: decoded once and cached by data.prepare
        source = prepare(run.data_cfg, run.model_cfg, cache_dir_for(run.data_cfg, run.run_dir), progress=progress,
                         tokenizer=run.meta["tokenizer"], heads=run.heads)
    if isinstance(source, Prepared):
        if run.model.image.frozen:
            source.compute_features(run.model, device, progress)  # loads the cached features when present
        prep = source

        def chunks():
            for start in range(0, len(prep.catalog.df), batch_size):
                rows = np.arange(start, min(start + batch_size, len(prep.catalog.df)))
                image_emb, text_emb = embed(run.model, prep, rows, device, batch_size)
                yield rows, image_emb.numpy(), text_emb.numpy()

        return prep.catalog.df, chunks()
    if isinstance(source, Catalog):  # decoded chunk by chunk: memory stays bounded for any catalogue size
        df = source.df

        def chunks():
            for start in range(0, len(df), batch_size):
                part = df.iloc[start : start + batch_size]
                pixels, ok, _ = decode_many(list(part["image"]), run.image_size, progress=False)
                rows = np.arange(start, start + len(part))[ok]
                yield rows, run.encode_images(pixels[ok]), run.encode_texts(list(part["title"].to_numpy()[ok]))

        return df, chunks()
    raise TypeError(f"embed_catalog needs a data.Prepared or catalog.Catalog, got {type(source).__name__}")


def embed_catalog(run: Run, prep_or_catalog: Prepared | Catalog | None = None, out_dir: str | Path | None = None,
                  batch_size: int = 256, progress: bool = True, added: tuple | None = None) -> pd.DataFrame:
    """Write `image_emb.npy`, `text_emb.npy` (float32 unit rows) and the aligned `products.parquet` to `out_dir`.

    `prep_or_catalog`: None = the run's catalogue via data.prepare (decode cache, cached frozen features);
    a Catalog is decoded chunk by chunk, and rows whose photo fails are left out. `added` = (products, image_emb,
    text_emb) of added products, appended after the catalogue. Arrays fill memory-mapped temp files batch by batch,
    then each file is renamed into place. Returns the products table.
    """
    out = Path(out_dir) if out_dir else index_dir(run.run_dir)
    df, chunks = _catalog_chunks(run, prep_or_catalog, batch_size, progress)
    extra, extra_image, extra_text = added if added is not None else (None, None, None)
    if extra is not None:  # a product the shop has since put in its catalogue file is served from there
        new = ~extra["id"].isin(set(df["id"])).to_numpy()
        extra, extra_image, extra_text = extra[new], np.asarray(extra_image)[new], np.asarray(extra_text)[new]
    n_cat, n_extra = len(df), 0 if extra is None else len(extra)
    keep = np.zeros(n_cat, dtype=bool)

    def fill(image_tmp: str, text_tmp: str) -> None:
        shape = (n_cat + n_extra, run.dim)
        image_mm = np.lib.format.open_memmap(image_tmp, mode="w+", dtype=np.float32, shape=shape)
        text_mm = np.lib.format.open_memmap(text_tmp, mode="w+", dtype=np.float32, shape=shape)
        with tqdm(total=n_cat, desc="embedding catalogue", unit="product", disable=not progress,
                  file=sys.stderr) as bar:
            at = 0
            for rows, image_emb, text_emb in chunks:
                image_mm[at : at + len(rows)], text_mm[at : at + len(rows)] = image_emb, text_emb
                keep[rows], at = True, at + len(rows)
                bar.update(rows[-1] + 1 - bar.n if len(rows) else 0)
        if n_extra:
            image_mm[at : at + n_extra], text_mm[at : at + n_extra] = extra_image, extra_text
        n = at + n_extra
        for mm, tmp in ((image_mm, image_tmp), (text_mm, text_tmp)):
            mm.flush()
            if n < len(mm):  # photos that failed to decode (Catalog path only, rare): keep the filled rows
                with open(tmp + ".part", "wb") as f:
                    np.save(f, np.asarray(mm[:n]))
                Path(tmp + ".part").replace(tmp)

    # Both files are filled in one pass; each appears under its real name only once complete.
    atomic_write(out / IMAGE_EMB, lambda image_tmp: atomic_write(out / TEXT_EMB, lambda text_tmp: fill(image_tmp,
                                                                                                      text_tmp)))
    products = products_frame(df[keep], run.heads, added=False)
    if n_extra:
        products = pd.concat([products, products_frame(extra, run.heads, added=True)], ignore_index=True)
    atomic_write(out / PRODUCTS, lambda tmp: products.to_parquet(tmp, index=False))
    return products


def load_embeddings(out_dir: str | Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(products, image_emb, text_emb) of an index folder's current build, or of the folder embed_catalog wrote to;
    the arrays are memory-mapped, read-only."""
    from .index import build_folder

    out = build_folder(out_dir)
    products = pd.read_parquet(out / PRODUCTS)
    image_emb = np.load(out / IMAGE_EMB, mmap_mode="r")
    text_emb = np.load(out / TEXT_EMB, mmap_mode="r")
    return products, image_emb, text_emb


def read_added(out_dir: str | Path, dim: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Products added after the build: (table with absolute image paths, image_emb, text_emb); empty if none.

    One Parquet file holds the rows and both embeddings, so each addition is one atomic rename.
    """
    path = Path(out_dir) / DELTA / "added.parquet"
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
    return atomic_write(delta / "added.parquet", lambda tmp: table.to_parquet(tmp, index=False))


def predict_labels(run: Run, image_emb: np.ndarray, text_emb: np.ndarray) -> list[dict[str, str]]:
    """Per product, each head's fused prediction (multi-label heads: the labels over 0.5, joined by "|")."""
    probs = run.classify(image_emb, text_emb)
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


def as_image(image):
    """A path, bytes or PIL image as images.decode_image takes it; uint8 arrays become PIL images."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"an image array must be uint8 (H, W) or (H, W, 3|4), got {image.dtype} {image.shape}")
        return Image.fromarray(image)
    return str(image) if isinstance(image, Path) else image


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
    path = Path(out_dir) / DELTA / "images" / f"{pid}.png"
    return atomic_write(path, lambda tmp: Image.fromarray(photo).save(tmp, format="PNG"))
