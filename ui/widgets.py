"""Widgets the pages share: product photos and photo grids, hit tables, label bars, the model card, upload folders."""

from __future__ import annotations

import io
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from huse_core.data.heads import Head

from .runs import data_root, summary_of
from .text import esc, short

IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "gif"]  # gif: animations give their first frame
PREVIEW_PX = 320  # uploads are shown decoded at this size, as the model sees them


# ---------------------------------------------------------------- photos


@st.cache_data(show_spinner=False, max_entries=64)
def preview(data: bytes) -> np.ndarray:
    """An uploaded photo upright, in RGB on white, PREVIEW_PX a side. st.image on the raw bytes would decode a
    12000-px photo at full size, and fails on modes it can't re-encode (16-bit PNG, CMYK)."""
    from huse_core.data.images import decode_image

    return decode_image(data, PREVIEW_PX)


def photo(path: str | bytes | None, width: int | str = "stretch") -> None:
    """A product photo, or a grey note when the file is gone or can't be shown."""
    if not (isinstance(path, (bytes, bytearray)) or (path and os.path.isfile(path))):
        st.caption("(photo missing)")
        return
    try:
        st.image(path, width=width)
    except Exception:  # noqa: BLE001 - a mode Streamlit can't re-encode (16-bit, CMYK): show it decoded
        try:
            st.image(preview(path if isinstance(path, bytes) else Path(path).read_bytes()), width=width)
        except Exception:  # noqa: BLE001
            st.caption("(photo can't be shown)")


@st.cache_data(show_spinner=False, max_entries=20_000)
def thumb_uri(path: str, size: int = 72) -> str | None:
    """A small PNG data URI of a photo, for st.dataframe's ImageColumn (local files aren't served)."""
    import base64

    from PIL import Image

    from huse_core.data.images import FORMATS

    try:
        with Image.open(path, formats=FORMATS) as img:  # the photo formats only: no other program runs
            img = img.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, "PNG", optimize=True)
    except Exception:  # noqa: BLE001 - a missing or broken photo just shows no thumbnail
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# ---------------------------------------------------------------- hits


@dataclass
class HitLike:
    """A catalogue product shaped like a search Hit, for hit_grid."""

    id: str
    title: str
    image: str
    score: float = 0.0
    labels: dict = field(default_factory=dict)
    added: bool = False


def hit_grid(hits: list, n_cols: int = 5, show_score: bool = True, key: str = "grid",
             on_pick: str | None = None) -> None:
    """Search hits as a grid of photo cards: photo, title (as text), score. With `on_pick` (a session_state key),
    each card has a button that stores the hit's id there and opens the Neighbours page."""
    if not hits:
        st.info("No matches.")
        return
    for start in range(0, len(hits), n_cols):
        cols = st.columns(n_cols)
        for col, hit in zip(cols, hits[start : start + n_cols]):
            with col.container(border=True):
                photo(hit.image)
                st.caption(esc(short(hit.title, 80)))
                bits = []
                if show_score:
                    bits.append(f"score {hit.score:.2f}")
                if getattr(hit, "added", False):
                    bits.append("new")
                if bits:
                    st.caption(" · ".join(bits))
                if on_pick and st.button("Neighbours", key=f"{key}_pick_{start}_{hit.id}", type="tertiary",
                                         icon=":material/hub:"):
                    st.session_state[on_pick] = hit.id
                    st.switch_page("pages/neighbours.py")


def label_columns(heads: list[Head]) -> dict:
    """st.dataframe column configs: thumbnails as images, titles and labels as plain text."""
    cfg = {"photo": st.column_config.ImageColumn("photo", width="small"),
           "title": st.column_config.TextColumn("title", width="large"),
           "score": st.column_config.NumberColumn("score", format="%.3f")}
    cfg.update({h.name: st.column_config.TextColumn(h.name) for h in heads})
    return cfg


def hits_table(hits: list, heads: list[Head], key: str) -> None:
    """Hits as a table: thumbnail, title, score, labels (all rendered as text)."""
    if not hits:
        st.info("No matches.")
        return
    rows = [{"photo": thumb_uri(h.image), "title": h.title, "score": h.score,
             **{k: h.labels.get(k, "") for k in (x.name for x in heads)}, "id": h.id} for h in hits]
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config=label_columns(heads), key=key,
                 row_height=60)


# ---------------------------------------------------------------- labels and the model


def prob_bars(rows: list[dict], max_rows: int = 3) -> None:
    """Predicted labels as progress bars: "Apparel › Topwear › Tshirts  87%"."""
    for row in rows[:max_rows]:
        label = row.get("path") or row["label"]
        st.progress(float(np.clip(row["prob"], 0.0, 1.0)), text=f"{esc(label)} — {row['prob']:.0%}")


def unknown_words(run, title: str) -> bool:
    """True when none of the title's words is in the model's vocabulary (the title then carries no signal)."""
    if run.model_cfg.text_backbone != "conv":
        return False  # a sentence encoder reads any words, so no title is unknown to it
    ids = run.tokenizer.encode([title])[0]
    return not (ids > 1).any()


def model_card(run_dir: Path, where=None) -> None:
    """Backbone, heads and class counts, catalogue size and test metrics of a run."""
    where = where or st
    run = summary_of(run_dir)
    dim = "?" if run.dim is None else run.dim
    where.caption(f"Backbone **{esc(run.backbone)}** · space of **{dim}** dimensions · "
                  f"**{run.catalog_size:,}** products")
    where.caption("Heads: " + ", ".join(f"{esc(h.name)} ({len(h.classes)})" for h in run.heads))
    test = run.test
    if not test:
        where.caption("No test metrics yet (evaluate it on the Train & evaluate page).")
        return
    leaf = test.leaf
    pct = lambda m: f"{test.accuracy(leaf, m) or 0:.1%}"  # noqa: E731
    where.metric("Test accuracy", pct("fused"), border=True,
                 help=f"How often the finest category ({esc(leaf)}) is right on held-out test products, from "
                      "photo and title together.")
    r10 = test.search_r10 or 0  # as the Search page ranks a title, where measured
    where.caption(f"{esc(leaf)} from the photo alone **{pct('image')}**, from the title alone **{pct('text')}** · "
                  f"a title finds a same-category photo in its top 10: **{r10:.1%}**")


# ---------------------------------------------------------------- uploads


def upload_folder(kind: str, name: str) -> Path:
    """A fresh folder under the data folder for uploaded files, e.g. data/uploads/<name>-<time>."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "upload"
    folder = data_root() / kind / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
