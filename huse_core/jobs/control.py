"""Starting, watching, stopping and resuming a run's background job (its process, job.json, the run lock)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import read_json, write_json
from ..config import DataConfig, LossConfig, ModelConfig, TrainConfig
from .command import plan, train_argv
from .lock import JobRunning, fcntl, lock_held, try_lock
from .progress import EVENTS, LOG, append_event

JOB = "job.json"
RUNNING, DONE, FAILED, INTERRUPTED = "running", "done", "failed", "interrupted"


@dataclass
class JobStatus:
    """Where a run's background job stands, read from its files and its lock."""

    run_dir: Path
    state: str  # running | done | failed | interrupted
    step: str = ""  # train | evaluate | index: the step running, or the one that failed or was cut short
    message: str = ""  # why it failed or stopped, or who trains it (another process)
    pid: int | None = None  # the job's process (its process group); None when it is not the app's job
    started: float | None = None  # time.time() of the start or the last resume
    seen: bool = False  # its end was shown to a user (dismiss): lists of news leave it out

    @property
    def resumable(self) -> bool:
        return self.state in (INTERRUPTED, FAILED)


# ---------------------------------------------------------------- starting, watching, stopping


def start_training(run_dir: str | Path, data: DataConfig, model: ModelConfig, loss: LossConfig, train: TrainConfig,
                   index: bool = True) -> JobStatus:
    """Start training these configs into a new `run_dir` in the background (then evaluate, and index)."""
    return start(run_dir, train_argv(run_dir, data, model, loss, train), index=index)


def start(run_dir: str | Path, train_args: list[str], index: bool = True) -> JobStatus:
    """Start `python -m huse_core <train_args>` (a `train` command into `run_dir`), then evaluate and optionally
    index, as one background job in its own session; returns at once."""
    run_dir = Path(run_dir)
    if (run_dir / "run.json").exists():
        raise FileExistsError(f"{run_dir} holds a run already; resume it or choose another folder")
    return _launch(run_dir, train_args, index, fresh=True)


def resume(run_dir: str | Path, index: bool | None = None) -> JobStatus:
    """Carry on an interrupted or failed job (or a run the command line left unfinished) in the background."""
    run_dir = Path(run_dir)
    job = read_job(run_dir)
    return _launch(run_dir, job.get("train_args"), job.get("index", True) if index is None else index, fresh=False)


def _launch(run_dir: Path, train_args: list[str] | None, index: bool, fresh: bool) -> JobStatus:
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = try_lock(run_dir)
    if fd is None and fcntl is not None:
        raise JobRunning(f"a training is already running in {run_dir}; stop it first or choose another folder")
    try:
        steps = plan(run_dir, train_args, index, run_dir / EVENTS)
        if fresh:
            for name in (LOG, EVENTS):
                (run_dir / name).unlink(missing_ok=True)
        job = {"state": RUNNING, "step": steps[0]["name"] if steps else "", "steps": steps, "train_args": train_args,
               "index": index, "started": time.time(), "pid": None, "message": ""}
        write_json(run_dir / JOB, job)
        with open(run_dir / LOG, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {'start' if fresh else 'resume'}\n".encode())
            log.flush()
            proc = subprocess.Popen([sys.executable, "-m", "huse_core.jobs", str(run_dir), str(fd or -1)],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=_child_env(), pass_fds=(fd,) if fd is not None else (),
                                    **_new_session())
        threading.Thread(target=proc.wait, daemon=True).start()  # reaps it when it ends (no zombie)
        write_json(run_dir / JOB, {**job, "pid": proc.pid})
    finally:
        if fd is not None:
            os.close(fd)  # the job holds the lock now
    return status(run_dir)


def _child_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_MININTERVAL="30")  # a log line per bar every 30 s, not 10/s
    root = str(Path(__file__).resolve().parents[2])  # the folder holding this huse_core, wherever the app runs
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


def _new_session() -> dict:
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}  # outlives the app's script thread, a rerun and the app's own Ctrl+C


def read_job(run_dir: Path) -> dict:
    try:
        job = read_json(run_dir / JOB)
        return job if isinstance(job, dict) else {}
    except (OSError, ValueError):
        return {}


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OSError):
        return False
    return True


def status(run_dir: str | Path) -> JobStatus | None:
    """The job of `run_dir` as it stands now; None when there is none and no unfinished run to resume."""
    run_dir = Path(run_dir)
    job = read_job(run_dir)
    held = lock_held(run_dir)
    common = {"step": job.get("step", ""), "pid": job.get("pid"), "started": job.get("started")}
    if job.get("state") == RUNNING:
        if held and not _alive(job.get("pid")):  # the job died and another process (a terminal) trains now
            return JobStatus(run_dir, RUNNING, step="train", message="trained by another process")
        if held or (fcntl is None and _alive(job.get("pid"))):
            return JobStatus(run_dir, RUNNING, **common)
        return JobStatus(run_dir, INTERRUPTED, message="its process ended before it finished (the computer or the "
                         "app was restarted, or it was killed)", **common)
    if held:  # not the app's job: the command line, or the app's first-start build
        return JobStatus(run_dir, RUNNING, step="train", message="trained by another process")
    if job.get("state") in (DONE, FAILED, INTERRUPTED):
        return JobStatus(run_dir, job["state"], message=job.get("message", ""), seen=bool(job.get("seen")), **common)
    try:
        meta = read_json(run_dir / "run.json")
    except (OSError, ValueError):
        return None
    if isinstance(meta, dict) and meta.get("status") == "training" and (run_dir / "last.pt").is_file():
        return JobStatus(run_dir, INTERRUPTED, step="train", message="its training stopped part-way")
    return None


def list_jobs(runs_root: str | Path) -> list[JobStatus]:
    """The jobs (and resumable unfinished runs) in the folders under `runs_root`, by name."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    found = (status(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith("."))
    return [s for s in found if s is not None]


def is_running(run_dir: str | Path) -> bool:
    """Cheap check for the app's run lists: the run has a job (or another training) going on."""
    run_dir = Path(run_dir)
    return (run_dir / JOB).is_file() and read_job(run_dir).get("state") == RUNNING and (
        lock_held(run_dir) or (fcntl is None and _alive(read_job(run_dir).get("pid"))))


def dismiss(run_dir: str | Path) -> None:
    """Mark a finished, failed or interrupted job as shown (it stays resumable; `resume` clears the mark)."""
    run_dir = Path(run_dir)
    now = status(run_dir)
    if now is not None and now.state != RUNNING:
        write_json(run_dir / JOB, {**read_job(run_dir), "state": now.state, "message": now.message, "seen": True})


def _group_alive(run_dir: Path, pid: int) -> bool:
    """Whether any process of the job's group is left (or, without process groups, the job itself)."""
    if not hasattr(os, "killpg"):
        return _alive(pid)
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return lock_held(run_dir)  # a step that left the group would still hold the lock
    return True


def stop(run_dir: str | Path, wait: float = 15.0) -> JobStatus:
    """End a running job (its whole process group: the job and the step it runs); the run stays resumable from
    its last finished epoch. Waits up to `wait` seconds for it to go, then kills it."""
    run_dir = Path(run_dir)
    now = status(run_dir)
    if now is None or now.state != RUNNING or not now.pid:
        raise ValueError(f"no training started from here is running in {run_dir}")
    for sig, grace in ((signal.SIGTERM, wait), (getattr(signal, "SIGKILL", signal.SIGTERM), 5.0)):
        try:
            os.killpg(now.pid, sig) if hasattr(os, "killpg") else os.kill(now.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        deadline = time.time() + grace
        while time.time() < deadline and _group_alive(run_dir, now.pid):
            time.sleep(0.1)
        if not _group_alive(run_dir, now.pid):
            break
    job = read_job(run_dir)
    write_json(run_dir / JOB, {**job, "state": INTERRUPTED, "message": "stopped on request"})
    append_event(run_dir / EVENTS, {"stage": "stopped", "message": "stopped on request"})
    return status(run_dir)
