"""`train --out RUN --resume` with flags: how long and how many threads apply (said in one line); any other change
is refused in one line naming it, with nothing written; a last.pt written before checkpoint.py still resumes."""

import json
import shutil

import pytest
import torch

from huse_core.artifacts import load_torch, save_torch
from huse_core.cli import main
from huse_core.config import DataConfig, LossConfig, TrainConfig
from huse_core.pipeline import DemoSpec
from huse_core.run import load_run
from huse_core.training.train import train

TINY = DemoSpec.tiny()


@pytest.fixture(scope="module")
def interrupted(tiny_demo_csv, tmp_path_factory):
    """A tiny run stopped after epoch 1 of 3 (6 steps an epoch). Read-only: copy before resuming."""
    run_dir = tmp_path_factory.mktemp("interrupted") / "run"

    def stop(event):
        if event["stage"] == "epoch" and event["epoch"] == 1:
            raise KeyboardInterrupt

    threads = torch.get_num_threads()
    try:
        with pytest.raises(KeyboardInterrupt):
            train(DataConfig(catalog=str(tiny_demo_csv)), TINY.model, LossConfig(),
                  TrainConfig(epochs=3, batch_size=32, threads=1), run_dir, progress=False, callback=stop)
    finally:
        torch.set_num_threads(threads)
    return run_dir


def _copy(run_dir, tmp_path):
    return shutil.copytree(run_dir, tmp_path / "run")


def _files(run_dir):
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def test_flags_that_would_change_the_trained_run_are_refused_in_one_line_and_nothing_is_written(
        interrupted, tiny_demo_csv, tmp_path, capsys):
    run_dir = _copy(interrupted, tmp_path)
    before = _files(run_dir)
    # --batch-size and --catalog repeat the stored values (harmless); --lr and --dim would change the run
    rc = main(["train", "--out", str(run_dir), "--resume", "--catalog", str(tiny_demo_csv), "--batch-size", "32",
               "--lr", "0.5", "--dim", "64", "--epochs", "2", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1 and "--lr" in err and "--dim" in err, err
    assert "--batch-size" not in err.split("(")[0] and "--catalog" not in err and "new --out" in err
    assert _files(run_dir) == before  # neither run.json nor last.pt nor model.pt touched
    # a preset's settings are given settings too: its batch and photo size differ from this run's
    assert main(["train", "--out", str(run_dir), "--resume", "--preset", "demo", "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.count("--preset demo") == 1, err
    assert _files(run_dir) == before


def test_epochs_patience_and_threads_apply_on_resume_and_are_said(interrupted, tmp_path, capsys):
    run_dir = _copy(interrupted, tmp_path)
    rc = main(["train", "--out", str(run_dir), "--resume", "--epochs", "2", "--patience", "7", "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 0, err[-800:]
    said = [line for line in err.splitlines() if line.startswith("resuming with --")]
    assert len(said) == 1 and "--epochs 2 (was 3)" in said[0] and "--patience 7" in said[0], err[-800:]
    assert "--threads" not in said[0]  # the stored value repeated: nothing changes, nothing said
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "done" and [r["epoch"] for r in meta["history"]] == [1, 2]  # not the stored 3
    assert meta["train"]["epochs"] == 2 and meta["train"]["patience"] == 7
    assert meta["schedule"]["epochs"] == 2 and meta["schedule"]["why"]["epochs"] == "given on resume"
    assert load_run(run_dir).meta["status"] == "done"


def test_max_steps_on_resume_carries_the_rate_schedule_over_the_new_total(interrupted, tmp_path):
    run_dir = _copy(interrupted, tmp_path)
    assert main(["train", "--out", str(run_dir), "--resume", "--max-steps", "9", "--quiet"]) == 0
    sched = load_torch(run_dir / "last.pt")["scheduler"]
    assert sched["total_steps"] == 9 and sched["last_epoch"] == 9  # 6 steps, then 3: one cycle over 9, finished
    meta = json.loads((run_dir / "run.json").read_text())
    assert [r["epoch"] for r in meta["history"]] == [1, 2] and meta["train"]["max_steps"] == 9


def test_a_last_pt_from_before_its_newer_fields_resumes(interrupted, tmp_path):
    """The oldest layout: no criterion, history, smoothing or best-epoch fields in last.pt (run.json has them)."""
    run_dir = _copy(interrupted, tmp_path)
    state = load_torch(run_dir / "last.pt")
    old = {k: state[k] for k in ("model", "optimizer", "scheduler", "epoch", "best", "stale", "rng")}
    save_torch(run_dir / "last.pt", old)
    assert main(["train", "--out", str(run_dir), "--resume", "--quiet"]) == 0
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "done" and [r["epoch"] for r in meta["history"]] == [1, 2, 3]
