"""Catalogue: browse and filter the products; add new ones (one by one, or a CSV + zip) with predicted labels."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pandas as pd
import streamlit as st

import ui
from huse_core.data import tables, uploads
from huse_core.data.csvtext import csv_bytes

ui.page_setup("pages/catalogue.py")

ANY = "(any)"
MAX_ROWS = 2000  # rows of an uploaded table handled at once

st.title("Catalogue")
searcher = ui.searcher_or_stop()
heads = searcher.heads
run_dir = ui.current_run()
browse_tab, one_tab, bulk_tab = st.tabs(["Browse", "Add one product", "Add many (CSV + zip)"])


def top_labels(pred: dict) -> dict[str, str]:
    """The fused (else only available) top label and confidence per head."""
    out = {}
    for head, per in pred.items():
        rows = per.get("fused") or per.get("image") or per.get("text") or []
        if rows:
            out[head] = rows[0]["label"]
            out[f"{head} confidence"] = round(float(rows[0]["prob"]), 3)
    return out


# ---------------------------------------------------------------- browse

with browse_tab:
    products: pd.DataFrame = searcher.products
    c = st.columns(4)
    words = c[0].text_input("Title contains", key="cat_words")
    filt = products
    for i, h in enumerate([h for h in heads if h["kind"] == "single"][:3]):
        value = c[i + 1].selectbox(h["name"], [ANY] + list(h["classes"]), key=f"cat_f_{h['name']}")
        if value != ANY:
            filt = filt[filt[h["name"]].astype(str) == value]
    if words and words.strip():
        filt = filt[filt["title"].str.contains(words.strip(), case=False, regex=False)]
    only_new = st.toggle("Only products added here", key="cat_only_new")
    if only_new and "added" in filt:
        filt = filt[filt["added"].astype(bool)]
    n_new = int(products["added"].astype(bool).sum()) if "added" in products else 0
    m = st.columns(3)
    m[0].metric("products", f"{len(products):,}")
    m[1].metric("shown", f"{len(filt):,}")
    m[2].metric("added here", f"{n_new:,}")
    cols = ["id", "title", "split"] + [h["name"] for h in heads] + (["added"] if "added" in filt else [])
    view = filt[[c for c in cols if c in filt]].reset_index(drop=True)
    event = st.dataframe(view, hide_index=True, key="cat_table", on_select="rerun", selection_mode="single-row",
                         column_config=ui.label_columns(heads), height=380)
    rows = event.selection.rows if event and event.selection else []
    if rows:
        row = filt.iloc[rows[0]]
        with st.container(border=True):
            p1, p2 = st.columns([1, 4])
            with p1:
                ui.photo(row["image"])
            with p2:
                st.text(row["title"])
                st.caption(f"id {ui.esc(row['id'])}")
                if st.button("Show its neighbours", key="cat_neighbours", icon=":material/hub:"):
                    st.session_state["nb_product"] = str(row["id"])
                    st.switch_page("pages/neighbours.py")
    else:
        st.caption("Select a row to see the product's photo.")
        sample = filt.head(12)
        ui.hit_grid([ui.HitLike(str(r["id"]), r["title"], r["image"]) for _, r in sample.iterrows()], n_cols=6,
                    show_score=False, key="cat_grid", on_pick="nb_product")


# ---------------------------------------------------------------- add one product


def added_folder() -> Path:
    folder = ui.data_root() / "added" / run_dir.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def add_items(items: list[dict], source: str | None = None) -> list[dict]:
    try:
        with st.spinner(f"Adding {len(items)} product(s)…"):
            results = searcher.add_products(items, source)
    except Exception as err:  # noqa: BLE001
        st.error(f"Adding failed: {ui.describe(err)}")
        return []
    ok = sum(bool(r.get("ok")) for r in results)
    if ok:
        st.success(f"Added {ok} product(s): they now appear in Search, Neighbours and on the Map (and stay after a "
                   "restart).")
    for r in results:
        if not r.get("ok"):
            st.error(f"{ui.esc(ui.short(r.get('title') or r.get('id') or '?', 60))}: {ui.esc(r.get('error'))}")
    return results


with one_tab:
    st.caption("Upload a product photo and type its title: you'll see the predicted labels, then add it to the "
               "searchable catalogue.")
    c1, c2 = st.columns([2, 3])
    f = c1.file_uploader("Photo", type=ui.IMAGE_TYPES, key="add_photo")
    title = c2.text_input("Title", key="add_title", placeholder="e.g. Nordvik Men's Grey Wool Sweater")
    pid = c2.text_input("Product id (optional)", key="add_id", help="Left empty, the product gets a new id.")
    title = (title or "").strip()
    data = f.getvalue() if f is not None else None
    problem = uploads.check_image(data, f.name) if data is not None else None
    if problem:
        st.error(f"That file can't be used: {ui.esc(problem)}")
    elif f is None or not title:
        st.info("Both a photo and a title are needed to add a product." if (f or title) else
                "Start with a photo and a title.")
    else:
        try:
            pred = searcher.classify(image=data, text=title, top=1)
        except Exception as err:  # noqa: BLE001
            st.error(f"Could not classify it: {ui.describe(err)}")
            pred = {}
        with st.container(border=True):
            p1, p2 = st.columns([1, 4])
            p1.image(ui.preview(data), width="stretch")
            with p2:
                st.text(title)
                cols = st.columns(3)
                for i, (head, per) in enumerate(pred.items()):
                    with cols[i % 3]:
                        st.caption(ui.esc(head))
                        ui.prob_bars(per.get("fused") or [], max_rows=1)
        if st.button("Add to the catalogue", key="add_one", type="primary", icon=":material/add:"):
            suffix = Path(f.name).suffix.lower() or ".png"
            path = added_folder() / f"{uuid.uuid4().hex[:12]}{suffix}"
            try:
                path.write_bytes(data)
                item = {"title": title, "image": str(path)}
                if pid and pid.strip():
                    item["id"] = pid.strip()
                add_items([item])
            except OSError as err:
                st.error(f"Adding failed: {ui.describe(err)}")
            finally:
                path.unlink(missing_ok=True)  # the store keeps its own copy of the photo


# ---------------------------------------------------------------- add many


@st.cache_data(show_spinner=False, max_entries=4)
def read_table(data: bytes, name: str) -> pd.DataFrame:
    """An uploaded products table, every cell as text (an empty cell is "")."""
    return tables.read_table(data, name, missing_as_nan=False)


def predict_rows(table: pd.DataFrame, title_col: str, image_col: str, files: dict[str, str]):
    """(one result row per table row, the items that can be added); problems are per row, the rest go on."""
    by_base = {Path(n).name: p for n, p in files.items()}
    id_col = next(iter(tables.matching_columns(table.columns, ("id",))), None)
    rows, items = [], []
    for i, r in table.head(MAX_ROWS).iterrows():
        title = str(r[title_col] or "").strip()
        name = str(r[image_col] or "").strip()
        path = files.get(name) or by_base.get(Path(name).name)
        out = {"row": int(i) + 1, "title": title, "image": name, "problem": ""}
        if not title:
            out["problem"] = "empty title"
        elif path is None:
            out["problem"] = "photo not in the zip (or refused)"
        elif problem := uploads.check_image(Path(path).read_bytes(), name):
            out["problem"] = problem
        else:
            try:
                out.update(top_labels(searcher.classify(image=path, text=title, top=1)))
            except Exception as err:  # noqa: BLE001
                out["problem"] = str(err)
        if not out["problem"]:
            item = {"title": title, "image": path, "row": out["row"]}
            if id_col and str(r[id_col]).strip():
                item["id"] = str(r[id_col]).strip()
            items.append(item)
        rows.append(out)
    return rows, items


with bulk_tab:
    st.caption("A table with a **title** and an **image** column (the photo's file name inside the zip), optionally "
               "an **id**, plus a zip of the photos.")
    c1, c2 = st.columns(2)
    table_file = c1.file_uploader("Products table (CSV)", type=["csv", "tsv", "parquet"], key="bulk_csv")
    zip_file = c2.file_uploader("Photos (zip)", type=["zip"], key="bulk_zip")
    if table_file is None or zip_file is None:
        st.info("Upload both the table and the zip.")
        if zip_file is None:  # the zip was removed: its unpacked photos are no longer needed
            uploads.discard(st.session_state.pop("bulk_folder", ""))
            st.session_state.pop("bulk_key", None)
    else:
        try:
            table = read_table(table_file.getvalue(), table_file.name)
        except Exception as err:  # noqa: BLE001
            st.error(ui.sentence(ui.describe(err)))  # "could not read <file> as CSV: ..."
            table = None
        if table is not None:
            title_col = next(iter(tables.matching_columns(table.columns, tables.TEXT_COLS)), None)
            image_col = next(iter(tables.matching_columns(table.columns, tables.IMAGE_COLS)), None)
            if title_col is None or image_col is None:
                st.error(f"{ui.esc(table_file.name)} needs a 'title' and an 'image' column; its columns are: "
                         + ", ".join(ui.esc(c) for c in table.columns))
            else:
                key = (table_file.file_id, zip_file.file_id)
                if st.session_state.get("bulk_key") != key:
                    uploads.discard(st.session_state.pop("bulk_folder", ""))  # the previous upload's photos
                    uploads.sweep(added_folder())  # photos of uploads left by sessions that ended
                    folder = added_folder() / uuid.uuid4().hex[:12]
                    st.session_state["bulk_folder"] = str(folder)
                    with st.spinner("Unpacking the photos…"):
                        result = uploads.safe_extract(zip_file.getvalue(), folder)
                    st.session_state["bulk_key"] = key
                    st.session_state["bulk_files"] = ({n: str(p) for n, p in result.files.items()}, result.problems)
                files, problems = st.session_state["bulk_files"]
                if problems:
                    with st.expander(f"{len(problems)} zip entries were not used", icon=":material/warning:"):
                        st.text("\n".join(problems[:300]))
                if st.session_state.get("bulk_pred_key") != key:
                    with st.spinner("Predicting labels…"):
                        st.session_state["bulk_pred"] = predict_rows(table, title_col, image_col, files)
                    st.session_state["bulk_pred_key"] = key
                rows, items = st.session_state["bulk_pred"]
                if len(table) > MAX_ROWS:
                    st.warning(f"Only the first {MAX_ROWS:,} of {len(table):,} rows are read at a time.")
                preds = pd.DataFrame(rows)
                bad = int((preds["problem"] != "").sum())
                st.caption(f"{len(items)} products ready, {bad} with problems.")
                st.dataframe(preds, hide_index=True, key="bulk_preds",
                             column_config={c: st.column_config.TextColumn(c) for c in preds.columns
                                            if not c.endswith("confidence") and c != "row"})
                b1, b2 = st.columns(2)
                b1.download_button("Download predictions (CSV)", csv_bytes(preds),  # no cell runs as a formula
                                   file_name="predictions.csv", mime="text/csv", key="bulk_download",
                                   icon=":material/download:")
                if items and b2.button(f"Add {len(items)} products to the catalogue", key="bulk_add", type="primary",
                                       icon=":material/add:"):
                    add_items(items, "upload:" + hashlib.sha256(table_file.getvalue()).hexdigest())
