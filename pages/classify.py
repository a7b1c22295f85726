"""Classify: photos and/or a title -> labels per head from photo, title and both; nearest products; zero-shot."""

from __future__ import annotations

import streamlit as st

import ui
from huse_core.data import uploads

ui.page_setup("pages/classify.py")

MAX_PHOTOS = 12  # per rerun: each photo is classified, searched and ranked

st.title("Classify products")
st.caption("Upload product photos and/or type a title: the model predicts every label it was trained on, from the "
           "photo, from the title and from both together, and finds the closest products in your catalogue.")
run_dir = ui.run_or_stop()
run, searcher = ui.model_and_searcher_or_stop(run_dir)  # classifying needs only the model; nearest products the index
heads = run.heads
if searcher is None:
    st.warning(f"The run **{ui.esc(run_dir.name)}** has no search index yet, or an outdated one: the labels below "
               "come from the model alone; the closest catalogue products need the index.")
    ui.offer_index_build(run_dir)

c1, c2 = st.columns([3, 2])
files = c1.file_uploader("Product photos", type=ui.IMAGE_TYPES, accept_multiple_files=True, key="cls_files",
                         help="png, jpg, webp or gif; one result card per photo.")
title = c2.text_input("Product title", key="cls_title", placeholder="e.g. Women's Navy Blue Striped Midi Dress",
                      help="Optional with photos (it is used with each of them); enough on its own too.")
labels_text = c2.text_input("Your own labels, comma-separated (optional)", key="cls_zero",
                            placeholder="party wear, office, beach holiday",
                            help="Zero-shot: the model ranks these words by how close they are to each product, "
                                 "even though it was never trained on them.")
title = (title or "").strip()
if title and ui.unknown_words(run, title):
    c2.warning("None of these words occur in the catalogue the model learned from, so the title tells it nothing.")

items: list[dict] = []
for f in (files or [])[:MAX_PHOTOS]:
    data = f.getvalue()
    problem = uploads.check_image(data, f.name)
    if problem:
        st.error(f"Skipped {ui.esc(problem)}")
        continue
    items.append({"name": f.name, "image": data, "text": title or None})
if files and len(files) > MAX_PHOTOS:
    st.warning(f"Showing the first {MAX_PHOTOS} of {len(files)} photos; use the Catalogue page for bulk uploads.")
if not files and title:
    items.append({"name": None, "image": None, "text": title})
if not items:
    if not files:
        st.info("Upload a product photo or type a title to classify it.")
    st.stop()

zero_labels = [x.strip() for x in (labels_text or "").split(",") if x.strip()][:30]
leaf = run.leaf_head.name  # the card's headline: the finest category the model predicts


def result_card(n: int, item: dict) -> None:
    try:
        pred = run.classify(image=item["image"], text=item["text"], top=3)
    except Exception as err:  # noqa: BLE001 - an odd input must give a message, not a traceback
        st.error(f"Could not classify {ui.esc(item['name'] or 'the title')}: {ui.describe(err)}")
        return
    modalities = [m for m in ("fused", "image", "text") if any(m in per for per in pred.values())]
    best = modalities[0]
    with st.container(border=True):
        left, right = st.columns([1, 3])
        with left:
            if item["image"] is not None:
                st.image(ui.preview(item["image"]), width="stretch")
                st.caption(ui.esc(item["name"]))
            if item["text"]:
                st.text(item["text"])
        with right:
            top = pred[leaf][best][0]
            st.markdown(f"#### {ui.esc(top.get('path') or top['label'])}")
            st.caption(f"from the {ui.MODALITY_NAMES[best]} · {top['prob']:.0%} confident")
            widths = [1.3] + [2] * len(modalities)
            header = st.columns(widths)
            for col, m in zip(header[1:], modalities):
                col.markdown(f"**From the {ui.MODALITY_NAMES[m]}**")
            for head in heads:
                cols = st.columns(widths, vertical_alignment="bottom")
                cols[0].markdown(ui.esc(head.name))
                for col, m in zip(cols[1:], modalities):
                    with col:
                        ui.prob_bars(pred.get(head.name, {}).get(m, []), max_rows=1)
            with st.expander("Runner-up labels", icon=":material/format_list_numbered:"):
                rows = [{"head": h, "from": ui.MODALITY_NAMES[m], "rank": r + 1, "label": x.get("path") or x["label"],
                         "confidence": x["prob"]}
                        for h, per in pred.items() for m in modalities for r, x in enumerate(per.get(m, []))]
                st.dataframe(rows, hide_index=True, key=f"cls_top_{n}", column_config={
                    "label": st.column_config.TextColumn("label"),
                    "confidence": st.column_config.ProgressColumn("confidence", format="percent", min_value=0,
                                                                  max_value=1)})
        if zero_labels:
            try:
                ranked = run.zero_shot(zero_labels, image=item["image"], text=item["text"])
            except Exception as err:  # noqa: BLE001
                st.error(f"Zero-shot ranking failed: {ui.describe(err)}")
                ranked = []
            unknown = [label for label in zero_labels if ui.unknown_words(run, label)]
            if unknown:
                st.caption("The model never saw the words of " + ", ".join(f"“{ui.esc(u)}”" for u in unknown)
                           + " in your catalogue, so their rank means little; use words shoppers use in titles.")
            if ranked:
                st.markdown("**Your labels, closest first**")
                zcols = st.columns(min(4, len(ranked)))
                for i, (label, score) in enumerate(ranked):
                    zcols[i % len(zcols)].progress(max(0.0, min(1.0, float(score))),
                                                   text=f"{ui.esc(label)} — {score:.2f}")
        if searcher is None:
            return  # no search index: the note at the top offers to build it
        st.markdown("**Closest catalogue products**")
        try:
            hits = searcher.search(text=item["text"], image=item["image"], target="image", k=6)
        except Exception as err:  # noqa: BLE001
            st.error(f"Search failed: {ui.describe(err)}")
            return
        ui.hit_grid(hits, n_cols=6, key=f"cls_hits_{n}", on_pick="nb_product")


for n, item in enumerate(items):
    result_card(n, item)
