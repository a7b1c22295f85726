"""Shared pieces of the Streamlit app: where runs live, cached loaders, safe text, photo grids, upload folders.

Environment variables (all optional):
  HUSE_RUNS_DIR   folder holding the runs (default: runs/ beside app.py); the demo builds into <it>/demo
  HUSE_DATA_DIR   folder for catalogues (default: data/ beside app.py); the demo catalogue goes to <it>/demo
  HUSE_RUN        the run selected when a session starts (a path); with it set nothing is built at start
  HUSE_AUTOBUILD  "0" = on first start, ask before building the demo instead of building it straight away
  HUSE_DEMO_SIZE  "tiny" = the first start builds a 240-product toy demo in seconds (tests, smoke checks)
"""

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

from huse_core.artifacts import read_json

APP_DIR = Path(__file__).resolve().parent
IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "gif"]  # gif: animations give their first frame
MODALITY_NAMES = {"image": "photo", "text": "title", "fused": "photo + title"}
DIRECTIONS = {"i2i": "photo → photo", "i2t": "photo → title", "t2i": "title → photo", "t2t": "title → title"}


# ---------------------------------------------------------------- where things are


def runs_root() -> Path:
    return Path(os.environ.get("HUSE_RUNS_DIR") or APP_DIR / "runs").expanduser().resolve()


def data_root() -> Path:
    return Path(os.environ.get("HUSE_DATA_DIR") or APP_DIR / "data").expanduser().resolve()


def demo_spec():
    """What the first start builds: the demo shop (pipeline.DemoSpec), or with HUSE_DEMO_SIZE=tiny a 240-product,
    2-epoch toy (for tests and quick smoke checks; it classifies poorly)."""
    from huse_core.config import ModelConfig, TrainConfig
    from huse_core.pipeline import DemoSpec

    if os.environ.get("HUSE_DEMO_SIZE", "").lower() == "tiny":
        tiny = ModelConfig(cnn_width=8, hidden=64, dim=32, conv_channels=32, word_dim=16)
        return DemoSpec(n_products=240, model=tiny, train=TrainConfig(epochs=2, batch_size=32, threads=1))
    return DemoSpec()


def describe(err: BaseException) -> str:
    """An exception as a one-line message for the page (escaped): ours say what to do; others name their type."""
    text = str(err).strip() or type(err).__name__
    if not isinstance(err, (ValueError, RuntimeError, FileNotFoundError, FileExistsError)):
        text = f"{type(err).__name__}: {text}"
    return esc(text.splitlines()[0][:500] if text else text)


def demo_dirs() -> tuple[Path, Path]:
    """(demo catalogue folder, demo run folder)."""
    return data_root() / "demo", runs_root() / "demo"


def run_status(run_dir: Path) -> str | None:
    """run.json's status ("done", "training") or None when there is no readable run.json."""
    return _status(str(run_dir), mtime(Path(run_dir) / "run.json"))


@st.cache_data(show_spinner=False, max_entries=256)
def _status(run_dir: str, stamp: float) -> str | None:
    try:
        return read_json(Path(run_dir) / "run.json").get("status")
    except (OSError, ValueError, AttributeError):
        return None


def usable(run_dir: Path) -> bool:
    """A finished run whose build (if the app's pipeline made it) is complete."""
    from huse_core.pipeline import is_complete

    return run_status(run_dir) == "done" and (run_dir / "model.pt").is_file() and is_complete(run_dir)


def list_runs() -> list[Path]:
    """Every usable run under the runs folder, newest first (the demo run first when there is one)."""
    root = runs_root()
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and usable(p)]
    runs.sort(key=lambda p: (p.name != "demo", -(p / "model.pt").stat().st_mtime))
    return runs


def unfinished_runs() -> list[Path]:
    """Runs under the runs folder whose training stopped part-way and can be resumed."""
    root = runs_root()
    if not root.is_dir():
        return []
    return [p for p in sorted(root.iterdir()) if p.is_dir() and run_status(p) == "training"
            and (p / "last.pt").is_file()]


def current_run() -> Path | None:
    """The run this session works with (chosen in the sidebar; else HUSE_RUN or the first run found), or None."""
    value = st.session_state.get("_select_run") or st.session_state.get("run_dir")
    if not value:  # a page run without app.py (Streamlit's first request on a page URL; AppTest after a switch)
        env = os.environ.get("HUSE_RUN")
        runs = list_runs()
        value = str(Path(env).expanduser().resolve()) if env and usable(Path(env).expanduser()) else (
            str(runs[0]) if runs else None)
        st.session_state["run_dir"] = value
    return Path(value) if value else None


def page_setup(page: str) -> None:
    """Call first on every page. A fresh server's first request on a page URL (a bookmark) makes Streamlit run
    that pages/ file on its own, in its old folder-based mode, without app.py's sidebar; this sends such a run
    through app.py once, which then opens the page inside the app."""
    if st.session_state.get("_in_shell") or st.get_option("global.appTest"):
        return
    if st.session_state.pop("_redirected", None) == page:
        return  # already went through app.py once: render as is rather than loop
    st.session_state["_redirected"] = st.session_state["_goto"] = page
    st.switch_page("app.py")


def select_run(run_dir: Path) -> None:
    """Make `run_dir` the session's run from the next script run on (the sidebar picks it up)."""
    st.session_state["_select_run"] = str(run_dir)


# ---------------------------------------------------------------- cached loaders (once per process)


def mtime(path: Path) -> float:
    """A file's modification time (0 when missing): part of cache keys, so a changed file is read again."""
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return 0.0


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _load_run(run_dir: str, stamp: float):
    from huse_core.run import load_run

    return load_run(run_dir)


def load_run(run_dir: Path):
    """The run's model (huse_core.run.Run), loaded once per process and model file."""
    return _load_run(str(run_dir), mtime(run_dir / "model.pt"))


@st.cache_resource(show_spinner="Loading the model and the search index…", max_entries=4)
def _open_searcher(run_dir: str, stamp: tuple):
    from huse_core.retrieval.search import Searcher

    return Searcher.open(run_dir)


def open_searcher(run_dir: Path):
    """The run's Searcher (model + index + catalogue), opened once per process."""
    return _open_searcher(str(run_dir), (mtime(run_dir / "model.pt"), mtime(run_dir / "index" / "index.json")))


@st.cache_data(show_spinner=False, max_entries=8)
def read_meta(run_dir: str, stamp: float) -> dict:
    return read_json(Path(run_dir) / "run.json")


def meta_of(run_dir: Path) -> dict:
    """run.json of a run, re-read only when the file changes."""
    return read_meta(str(run_dir), mtime(run_dir / "run.json"))


def searcher_or_stop(run_dir: Path | None = None):
    """The Searcher of the current run; when there is none yet the page says why and what to do, and stops."""
    run_dir = run_dir or current_run()
    if run_dir is None:
        st.info("Pick a trained run in the sidebar first.")
        st.stop()
    from huse_core.retrieval.search import IndexMissingError

    try:
        return open_searcher(run_dir)
    except IndexMissingError as err:
        st.warning(f"The run **{esc(run_dir.name)}** has no search index yet, or an outdated one ({describe(err)}).")
        if st.button("Build the search index and map now", key="build_index_now", type="primary"):
            build_index_with_progress(run_dir)
            st.rerun()
        st.caption(f"Or in a terminal: {code(f'python -m huse_core index --run {run_dir}')}")
        st.stop()
    except Exception as err:  # noqa: BLE001 - a damaged run must give a message, not a traceback
        st.error(f"Could not open the run {esc(run_dir.name)}: {describe(err)}")
        st.stop()


def build_index_with_progress(run_dir: Path) -> None:
    """Build a run's index and map with a status box; errors become messages."""
    from huse_core.retrieval.build import build_index

    with st.status("Building the search index…", expanded=True) as box:
        try:
            build_index(run_dir, progress=False, callback=lambda event: box.write(esc(event["message"])))
        except Exception as err:  # noqa: BLE001
            box.update(label="Building the index failed", state="error")
            st.error(describe(err))
            st.stop()
        box.update(label="Search index ready", state="complete")
    _open_searcher.clear()


# ---------------------------------------------------------------- safe text

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=\"'])")


_AUTOLINK = re.compile(r"(?i)(:(?=//)|www(?=\.)|@)")  # what GitHub-flavoured Markdown turns into links by itself
_NO_LINK = "\u200b"  # a zero-width space in "://", after "www" or "@": the text looks the same, but unlinked


def esc(text) -> str:
    """`text` made literal for st.markdown / st.caption / labels: every Markdown or directive character is
    backslash-escaped, bare URLs and e-mail addresses are kept from becoming links, and line breaks become
    spaces, so a product title can't format, link or inject HTML."""
    text = _AUTOLINK.sub(lambda m: m.group(1) + _NO_LINK, " ".join(str(text).split()))
    return _MD_SPECIAL.sub(r"\\\1", text)


def code(text) -> str:
    """`text` as a Markdown code span (shown literally; backticks and line breaks can't break out of it)."""
    return "`" + " ".join(str(text).replace("`", "'").split()) + "`"


def short(text, n: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


# ---------------------------------------------------------------- small widgets


PREVIEW_PX = 320  # uploads are shown decoded at this size, as the model sees them


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


@dataclass
class HitLike:
    """A catalogue product shaped like a search Hit, for hit_grid."""

    id: str
    title: str
    image: str
    score: float = 0.0
    labels: dict = field(default_factory=dict)
    added: bool = False


def prob_bars(rows: list[dict], max_rows: int = 3) -> None:
    """Predicted labels as progress bars: "Apparel › Topwear › Tshirts  87%"."""
    for row in rows[:max_rows]:
        label = row.get("path") or row["label"]
        st.progress(float(np.clip(row["prob"], 0.0, 1.0)), text=f"{esc(label)} — {row['prob']:.0%}")


def model_card(run_dir: Path, where=None) -> None:
    """Backbone, heads and class counts, catalogue size and test metrics of a run."""
    where = where or st
    meta = meta_of(run_dir)
    m = meta.get("model", {})
    heads = meta.get("heads", [])
    where.caption(f"Backbone **{esc(m.get('backbone', '?'))}** · space of **{m.get('dim', '?')}** dimensions · "
                  f"**{meta.get('catalog_size', 0):,}** products")
    where.caption("Heads: " + ", ".join(f"{esc(h['name'])} ({len(h['classes'])})" for h in heads))
    test = (meta.get("metrics") or {}).get("test")
    if not test:
        where.caption("No test metrics yet (evaluate it on the Train & evaluate page).")
        return
    leaf = test.get("leaf", meta.get("leaf"))
    acc = test["classification"].get(leaf, {})
    pct = lambda m: f"{acc.get(m, {}).get('accuracy', 0):.1%}"  # noqa: E731
    where.metric("Test accuracy", pct("fused"), border=True,
                 help=f"How often the finest category ({esc(leaf)}) is right on held-out test products, from "
                      "photo and title together.")
    r10 = test["retrieval"]["class_level"].get("t2i", {}).get("R@10", 0)
    where.caption(f"{esc(leaf)} from the photo alone **{pct('image')}**, from the title alone **{pct('text')}** · "
                  f"a title finds a same-category photo in its top 10: **{r10:.1%}**")


# ---------------------------------------------------------------- uploads


def upload_folder(kind: str, name: str) -> Path:
    """A fresh folder under the data folder for uploaded files, e.g. data/uploads/<name>-<time>."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "upload"
    folder = data_root() / kind / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---------------------------------------------------------------- training progress


class TrainMonitor:
    """Renders training events (training.train callback dicts) as a progress bar, metrics and live loss curves."""

    def __init__(self, where=None, overall: bool = False):
        where = where or st
        self.overall = overall
        self.bar = where.progress(0.0, text="Starting…")
        self.stats = where.empty()
        c1, c2 = where.columns(2)
        c1.caption("Training loss (per step)")
        self.loss_chart = c1.empty()
        c2.caption("Validation accuracy (per epoch)")
        self.acc_chart = c2.empty()
        self.losses: list[dict] = []
        self.accs: list[dict] = []
        self._last = 0.0

    def __call__(self, event: dict) -> None:
        stage = event.get("stage")
        if stage == "train" and "step" in event:
            frac = (event["epoch"] - 1 + event["step"] / event["steps"]) / event["epochs"]
            self.losses.append({"epoch": round(event["epoch"] - 1 + event["step"] / event["steps"], 3),
                                **{k: float(v) for k, v in event["loss"].items()}})
            now = time.time()
            if now - self._last < 0.25 and event["step"] != event["steps"]:
                return  # enough redraws to look live, few enough to keep training fast
            self._last = now
            self.stats.caption(f"epoch {event['epoch']}/{event['epochs']} · step {event['step']}/{event['steps']} · "
                               f"loss {event['loss']['total']:.3f}")
            self.loss_chart.line_chart(pd.DataFrame(self.losses).set_index("epoch"), height=220, x_label="epoch")
            value = event.get("overall", frac) if self.overall else frac
            self.bar.progress(min(1.0, float(value)), text=esc(event.get("message") or
                              f"Training: epoch {event['epoch']} of {event['epochs']}"))
        elif stage == "epoch":
            self.accs.append({"epoch": event["epoch"], **{MODALITY_NAMES.get(k, k): v
                                                          for k, v in event["val_accuracy"].items()}})
            if len(self.accs) < 2:  # one point draws no line
                self.acc_chart.caption(f"after epoch {event['epoch']}: " + " · ".join(
                    f"{k} {v:.1%}" for k, v in self.accs[-1].items() if k != "epoch"))
            else:
                self.acc_chart.line_chart(pd.DataFrame(self.accs).set_index("epoch"), height=220, x_label="epoch")
        elif "overall" in event or "message" in event:
            value = event.get("overall", 0.0) if self.overall else (1.0 if stage == "done" else 0.0)
            self.bar.progress(min(1.0, float(value)), text=esc(event.get("message", stage)))


@st.cache_data(show_spinner=False, max_entries=20_000)
def thumb_uri(path: str, size: int = 72) -> str | None:
    """A small PNG data URI of a photo, for st.dataframe's ImageColumn (local files aren't served)."""
    import base64

    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.save(buf, "PNG", optimize=True)
    except Exception:  # noqa: BLE001 - a missing or broken photo just shows no thumbnail
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def label_columns(heads: list[dict]) -> dict:
    """st.dataframe column configs: thumbnails as images, titles and labels as plain text."""
    cfg = {"photo": st.column_config.ImageColumn("photo", width="small"),
           "title": st.column_config.TextColumn("title", width="large"),
           "score": st.column_config.NumberColumn("score", format="%.3f")}
    cfg.update({h["name"]: st.column_config.TextColumn(h["name"]) for h in heads})
    return cfg


def hits_table(hits: list, heads: list[dict], key: str) -> None:
    """Hits as a table: thumbnail, title, score, labels (all rendered as text)."""
    if not hits:
        st.info("No matches.")
        return
    rows = [{"photo": thumb_uri(h.image), "title": h.title, "score": h.score,
             **{k: h.labels.get(k, "") for k in (x["name"] for x in heads)}, "id": h.id} for h in hits]
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config=label_columns(heads), key=key,
                 row_height=60)


def unknown_words(run, title: str) -> bool:
    """True when none of the title's words is in the model's vocabulary (the title then carries no signal)."""
    if run.model_cfg.text_backbone != "conv":
        return False  # a sentence encoder reads any words, so no title is unknown to it
    ids = run.tokenizer.encode([title])[0]
    return not (ids > 1).any()
