"""kill -9 at any moment of `train` leaves complete artifacts, and `train --resume` finishes the run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from huse_core.demo import generate_demo
from huse_core.run import load_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "4", "--batch-size", "32", "--cnn-width", "8", "--hidden", "32", "--dim", "16",
        "--conv-channels", "16", "--word-dim", "8", "--quiet"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return generate_demo(tmp_path_factory.mktemp("crash") / "demo", n_products=200, seed=5, progress=False)


def start_train(csv: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "huse_core", "train", "--catalog", str(csv), "--out", str(out), *TINY, *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def epochs_done(out: Path) -> int:
    try:
        return len(json.loads((out / "run.json").read_text())["history"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


@pytest.mark.parametrize("extra_delay", [0.0, 0.3])
def test_sigkill_mid_training_then_resume(shop, tmp_path, extra_delay):
    out = tmp_path / "run"
    proc = start_train(shop, out)
    deadline = time.time() + 240
    while epochs_done(out) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(extra_delay)  # land the kill at different moments of the next epoch / checkpoint write
    if proc.poll() is not None:
        pytest.fail(f"training ended before it could be killed: {proc.stderr.read()[-500:]}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Whatever moment it died at, every artifact present is complete: JSON parses, checkpoints load.
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "training"
    assert load_run(out).meta["history"]
    resumed = subprocess.run([sys.executable, "-m", "huse_core", "train", "--out", str(out), "--resume", "--quiet"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-800:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "done"
    assert [r["epoch"] for r in meta["history"]] == [1, 2, 3, 4]
