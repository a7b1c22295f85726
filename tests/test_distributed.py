"""Training under torchrun (2 gloo processes) equals one process accumulating the same micro-batches, resumes a run
with --resume, and with --max-restarts carries on from last.pt after a rank is killed. (Embedding in parts, with
and without Ray: test_ray_embed.py.)"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from huse_core.artifacts import load_torch, read_json
from huse_core.config import DataConfig, LossConfig, ModelConfig, TrainConfig, from_dict
from huse_core.data.catalog import normalise_title
from huse_core.model import build_model
from huse_core.pipeline import DemoSpec
from huse_core.prepare import cache_dir_for, prepare
from huse_core.run import load_run
from huse_core.training.distributed import TrainStep, World
from huse_core.training.evaluate import evaluate
from huse_core.training.losses import HuseLoss
from huse_core.training.train import graph_distance, make_optimizer, train

WORLD = 2
# No dropout and no augmentation: the two sides then draw nothing at random and must agree to float rounding.
MODEL = dataclasses.replace(DemoSpec.tiny().model, dropout=0.0)
TRAIN = TrainConfig(epochs=2, batch_size=32, lr=2e-3, patience=4, select_by="mean", augment=False, precision="fp32",
                    threads=1)


def _torchrun_cmd(*args: str, max_restarts: int = 0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
            "--max-restarts", str(max_restarts), "-m", "huse_core", *args]


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(_torchrun_cmd(*args), capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=1800)


@pytest.fixture(scope="module")
def resumed_under_torchrun(tiny_demo_csv, tmp_path_factory):
    """One process trains epoch 1 and is interrupted; torchrun with 2 processes resumes it and trains epoch 2.
    Returns (run_dir, a copy of the run as the interruption left it, the torchrun result)."""
    run_dir = tmp_path_factory.mktemp("ddp") / "run"

    def stop_in_epoch_two(event: dict) -> None:
        if event.get("stage") == "train" and event["epoch"] == 2:
            raise KeyboardInterrupt

    threads = torch.get_num_threads()
    try:
        with pytest.raises(KeyboardInterrupt):
            train(DataConfig(catalog=str(tiny_demo_csv)), MODEL, LossConfig(), TRAIN, run_dir, progress=False,
                  callback=stop_in_epoch_two)
    finally:
        torch.set_num_threads(threads)
    before = Path(shutil.copytree(run_dir, run_dir.parent / "before"))
    done = _torchrun("train", "--out", str(run_dir), "--resume", cwd=run_dir.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir, before, done


def _micro_batch_reference(before: Path) -> tuple[dict, dict]:
    """Epoch 2 in one process: each global batch as WORLD micro-batches, their losses averaged (what DDP's gradient
    mean does), the graph and alignment terms over the whole batch (what the gathers give). Model and loss state."""
    saved = read_json(before / "run.json")
    data_cfg, model_cfg = from_dict(DataConfig, saved["data"]), from_dict(ModelConfig, saved["model"])
    loss_cfg, train_cfg = from_dict(LossConfig, saved["loss"]), from_dict(TrainConfig, saved["train"])
    prep = prepare(data_cfg, model_cfg, cache_dir_for(data_cfg, before), progress=False, tokenizer=saved["tokenizer"])
    model = build_model(model_cfg, prep.heads, prep.tokenizer.n_tokens, idf=prep.tokenizer.idf)
    criterion = HuseLoss(loss_cfg, {h["name"]: h["kind"] for h in prep.heads}, prep.leaf,
                         graph_distance(loss_cfg, prep))
    train_rows = prep.split("train")
    steps = len(train_rows) // train_cfg.batch_size
    opt, sched = make_optimizer(model, train_cfg, steps * train_cfg.epochs, criterion)
    state = load_torch(before / "last.pt")
    model.load_state_dict(state["model"])
    criterion.load_state_dict(state["criterion"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    groups = prep.catalog.df["title"].map(normalise_title).factorize()[0].astype(np.int64)
    step_fn, epoch = TrainStep(model, criterion), int(state["epoch"]) + 1
    model.train()
    # As many threads as each torchrun process had: another count sums in another order, and AdamW turns those
    # last-bit differences in near-zero gradients into lr-sized steps (2 threads here: 1.8e-4 after 6 steps).
    threads = torch.get_num_threads()
    torch.set_num_threads(train_cfg.threads)
    try:
        _epoch_in_micro_batches(prep, step_fn, opt, sched, train_cfg, epoch, groups)
    finally:
        torch.set_num_threads(threads)
    return model.state_dict(), criterion.state_dict()


def _epoch_in_micro_batches(prep, step_fn, opt, sched, train_cfg, epoch, groups) -> None:
    train_rows, criterion = prep.split("train"), step_fn.criterion
    steps = len(train_rows) // train_cfg.batch_size
    order = np.random.default_rng(train_cfg.seed * 1000 + epoch).permutation(train_rows)
    for step in range(steps):
        batch = order[step * train_cfg.batch_size : (step + 1) * train_cfg.batch_size]
        micro = [np.sort(part) for part in np.array_split(batch, WORLD)]
        outs, inputs = [], []
        for rows in micro:
            labels = {h: torch.from_numpy(y[rows]) for h, y in prep.labels.items()}
            outs.append(step_fn.outputs(torch.from_numpy(prep.pixels[rows]), prep.text_input(rows)))
            inputs.append((labels, torch.from_numpy(groups[rows])))
        parts = {}  # each micro-batch's tensor -> that tensor of every micro-batch, as World.gather returns
        for pick in (lambda o, i: o[0], lambda o, i: o[1], lambda o, i: i[0][prep.leaf], lambda o, i: i[1]):
            column = [pick(o, i) for o, i in zip(outs, inputs)]
            parts.update({id(t): column for t in column})
        total = 0.0
        for (image_emb, text_emb, logits), (labels, group) in zip(outs, inputs):
            terms = criterion(image_emb, text_emb, logits, labels, group,
                              gather=lambda t, parts=parts: torch.cat(parts[id(t)]))
            total = total + terms["total"] / WORLD
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        sched.step()


def test_two_processes_train_like_one_accumulating_the_same_micro_batches(resumed_under_torchrun):
    run_dir, before, _ = resumed_under_torchrun
    expected_model, expected_loss = _micro_batch_reference(before)
    state = load_torch(run_dir / "last.pt")
    assert int(state["epoch"]) == 1  # epoch 2 ran under torchrun
    model = build_model(from_dict(ModelConfig, read_json(run_dir / "run.json")["model"]),
                        read_json(run_dir / "run.json")["heads"], 1, load_weights=False)
    trained = {name for name, _ in model.named_parameters()}
    # A Linear's bias right before BatchNorm (MLP blocks: Linear, BatchNorm, ...) has no gradient in exact arithmetic
    # (the norm subtracts the batch mean); AdamW divides its rounding noise by the noise's own RMS, so on either side
    # it takes lr-sized steps of random sign. It changes nothing the model computes in training; every other weight
    # must agree to float rounding.
    noise = {k for k in trained if re.search(r"blocks\.\d+\.0\.bias$", k)}
    differs = {k: float((state["model"][k] - expected_model[k]).abs().max()) for k in trained - noise}
    assert max(differs.values()) < 1e-5, sorted(differs.items(), key=lambda kv: -kv[1])[:5]
    moved = load_torch(before / "last.pt")["model"]
    assert max(float((state["model"][k] - moved[k]).abs().max()) for k in trained) > 1e-3  # it did train
    scale = state["criterion"]["nce.log_scale"]  # the alignment's temperature is synced like a weight
    assert torch.allclose(scale, expected_loss["nce.log_scale"], atol=1e-5)


def test_both_ranks_hold_the_same_weights_and_rank_zero_alone_wrote_and_spoke(resumed_under_torchrun):
    run_dir, _, done = resumed_under_torchrun
    meta = read_json(run_dir / "run.json")
    assert meta["status"] == "done" and [r["epoch"] for r in meta["history"]] == [1, 2]
    dist = meta["distributed"]
    assert dist["world_size"] == WORLD and dist["backend"] == "gloo"
    assert dist["global_batch"] == TRAIN.batch_size and dist["per_process_batch"] == TRAIN.batch_size // WORLD
    assert dist["weight_drift"] == 0.0  # every weight equal on both processes at the end
    out = done.stdout + done.stderr
    assert out.count("run saved to") == 1 and out.count("epoch 2:") == 1
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # no second writer's leftovers


def test_a_torchrun_run_loads_and_evaluates_like_a_single_process_run(resumed_under_torchrun, tiny_trained_run,
                                                                       tmp_path):
    run_dir, _, _ = resumed_under_torchrun
    run = load_run(run_dir)
    emb = run.encode_texts(["red striped shirt"])
    assert emb.shape == (1, MODEL.dim) and np.isclose(np.linalg.norm(emb), 1, atol=1e-5)
    assert set(run.classify(text="blue jeans")) == {h["name"] for h in run.heads}
    result = evaluate(run_dir, progress=False, baseline=False)
    single = evaluate(shutil.copytree(tiny_trained_run, tmp_path / "single"), progress=False, baseline=False)
    assert set(result) == set(single) and set(result["classification"]) == set(single["classification"])
    for per in result["classification"].values():
        assert all(0.0 <= figures["accuracy"] <= 1.0 for figures in per.values())


def test_one_process_world_changes_nothing():
    world = World()
    rows = np.array([5, 3, 9, 1])
    assert not world.enabled and world.is_main and world.per_process_batch(32, 10) == 32
    assert list(world.shard(rows)) == [1, 3, 5, 9] and world.broadcast({"a": 1}) == {"a": 1}
    assert world.mean({"cls": 2.0}) == {"cls": 2.0} and world.max_drift(torch.nn.Linear(2, 2)) == 0.0
    rng = np.random.default_rng(0)
    assert world.seed_epoch(0, 3, rng) is rng  # a plain run draws its augmentation exactly as before


def test_shards_of_a_batch_are_disjoint_and_cover_it():
    batch = np.random.default_rng(1).permutation(64)[:32]
    shards = [World(rank=r, world_size=4, backend="gloo").shard(batch) for r in range(4)]
    assert all(len(s) == 8 for s in shards) and sorted(np.concatenate(shards)) == sorted(batch)


# ---- torchrun --max-restarts ------------------------------------------------------------------------------------

RESTART_EPOCHS = 4  # rank 1 dies once epoch 1 is recorded: three epochs (~1 s each) still to train


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        try:  # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    return kids


def _rank(pid: int) -> int | None:
    """The RANK torchrun gave worker `pid` (from the environment it started with), None if it has none."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((int(v[5:]) for v in env if v.startswith(b"RANK=")), None)


def _kill_rank_one_after_an_epoch(launcher: subprocess.Popen, run_dir: Path, killed: dict) -> None:
    """SIGKILL the rank-1 worker (a child of the torchrun process) once run.json records an epoch."""
    while launcher.poll() is None:
        try:
            meta = read_json(run_dir / "run.json")
        except (OSError, ValueError):  # not written yet
            meta = {}
        if meta.get("history") and (run_dir / "last.pt").is_file():
            rank_one = [pid for pid in _children(launcher.pid) if _rank(pid) == 1]
            if rank_one:
                os.kill(rank_one[0], signal.SIGKILL)
                killed.update(pid=rank_one[0], status=meta["status"], history=meta["history"])
                return
        time.sleep(0.05)


def test_torchrun_max_restarts_resumes_from_last_pt_after_rank_one_is_killed(tiny_demo_csv, tmp_path):
    """`torchrun --max-restarts 1`, rank 1 SIGKILLed after epoch 1: torchrun stops rank 0 and starts both again
    with TORCHELASTIC_RESTART_COUNT=1; World.restarted makes train() resume from last.pt without --resume."""
    run_dir = tmp_path / "run"
    tiny = DemoSpec.tiny().model
    model_flags = [f"--{name.replace('_', '-')}={getattr(tiny, name)}"
                   for name in ("cnn_width", "hidden", "dim", "conv_channels", "word_dim")]
    cmd = _torchrun_cmd("train", "--catalog", str(tiny_demo_csv), "--out", str(run_dir), "--epochs",
                        str(RESTART_EPOCHS), "--patience", str(RESTART_EPOCHS), "--batch-size", "32", "--threads", "1",
                        *model_flags, max_restarts=1)
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                                env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    killed: dict = {}
    watcher = threading.Thread(target=_kill_rank_one_after_an_epoch, args=(launcher, run_dir, killed), daemon=True)
    watcher.start()
    try:
        out, _ = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:  # timed out: torchrun and its workers, all in the session started for them
            os.killpg(launcher.pid, signal.SIGKILL)
        watcher.join()
    assert killed, f"rank 1 was never killed (torchrun exited {launcher.returncode}):\n{out[-3000:]}"
    assert killed["status"] == "training" and 1 <= len(killed["history"]) < RESTART_EPOCHS  # killed mid-training
    assert launcher.returncode == 0, out[-3000:]
    assert f"(pid: {killed['pid']})" in out  # torchrun reports the killed worker's failure, then restarts
    assert out.count("resuming with the stored") == 1  # the restarted workers resumed from last.pt, once
    meta = read_json(run_dir / "run.json")
    assert meta["status"] == "done" and meta["distributed"]["world_size"] == WORLD
    assert [r["epoch"] for r in meta["history"]] == list(range(1, RESTART_EPOCHS + 1))  # none lost, none twice
    assert meta["history"][:len(killed["history"])] == killed["history"]  # the epochs before the kill were kept
    printed = [int(k) for k in re.findall(r"(?m)^epoch (\d+): ", out)]
    assert printed == sorted(set(printed)) and printed[-1] == RESTART_EPOCHS  # each epoch reported once, in order
