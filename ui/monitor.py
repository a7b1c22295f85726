"""Live training progress: on a page (a progress bar, the latest figures, loss / accuracy curves), the sidebar's
line per background training, and the Train page's panel of them (progress, Stop, Resume, Dismiss)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from huse_core import jobs

from .runs import runs_root, select_run
from .text import MODALITY_NAMES, code, describe, esc, sentence


class TrainMonitor:
    """Renders training events (training.train callback dicts) as a progress bar, metrics and live loss curves:
    as they come (call it), or all at once from what a background job wrote (`replay`)."""

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
        self._train: dict | None = None  # the latest step event

    def __call__(self, event: dict) -> None:
        stage = event.get("stage")
        if stage == "train" and "step" in event:
            self._record_step(event)
            now = time.time()
            if now - self._last < 0.25 and event["step"] != event["steps"]:
                return  # enough redraws to look live, few enough to keep training fast
            self._last = now
            self._draw_step()
        elif stage == "epoch":
            self._record_epoch(event)
            self._draw_accuracy()
        elif "overall" in event or "message" in event:
            value = event.get("overall", 0.0) if self.overall else (1.0 if stage == "done" else 0.0)
            if not self.overall and self._train is not None and stage not in ("done", "complete"):
                value = self._fraction(self._train)  # a later step of a job (evaluate, index): the bar stays
            self.bar.progress(min(1.0, float(value)), text=esc(event.get("message", stage)))

    def replay(self, events: list[dict]) -> None:
        """Draw what a job has written so far (jobs.events): the curves whole, the bar at its latest event."""
        last_message = None
        for event in events:
            if event.get("stage") == "train" and "step" in event:
                self._record_step(event)
            elif event.get("stage") == "epoch":
                self._record_epoch(event)
            if "message" in event or event.get("stage") in ("train", "done"):
                last_message = event
        if self._train is not None:
            self._draw_step()
        if self.accs:
            self._draw_accuracy()
        if last_message is not None and last_message.get("stage") != "train":
            self(last_message)

    @staticmethod
    def _fraction(event: dict) -> float:
        return (event["epoch"] - 1 + event["step"] / event["steps"]) / event["epochs"]

    def _record_step(self, event: dict) -> None:
        self._train = event
        self.losses.append({"epoch": round(event["epoch"] - 1 + event["step"] / event["steps"], 3),
                            **{k: float(v) for k, v in event["loss"].items()}})

    def _record_epoch(self, event: dict) -> None:
        self.accs.append({"epoch": event["epoch"], **{MODALITY_NAMES.get(k, k): v
                                                      for k, v in event["val_accuracy"].items()}})

    def _draw_step(self) -> None:
        event = self._train
        self.stats.caption(f"epoch {event['epoch']}/{event['epochs']} · step {event['step']}/{event['steps']} · "
                           f"loss {event['loss']['total']:.3f}")
        self.loss_chart.line_chart(pd.DataFrame(self.losses).set_index("epoch"), height=220, x_label="epoch")
        value = event.get("overall", self._fraction(event)) if self.overall else self._fraction(event)
        self.bar.progress(min(1.0, float(value)), text=esc(event.get("message") or
                          f"Training: epoch {event['epoch']} of {event['epochs']}"))

    def _draw_accuracy(self) -> None:
        if len(self.accs) < 2:  # one point draws no line
            self.acc_chart.caption(f"after epoch {self.accs[-1]['epoch']}: " + " · ".join(
                f"{k} {v:.1%}" for k, v in self.accs[-1].items() if k != "epoch"))
        else:
            self.acc_chart.line_chart(pd.DataFrame(self.accs).set_index("epoch"), height=220, x_label="epoch")


# ---------------------------------------------------------------- background trainings, on every page


def job_line(job) -> tuple[float | None, str]:
    """(fraction done or None, one line) for a background training (a jobs.JobStatus), from its newest events."""
    name = esc(job.run_dir.name)
    if job.state != jobs.RUNNING:
        return None, {jobs.DONE: f"{name} is trained", jobs.FAILED: f"{name} failed",
                      jobs.INTERRUPTED: f"{name} was interrupted"}.get(job.state, name)
    if job.pid is None:
        return None, f"{name}: {job.message}"
    step = jobs.latest(job.run_dir)["step"]
    if job.step in ("evaluate", "index"):
        return 1.0, f"{name}: {'evaluating' if job.step == 'evaluate' else 'building its index'}"
    if step is None:
        return 0.0, f"{name}: reading the catalogue"
    frac = TrainMonitor._fraction(step)
    return frac, f"{name}: epoch {step['epoch']} of {step['epochs']} ({frac:.0%})"


def jobs_sidebar(train_page=None) -> None:
    """The sidebar's list of trainings running in the background (and ones that ended unseen), each with its
    progress, and a link to `train_page`; redrawn every few seconds while one runs, and the whole app once one
    ends (its run joins the run picker)."""
    from .runs import runs_root

    def news() -> list:
        return [j for j in jobs.list_jobs(runs_root()) if j.state == jobs.RUNNING or not j.seen]

    running = {j.run_dir.name for j in news() if j.state == jobs.RUNNING}

    def panel() -> None:
        found = news()
        if {j.run_dir.name for j in found if j.state == jobs.RUNNING} != running:
            st.rerun()
        if not found:
            return
        st.subheader("Training", anchor=False)
        for job in found:
            frac, line = job_line(job)
            if frac is None:
                st.caption(line)
            else:
                st.progress(min(1.0, frac), text=line)
        if train_page is not None:
            st.page_link(train_page, label="Watch, stop or resume", icon=":material/model_training:")

    with st.sidebar:
        st.fragment(panel, run_every=3 if running else None)()


# ---------------------------------------------------------------- the Train page's panel of background trainings


def launch(run_dir: Path, start) -> None:
    """Start (or resume) a background training job; the page then shows it (jobs_section) until it ends."""
    try:
        start()
    except (jobs.JobRunning, FileExistsError, ValueError, OSError) as err:  # already running, nothing to resume, …
        st.error(describe(err))
        return
    st.rerun()


def job_panel(job: jobs.JobStatus) -> None:
    """A running job: its live progress (from the files it writes) and a Stop button."""
    name = esc(job.run_dir.name)
    step = {"evaluate": "evaluating", "index": "indexing"}.get(job.step, "training")
    box = st.container(border=True)  # (st.status would show a finished tick once this script run ends)
    with box:
        box.markdown(f"**:blue[:material/progress_activity:] {step.capitalize()} {name}…**")
        TrainMonitor(box).replay(jobs.events(job.run_dir))
        if job.pid is None:  # a terminal's `train`, or the first-start build: not this app's job to stop
            box.caption(f"{sentence(job.message)}; it can't be stopped from here.")
            return
        since = time.strftime("%H:%M", time.localtime(job.started)) if job.started else "?"
        box.caption(f"Running since {since} in its own process (pid {job.pid}); output in "
                    f"{code(job.run_dir / 'job.log')}.")
        if box.button("Stop", key=f"stop_{job.run_dir.name}", icon=":material/stop:",
                      help="Ends the training; Resume carries on from the last finished epoch."):
            try:
                jobs.stop(job.run_dir)
            except ValueError as err:  # it ended meanwhile
                st.error(describe(err))
            st.rerun()


def ended_job(job: jobs.JobStatus) -> None:
    """A job that ended since a user last looked: done (the run is selected), or failed / interrupted (Resume)."""
    name = job.run_dir.name
    if job.state == jobs.DONE:
        jobs.dismiss(job.run_dir)
        select_run(job.run_dir)
        st.session_state["train_done"] = name
        st.rerun()
    c1, c2, c3 = st.columns([6, 1, 1])
    if job.state == jobs.FAILED:
        c1.error(f"Training of {esc(name)} failed ({esc(job.step)}): {sentence(job.message)}")
        with st.expander("Its output", icon=":material/terminal:"):
            st.code(jobs.log_tail(job.run_dir, 40), language=None)
    else:
        c1.warning(f"Training of {esc(name)} was interrupted — Resume carries on from its last finished epoch "
                   f"({esc(job.message)}).")
    if c2.button("Resume", key=f"resume_{name}", icon=":material/replay:"):
        launch(job.run_dir, lambda: jobs.resume(job.run_dir))
    if c3.button("Dismiss", key=f"dismiss_{name}", help="Hide this; the run stays in its folder."):
        jobs.dismiss(job.run_dir)
        st.rerun()


def jobs_section() -> None:
    """Every training under the runs folder that runs or ended unseen, redrawn every few seconds while one runs."""
    found = [j for j in jobs.list_jobs(runs_root()) if j.state == jobs.RUNNING or not j.seen]
    running = {j.run_dir.name for j in found if j.state == jobs.RUNNING}

    def panel() -> None:
        now = [j for j in jobs.list_jobs(runs_root()) if j.state == jobs.RUNNING or not j.seen]
        if {j.run_dir.name for j in now if j.state == jobs.RUNNING} != running:
            st.rerun()  # one ended (or started elsewhere): the whole page, the sidebar's run list too
        for job in now:
            job_panel(job) if job.state == jobs.RUNNING else ended_job(job)

    st.fragment(panel, run_every=2 if running else None)()
