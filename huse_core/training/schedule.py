"""The size-aware training schedule: batch, learning rate, epochs, patience, early-stopping score, dropout, rare-class
merging and the alignment loss's anchor, chosen from the catalogue's size and class counts; a given setting wins."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from ..config import DEFAULT_DROPOUT, DataConfig, LossConfig, ModelConfig, TrainConfig
from ..data.catalog import load_catalog

SMALL_SHOP, MID_SHOP, LARGE_SHOP = 2_000, 10_000, 100_000  # training products: where the size bands start
BASE_BATCH, BASE_LR = 128, 2e-3  # the 44k catalogue's tuned pair; other batch sizes scale the rate by sqrt
# ~ what the 44k catalogue trains today (14 epochs x 273 steps of 128 = 3,822 steps, ~27 min on 2 CPU cores).
TARGET_STEPS = 3_800
# On a CUDA device a step costs a small fraction of a CPU step, so auto epochs aim at this many times the steps
# (capped by MAX_EPOCHS): the photo tower still gains past the CPU's epoch budget.  # why: docs/decisions.md#epochs
GPU_STEPS_FACTOR = 2.5
MIN_EPOCHS, MAX_EPOCHS = 4, 40  # a huge catalogue still sees its data a few times; a tiny one stops overfitting
STEADY_BELOW = 1_000  # validation products under which one head's accuracy is too noisy to pick the best epoch
RARE_SHARE = 0.05  # merging rare classes may put at most this share of a head's training products into "other"
SELECT_BY = ("fused", "mean")
DROPOUT = DEFAULT_DROPOUT  # the paper's, at every catalogue size measured
# The alignment loss moves both towers from this many training products, below it only photos (titles held fixed).
# why: docs/decisions.md#alignment-term
ALIGN_BOTH_FROM = 5_000


def _n(x: int) -> str:
    return f"{x:,}"


def size_band(n_train: int) -> str:
    if n_train < SMALL_SHOP:
        return "small shop"
    if n_train < MID_SHOP:
        return "mid-size shop"
    return "large catalogue" if n_train < LARGE_SHOP else "very large catalogue"


@dataclass
class Schedule:
    """The settings a run trains with and, for each, why (``"given"`` when the caller set it)."""

    n_train: int  # training products
    n_val: int  # validation products
    batch_size: int
    lr: float
    epochs: int
    patience: int
    select_by: str  # early stopping's score: fused = leaf fused accuracy; mean = mean of photo/title/fused
    dropout: float
    min_class_count: int
    nce_anchor: str = "none"  # the alignment loss: none = both towers move | text = titles held fixed
    device: str = "cpu"  # the device type the schedule was planned for (cuda: GPU_STEPS_FACTOR x the steps)
    why: dict[str, str] = field(default_factory=dict)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.n_train // self.batch_size)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps}

    @classmethod
    def from_dict(cls, data: dict) -> Schedule:
        """The schedule stored in a run.json (keys this version doesn't know are ignored)."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})

    def describe(self) -> str:
        """One readable block: each setting, its value and why."""
        rows = [("batch size", self.batch_size, "batch_size"), ("learning rate", f"{self.lr:g}", "lr"),
                ("epochs (at most)", self.epochs, "epochs"), ("patience", self.patience, "patience"),
                ("early stopping on", self.select_by, "select_by"), ("dropout", f"{self.dropout:g}", "dropout"),
                ("min class count", self.min_class_count, "min_class_count"),
                ("alignment moves", "both" if self.nce_anchor == "none" else "photos", "nce_anchor")]
        head = (f"training schedule for {_n(self.n_train)} training products ({size_band(self.n_train)}): "
                f"{_n(self.steps_per_epoch)} steps an epoch, {_n(self.total_steps)} steps at most")
        return "\n".join([head] + [f"  {name:<18}{str(value):<9}{self.why.get(key, '')}" for name, value, key in rows])


def _lr_for(batch: int) -> float:
    return float(f"{BASE_LR * math.sqrt(batch / BASE_BATCH):.2g}")


def _rare_share(counts: list[int], threshold: int) -> float:
    total = sum(counts)
    return sum(c for c in counts if c < threshold) / total if total else 0.0


def plan_schedule(n_train: int, class_counts: dict[str, list[int]], cfg: TrainConfig, *, n_val: int | None = None,
                  dropout: float | None = None, min_class_count: int | None = None,
                  nce_anchor: str | None = None, device: str = "cpu") -> Schedule:
    """The schedule for `n_train` training products whose single-label heads have these training-split class
    counts (before any merging). Fields set in `cfg` (or `dropout`, `min_class_count`, `nce_anchor`) are kept as
    given; the rest (None) are chosen here. `n_val` defaults to an eighth of `n_train` (a 0.8/0.1/0.1 split).
    `device` "cuda" aims auto epochs at GPU_STEPS_FACTOR times the steps: a GPU affords the longer schedule."""
    if n_train < 1:
        raise ValueError("no training products: the schedule needs at least one")
    n_val = max(0, n_train // 8) if n_val is None else n_val
    band = size_band(n_train)
    why: dict[str, str] = {}

    def pick(name: str, given, auto_value, reason: str):
        why[name] = "given" if given is not None else reason
        return given if given is not None else auto_value

    auto_batch = 32 if n_train < SMALL_SHOP else 64 if n_train < MID_SHOP else 128 if n_train < LARGE_SHOP else 256
    batch = pick("batch_size", cfg.batch_size, auto_batch,
                 f"{_n(n_train)} training products ({band})" + (": small batches give it enough optimiser steps"
                                                               if auto_batch < BASE_BATCH else ""))
    lr = pick("lr", cfg.lr, _lr_for(batch), f"{BASE_LR:g} at batch {BASE_BATCH}, scaled by sqrt(batch / {BASE_BATCH})")
    if batch < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch}")
    steps = max(1, n_train // batch)
    target = int(TARGET_STEPS * (GPU_STEPS_FACTOR if device == "cuda" else 1))
    need = math.ceil(target / steps)
    auto_epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, need))
    bound = "" if auto_epochs == need else f", kept to {MIN_EPOCHS}-{MAX_EPOCHS}"
    gpu = f" (a CUDA device: {GPU_STEPS_FACTOR:g}x the CPU's {_n(TARGET_STEPS)})" if device == "cuda" else ""
    epochs = pick("epochs", cfg.epochs, auto_epochs,
                  f"{_n(target)} target steps{gpu} / {_n(steps)} an epoch = {_n(need)}{bound}")
    patience = pick("patience", cfg.patience, max(4, math.ceil(epochs / 4)),
                    "a quarter of the epochs, at least 4: a one-cycle rate peaks early and gains late")
    steady = n_val < STEADY_BELOW
    enough = "too few for one accuracy, so the mean of photo, title and fused" if steady else "enough for fused alone"
    select_by = pick("select_by", cfg.select_by, "mean" if steady else "fused",
                     f"{_n(n_val)} validation products: {enough}")
    if select_by not in SELECT_BY:
        raise ValueError(f"unknown early-stopping score {select_by!r}; choose {' or '.join(SELECT_BY)}")
    dropout = pick("dropout", dropout, DROPOUT, "the paper's, at every size: 0.25 did no better on 1,000 products")
    size_min = 3 if n_train < SMALL_SHOP else 5
    worst = max((_rare_share(c, size_min) for c in class_counts.values()), default=0.0)
    auto_min = size_min
    while auto_min > 2 and max((_rare_share(c, auto_min) for c in class_counts.values()), default=0.0) > RARE_SHARE:
        auto_min -= 1
    reason = f"{band}: classes with fewer training products merge into \"other\""
    if auto_min < size_min:
        reason = (f"lowered from {size_min}: {worst:.0%} of a head's training products are in rarer classes, "
                  f"too many for \"other\"")
    min_count = pick("min_class_count", min_class_count, auto_min, reason)
    anchor = pick("nce_anchor", nce_anchor, "none" if n_train >= ALIGN_BOTH_FROM else "text",
                  f"{_n(n_train)} training products: " + ("enough to tell products apart, both towers move"
                                                          if n_train >= ALIGN_BOTH_FROM else
                                                          "too few: moving titles cost accuracy, only photos move"))
    for name, value in (("batch_size", batch), ("epochs", epochs), ("patience", patience), ("min_class_count",
                                                                                          min_count)):
        if value < (0 if name == "epochs" else 1):  # epochs 0: a --zero-shot run kept as downloaded (train checks)
            raise ValueError(f"{name} must be at least {0 if name == 'epochs' else 1}, got {value}")
    return Schedule(n_train=n_train, n_val=n_val, batch_size=batch, lr=lr, epochs=epochs, patience=patience,
                    select_by=select_by, dropout=dropout, min_class_count=min_count, nce_anchor=anchor,
                    device=device, why=why)


def plan(data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig, loss_cfg: LossConfig | None = None,
         device: str = "cpu"):
    """The catalogue's schedule (training.schedule) and the configs (data, model, train, loss) with its values in
    place of auto (None). The catalogue is read once first, without merging rare classes, for its split sizes and
    class counts."""
    loss_cfg = loss_cfg or LossConfig()
    catalog = load_catalog(dataclasses.replace(data_cfg, min_class_count=1), progress=False)
    train_rows = catalog.split_indices("train")
    labels = catalog.labels(train_rows)
    counts = {h.name: [int(c) for c in np.bincount(labels[h.name][labels[h.name] >= 0]) if c]
              for h in catalog.heads if h.kind == "single"}
    schedule = plan_schedule(len(train_rows), counts, train_cfg, n_val=len(catalog.split_indices("val")),
                             dropout=model_cfg.dropout, min_class_count=data_cfg.min_class_count,
                             nce_anchor=loss_cfg.nce_anchor, device=device)
    train_cfg = dataclasses.replace(train_cfg, batch_size=schedule.batch_size, lr=schedule.lr, epochs=schedule.epochs,
                                    patience=schedule.patience, select_by=schedule.select_by)
    return (dataclasses.replace(data_cfg, min_class_count=schedule.min_class_count),
            dataclasses.replace(model_cfg, dropout=schedule.dropout), train_cfg, schedule,
            dataclasses.replace(loss_cfg, nce_anchor=schedule.nce_anchor))
