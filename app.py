"""The shop workbench: `streamlit run app.py`. Sidebar: run picker and model card; pages: one screen each in pages/.

On the very first start (no trained run yet) it builds the demo shop: catalogue -> model -> index -> map.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

import ui

st.set_page_config(page_title="HUSE shop workbench", page_icon=":material/storefront:", layout="wide")
# .streamlit/config.toml turns the sidebar page menu off, so a fresh server's first paint doesn't flash Streamlit's
# own list of the pages/ files (see ui.page_setup); the app's st.navigation menu below turns it back on.
st.set_option("client.showSidebarNavigation", True)

PAGES = [
    st.Page("pages/classify.py", title="Classify", icon=":material/label:", default=True),
    st.Page("pages/search.py", title="Search", icon=":material/search:"),
    st.Page("pages/neighbours.py", title="Neighbours", icon=":material/hub:"),
    st.Page("pages/map.py", title="Map", icon=":material/scatter_plot:"),
    st.Page("pages/catalogue.py", title="Catalogue", icon=":material/inventory_2:"),
    st.Page("pages/train.py", title="Train & evaluate", icon=":material/model_training:"),
]


BUILD_STAGES = {"demo": "demo catalogue", "train": "training", "evaluate": "test metrics", "index": "search index",
                "map": "map"}
STAGE_OF = {"demo": "demo", "data": "train", "features": "train", "train": "train", "epoch": "train", "done": "train",
            "evaluate": "evaluate", "index": "index", "map": "map", "complete": None}


def stage_line(current: str) -> str:
    """The build's stages as one line: finished ones ticked, the current one in bold."""
    names = list(BUILD_STAGES)
    parts = []
    for name in names:
        if names.index(name) < names.index(current):
            parts.append(f":green[:material/check_circle:] {BUILD_STAGES[name]}")
        elif name == current:
            parts.append(f":blue[:material/progress_activity:] **{BUILD_STAGES[name]}**")
        else:
            parts.append(f":gray[{BUILD_STAGES[name]}]")
    return " &nbsp;→&nbsp; ".join(parts)


def first_start() -> None:
    """No run yet: say so, and build the demo shop with live progress."""
    from huse_core.pipeline import build_demo, remove_build, stage_state

    data_dir, run_dir = ui.demo_dirs()
    st.title("Welcome to the HUSE shop workbench")
    if os.environ.get("HUSE_RUN"):
        st.error(f"HUSE_RUN is set to {ui.code(os.environ['HUSE_RUN'])}, which is not a finished run. "
                 "Point it at a run folder holding run.json (status done) and model.pt, or unset it.")
        st.stop()
    resuming = bool(stage_state(run_dir)["done"]) or ui.run_status(run_dir) == "training"
    st.markdown(
        "There is no trained model here yet, so the workbench is building its **demo shop**: a synthetic "
        "catalogue of 3,000 products, a photo + title model trained on it, a search index and a map. "
        "It takes about three minutes on a laptop and only happens once.\n\n"
        f"Catalogue: {ui.code(data_dir)} · model: {ui.code(run_dir)}")
    if resuming:
        st.info("An earlier build was interrupted; it carries on from where it stopped.")
    if os.environ.get("HUSE_AUTOBUILD", "1") == "0":
        if not st.button("Build the demo shop", key="build_demo", type="primary", icon=":material/rocket_launch:"):
            st.caption("Or train on your own catalogue from a terminal: "
                       "`python -m huse_core train --catalog metadata.csv --out runs/myshop`, then refresh.")
            st.stop()
    failure = None
    with st.status("Building the demo shop…", expanded=True) as box:
        steps = box.empty()
        monitor = ui.TrainMonitor(box, overall=True)
        current = {"stage": None}
        if ui.run_status(run_dir) == "training":  # resuming: redraw the epochs already trained
            for record in ui.summary_of(run_dir).history:
                monitor({"stage": "epoch", **record})

        def on_event(event: dict) -> None:
            stage = STAGE_OF.get(event.get("stage"))
            if stage and stage != current["stage"]:
                current["stage"] = stage
                steps.markdown(stage_line(stage))
            monitor(event)

        try:
            build_demo(data_dir, run_dir, ui.demo_spec(), callback=on_event)
        except Exception as err:  # noqa: BLE001 - the user sees what failed and can retry
            failure = err
            box.update(label="Building the demo failed", state="error", expanded=False)
        else:
            box.update(label="The demo shop is ready", state="complete", expanded=False)
    if failure is not None:
        st.error(f"The demo build stopped: {ui.describe(failure)}")
        c1, c2 = st.columns([1, 4])
        c1.button("Try again", key="build_retry", type="primary", icon=":material/refresh:",
                  help="Carries on from the last finished step.")
        c2.button("Start over", key="build_restart", icon=":material/delete:", on_click=remove_build, args=(run_dir,),
                  help="Deletes the half-built demo model (not the demo catalogue) and builds it from the start.")
        st.stop()
    st.session_state["run_dir"] = str(run_dir)
    st.rerun()


def pick_run() -> Path | None:
    """The sidebar's run picker; returns the chosen run (kept in session state) or None when there is none."""
    runs = [str(p) for p in ui.list_runs()]
    pending = st.session_state.pop("_select_run", None)  # a page asked to select a run it just made
    if pending:
        st.session_state["run_dir"] = st.session_state["run_choice"] = pending
    chosen = st.session_state.get("run_dir")
    if chosen is None and os.environ.get("HUSE_RUN"):
        chosen = str(Path(os.environ["HUSE_RUN"]).expanduser().resolve())
    if chosen and chosen not in runs and ui.usable(Path(chosen)):
        runs.append(chosen)  # a run outside the runs folder (HUSE_RUN or a typed path)
    if not runs:
        return None
    other = "Another folder…"
    options = runs + [other]
    if st.session_state.get("run_choice") not in options:
        st.session_state.pop("run_choice", None)
    with st.sidebar:
        st.subheader("Model", anchor=False)
        choice = st.selectbox("Run", options, index=options.index(chosen) if chosen in runs else 0,
                              format_func=lambda p: p if p == other else _run_label(Path(p)), key="run_choice",
                              help="Every finished run under the runs folder. Train new ones on Train & evaluate.")
        if choice == other:
            chosen = None
            typed = st.text_input("Run folder", key="run_path", placeholder="/path/to/runs/myshop")
            if typed:
                path = Path(typed).expanduser().resolve()
                status = ui.run_status(path)
                if status is None:
                    st.error("That folder has no run.json: it is not a trained run.")
                elif not ui.usable(path):
                    st.error(f"That run is not finished (status: {ui.esc(status)}).")
                else:
                    chosen = str(path)
            if chosen is None:
                chosen = st.session_state.get("run_dir") or runs[0]
                st.caption(f"Still using {ui.esc(Path(chosen).name)}.")
        else:
            chosen = choice
        st.session_state["run_dir"] = chosen
        run_dir = Path(chosen)
        try:
            ui.model_card(run_dir)
        except Exception as err:  # noqa: BLE001
            st.error(f"Could not read the run: {ui.describe(err)}")
        return run_dir


def _run_label(path: Path) -> str:
    try:
        size = ui.summary_of(path).catalog_size
        return f"{path.name} · {size:,} products"
    except Exception:  # noqa: BLE001
        return path.name


def warn_if_exposed() -> None:
    """.streamlit/config.toml binds to 127.0.0.1, but Streamlit reads it only from the folder it is started in."""
    address = st.get_option("server.address")
    if not st.get_option("global.appTest") and address not in ("127.0.0.1", "localhost", "::1"):
        st.sidebar.warning("This app can be opened from other computers on your network. To keep it private, start "
                           "it from the project folder or add `--server.address 127.0.0.1`.")


warn_if_exposed()
goto = st.session_state.pop("_goto", None)  # a page URL opened before app.py ran (see ui.page_setup)
current = pick_run()
st.session_state["_in_shell"] = True
try:
    if current is None:
        st.navigation([st.Page(first_start, title="Getting started", icon=":material/rocket_launch:")],
                      position="hidden").run()
    else:
        nav = st.navigation(PAGES)
        ui.jobs_sidebar(train_page=PAGES[-1])  # trainings running in the background, on every page
        if goto:
            st.switch_page(goto)
        nav.run()
finally:
    st.session_state["_in_shell"] = False
