"""Neighbours: one catalogue product and its nearest neighbours in all four directions, and as a whole product."""

from __future__ import annotations

import random

import pandas as pd
import streamlit as st

import ui

ui.page_setup("pages/neighbours.py")

SAME, OTHER = ":green[:material/check_circle:]", ":gray[:material/radio_button_unchecked:]"

st.title("Neighbours")
st.caption("Pick a product to see what the model puts next to it: photos near its photo, titles near its photo, "
           "photos near its title and titles near its title. A green tick marks neighbours of the same category.")
searcher = ui.searcher_or_stop()
products: pd.DataFrame = searcher.products
heads = searcher.heads
leaf = searcher.run.leaf_head.name  # a neighbour of the same leaf class gets a green tick
ids = products["id"].astype(str)

if st.session_state.get("nb_product") not in set(ids):
    st.session_state["nb_product"] = None


def set_product(pid: str | None, clear_query: bool = True) -> None:
    st.session_state["nb_product"] = st.session_state["nb_select"] = pid
    if clear_query:
        st.session_state["nb_query"] = ""


def matching(query: str) -> list[str]:
    """Ids of products whose title contains `query` (any case), or whose id it is; at most 500."""
    q = (query or "").strip()
    if not q:
        return ids.head(500).tolist()
    hit = products["title"].str.lower().str.contains(q.lower(), regex=False) | (ids == q)
    return ids[hit].head(500).tolist()


def on_query() -> None:
    found = matching(st.session_state.get("nb_query", ""))
    if found:  # typing a search shows its best match straight away
        set_product(found[0], clear_query=False)


c1, c2, c3 = st.columns([3, 3, 1], vertical_alignment="bottom")
query = c1.text_input("Find a product", key="nb_query", placeholder="words from its title, or its id",
                      on_change=on_query)
options = matching(query)
if query and query.strip() and not options:
    c1.caption("No product title contains these words.")
current = st.session_state.get("nb_product")
if current and current not in options:
    options = [current] + options
titles = dict(zip(ids, products["title"]))
widget_set = st.session_state.get("nb_select") in options
c2.selectbox("Product", options, index=0 if widget_set else (options.index(current) if current in options else None),
             format_func=lambda i: f"{ui.short(titles.get(i, i), 70)} · {i}", key="nb_select",
             on_change=lambda: set_product(st.session_state["nb_select"], clear_query=False),
             placeholder="choose one of the matches" if options else "no product matches",
             help="Up to 500 matches are listed; type more words to narrow them.")
c3.button("Random", key="nb_random", on_click=lambda: set_product(random.choice(list(ids))), icon=":material/casino:")
if not current:
    st.info("Search for a product, pick one, or press Random. You can also pick products on the Map or in search "
            "results.")
    st.stop()

row = products[ids == current].iloc[0]
with st.container(border=True):
    p1, p2 = st.columns([1, 4])
    with p1:
        ui.photo(row["image"])
    with p2:
        st.markdown(f"### {ui.esc(row['title'])}")
        st.caption(f"id {ui.esc(current)}" + (" · added by you" if bool(row.get("added", False)) else ""))
        labels = {h.name: row.get(h.name, "") for h in heads}
        st.dataframe(pd.DataFrame([labels]), hide_index=True, key="nb_labels",
                     column_config={k: st.column_config.TextColumn(k) for k in labels})
k = st.slider("Neighbours per direction", 3, 12, 6, key="nb_k")
try:
    found = searcher.neighbours(current, k=k)
except Exception as err:  # noqa: BLE001
    st.error(f"Could not find neighbours: {ui.describe(err)}")
    st.stop()

mark = (leaf, str(row.get(leaf, "")))
cols = st.columns(4)
for col, direction in zip(cols, ("i2i", "i2t", "t2i", "t2t")):
    with col:
        st.markdown(f"**{ui.DIRECTIONS[direction]}**")
        hits = found.get(direction, [])
        same = sum(h.labels.get(leaf) == mark[1] for h in hits)
        st.caption(f"{same} of {len(hits)} are {ui.esc(mark[1])}")
        for hit in hits:
            with st.container(border=True):
                ok = SAME if hit.labels.get(leaf) == mark[1] else OTHER
                if direction.endswith("i"):
                    ui.photo(hit.image, width=120)
                    st.caption(f"{ok} {ui.esc(ui.short(hit.title, 70))} · {hit.score:.2f}")
                else:
                    st.caption(f"{ok} {hit.score:.2f} · {ui.esc(hit.labels.get(leaf, ''))}")
                    st.text(hit.title)
                st.button("Open", key=f"nb_open_{direction}_{hit.id}", type="tertiary",
                          on_click=set_product, args=(hit.id,))

if found.get("p2p"):  # the fusion layer's whole-product vectors: photo and title together
    hits = found["p2p"]
    same = sum(h.labels.get(leaf) == mark[1] for h in hits)
    st.markdown(f"**{ui.DIRECTIONS['p2p']}**")
    st.caption(f"Products that look *and* read alike (the fusion layer's vector of photo + title). {same} of "
               f"{len(hits)} are {ui.esc(mark[1])}")
    for col, hit in zip(st.columns(len(hits)), hits):
        with col, st.container(border=True):
            ui.photo(hit.image, width=100)
            ok = SAME if hit.labels.get(leaf) == mark[1] else OTHER
            st.caption(f"{ok} {ui.esc(ui.short(hit.title, 60))} · {hit.score:.2f}")
            st.button("Open", key=f"nb_open_p2p_{hit.id}", type="tertiary", on_click=set_product, args=(hit.id,))
