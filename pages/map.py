"""Map: the UMAP layout of the shared photo + title space; colour, modality gap lines, box/lasso selection."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import ui
from huse_core.retrieval.map import sample_map

ui.page_setup("pages/map.py")

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#EECA3B", "#B279A2", "#FF9DA6", "#9D755D",
           "#BAB0AC", "#1F77B4", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#17BECF", "#BCBD22", "#7F7F7F"]
SYMBOLS = {"image": "circle", "text": "diamond", "product": "square"}
MAX_THUMBS = 150  # thumbnails in the selection table; more rows are listed without a photo

st.title("Map of the shared space")
st.caption("Every product appears twice: its photo (circle) and its title (diamond), placed by the model so that "
           "similar things sit together; with a fusion layer, also as a whole product (square: photo and title "
           "read together). Drag a box or lasso to select products; click a point to see it.")
searcher = ui.searcher_or_stop()
heads = searcher.heads


@st.cache_data(show_spinner="Loading the map…", max_entries=4)
def load_map(run_dir: str, fingerprint: str) -> tuple[pd.DataFrame, int]:
    """(the map rows drawn: every product, or a seeded sample of MAP_PRODUCTS; the catalogue's product count);
    `fingerprint` (model, index build, added products) keys the cache."""
    full = ui.open_searcher(Path(run_dir)).map_frame()
    return sample_map(full), full["id"].nunique()


run_dir = ui.current_run()
try:
    frame, n_products = load_map(str(run_dir), searcher.fingerprint)
except Exception as err:  # noqa: BLE001 - e.g. the map was never built
    st.error(f"The map isn't available: {ui.describe(err)}")
    st.stop()
frame = frame.assign(id=frame["id"].astype(str))
if frame["id"].nunique() < n_products:
    st.caption(f"Drawing {frame['id'].nunique():,} of {n_products:,} products: a fixed random sample (every product "
               "added since the index was built is in it), so the map stays fast in the browser. Search finds any "
               "product.")

has_product = bool((frame["modality"] == "product").any())
c1, c2, c3, c4 = st.columns([2, 3, 2, 1] if has_product else [2, 2, 2, 1])
colour_opts = ["modality"] + [h.name for h in heads if h.kind == "single"]
leaf = searcher.run.leaf_head.name  # coloured by the model's leaf head at first
colour = c1.selectbox("Colour by", colour_opts, index=colour_opts.index(leaf), key="map_colour")
SHOW = {"photos": ["image"], "titles": ["text"], "both": ["image", "text"], "products": ["product"],
        "all": ["image", "text", "product"]}
show = c2.segmented_control("Show", list(SHOW) if has_product else list(SHOW)[:3], default="both", key="map_show",
                            required=True, help="both = photos and titles; products = whole products, the "
                            "fusion layer's vector of each product's photo and title read together; all = the three")
n_lines = c3.slider("Photo–title lines", 0, 300, 40, step=10, key="map_lines",
                    help="Joins a sample of products' photo and title points: the modality gap.")
size = c4.select_slider("Point size", [3, 4, 5, 6, 8, 10], value=6, key="map_size")

shown = frame[frame["modality"].isin(SHOW[show])]
fig = go.Figure()
categories = (SHOW[show] if colour == "modality" else
              sorted(shown[colour].astype(str).unique(), key=lambda c: (-(shown[colour] == c).sum(), c)))
for i, cat in enumerate(categories):
    part = shown[shown[colour].astype(str) == cat] if colour != "modality" else shown[shown["modality"] == cat]
    if part.empty:
        continue
    name = ui.MODALITY_NAMES[cat] + "s" if colour == "modality" else cat
    hover = [html.escape(ui.short(t, 80)) for t in part["title"]]
    fig.add_trace(go.Scattergl(
        x=part["x"], y=part["y"], mode="markers", name=html.escape(str(name)),
        marker={"size": size, "color": PALETTE[i % len(PALETTE)], "opacity": 0.75,
                "symbol": [SYMBOLS.get(m, "circle") for m in part["modality"]]},
        customdata=np.stack([part["id"], part["modality"]], axis=1), text=hover,
        hovertemplate="%{text}<br><i>%{customdata[1]}</i> · id %{customdata[0]}<extra></extra>"))

if n_lines and {"image", "text"} <= set(SHOW[show]):
    both = frame.pivot_table(index="id", columns="modality", values=["x", "y"], aggfunc="first").dropna()
    sample = both.sample(min(n_lines, len(both)), random_state=0) if len(both) else both
    xs, ys = [], []
    for (_, r) in sample.iterrows():
        xs += [r[("x", "image")], r[("x", "text")], None]
        ys += [r[("y", "image")], r[("y", "text")], None]
    fig.add_trace(go.Scattergl(x=xs, y=ys, mode="lines", name="photo–title", hoverinfo="skip",
                               line={"color": "rgba(80,80,80,0.35)", "width": 1}))

fig.update_layout(height=660, margin={"l": 0, "r": 0, "t": 36, "b": 0}, dragmode="lasso",
                  legend={"itemsizing": "constant", "font": {"size": 11}},
                  xaxis={"visible": False}, yaxis={"visible": False}, uirevision="map")

left, right = st.columns([3, 1])
with left:
    event = st.plotly_chart(fig, key="map_chart", on_select="rerun", selection_mode=("points", "box", "lasso"),
                            config={"displaylogo": False, "scrollZoom": True})

points = (event.selection.points if event and event.selection else []) or []
selected: list[str] = []  # product ids, in selection order (ids come from customdata, never point indices)
first_modality = None
for p in points:
    data = p.get("customdata")
    if data is not None and len(data) >= 1 and str(data[0]) not in selected:
        selected.append(str(data[0]))
        first_modality = first_modality or (str(data[1]) if len(data) > 1 else None)

products = searcher.products.assign(id=searcher.products["id"].astype(str)).set_index("id", drop=False)
with right:
    if selected:
        first = products.loc[selected[0]] if selected[0] in products.index else None
        if first is not None:
            with st.container(border=True):
                if first_modality:
                    st.caption(f"its {ui.MODALITY_NAMES.get(first_modality, first_modality)} point")
                ui.photo(first["image"])
                st.text(first["title"])
                st.caption(" · ".join(ui.esc(first.get(h.name, "")) for h in heads if h.kind == "single"))
                if st.button("Show its neighbours", key="map_neighbours", icon=":material/hub:"):
                    st.session_state["nb_product"] = selected[0]
                    st.switch_page("pages/neighbours.py")
    else:
        st.info("Click a point to see the product here, or drag a box / lasso around a group (toolbar, top right).")

if selected:
    chosen = products.loc[[i for i in selected if i in products.index]]
    st.subheader(f"{len(chosen)} selected products", anchor=False)
    if len(chosen) > 1:
        top = chosen[leaf].value_counts().head(5) if leaf in chosen else pd.Series(dtype=int)
        st.caption("Most common " + ui.esc(leaf) + ": " + ", ".join(f"{ui.esc(k)} ({v})" for k, v in top.items()))
    table = chosen[["id", "title"] + [h.name for h in heads if h.name in chosen]].copy()
    table.insert(0, "photo", [ui.thumb_uri(p) if i < MAX_THUMBS else None for i, p in enumerate(chosen["image"])])
    st.dataframe(table, hide_index=True, column_config=ui.label_columns(heads), key="map_table", row_height=60)
    grid = [ui.HitLike(i, r["title"], r["image"]) for i, r in chosen.head(18).iterrows()]
    ui.hit_grid(grid, n_cols=6, show_score=False, key="map_grid", on_pick="nb_product")
