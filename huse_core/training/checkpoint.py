"""last.pt, what `train --resume` continues from: written and read here only, loaded weights-only.

Its tensors are the state dicts of the model, the loss, the optimiser, its schedule and the weights' average, and
the random state; the rest (LoopState) is plain JSON values, rebuilt into the dataclass on load. Written after
every epoch, before run.json, so its own copy of the history survives a kill between the two.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..artifacts import load_torch, save_torch
from .setup import move_schedule

# Early stopping counts epochs without a better smoothed score: smooth = SMOOTHING * smooth + (1 - SMOOTHING) * score.
# A 1,000-product shop (96 validation products), two runs, last two thirds of the epochs: the raw "mean" score sat
# below its best in 12/27 and 20/28 epochs (raw fused: 15/27, 19/28), the smoothed one in 10/27 and 11/28.
SMOOTHING = 0.5


@dataclass
class LoopState:
    """Where training stands after an epoch: what model.pt's choice and early stopping count against."""

    epoch: int = -1  # the last finished epoch, from 0 (-1: none yet)
    best: float = -1.0  # the best selection score so far: model.pt's epoch
    stale: int = 0  # epochs since the smoothed score last improved
    smooth: float | None = None  # the smoothed score (None before the first epoch)
    best_smooth: float = -1.0
    history: list[dict] = field(default_factory=list)  # one record per epoch, as in run.json
    best_epoch: int | None = None  # model.pt's epoch, from 1
    best_weights: str = "raw"  # model.pt holds the weights ("raw") or their moving average ("ema")

    def score(self, epoch: int, score: float, weights: str) -> bool:
        """Counts an epoch's selection score; True where it is the best so far (model.pt is to be rewritten)."""
        self.epoch = epoch
        better = score > self.best
        if better:
            self.best, self.best_epoch, self.best_weights = score, epoch + 1, weights
        self.smooth = score if self.smooth is None else SMOOTHING * self.smooth + (1 - SMOOTHING) * score
        self.stale = 0 if self.smooth > self.best_smooth else self.stale + 1  # steadier than the raw score
        self.best_smooth = max(self.best_smooth, self.smooth)
        return better

    @classmethod
    def from_saved(cls, state: dict, meta: dict) -> LoopState:
        """From last.pt's values; a last.pt from before a field existed takes it from run.json (`meta`) or as the
        older code behaved (no smoothing yet: the raw best)."""
        epoch, best = int(state["epoch"]), float(state["best"])
        return cls(epoch=epoch, best=best, stale=int(state["stale"]), smooth=state.get("smooth"),
                   best_smooth=float(state.get("best_smooth", best)),
                   history=list(state.get("history", meta.get("history", [])[: epoch + 1])),
                   best_epoch=state.get("best_epoch", meta.get("best_epoch")),
                   best_weights=state.get("best_weights", meta.get("best_weights", "raw")))


@dataclass
class Checkpoint:
    """Everything a resumed run needs to carry on as if never stopped."""

    model: dict
    criterion: dict
    optimizer: dict
    scheduler: dict
    rng: torch.Tensor  # torch's random state: the dropout draws a resumed run repeats
    state: LoopState
    ema: dict | None = None  # the weights' moving average (--ema), None when off

    @classmethod
    def capture(cls, model, criterion, opt, sched, ema, state: LoopState) -> Checkpoint:
        return cls(model.state_dict(), criterion.state_dict(), opt.state_dict(), sched.state_dict(),
                   torch.get_rng_state(), state, ema.state_dict() if ema is not None else None)

    def save(self, path: str | Path) -> Path:
        """Atomically, as one flat dict of tensors and JSON values (the layout older versions read)."""
        return save_torch(path, {"model": self.model, "criterion": self.criterion, "optimizer": self.optimizer,
                                 "scheduler": self.scheduler, **dataclasses.asdict(self.state),
                                 **({"ema": self.ema} if self.ema is not None else {}), "rng": self.rng})

    @classmethod
    def load(cls, path: str | Path, meta: dict) -> Checkpoint:
        """last.pt, weights-only; `meta` (run.json) fills what an older last.pt lacks."""
        saved = load_torch(path)
        return cls(saved["model"], saved.get("criterion", {}), saved["optimizer"], saved["scheduler"], saved["rng"],
                   LoopState.from_saved(saved, meta), saved.get("ema"))

    def restore(self, model, criterion, opt, sched, ema) -> LoopState:
        """Loads the weights and the optimiser into freshly built ones and returns the loop's state. The schedule
        carries on where it stood; over a new number of steps (--epochs or --max-steps changed on resume) the
        fresh schedule is moved to the step reached instead."""
        model.load_state_dict(self.model)
        criterion.load_state_dict(self.criterion or criterion.state_dict())
        opt.load_state_dict(self.optimizer)
        if ema is not None and self.ema is not None:  # a last.pt without one (older, or --ema new) starts afresh
            ema.load_state_dict(self.ema)
        if sched.state_dict().get("total_steps") == self.scheduler.get("total_steps"):
            sched.load_state_dict(self.scheduler)
        else:
            move_schedule(sched, int(self.scheduler["last_epoch"]))
        torch.set_rng_state(self.rng)
        return self.state
