"""Tests of huse_core.jobs: training as its own process (start, live progress, stop, crash, resume) on a tiny shop.

The jobs here are real child processes (`python -m huse_core train`, then evaluate) on the 240-product shop, with
the tiny model on one thread, so each runs in seconds; every test ends the process group it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from huse_core import jobs
from huse_core.jobs.control import read_job
from huse_core.jobs.lock import lock_held
from huse_core.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from huse_core.pipeline import DemoSpec

ROOT = Path(__file__).resolve().parents[1]
WAIT = 240  # seconds for a tiny job on a shared, busy machine


def tiny_configs(csv: Path, epochs: int) -> tuple:
    tiny = DemoSpec.tiny(epochs=epochs, patience=epochs)  # no early stop: the epochs asked for are trained
    return DataConfig(catalog=str(csv)), tiny.model, LossConfig(), tiny.train


def wait_for(check, what: str, timeout: float = WAIT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def cleanup():
    """Process groups of jobs a test started, ended whatever the test's outcome."""
    started: list[Path] = []
    yield started
    for run_dir in started:
        pid = read_job(run_dir).get("pid")
        if pid and group_alive(pid):
            os.killpg(pid, signal.SIGKILL)


def trained_epochs(run_dir: Path) -> list[int]:
    return [e["epoch"] for e in jobs.events(run_dir) if e.get("stage") == "epoch"]


def test_a_job_outlives_the_process_that_started_it_and_records_its_progress(tiny_demo_csv, tmp_path, cleanup):
    run_dir = tmp_path / "runs" / "bg"
    # the starter finds huse_core by its own sys.path, not PYTHONPATH: the job must find the same one by itself
    starter = (f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]; "
               f"from pathlib import Path; from huse_core import jobs; import test_jobs as t; "
               f"s = jobs.start_training(Path({str(run_dir)!r}), *t.tiny_configs(Path({str(tiny_demo_csv)!r}), 2), "
               f"index=False); print(s.pid)")
    out = subprocess.run([sys.executable, "-c", starter], capture_output=True, text=True, timeout=120, check=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, cwd=tmp_path)
    cleanup.append(run_dir)
    pid = int(out.stdout.split()[-1])  # the starter has exited: the job carries on without it
    assert group_alive(pid) or jobs.status(run_dir).state == jobs.DONE
    done = wait_for(lambda: (s := jobs.status(run_dir)).state != jobs.RUNNING and s, "the job to end")
    assert done.state == jobs.DONE, jobs.log_tail(run_dir, 40)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "done" and "test" in meta["metrics"], "trained, then evaluated as the CLI does"
    assert trained_epochs(run_dir) == [1, 2]
    steps = [e for e in jobs.events(run_dir) if e.get("stage") == "train" and "step" in e]
    assert steps and steps[-1]["epoch"] == 2 and steps[-1]["step"] == steps[-1]["steps"]
    assert [e["job_step"] for e in jobs.events(run_dir) if e.get("stage") == "job"] == ["train", "evaluate"]
    assert jobs.latest(run_dir)["step"] == steps[-1] and jobs.latest(run_dir)["last"]["stage"] == "complete"
    assert f"run saved to {run_dir} (best epoch" in (run_dir / "job.log").read_text(), "the steps' output"
    assert not lock_held(run_dir)
    wait_for(lambda: not group_alive(pid), "the job's processes to exit", timeout=10)


def test_stop_ends_the_whole_process_group_and_resume_continues_from_last_pt(tiny_demo_csv, tmp_path, cleanup):
    run_dir = tmp_path / "runs" / "stopped"
    jobs.start_training(run_dir, *tiny_configs(tiny_demo_csv, 30), index=False)
    cleanup.append(run_dir)
    pid = jobs.status(run_dir).pid
    wait_for(lambda: (run_dir / "last.pt").is_file() and trained_epochs(run_dir), "the first finished epoch")
    with pytest.raises(jobs.JobRunning):  # one training per run folder
        jobs.resume(run_dir)
    train_pids = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True).stdout.split()
    assert len(train_pids) >= 2, "the job and its train step, in the job's own process group"
    stopped = jobs.stop(run_dir)
    assert not group_alive(pid), "no process of the job is left"
    assert stopped.state == jobs.INTERRUPTED and stopped.message == "stopped on request" and stopped.resumable
    before = json.loads((run_dir / "run.json").read_text())
    assert before["status"] == "training"
    kept = len(before["history"])
    assert 1 <= kept < 30

    jobs.resume(run_dir)  # the stored 30 epochs: stop again once it has trained one more
    wait_for(lambda: max(trained_epochs(run_dir)) > kept, "an epoch after the resume")
    jobs.stop(run_dir)
    log = (run_dir / "job.log").read_text()
    assert "resume" in log and "resuming" in log, "train --resume, from last.pt"
    after = json.loads((run_dir / "run.json").read_text())
    assert [r["epoch"] for r in after["history"]][:kept] == [r["epoch"] for r in before["history"]]
    assert len(after["history"]) > kept
    resumed_steps = [e for e in jobs.events(run_dir) if e.get("stage") == "train" and "step" in e]
    assert min(e["epoch"] for e in resumed_steps if e["time"] > before_time(run_dir)) == kept + 1, \
        "the resumed job starts at the epoch after the last finished one"


def before_time(run_dir: Path) -> float:
    """When the last resume started (job.json's start time)."""
    return json.loads((run_dir / "job.json").read_text())["started"]


def test_a_crashed_job_is_reported_interrupted_at_once_and_can_be_resumed(tmp_path):
    run_dir = tmp_path / "runs" / "crashed"
    run_dir.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs
    (run_dir / "job.json").write_text(json.dumps({"state": "running", "step": "train", "pid": gone.pid,
                                                  "started": time.time(), "train_args": None, "index": False}))
    t0 = time.time()
    now = jobs.status(run_dir)
    assert time.time() - t0 < 2
    assert now.state == jobs.INTERRUPTED and now.resumable and "ended before it finished" in now.message
    assert [s.run_dir for s in jobs.list_jobs(tmp_path / "runs")] == [run_dir]
    with pytest.raises(ValueError, match="no training started from here is running"):
        jobs.stop(run_dir)
    with pytest.raises(ValueError, match="nothing to resume"):  # no last.pt, no stored start
        jobs.resume(run_dir)
    jobs.dismiss(run_dir)
    assert jobs.status(run_dir).seen


def test_reading_status_leaves_no_lock_files_beside_runs(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    assert jobs.list_jobs(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_the_command_line_of_a_job_rebuilds_the_same_configs():
    from huse_core.cli import build_parser, train_configs

    data = DataConfig(catalog="/shop/metadata.csv", images_root="/shop/photos", text_col="name", id_col="sku",
                      image_col="photo", levels=["dept", "type"], attributes=["colour"], image_size=96, seed=3)
    model = ModelConfig(backbone="cnn", dim=48)
    loss = LossConfig(losses=["cls", "gap"], alpha=0.5, beta=0.0, gamma=2.0)
    train = TrainConfig(epochs=7, batch_size=64, lr=0.001, augment=False)
    args = build_parser().parse_args(jobs.train_argv("/runs/x", data, model, loss, train))
    assert args.out == "/runs/x"
    assert list(train_configs(args)) == [data, model, loss, train]
