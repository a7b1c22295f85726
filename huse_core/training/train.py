"""Training a HUSE run: settings, data and model, the epochs with their losses, validation, resume, the finish.

`train` reads as its steps: the settings (`_settings`: planned, or a resumed run's stored ones), the data and
model (`Training.start`), then per epoch `Training.epoch` and `Training.validate_and_keep`, then `Training.finish`
(the wide head, flip TTA, the fusion rule). The schedule is schedule.py; what is chosen on validation is
validation.py; the checkpoint is checkpoint.py; settings on resume are resume.py; training across processes under
torchrun (DDP) is distributed.py.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from ..artifacts import read_json
from ..config import DataConfig, LossConfig, ModelConfig, TrainConfig
from .checkpoint import SMOOTHING
from .distributed import World
from .loop import Training
from .resume import Given, Stored
from .schedule import Schedule, plan
from .setup import check_before_decoding, graph_distance, make_optimizer, pick_device, training_autocast

__all__ = ["SMOOTHING", "graph_distance", "make_optimizer", "pick_device", "train", "training_autocast"]

Callback = Callable[[dict], None]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Settings:
    """What a run trains with: its four configs, its schedule (None: every setting given, in older runs) and,
    when resuming, what run.json stored."""

    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    train: TrainConfig
    schedule: Schedule | None = None
    stored: Stored | None = None


def train(
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    loss_cfg: LossConfig,
    train_cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    callback: Callback | None = None,
    given: list[Given] | None = None,
) -> dict:
    """Train a run into `run_dir` and return its run.json dict.

    Settings left on auto (None) are chosen from the catalogue's size (`plan`), printed, and stored resolved
    in run.json (with the schedule and its reasons under "schedule"). Every epoch rewrites last.pt (for --resume)
    and run.json atomically; model.pt is the best epoch on validation (`selection_score`). `callback` gets a dict
    per event, for live progress in the app.

    `resume` continues the run in `run_dir` with its stored settings (the configs given are not read); `given`:
    the settings the user gave explicitly with it (resume.Given), of which epochs, patience, max_steps and threads
    are applied and any other change is refused (ValueError) before anything is written.

    Under torchrun each process trains on its shard of every global batch (`batch_size` products a step in all);
    rank 0 alone writes, prints, validates and decides, and every process returns its run.json dict.
    """
    run_dir = Path(run_dir)
    world = World.from_env(pick_device(train_cfg.device if train_cfg is not None else "auto"))
    emit = callback if callback is not None and world.is_main else (lambda event: None)
    progress = progress and world.is_main
    resume = resume or (world.restarted and (run_dir / "last.pt").is_file())  # torchrun --max-restarts: carry on
    settings = _settings(Settings(data_cfg, model_cfg, loss_cfg, train_cfg), run_dir, resume, given or [],
                         world, progress, emit)
    run = Training.start(settings.data, settings.model, settings.loss, settings.train, settings.schedule,
                         settings.stored, run_dir, world, emit, progress)
    low_precision = training_autocast(run.cfg.precision, run.device)
    for epoch in range(run.state.epoch + 1, run.n_epochs):  # = epochs, unless --max-steps cuts them
        run.model.image.autocast = low_precision
        loss = run.epoch(epoch)
        stop = run.validate_and_keep(epoch, loss) if world.is_main else False
        if world.broadcast(stop):  # rank 0 decided; the others follow
            break
    meta = run.finish()
    world.close()
    return meta


def _settings(given_cfgs: Settings, run_dir: Path, resume: bool, given: list[Given], world: World,
              progress: bool, emit: Callback) -> Settings:
    """The settings to train with: a resumed run's stored ones (with `given`'s safe changes), else the given
    configs with the auto ones planned from the catalogue's size. Also seeds torch and sets its threads, and
    fails fast on missing packages or weights."""
    last_path, meta_path = run_dir / "last.pt", run_dir / "run.json"
    s = given_cfgs
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"nothing to resume in {run_dir}: no last.pt. Start a new run without --resume.")
        stored = Stored.read(run_dir)
        applied = stored.apply(given)
        s = Settings(stored.data, stored.model, stored.loss, stored.train, stored.schedule, stored)
        if applied and progress:
            log.info(applied)
        if applied:
            emit({"stage": "resume", "message": applied})
    elif meta_path.exists() and read_json(meta_path).get("status") == "training" and last_path.exists():
        raise FileExistsError(f"{run_dir} holds an unfinished run; pass --resume to continue it, or choose "
                              f"another --out.")
    if s.train.epochs == 0:  # the model as built: only the CLIP pair's zero-shot model is one worth keeping
        if not s.model.zero_shot:
            raise ValueError("--epochs 0 keeps the model as built, untrained: that is only a model with --zero-shot "
                             "(the same openclip: encoder under both towers); give 1 or more epochs")
        s.model = dataclasses.replace(s.model, fusion_layer=False)  # an untrained fusion layer is noise
    torch.set_num_threads(s.train.threads or world.threads)  # under torchrun: the cores shared by its processes
    torch.manual_seed(s.train.seed)
    device = world.device(pick_device(s.train.device))
    check_before_decoding(s.model, s.loss)
    emit({"stage": "data", "message": "reading the catalogue"})
    if not resume:  # a resumed run's stored configs hold the resolved values
        if s.data.catalog:  # stored absolute: evaluate, index and audit find it from any folder
            s.data = dataclasses.replace(s.data, catalog=str(Path(s.data.catalog).expanduser().resolve()))
        s.data, s.model, s.train, s.schedule, s.loss = plan(s.data, s.model, s.train, s.loss, device=device.type)
    if s.schedule is not None:
        emit({"stage": "schedule", "message": f"schedule: batch {s.train.batch_size}, lr {s.train.lr:g}, "
              f"up to {s.train.epochs} epochs", "schedule": s.schedule.to_dict()})
        if progress:
            log.info(("resuming with the stored " if resume else "") + s.schedule.describe())
    return s
