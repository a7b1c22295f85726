"""One run's training in progress (`Training`): built once, then an epoch, validate-and-keep, and the finish."""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..artifacts import load_torch, save_torch, write_json
from ..config import DataConfig, LossConfig, ModelConfig, TrainConfig, to_dict
from ..data.catalog import normalise_title
from ..model import build_model
from ..prepare import Prepared, augment, cache_dir_for, prepare
from ..run import RUN_FORMAT
from .checkpoint import Checkpoint, LoopState
from .distributed import TrainStep, World
from .ema import make_ema
from .losses import HuseLoss
from .resume import Stored
from .schedule import Schedule
from .setup import graph_distance, make_optimizer, pick_device
from .validation import accuracy_by_modality, choose_flip_tta, selection_score, tune_fusion_weights, validation_rows
from .wide_fit import fit_wide_head

log = logging.getLogger(__name__)


@dataclass
class EpochLoss:
    """What one epoch's steps measured: the loss terms summed over its products, and its pace."""

    sums: dict[str, float]
    seen: int  # products this process trained on
    rate: float  # products a second, every process together
    started: float  # time.time() at its start


@dataclass
class Training:
    """Everything the epochs share: the data, the model and its optimiser, the validation rows, run.json's dict
    (`meta`) and the loop's state (`state`, what last.pt keeps)."""

    run_dir: Path
    world: World
    cfg: TrainConfig
    prep: Prepared
    model: torch.nn.Module
    criterion: HuseLoss
    opt: torch.optim.Optimizer
    sched: object
    ema: torch.nn.Module | None  # the weights' moving average (rank 0 only; None when off)
    device: torch.device
    train_rows: np.ndarray
    val_rows: np.ndarray
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    meta: dict
    state: LoopState
    forward: torch.nn.Module  # the train step (model and loss), under DDP where torchrun launched this process
    title_group: np.ndarray  # per product: products with the same normalised title share an id (not pushed apart)
    emit: Callable[[dict], None]
    progress: bool

    @property
    def n_epochs(self) -> int:
        """The epochs to run: `cfg.epochs`, fewer where --max-steps ends training sooner."""
        return -(-self.total_steps // self.steps_per_epoch)

    @classmethod
    def start(cls, data_cfg: DataConfig, model_cfg: ModelConfig, loss_cfg: LossConfig, cfg: TrainConfig,
              schedule: Schedule | None, stored: Stored | None, run_dir: Path, world: World, emit, progress: bool
              ) -> Training:
        """Prepares the data, builds the model, its loss and optimiser (restored from last.pt when resuming),
        and writes the run's first run.json."""
        device = world.device(pick_device(cfg.device))
        with world.main_first():  # rank 0 fills the decode cache; the others then read it
            prep = prepare(data_cfg, model_cfg, cache_dir_for(data_cfg, run_dir), progress=progress,
                           tokenizer=None if stored is None else stored.meta["tokenizer"])
        if progress:
            log.info(prep.catalog.report.summary())
        model = build_model(model_cfg, prep.heads, prep.tokenizer.n_tokens, idf=prep.tokenizer.idf).to(device)
        criterion = HuseLoss(loss_cfg, {h["name"]: h["kind"] for h in prep.heads}, prep.leaf,
                             graph_distance(loss_cfg, prep)).to(device)
        if model.image.frozen:
            emit({"stage": "features", "message": f"computing {model_cfg.backbone} features once"})
            with world.main_first():
                prep.compute_features(model, device, progress)
        train_rows, val_rows = prep.split("train"), validation_rows(prep.split("val"), cfg, progress)
        per_process = world.per_process_batch(cfg.batch_size, len(train_rows))
        global_batch = per_process * world.world_size  # = batch_size unless it doesn't split evenly
        steps_per_epoch = max(1, len(train_rows) // global_batch)
        total_steps = _capped_steps(steps_per_epoch, cfg, progress)
        opt, sched = make_optimizer(model, cfg, total_steps, criterion)
        ema = make_ema(model, cfg.ema) if world.is_main else None  # validated beside the weights
        meta = _first_meta(data_cfg, model_cfg, loss_cfg, cfg, schedule, prep, model, world, len(val_rows),
                           global_batch, per_process)
        state = LoopState()
        if stored is not None:
            state = Checkpoint.load(run_dir / "last.pt", stored.meta).restore(model, criterion, opt, sched, ema)
            meta.update(history=state.history, best_epoch=state.best_epoch, best_weights=state.best_weights)
        run = cls(run_dir, world, cfg, prep, model, criterion, opt, sched, ema, device, train_rows, val_rows,
                  global_batch, steps_per_epoch, total_steps, meta, state,
                  forward=world.wrap(TrainStep(model, criterion, world.gather if world.enabled else None),
                                     loss_cfg.losses),
                  title_group=prep.catalog.df["title"].map(normalise_title).factorize()[0].astype(np.int64),
                  emit=emit, progress=progress)
        if world.is_main:
            write_json(run_dir / "run.json", meta)
        if cfg.epochs == 0 and world.is_main:  # saved as built; validation still picks flip TTA and fusion
            save_torch(run_dir / "model.pt", model.state_dict())
            meta["best_epoch"] = 0
        return run

    def epoch(self, epoch: int) -> EpochLoss:
        """Trains one epoch (from 0) on this process's shard of every batch; returns its summed losses."""
        cfg, prep, world, device = self.cfg, self.prep, self.world, self.device
        self.model.train()
        rng = np.random.default_rng(cfg.seed * 1000 + epoch)  # per-epoch order: resumes reproduce it
        order = rng.permutation(self.train_rows)  # the same on every process; each takes its shard of every batch
        aug_rng = world.seed_epoch(cfg.seed, epoch, rng)
        sums: dict[str, float] = {}
        seen, t0, rate = 0, time.time(), 0.0
        steps = min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)  # fewer: --max-steps
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not self.progress, leave=False)
        for step in bar:
            rows = world.shard(order[step * self.global_batch : (step + 1) * self.global_batch])
            text_input = prep.text_input(rows).to(device)  # token ids, or cached sentence embeddings (minilm)
            if self.model.image.frozen:
                image_input = torch.from_numpy(prep.features[rows]).to(device)
            else:
                pixels = torch.from_numpy(prep.pixels[rows]).to(device)
                image_input = augment(pixels, aug_rng) if cfg.augment else pixels
            labels = {h: torch.from_numpy(y[rows]).to(device) for h, y in prep.labels.items()}
            terms = self.forward(image_input, text_input, labels, torch.from_numpy(self.title_group[rows]).to(device))
            self.opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            self.opt.step()
            self.sched.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            seen += len(rows)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(rows)
            rate = seen * world.world_size / max(time.time() - t0, 1e-9)  # products/s of all processes
            bar.set_postfix({k: f"{v / seen:.3f}" for k, v in sums.items()} | {"prod/s": f"{rate:.0f}"})
            self.emit({"stage": "train", "epoch": epoch + 1, "epochs": cfg.epochs, "step": step + 1,
                       "steps": steps, "loss": {k: v / seen for k, v in sums.items()}})
        return EpochLoss(world.mean(sums), seen, rate, t0)  # loss sums of every process (each saw `seen`)

    def validate_and_keep(self, epoch: int, loss: EpochLoss) -> bool:
        """Rank 0 after an epoch: validates the weights (and their average), keeps the better as model.pt when
        it beats every earlier epoch, writes last.pt then run.json; returns whether early stopping ends training."""
        self.model.eval()
        self.model.image.autocast = None  # validation measures what inference will give: fp32
        val = accuracy_by_modality(self.model, self.prep, self.val_rows, self.device)
        val_ema = (accuracy_by_modality(self.ema.module, self.prep, self.val_rows, self.device)
                   if self.ema is not None else None)
        score = selection_score(val, self.cfg.select_by)
        ema_score = selection_score(val_ema, self.cfg.select_by) if val_ema is not None else -1.0
        use_ema, score = ema_score > score, max(score, ema_score)
        record = _record(epoch, loss, val, val_ema, use_ema, self.criterion)
        self.state.history.append(record)
        if self.state.score(epoch, score, record.get("weights", "raw")):  # model.pt: the best epoch so far
            save_torch(self.run_dir / "model.pt", (self.ema.module if use_ema else self.model).state_dict())
        Checkpoint.capture(self.model, self.criterion, self.opt, self.sched, self.ema, self.state).save(
            self.run_dir / "last.pt")
        self.meta.update(history=self.state.history, best_epoch=self.state.best_epoch,
                         best_weights=self.state.best_weights)
        write_json(self.run_dir / "run.json", self.meta)
        self.emit({"stage": "epoch", **record, "epochs": self.cfg.epochs})
        if self.progress:
            _print_epoch(record, val, val_ema, self.prep.leaf, use_ema)
        stop = self.state.stale >= self.cfg.patience
        if stop and self.progress:
            log.info(f"early stop: no better smoothed validation score ({self.cfg.select_by}) for {self.state.stale} "
                  f"epochs")
        return stop

    def finish(self) -> dict:
        """After the epochs: the best epoch's weights, the wide head fitted on top, flip TTA and the fusion rule
        chosen on validation; run.json marked done. Every process returns the run's dict."""
        world, meta, model = self.world, self.meta, self.model
        drift = world.max_drift(model, self.criterion)  # DDP keeps the copies equal; this checks it (0.0 = same)
        if world.is_main:
            meta["distributed"] |= {"weight_drift": drift} if world.enabled else {}
            model.load_state_dict(load_torch(self.run_dir / "model.pt"))  # the best epoch, as saved
            meta["wide_head"] = fit_wide_head(model, self.prep, self.prep.split("train"), self.val_rows,
                                              self.device, self.cfg.seed, self.progress)
            if model.wide is not None:  # the towers as the best epoch left them, the wide head fitted on top
                save_torch(self.run_dir / "model.pt", model.state_dict())
            meta["flip_tta"] = choose_flip_tta(model, self.prep, self.val_rows, self.device, self.progress)
            meta["fusion_weights"], meta["fusion_layer_heads"] = tune_fusion_weights(model, self.prep,
                                                                                     self.val_rows, self.device)
            meta["status"] = "done"
            write_json(self.run_dir / "run.json", meta)
            self.emit({"stage": "done", "best_epoch": meta["best_epoch"]})
        return world.broadcast(meta)


def _capped_steps(steps_per_epoch: int, cfg: TrainConfig, progress: bool) -> int:
    """The steps training takes: every epoch's, or --max-steps where that is fewer."""
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps < 0:
        raise ValueError(f"--max-steps must be 0 (no cap) or more, got {cfg.max_steps}")
    if cfg.max_steps and cfg.max_steps < total:
        total = cfg.max_steps
        if progress:
            log.info(f"--max-steps {total:,}: training stops there, in epoch {-(-total // steps_per_epoch)} of "
                  f"{cfg.epochs}")
    return total


def _first_meta(data_cfg, model_cfg, loss_cfg, cfg, schedule, prep: Prepared, model, world: World, val_used: int,
                global_batch: int, per_process: int) -> dict:
    """run.json as training starts: the settings, the data's heads and splits, the versions, no epoch yet."""
    return {
        "format": RUN_FORMAT, "status": "training", "huse_core": __version__, "torch": torch.__version__,
        "python": platform.python_version(), "data": to_dict(data_cfg), "model": to_dict(model_cfg),
        "loss": to_dict(loss_cfg), "train": to_dict(cfg), "heads": prep.heads, "levels": prep.levels,
        "leaf": prep.leaf, "leaf_paths": prep.leaf_paths, "tokenizer": prep.tokenizer.to_dict(),
        "catalog_size": len(prep.catalog.df), "splits": {s: int(len(prep.split(s))) for s in ("train", "val", "test")},
        "val_used": val_used, "load_report": prep.catalog.report.summary(), "history": [], "best_epoch": None,
        "encoders": model.encoders(),  # hub encoders' names, versions and weight fingerprints
        "distributed": world.describe(global_batch, per_process),
        **({"schedule": schedule.to_dict()} if schedule is not None else {}),
    }


def _record(epoch: int, loss: EpochLoss, val: dict, val_ema: dict | None, use_ema: bool, criterion) -> dict:
    """An epoch's line in run.json's history."""
    return {"epoch": epoch + 1, "seconds": round(time.time() - loss.started, 2), "products_per_s": round(loss.rate, 1),
            "loss": {k: round(v / loss.seen, 5) for k, v in loss.sums.items()},
            "val_accuracy": {k: round(v, 5) for k, v in val.items()},
            **({"val_accuracy_ema": {k: round(v, 5) for k, v in val_ema.items()},
                "weights": "ema" if use_ema else "raw"} if val_ema is not None else {}),
            **({"nce_scale": round(float(criterion.nce.scale.detach()), 3)} if criterion.nce else {})}


def _print_epoch(record: dict, val: dict, val_ema: dict | None, leaf: str, use_ema: bool) -> None:
    terms = " ".join(f"{k}={v:.4f}" for k, v in record["loss"].items())
    accs = " ".join(f"{k}={v:.3f}" for k, v in val.items())
    if val_ema is not None:
        accs += " | ema " + " ".join(f"{k}={v:.3f}" for k, v in val_ema.items()) + (" (better)" * use_ema)
    log.info(f"epoch {record['epoch']}: {terms} | val {leaf} acc {accs} | {record['seconds']:.0f}s")
