"""The Evaluation tab of Train & evaluate: a run's test figures, retrieval tables, training history and its
confusion matrix, read from the run's typed summary (huse_core.summary) and, for the matrix, its predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from huse_core.training.validation import kept_accuracy

from .runs import cached_run, mtime, summary_of
from .text import DIRECTIONS, MODALITY_NAMES, describe

CATALOG_ROWS = ("t2i", "i2t", "t2i_labels", "t2i_hybrid")  # the whole-catalogue table's rows, when a run has them


@st.cache_data(show_spinner="Predicting the test split…", max_entries=4)
def test_predictions(run_dir: str, stamp: float) -> dict:
    from huse_core.training.evaluate import split_predictions

    return split_predictions(cached_run(Path(run_dir)))


def evaluate_button(run_dir: Path) -> None:
    """A run not evaluated yet: say so, and evaluate it on request."""
    st.info("This run has not been evaluated yet.")
    if st.button("Evaluate on the test split", key="eval_now", type="primary"):
        from huse_core.training.evaluate import evaluate

        with st.spinner("Evaluating…"):
            try:
                evaluate(run_dir, progress=False)
            except Exception as err:  # noqa: BLE001
                st.error(describe(err))
                return
        st.rerun()


def headline(test) -> None:
    """Four metrics and the accuracy of every head from each modality (+ the title baseline where fitted)."""
    leaf = test.leaf
    figure = lambda x, fmt: "–" if x is None else format(x, fmt)  # noqa: E731 - older runs may lack one
    c = st.columns(4)
    c[0].metric("test products", f"{test.n:,}")
    c[1].metric(f"{leaf} accuracy (fused)", figure(test.accuracy(leaf), ".1%"))
    c[2].metric("title → photo R@10", figure(test.recall("t2i"), ".1%"),
                help="Class level: one of the 10 nearest photos has the title's category.")
    c[3].metric("photo–title cosine", figure(test.pair_cosine, ".2f"),
                help="Mean cosine of a product's photo and title points: higher = smaller modality gap.")
    st.markdown("**Accuracy per head** (test split)")
    rows = [{"head": h, **{MOD: per.get(m, {}).get("accuracy") for m, MOD in MODALITY_NAMES.items()},
             "fused macro-F1": per.get("fused", {}).get("macro_f1")} for h, per in test.classification.items()]
    pct = {m: st.column_config.ProgressColumn(m, format="percent", min_value=0, max_value=1)
           for m in list(MODALITY_NAMES.values()) + ["fused macro-F1"]}
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config=pct, key="eval_heads")
    if test.baseline_model:  # fitted by evaluate on the train titles (huse_core/training/baseline.py)
        from huse_core.training.baseline import comparison_table

        st.markdown(f"**Beside the title baseline** ({test.baseline_model}, fitted on the train split; %)")
        st.dataframe(comparison_table(test.raw), key="eval_baseline")
    from huse_core.training.evaluate import wide_line  # the title's n-gram SVM (model/wide.py): where it counts

    if wide_line(test.raw):
        st.caption(wide_line(test.raw))


def retrieval_tables(test) -> None:
    """Class-level and instance R@K on the test split; the whole-catalogue table where the run has it."""
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Retrieval, class level** — a hit has the query's category")
        table = pd.DataFrame(test.class_level).T.rename(index=DIRECTIONS)
        st.dataframe(table.style.format("{:.1%}"), key="eval_class_rk")
    with c2:
        st.markdown("**Retrieval, instance** — a hit is the product itself (or the same title)")
        table = pd.DataFrame(test.instance).T.rename(index=DIRECTIONS)
        st.dataframe(table.style.format("{:.1%}"), key="eval_inst_rk")
    catalog = test.catalog  # runs evaluated before the whole-catalogue protocol lack it
    if catalog:
        st.markdown(f"**Retrieval, whole catalogue** — {catalog.n_queries:,} test titles (and their photos) "
                    f"searched among all {catalog.n_gallery:,} products; relevant = the same title. recall@k is "
                    "the share of a title's relevant products found (the public leaderboard's metric), R@k "
                    "(hit rate) whether any one is")
        table = pd.DataFrame({d: catalog.directions[d] for d in CATALOG_ROWS
                              if d in catalog.directions}).T.rename(index=DIRECTIONS)
        st.dataframe(table.style.format("{:.3f}"), key="eval_catalog_rk")


def history_charts(history: list[dict]) -> None:
    """Loss and validation accuracy per epoch, folded away."""
    with st.expander("Training history", icon=":material/show_chart:"):
        h1, h2 = st.columns(2)
        h1.caption("Loss per epoch")
        h1.line_chart(pd.DataFrame([{"epoch": r["epoch"], **r["loss"]} for r in history]).set_index("epoch"),
                      height=220)
        averaged = any("val_accuracy_ema" in r for r in history)  # trained with --ema: the better of the two
        h2.caption("Validation accuracy per epoch" + (" (of the weights or their moving average, whichever was "
                                                      "better)" if averaged else ""))
        h2.line_chart(pd.DataFrame([{"epoch": r["epoch"], **{MODALITY_NAMES[k]: v for k, v in
                                    kept_accuracy(r).items()}} for r in history]).set_index("epoch"), height=220)


def confusion(run_dir: Path, run, leaf: str) -> None:
    """One head's confusion matrix from a chosen modality, and its per-class accuracy."""
    from huse_core.training.evaluate import class_accuracy, confusion_matrix

    st.markdown("**Confusion matrix**")
    names = [h.name for h in run.single_heads]
    c1, c2 = st.columns([1, 2])
    head_name = c1.selectbox("Head", names, index=names.index(leaf) if leaf in names else 0, key="eval_head")
    modality = c2.segmented_control("From", list(MODALITY_NAMES), default="fused", format_func=MODALITY_NAMES.get,
                                    key="eval_modality", required=True)
    try:
        preds = test_predictions(str(run_dir), mtime(run_dir / "model.pt"))
    except Exception as err:  # noqa: BLE001 - e.g. the catalogue moved since training
        st.error(f"Could not predict the test split: {describe(err)}")
        return
    classes = run.head(head_name).classes
    cm = confusion_matrix(preds["labels"][head_name], preds["probs"][head_name][modality])
    n, support = len(classes), cm.sum(1)
    share = cm / np.maximum(support[:, None], 1)
    fig = go.Figure(go.Heatmap(z=share, x=classes, y=classes, colorscale="Blues", zmin=0, zmax=1,
                               customdata=cm, hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata} products"
                               " (%{z:.0%} of the row)<extra></extra>", colorbar={"title": "share"}))
    size = max(360, min(900, 26 * n + 160))
    fig.update_layout(height=size, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"title": "predicted", "tickangle": -45}, yaxis={"title": "true", "autorange": "reversed"})
    c1, c2 = st.columns([3, 2])
    c1.plotly_chart(fig, key="eval_confusion", config={"displaylogo": False})
    per_class = pd.DataFrame({"class": classes, "accuracy": class_accuracy(cm), "test products": support}
                             ).sort_values("accuracy")
    c2.caption(f"Per-class accuracy of {head_name}, from the {MODALITY_NAMES[modality]}")
    c2.dataframe(per_class, hide_index=True, height="auto" if n <= 12 else size - 40, key="eval_per_class",
                 column_config={"accuracy": st.column_config.ProgressColumn("accuracy", format="percent", min_value=0,
                                                                            max_value=1)})


def evaluation(run_dir: Path) -> None:
    """The whole tab for one run."""
    run = summary_of(run_dir)
    st.subheader(f"{run_dir.name}", anchor=False)
    if not run.test:
        evaluate_button(run_dir)
        return
    headline(run.test)
    retrieval_tables(run.test)
    if run.history:
        history_charts(run.history)
    confusion(run_dir, run, run.test.leaf)
