"""The app's background training through AppTest: start on the Train page, watch it, leave, come back, stop.

A private runs folder (the tiny demo run linked in) so the stopped run it leaves shows on no other test's pages.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from huse_core import jobs  # noqa: E402
from test_app import APP, app_folder, no_exception, texts  # noqa: E402


@pytest.fixture
def app(tiny_demo_csv, tiny_indexed_run, tmp_path_factory, tmp_path, monkeypatch) -> AppTest:
    shared = app_folder(tiny_demo_csv, tiny_indexed_run, tmp_path_factory)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "demo").symlink_to(shared / "runs" / "demo")  # only read here
    monkeypatch.setenv("HUSE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HUSE_DATA_DIR", str(shared / "data"))
    monkeypatch.delenv("HUSE_RUN", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    yield at
    job = jobs.status(tmp_path / "runs" / "bg")
    if job is not None and job.pid:
        try:
            os.killpg(job.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def sidebar_progress(at: AppTest) -> list[str]:
    return [str(p.proto.text) for p in at.sidebar.get("progress")]


def rerun_until(at: AppTest, check, what: str, timeout: float = 240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        at.run()
        no_exception(at)
        if check(at):
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; the page said:\n{texts(at)}")


def test_training_runs_on_while_the_user_leaves_the_page_and_stops_on_request(app, tmp_path):
    run_dir = tmp_path / "runs" / "bg"
    app.switch_page("pages/train.py").run()
    app.slider(key="train_epochs").set_value(40)
    app.text_input(key="train_name").input("bg")
    app.checkbox(key="train_build_index").uncheck()
    app.run()
    app.button(key="train_start").click().run()
    no_exception(app)
    job = jobs.status(run_dir)
    assert job is not None and job.state == jobs.RUNNING and job.pid, "started as its own process"

    # live progress, from what the job writes: the bar, the latest figures and the curves
    rerun_until(app, lambda at: " · loss " in texts(at), "the first training steps")  # "epoch 1/40 · step 2/6 · loss …"
    assert app.button(key="stop_bg")

    # leave: another page's script runs; the training goes on
    app.switch_page("pages/classify.py").run()
    no_exception(app)
    assert jobs.status(run_dir).state == jobs.RUNNING
    assert not [b for b in app.button if b.key == "stop_bg"]

    # a new session (the tab closed and opened again) finds it in the sidebar, on the first page it opens
    other = AppTest.from_file(str(APP), default_timeout=120).run()
    no_exception(other)
    assert any(t.startswith("bg: ") for t in sidebar_progress(other)), sidebar_progress(other)
    assert other.sidebar.get("page_link")

    # come back after an epoch: its curves are all there, and Stop ends it
    deadline = time.time() + 240
    while not [e for e in jobs.events(run_dir) if e.get("stage") == "epoch"] and time.time() < deadline:
        time.sleep(1)
    app.switch_page("pages/train.py").run()
    no_exception(app)
    assert "after epoch 1" in texts(app) or app.get("arrow_vega_lite_chart")
    assert any("epoch" in str(p.proto.text) for p in app.get("progress"))
    app.button(key="stop_bg").click().run()
    no_exception(app)
    stopped = jobs.status(run_dir)
    assert stopped.state == jobs.INTERRUPTED and stopped.message == "stopped on request"
    with pytest.raises(ProcessLookupError):  # no process of the job is left
        os.killpg(job.pid, 0)
    app.run()
    assert any("interrupted" in w.value for w in app.warning)
    assert app.button(key="resume_bg")
    assert Path(run_dir / "last.pt").is_file(), "resumable from its last finished epoch"
    other = AppTest.from_file(str(APP), default_timeout=120).run()  # (AppTest redraws no sidebar on a second run)
    assert not sidebar_progress(other) and any("bg was interrupted" in c.value for c in other.sidebar.get("caption"))
    app.button(key="dismiss_bg").click().run()
    no_exception(app)
    assert not any("bg" in w.value for w in app.warning) and jobs.status(run_dir).seen
