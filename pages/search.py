"""Search: a title and/or a photo -> matching product photos and titles, with filters by label."""

from __future__ import annotations

import streamlit as st

import ui
from huse_core.data import uploads
from huse_core.retrieval.hybrid import DEFAULT_MODE, MODES

ui.page_setup("pages/search.py")

ANY = "(any)"
MODE_NAMES = {"hybrid": "both", "vector": "meaning", "keyword": "words"}

st.title("Search the catalogue")
st.caption("Type what you are looking for, or upload a photo to find look-alikes. Photo and words together refine "
           "a photo search: a shirt photo plus \"in blue\".")
searcher = ui.searcher_or_stop()
heads = searcher.heads

c1, c2 = st.columns([3, 2])
text = c1.text_input("Search by title", key="search_text", placeholder="e.g. red striped t-shirt for men")
upload = c2.file_uploader("…or by photo", type=ui.IMAGE_TYPES, key="search_photo")
text = (text or "").strip()

with st.expander("Options and filters", icon=":material/tune:", expanded=False):
    o1, o2, o3 = st.columns(3)
    kinds = ["photos", "titles", "both"] + (["whole products"] if searcher.run.model.fusion is not None else [])
    target = o1.segmented_control("Show", kinds, default="both", key="search_target",
                                  required=True, help="Which side of the catalogue to search: product photos, "
                                                      "product titles, both side by side, or whole products (photo "
                                                      "and title together; a photo plus words is one query).")
    mode = o1.segmented_control("Match words by", list(MODES), default=DEFAULT_MODE, key="search_mode",
                                required=True, format_func=MODE_NAMES.get,
                                help="For words alone. Both: meaning (the shared space and the labels your words "
                                     "suggest) and the words themselves in titles and labels, typos forgiven. "
                                     "Meaning: the shared space and labels only. Words: keyword search (BM25) only.")
    k = o2.slider("Results", 4, 48, 12, step=4, key="search_k")
    weight = o3.slider("Photo vs words", 0.0, 1.0, 0.5, 0.05, key="search_weight",
                       help="With both a photo and words: 1 = only the photo counts, 0 = only the words.")
    filters = {}
    shown = [h for h in heads if h["kind"] == "single"]
    fcols = st.columns(min(4, max(1, len(shown))))
    for i, h in enumerate(shown):
        value = fcols[i % len(fcols)].selectbox(h["name"], [ANY] + list(h["classes"]), key=f"search_f_{h['name']}")
        if value != ANY:
            filters[h["name"]] = value

image = None
if upload is not None:
    data = upload.getvalue()
    problem = uploads.check_image(data, upload.name)
    if problem:
        st.error(f"That file can't be used: {ui.esc(problem)}")
    else:
        image = data
if not text and image is None:
    if upload is None:
        st.info("Type a few words or upload a photo to search.")
    st.stop()
if text and ui.unknown_words(searcher.run, text):
    st.warning("None of these words occur in the catalogue the model learned from; try other words.")

if image is not None:
    q1, q2 = st.columns([1, 5])
    q1.image(ui.preview(image), width="stretch")
    q2.caption("Searching with this photo" + (f" and your words, mixed {weight:.0%} photo / {1 - weight:.0%} words "
                                              "(change it under Options)" if text else ""))
elif text and mode == "keyword":
    st.caption("Ranked by your words in each product's title and labels (keyword search; score = closeness)")
elif text:
    read = ""
    if mode == "hybrid":
        read = (". Read as labels and brands: products carrying them first, ordered by how well their labels fit"
                if searcher.query_kind(text) == "attribute" else
                ". Read as a title: your words first, closeness orders the products they leave tied")
    st.caption("Ranked by closeness to your words and by how well each product's labels fit the classes your words "
               "suggest" + (", and by your words in titles and labels" if mode == "hybrid" else "") + read
               + " (score = closeness alone)")
if filters:
    st.caption("Filters: " + " · ".join(f"{ui.esc(h)} = {ui.esc(v)}" for h, v in filters.items()))


def run_search(target_modality: str):
    try:
        return searcher.search(text=text or None, image=image, target=target_modality, k=k, filters=filters or None,
                               image_weight=weight, mode=mode if image is None else "vector")
    except Exception as err:  # noqa: BLE001 - bad input becomes a message
        st.error(f"Search failed: {ui.describe(err)}")
        return []


if target in ("photos", "both"):
    st.subheader("Matching photos", anchor=False)
    ui.hit_grid(run_search("image"), n_cols=6, key="search_img", on_pick="nb_product")
if target in ("titles", "both"):
    st.subheader("Matching titles", anchor=False)
    ui.hits_table(run_search("text"), heads, key="search_titles")
if target == "whole products":
    st.subheader("Matching products", anchor=False)
    ui.hit_grid(run_search("product"), n_cols=6, key="search_prod", on_pick="nb_product")
