"""What a job runs: the `python -m huse_core` command lines that train given configs, evaluate and index a run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..artifacts import read_json
from ..config import DataConfig, LossConfig, ModelConfig, TrainConfig

STEP_MESSAGES = {"train": "training", "evaluate": "measuring accuracy on the test split",
                 "index": "building the search index and map"}
# Flags named otherwise than their field (as cli.RENAMED names them); catalog has its own flag.
FLAG_NAMES = {(DataConfig, "seed"): "split-seed", (DataConfig, "catalog"): "catalog"}


def _flag_value(value) -> str:
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
        if any("," in item for item in items):
            raise ValueError(f"{items} holds a comma, which the command line can't pass in a list; rename it")
        return ",".join(items)
    return repr(value) if isinstance(value, float) else str(value)


def config_argv(cfg) -> list[str]:
    """The `train` flags that rebuild `cfg` (a config dataclass): one per field that differs from its default."""
    argv = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if value is None or value == default:
            continue
        flag = FLAG_NAMES.get((type(cfg), f.name), f.name.replace("_", "-"))
        if isinstance(value, bool):
            argv.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            argv.append(f"--{flag}={_flag_value(value)}")  # "=": a value may start with "-"
    return argv


def train_argv(run_dir: str | Path, data: DataConfig, model: ModelConfig, loss: LossConfig,
               train: TrainConfig) -> list[str]:
    """`python -m huse_core` arguments that train these configs into `run_dir`, as the CLI would."""
    argv = ["train", f"--out={run_dir}"]
    for cfg in (data, model, loss, train):
        argv += config_argv(cfg)
    # the CLI derives these two when they are not given: give them as they are
    return argv + [f"--split-seed={data.seed}", f"--image-size={data.image_size}"]


def plan(run_dir: Path, train_args: list[str] | None, index: bool, events: Path) -> list[dict]:
    """The steps that finish the run, each {"name", "argv"}: train (fresh with `train_args`, or --resume from
    last.pt; its events to `events`), evaluate, and with `index` the search index and map."""
    from ..retrieval.layout import index_ready, map_ready

    try:
        meta = read_json(run_dir / "run.json")
    except (OSError, ValueError):
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    steps = []
    if meta.get("status") != "done" or not (run_dir / "model.pt").is_file():
        if meta.get("status") == "training" and (run_dir / "last.pt").is_file():
            train_args = ["train", f"--out={run_dir}", "--resume"]
        elif not train_args:
            raise ValueError(f"nothing to resume in {run_dir}: no finished epoch (last.pt) and no stored start")
        steps.append({"name": "train", "argv": [*train_args, f"--progress-file={events}"]})
    if steps or "test" not in (meta.get("metrics") or {}):
        steps.append({"name": "evaluate", "argv": ["evaluate", f"--run={run_dir}", "--quiet"]})
    if index and (steps or not (index_ready(run_dir) and map_ready(run_dir))):
        steps.append({"name": "index", "argv": ["index", f"--run={run_dir}", "--quiet"]})
    return steps
