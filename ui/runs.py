"""Where runs live, which one this session uses, and their model, run.json and search index loaded once per process."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from huse_core.artifacts import read_json

from .text import code, describe, esc

APP_DIR = Path(__file__).resolve().parents[1]  # the folder of app.py


# ---------------------------------------------------------------- where things are


def runs_root() -> Path:
    return Path(os.environ.get("HUSE_RUNS_DIR") or APP_DIR / "runs").expanduser().resolve()


def data_root() -> Path:
    return Path(os.environ.get("HUSE_DATA_DIR") or APP_DIR / "data").expanduser().resolve()


def demo_spec():
    """What the first start builds: the demo shop (pipeline.DemoSpec), or with HUSE_DEMO_SIZE=tiny a 240-product,
    2-epoch toy (DemoSpec.tiny: for tests and quick smoke checks; it classifies poorly)."""
    from huse_core.pipeline import DemoSpec

    return DemoSpec.tiny() if os.environ.get("HUSE_DEMO_SIZE", "").lower() == "tiny" else DemoSpec()


def demo_dirs() -> tuple[Path, Path]:
    """(demo catalogue folder, demo run folder)."""
    return data_root() / "demo", runs_root() / "demo"


def mtime(path: Path) -> float:
    """A file's modification time (0 when missing): part of cache keys, so a changed file is read again."""
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return 0.0


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


# ---------------------------------------------------------------- this session's run


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


def select_run(run_dir: Path) -> None:
    """Make `run_dir` the session's run from the next script run on (the sidebar picks it up)."""
    st.session_state["_select_run"] = str(run_dir)


def page_setup(page: str) -> None:
    """Call first on every page. Streamlit (1.67) decides at a fresh server's first session, before any script
    runs, that an app with a pages/ folder beside app.py uses its old folder-based navigation, and only app.py's
    st.navigation switches that off; no setting does. Until then a first request on a page URL (a bookmark) runs
    that pages/ file on its own, without app.py's sidebar: this sends such a run through app.py once, which then
    opens the page inside the app."""
    if st.session_state.get("_in_shell") or st.get_option("global.appTest"):
        return
    if st.session_state.pop("_redirected", None) == page:
        return  # already went through app.py once: render as is rather than loop
    st.session_state["_redirected"] = st.session_state["_goto"] = page
    st.switch_page("app.py")


# ---------------------------------------------------------------- cached loaders (once per process)


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _cached_run(run_dir: str, stamp: float):
    from huse_core.run import load_run

    return load_run(run_dir)


def cached_run(run_dir: Path):
    """The run's model (huse_core.run.Run), loaded once per process and model file."""
    return _cached_run(str(run_dir), mtime(run_dir / "model.pt"))


@st.cache_resource(show_spinner="Loading the model and the search index…", max_entries=4)
def _open_searcher(run_dir: str, stamp: tuple):
    from huse_core.retrieval.search import Searcher

    return Searcher.open(run_dir)


def open_searcher(run_dir: Path):
    """The run's Searcher (model + index + catalogue), opened once per process."""
    return _open_searcher(str(run_dir), (mtime(run_dir / "model.pt"), mtime(run_dir / "index" / "index.json")))


@st.cache_data(show_spinner=False, max_entries=8)
def _run_json(run_dir: str, stamp: float) -> dict:
    return read_json(Path(run_dir) / "run.json")


def meta_of(run_dir: Path) -> dict:
    """run.json of a run, re-read only when the file changes."""
    return _run_json(str(run_dir), mtime(run_dir / "run.json"))


def summary_of(run_dir: Path):
    """The figures the app shows of a run (huse_core.summary.RunSummary), from its run.json."""
    from huse_core.summary import RunSummary

    return RunSummary.from_meta(meta_of(run_dir), run_dir)


# ---------------------------------------------------------------- a run for the page, or why not


def run_or_stop() -> Path:
    """The current run's folder; when there is none the page says so and stops."""
    run_dir = current_run()
    if run_dir is None:
        st.info("Pick a trained run in the sidebar first.")
        st.stop()
    return run_dir


def searcher_or_stop(run_dir: Path | None = None):
    """The Searcher of the current run; when there is none yet the page says why and what to do, and stops."""
    run_dir = run_dir or run_or_stop()
    from huse_core.retrieval.search import IndexMissingError

    try:
        return open_searcher(run_dir)
    except IndexMissingError as err:
        st.warning(f"The run **{esc(run_dir.name)}** has no search index yet, or an outdated one ({describe(err)}).")
        offer_index_build(run_dir)
        st.stop()
    except Exception as err:  # noqa: BLE001 - a damaged run must give a message, not a traceback
        st.error(f"Could not open the run {esc(run_dir.name)}: {describe(err)}")
        st.stop()


def model_and_searcher_or_stop(run_dir: Path | None = None):
    """(Run, Searcher or None) of the current run: its model, and its Searcher when it has a search index
    (classifying needs only the model). A run that can't be opened stops the page with a message."""
    run_dir = run_dir or run_or_stop()
    from huse_core.retrieval.search import IndexMissingError

    try:
        try:
            searcher = open_searcher(run_dir)
            return searcher.run, searcher
        except IndexMissingError:
            return cached_run(run_dir), None
    except Exception as err:  # noqa: BLE001 - a damaged run must give a message, not a traceback
        st.error(f"Could not open the run {esc(run_dir.name)}: {describe(err)}")
        st.stop()


def offer_index_build(run_dir: Path) -> None:
    """A button that builds the run's search index and map, and the terminal command that does the same."""
    if st.button("Build the search index and map now", key="build_index_now", type="primary"):
        build_index_with_progress(run_dir)
        st.rerun()
    st.caption(f"Or in a terminal: {code(f'python -m huse_core index --run {run_dir}')}")


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
