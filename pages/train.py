"""Train & evaluate: train a run on a catalogue in the background with live progress, then its evaluation.

The Evaluation tab's pieces live in ui/evaluation.py; the rules both halves show come from huse_core.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import streamlit as st

import ui
from huse_core import jobs
from huse_core.data import uploads
from huse_core.data.tables import ATTRIBUTE_COLS, IMAGE_COLS, LEVEL_COLS, TEXT_COLS, matching_columns, read_table
from huse_core.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from huse_core.model import backbone_choices, default_image_size

ui.page_setup("pages/train.py")

st.title("Train & evaluate")
train_tab, eval_tab = st.tabs(["Train a model", "Evaluation"])


# ---------------------------------------------------------------- choosing a catalogue


@st.cache_data(show_spinner=False, max_entries=16)
def peek(path: str, stamp: float) -> pd.DataFrame:
    """The first rows of a catalogue file, to offer its columns."""
    return read_table(path, nrows=200)


def trained_uploads() -> set[Path]:
    """Upload folders a run of this session trains on: kept (the run reads its catalogue and photos there)."""
    return st.session_state.setdefault("train_upload_runs", set())


def uploaded_catalog() -> Path | None:
    """A catalogue uploaded as a CSV plus a zip of its photos, unpacked once into the data folder."""
    c1, c2 = st.columns(2)
    csv = c1.file_uploader("Catalogue (CSV, TSV or Parquet)", type=["csv", "tsv", "parquet"], key="train_csv")
    photos = c2.file_uploader("Photos (a zip; paths as the CSV's image column names them)", type=["zip"],
                              key="train_zip")
    if csv is None or photos is None:
        st.info("Upload both files: the catalogue table and a zip of its photos.")
        return None
    key = (csv.file_id, photos.file_id)
    if st.session_state.get("train_upload_key") != key:
        previous = st.session_state.get("train_upload")
        if previous and Path(previous[0]).parent not in trained_uploads():
            uploads.discard(Path(previous[0]).parent)  # replaced before any run trained on it: nothing needs it
        folder = ui.upload_folder("uploads", Path(csv.name).stem)
        with st.spinner("Unpacking the photos…"):
            result = uploads.safe_extract(photos.getvalue(), folder)
        suffix = Path(csv.name).suffix.lower() or ".csv"
        (folder / f"catalogue{suffix}").write_bytes(csv.getvalue())
        root = images_root_for(folder, list(result.files), csv.getvalue(), suffix)
        st.session_state["train_upload_key"] = key
        st.session_state["train_upload"] = (str(folder / f"catalogue{suffix}"), len(result.files), result.problems,
                                            root)
    path, n_files, problems, root = st.session_state["train_upload"]
    st.session_state["train_images_root"] = root
    st.caption(f"Unpacked {n_files:,} files into {ui.code(Path(path).parent)}.")
    if problems:
        with st.expander(f"{len(problems)} zip entries were not used", icon=":material/warning:"):
            st.text("\n".join(problems[:200]))
    return Path(path)


def images_root_for(folder: Path, names: list[str], table: bytes, suffix: str) -> str:
    """Where the table's image paths start: "" (the upload folder) when they resolve there, else the zip's one
    top-level folder ("shop/images/1.jpg" in the zip while the table says "images/1.jpg"), if it has one."""
    if _paths_resolve(folder, table, suffix):
        return ""
    tops = {Path(n.replace("\\", "/")).parts[0] for n in names if len(Path(n.replace("\\", "/")).parts) > 1}
    return str(folder / tops.pop()) if len(tops) == 1 else ""


def _paths_resolve(folder: Path, table: bytes, suffix: str) -> bool:
    """Whether the uploaded table's first image paths exist relative to the upload folder."""
    try:
        df = read_table(table, f"catalogue{suffix}", nrows=20)
    except ValueError:  # an unreadable table is reported when it is read for real
        return True
    col = next(iter(matching_columns(df.columns, IMAGE_COLS)), None)
    return col is None or any((folder / str(v)).is_file() for v in df[col].dropna().head(20))


def choose_catalog() -> Path | None:
    st.session_state["train_images_root"] = ""
    source = st.segmented_control("Catalogue", ["Demo shop", "A file on this computer", "Upload"], default="Demo shop",
                                  key="train_source", required=True)
    if source == "Demo shop":
        csv = ui.demo_dirs()[0] / "metadata.csv"
        if not csv.is_file():
            st.warning("The demo catalogue isn't there yet; it is made on the app's first start.")
            return None
        return csv
    if source == "A file on this computer":
        typed = st.text_input("Catalogue file", key="train_path", placeholder="/data/myshop/metadata.csv",
                              help="A CSV or Parquet file; image paths in it are relative to its folder.")
        if not typed:
            st.info("Type the path of your catalogue file (one row per product: id, title, image, label columns).")
            return None
        path = Path(typed).expanduser()
        if not path.is_file():
            st.error(f"No file at {ui.code(path)}.")
            return None
        return path
    return uploaded_catalog()


# ---------------------------------------------------------------- training


def train_form() -> None:
    csv = choose_catalog()
    if csv is None:
        return
    try:
        head = peek(str(csv), csv.stat().st_mtime)
    except Exception as err:  # noqa: BLE001 - any unreadable table is a message
        st.error(ui.sentence(ui.describe(err)))  # "could not read <file> as CSV: ..."
        return
    cols = [str(c) for c in head.columns]
    with st.expander(f"Preview of {csv.name} ({len(cols)} columns)", icon=":material/table:"):
        st.dataframe(head.head(20), hide_index=True, key="train_preview")

    st.subheader("Columns", anchor=False)
    c1, c2, c3 = st.columns(3)
    title_default = (matching_columns(cols, TEXT_COLS) or cols)[0]
    text_col = c1.selectbox("Title", cols, index=cols.index(title_default), key="train_text_col")
    image_opts = ["(images/<id>.jpg)"] + cols
    image_default = (matching_columns(cols, IMAGE_COLS) or ["(images/<id>.jpg)"])[0]
    image_col = c2.selectbox("Photo path", image_opts, index=image_opts.index(image_default), key="train_image_col")
    id_opts = ["(row number)"] + cols
    id_default = (matching_columns(cols, ("id",)) or ["(row number)"])[0]
    id_col = c3.selectbox("Product id", id_opts, index=id_opts.index(id_default), key="train_id_col")
    label_cols = [c for c in cols if c not in (text_col, image_col, id_col)]
    levels = st.multiselect("Category hierarchy, coarse → fine", label_cols, key="train_levels",
                            default=[c for c in matching_columns(cols, LEVEL_COLS) if c in label_cols],
                            help="Each becomes a head; the finest one drives the semantic-graph loss.")
    other_cols = [c for c in label_cols if c not in levels]
    attrs = st.multiselect("Other labels (one head each)", other_cols, key="train_attrs",
                           default=[c for c in matching_columns(cols, ATTRIBUTE_COLS) if c in other_cols])
    if not levels and not attrs:
        st.warning("Choose at least one label column: the model learns its space from them.")
        return

    st.subheader("Model and training", anchor=False)
    c1, c2, c3, c4 = st.columns(4)
    missing_weights = backbone_choices()  # backbone -> None, or what is missing and how to get it
    backbone = c1.selectbox("Photo backbone", list(missing_weights), key="train_backbone",
                            help="cnn trains from scratch. lite0 (EfficientNet-Lite0) uses the ImageNet weights its "
                                 "package ships; resnet18/resnet50/vgg16 use weights from torch's cache (frozen: "
                                 "features computed once).")
    epochs = c2.slider("Epochs (at most; 0 = auto)", 0, 60, 0, key="train_epochs",
                       help="Auto: chosen from the catalogue's size (more epochs for a small shop). Training stops "
                            "early when the validation score stops improving.")
    batch = c3.select_slider("Batch size", ["auto", 32, 64, 128, 256], value="auto", key="train_batch",
                             help="Auto: 32 for a small shop up to 256 for a very large catalogue.")
    lr = c4.select_slider("Learning rate", ["auto", 3e-4, 1e-3, 2e-3, 5e-3], value="auto", key="train_lr",
                          help="Auto: 2e-3 at batch 128, scaled with the batch size.")
    if missing_weights[backbone]:
        st.warning(f"No ImageNet weights for {backbone} on this machine: {missing_weights[backbone]}. "
                   "Or use cnn, which trains from scratch.")
        return
    encoders = hub_encoders()
    if encoders is None:
        return
    with st.expander("Loss weights (L = α·classification + β·semantic graph + γ·modality gap)",
                     icon=":material/tune:"):
        c1, c2, c3 = st.columns(3)
        alpha = c1.number_input("α classification", 0.0, 10.0, LossConfig.alpha, 0.1, key="train_alpha")
        beta = c2.number_input("β semantic graph", 0.0, 10.0, LossConfig.beta, 0.1, key="train_beta")
        gamma = c3.number_input("γ modality gap", 0.0, 10.0, LossConfig.gamma, 0.1, key="train_gamma")
    losses = [name for name, w in (("cls", alpha), ("graph", beta), ("gap", gamma)) if w > 0]
    if not losses:
        st.warning("At least one loss weight must be above zero.")
        return

    default_name = re.sub(r"[^A-Za-z0-9_-]+", "-", csv.parent.name if csv.stem in ("metadata", "catalogue")
                          else csv.stem).strip("-") or "shop"
    name = st.text_input("Run name", value=f"{default_name}-{time.strftime('%m%d-%H%M')}", key="train_name",
                         help="The run is saved in the runs folder under this name.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name or ""):
        st.error("A run name uses letters, digits, '-', '_' or '.', and starts with a letter or digit.")
        return
    run_dir = ui.runs_root() / name
    if (run_dir / "run.json").exists():
        st.error(f"A run called {ui.esc(name)} exists already; choose another name.")
        return
    build_index = st.checkbox("Also build the search index and map (for Search, Neighbours and Map)", value=True,
                              key="train_build_index")
    st.caption("Training runs in the background (a few minutes for a few thousand products on a laptop; the "
               "automatic schedule gives a small shop more epochs): you can leave this page, or close the app, and "
               "come back. Stop ends it; Resume carries on from the last finished epoch.")
    if not st.button("Train", type="primary", key="train_start", icon=":material/play_arrow:"):
        return
    backbone = encoders.get("backbone", backbone)  # a hub photo encoder replaces the picked backbone
    data_cfg = DataConfig(catalog=str(csv), images_root=st.session_state.get("train_images_root", ""),
                          text_col=text_col, id_col="" if id_col.startswith("(") else id_col,
                          image_col="" if image_col.startswith("(") else image_col, levels=levels, attributes=attrs,
                          image_size=default_image_size(backbone))
    model_cfg = ModelConfig(**{**encoders, "backbone": backbone})
    loss_cfg = LossConfig(losses=losses, alpha=alpha, beta=beta, gamma=gamma)
    train_cfg = TrainConfig(epochs=epochs or None, batch_size=None if batch == "auto" else batch,
                            lr=None if lr == "auto" else lr)  # None: the size-aware schedule chooses
    trained_uploads().add(Path(csv).parent)  # an uploaded catalogue stays while a run uses it
    ui.launch(run_dir, lambda: jobs.start_training(run_dir, data_cfg, model_cfg, loss_cfg, train_cfg,
                                                   index=build_index))


def hub_encoders() -> dict | None:
    """The optional hub encoders typed in (ModelConfig fields: backbone, text_backbone and their weights), {} for
    none, or None after showing why the names can't be used (an unknown form, or the package missing; weights are
    looked for when training starts, whose error shows the same way)."""
    from huse_core.model import hub

    with st.expander("Pretrained encoders from a model hub (optional)", icon=":material/cloud_download:"):
        st.caption("open_clip, timm or sentence-transformers encoders under the towers, frozen, their features "
                   "computed once (`pip install -r requirements-pretrained.txt`). Weights come from the Hugging "
                   "Face hub cache, or from a file or folder given here.")
        c1, c2 = st.columns(2)
        names = {"backbone": c1.text_input("Photo encoder", key="train_hub_photo",
                                           placeholder="openclip:ViT-B-32/laion2b_s34b_b79k or timm:NAME"),
                 "text_backbone": c2.text_input("Title encoder", key="train_hub_title",
                                                placeholder="openclip:ViT-B-32/laion2b_s34b_b79k or st:NAME")}
        weights = {"image_weights": c1.text_input("Photo encoder weights (empty: the hub cache)",
                                                  key="train_hub_photo_weights"),
                   "text_weights": c2.text_input("Title encoder weights (empty: the hub cache)",
                                                 key="train_hub_title_weights")}
    chosen = {k: v.strip() for k, v in {**names, **weights}.items() if v.strip()}
    try:
        for field, role in (("backbone", "image"), ("text_backbone", "text")):
            if field in chosen:
                hub.parse(chosen[field], role=role)
        if "backbone" in chosen:
            default_image_size(chosen["backbone"])  # the package is installed and knows the model
    except (ValueError, FileNotFoundError) as err:  # weights are looked for (or fetched) when training starts
        st.error(ui.describe(err))
        return None
    return chosen


with train_tab:
    if done := st.session_state.pop("train_done", None):
        st.success(f"The run {ui.esc(done)} is ready and selected in the sidebar; its results are on the "
                   "Evaluation tab.")
    ui.jobs_section()
    train_form()


with eval_tab:
    current = ui.current_run()
    if current is None:
        st.info("Pick a run in the sidebar to see its evaluation.")
    else:
        ui.evaluation(current)
