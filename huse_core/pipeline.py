"""The first-start build: demo catalogue -> trained run -> test metrics -> search index -> map, resumable.

Each stage checks its own output and skips when it is already there, so calling `build_demo` again after an
interruption (browser closed, process killed) carries on where it stopped. `pipeline.json` in the run
directory says which stages are finished; a run whose build is unfinished is not offered for use
(`is_complete`). A lock file makes concurrent callers (two browser tabs) wait instead of building twice.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import jobs
from .artifacts import read_json, write_json
from .config import DataConfig, LossConfig, ModelConfig, TrainConfig
from .retrieval.layout import index_ready, map_ready

Callback = Callable[[dict], None]
STAGES = ("demo", "train", "evaluate", "index", "map")
# Share of the whole build each stage takes on the demo's first start, for one progress bar.
WEIGHTS = {"demo": 0.05, "train": 0.70, "evaluate": 0.04, "index": 0.04, "map": 0.17}
MARKER = "pipeline.json"


@dataclass
class DemoSpec:
    """What the demo build makes; the defaults are the app's demo shop, tests pass tiny ones."""

    n_products: int = 3000  # products in the synthetic catalogue
    seed: int = 0  # demo catalogue and split seed
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # A fixed 14 epochs of 128 keep the first start to a few minutes; the auto schedule for 3,000 products trains
    # about 3x longer.  # why: docs/decisions.md#epochs
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=14, batch_size=128, lr=2e-3, patience=4,
                                                                   select_by="fused"))
    # Photo side in pixels: the demo's drawn photos (flat colour, pattern and silhouette) need less than real ones.
    # why: docs/decisions.md#photo-size
    image_size: int = 64

    @classmethod
    def tiny(cls, epochs: int = 2, **train) -> DemoSpec:
        """A 240-product toy with a tiny model (dim 32) that builds in seconds: tests, and the app with
        HUSE_DEMO_SIZE=tiny (it classifies poorly). `train` sets more TrainConfig fields."""
        model = ModelConfig(cnn_width=8, hidden=64, dim=32, conv_channels=32, word_dim=16)
        return cls(n_products=240, model=model,
                   train=TrainConfig(**{"epochs": epochs, "batch_size": 32, "threads": 1, **train}))


def _start(stage: str) -> float:
    return sum(WEIGHTS[s] for s in STAGES[: STAGES.index(stage)])


def stage_state(run_dir: str | Path) -> dict:
    """{"done": [finished stages], "complete": bool} from pipeline.json; a run built elsewhere counts as complete
    when its run.json says done (the app then builds only a missing index or map)."""
    run_dir = Path(run_dir)
    marker = run_dir / MARKER
    if marker.is_file():
        try:
            state = read_json(marker)
            return {"done": list(state.get("done", [])), "complete": bool(state.get("complete"))}
        except (OSError, ValueError):
            return {"done": [], "complete": False}
    return {"done": [], "complete": _train_status(run_dir) == "done"}


def is_complete(run_dir: str | Path) -> bool:
    """True when the run's build finished (or it was trained outside the pipeline and its training finished)."""
    return stage_state(run_dir)["complete"]


def _mark(run_dir: Path, stage: str | None, complete: bool = False) -> None:
    state = stage_state(run_dir) if (run_dir / MARKER).is_file() else {"done": [], "complete": False}
    done = state["done"] + ([stage] if stage and stage not in state["done"] else [])
    write_json(run_dir / MARKER, {"done": done, "complete": complete, "updated": time.strftime("%Y-%m-%d %H:%M:%S")})


def _train_status(run_dir: Path) -> str | None:
    try:
        return read_json(run_dir / "run.json").get("status")
    except (OSError, ValueError):
        return None


_THREAD_LOCK = threading.Lock()


@contextmanager
def build_lock(run_dir: Path, emit: Callback):
    """Hold the build lock for `run_dir` (a file lock across processes, a thread lock where there is no fcntl).

    A second caller waits, and is told so through `emit`, instead of building the same run twice.
    """
    lock_path = jobs.lock_path(run_dir)  # the lock a background training job holds too
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: one process serves the app, a thread lock is enough there
        if not _THREAD_LOCK.acquire(blocking=False):
            emit({"stage": "wait", "message": "another session is building the demo; waiting for it", "overall": 0.0})
            _THREAD_LOCK.acquire()
        try:
            yield
        finally:
            _THREAD_LOCK.release()
        return
    with open(lock_path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            emit({"stage": "wait", "message": "another session is building the demo; waiting for it", "overall": 0.0})
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_demo(data_dir: str | Path, run_dir: str | Path, spec: DemoSpec | None = None,
               callback: Callback | None = None) -> Path:
    """Build (or finish building) the demo run; returns `run_dir`.

    `callback` gets dicts: {"stage": demo|data|features|train|epoch|done|evaluate|index|map|wait|complete,
    "message": str, "overall": 0..1}, plus train's own fields (epoch, epochs, step, steps, loss, val_accuracy).
    Calling it again on a finished run does nothing but report "complete".
    """
    spec = spec or DemoSpec()
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    emit = callback or (lambda event: None)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(run_dir, emit):
        if is_complete(run_dir) and (run_dir / MARKER).is_file():
            emit({"stage": "complete", "message": "the demo run is ready", "overall": 1.0})
            return run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / MARKER).is_file():
            _mark(run_dir, None)
        csv = _demo_stage(data_dir, spec, emit)
        _mark(run_dir, "demo")
        _train_stage(csv, run_dir, spec, emit)
        _mark(run_dir, "train")
        _evaluate_stage(run_dir, emit)
        _mark(run_dir, "evaluate")
        _index_stage(run_dir, emit)
        _mark(run_dir, "index")
        _mark(run_dir, "map", complete=True)
        emit({"stage": "complete", "message": "the demo run is ready", "overall": 1.0})
    return run_dir


def _demo_stage(data_dir: Path, spec: DemoSpec, emit: Callback) -> Path:
    from .data.demo import generate_demo

    csv = data_dir / "metadata.csv"
    if csv.is_file():  # generate_demo writes the CSV last and whole: its presence means the images are there
        emit({"stage": "demo", "message": f"demo catalogue found in {data_dir}", "overall": WEIGHTS["demo"]})
        return csv
    emit({"stage": "demo", "message": f"drawing {spec.n_products:,} demo products", "overall": 0.0})
    return generate_demo(data_dir, n_products=spec.n_products, seed=spec.seed, progress=False)


def _train_stage(csv: Path, run_dir: Path, spec: DemoSpec, emit: Callback) -> None:
    import torch

    from .training.train import train
    from .training.validation import kept_accuracy

    status = _train_status(run_dir)
    if status == "done" and (run_dir / "model.pt").is_file():
        emit({"stage": "train", "message": "model already trained", "overall": _start("evaluate")})
        return
    resume = status == "training" and (run_dir / "last.pt").is_file()
    if not resume:  # leftovers of a run that never finished an epoch: start over cleanly
        for name in ("run.json", "model.pt", "last.pt"):
            (run_dir / name).unlink(missing_ok=True)
    start, weight = _start("train"), WEIGHTS["train"]

    def relay(event: dict) -> None:
        event = dict(event)
        if event["stage"] == "train":
            done = (event["epoch"] - 1 + event["step"] / event["steps"]) / event["epochs"]
            event["message"] = f"training: epoch {event['epoch']}/{event['epochs']}, loss {event['loss']['total']:.3f}"
            event["overall"] = start + weight * done
        elif event["stage"] == "epoch":
            acc = kept_accuracy(event).get("fused", 0.0)
            event["message"] = f"epoch {event['epoch']} done: validation accuracy {acc:.1%}"
            event["overall"] = start + weight * event["epoch"] / event["epochs"]
        else:
            event.setdefault("message", event["stage"])
            event["overall"] = start if event["stage"] != "done" else start + weight
        emit(event)

    emit({"stage": "train", "message": "resuming the interrupted training" if resume else "training the model",
          "overall": start})
    data_cfg = DataConfig(catalog=str(csv), seed=spec.seed, image_size=spec.image_size)
    threads = torch.get_num_threads()
    try:
        train(data_cfg, spec.model, spec.loss, spec.train, run_dir, resume=resume, progress=False, callback=relay)
    finally:
        torch.set_num_threads(threads)  # train() sets it process-wide; the app's other sessions get theirs back


def _evaluate_stage(run_dir: Path, emit: Callback) -> None:
    from .training.evaluate import evaluate

    if "test" in (read_json(run_dir / "run.json").get("metrics") or {}):
        return
    emit({"stage": "evaluate", "message": "measuring accuracy on the test split", "overall": _start("evaluate")})
    evaluate(run_dir, progress=False)


def _index_stage(run_dir: Path, emit: Callback) -> None:
    """The "index" and "map" stages: one index build makes both, so index.json says whether the map is there."""
    from .retrieval.build import build_index

    if index_ready(run_dir) and map_ready(run_dir):
        return
    start, weight = _start("index"), WEIGHTS["index"] + WEIGHTS["map"]

    def relay(event: dict) -> None:
        if event["stage"] != "done":  # build_demo reports "complete" itself
            emit({"stage": "map" if event["stage"] == "map" else "index", "message": event["message"],
                  "overall": start + weight * event["fraction"]})

    build_index(run_dir, with_map=True, progress=False, callback=relay)


def remove_build(run_dir: str | Path) -> None:
    """Delete a demo run (for "rebuild from scratch"); only folders holding a pipeline.json are removed."""
    run_dir = Path(run_dir)
    if (run_dir / MARKER).is_file():
        shutil.rmtree(run_dir)
