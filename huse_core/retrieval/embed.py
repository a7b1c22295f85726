"""Embeddings of a run's catalogue: aligned image_emb / text_emb rows and the products table of an index build."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..artifacts import atomic_write
from ..data.catalog import Catalog
from ..data.heads import Head
from ..data.images import decode_many
from ..data.rowfile import write_rows
from ..prepare import Prepared, cache_dir_for, embed, prepare
from ..run import Run
from .layout import IMAGE_EMB, PRODUCT_EMB, PRODUCTS, TEXT_EMB, index_dir

ADDED_SPLIT = "added"  # the `split` value of added products


def head_values(df: pd.DataFrame, heads: list[Head]) -> pd.DataFrame:
    """One text column per head; multi-label cells (lists) become "a|b" so every label is one string."""
    out = df.copy()
    for h in heads:
        if h.kind == "multi":
            out[h.name] = ["|".join(v) if isinstance(v, (list, tuple, np.ndarray)) else str(v or "")
                           for v in out[h.name]]
    return out


def products_frame(df: pd.DataFrame, heads: list[Head], added: bool) -> pd.DataFrame:
    """The products table the index serves: id, title, image, split, one column per head, added."""
    cols = ["id", "title", "image", "split"] + [h.name for h in heads]
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
    text_emb) of added products, appended after the catalogue. Both arrays are written to temp files chunk by
    chunk, then each file is renamed into place. Returns the products table.
    """
    out = Path(out_dir) if out_dir else index_dir(run.run_dir)
    df, chunks = _catalog_chunks(run, prep_or_catalog, batch_size, progress)
    extra, extra_image, extra_text = added if added is not None else (None, None, None)
    if extra is not None:  # a product the shop has since put in its catalogue file is served from there
        new = ~extra["id"].isin(set(df["id"])).to_numpy()
        extra, extra_image, extra_text = extra[new], np.asarray(extra_image)[new], np.asarray(extra_text)[new]
    n_cat, n_extra = len(df), 0 if extra is None else len(extra)
    keep = np.zeros(n_cat, dtype=bool)

    def fill(put_image, put_text) -> int:
        at = 0
        with tqdm(total=n_cat, desc="embedding catalogue", unit="product", disable=not progress,
                  file=sys.stderr) as bar:
            for rows, image_emb, text_emb in chunks:
                put_image(at, image_emb)
                put_text(at, text_emb)
                keep[rows], at = True, at + len(rows)
                bar.update(rows[-1] + 1 - bar.n if len(rows) else 0)
        if n_extra:
            put_image(at, extra_image)
            put_text(at, extra_text)
        return at + n_extra  # fewer than the files' rows when photos failed to decode (Catalog path only, rare)

    # Both files are filled in one pass, a chunk at a time (memory holds one chunk, never the catalogue's
    # embeddings); each appears under its real name only once complete.
    shape = (n_cat + n_extra, run.dim)
    write_rows(out / IMAGE_EMB, shape, np.float32, lambda put_image: write_rows(
        out / TEXT_EMB, shape, np.float32, lambda put_text: fill(put_image, put_text)))
    products = products_frame(df[keep], run.heads, added=False)
    if n_extra:
        products = pd.concat([products, products_frame(extra, run.heads, added=True)], ignore_index=True)
    atomic_write(out / PRODUCTS, lambda tmp: products.to_parquet(tmp, index=False))
    return products


def embed_products(run: Run, image_emb: np.ndarray, text_emb: np.ndarray, out_dir: str | Path,
                   chunk: int = 65_536) -> None:
    """Write `product_emb.npy`: the whole-product vectors (the run's fusion layer) of row-aligned photo and title
    embeddings, a chunk at a time (memory holds one chunk); it appears under its name only once complete."""

    def fill(put) -> None:
        for start in range(0, len(image_emb), chunk):
            put(start, run.encode_products(image_emb[start : start + chunk], text_emb[start : start + chunk]))

    write_rows(Path(out_dir) / PRODUCT_EMB, (len(image_emb), run.dim), np.float32, fill)
