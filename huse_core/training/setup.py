"""What training is built from before its first step: the device, the precision, the graph loss's distances, the
optimiser and its learning-rate schedule, and the checks that fail fast before any photo is decoded."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..config import LossConfig, ModelConfig, TrainConfig
from ..prepare import Prepared
from .losses import taxonomy_distance


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def training_autocast(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype the cnn backbone trains in: bfloat16 for "bf16", or for "auto" where the hardware has native
    bf16 (emulated bf16 is slower than fp32); None = plain fp32."""
    # why: docs/decisions.md#precision
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"unknown precision {precision!r}; choose auto, bf16 or fp32")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so looked up defensively
    native = any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return torch.bfloat16 if device.type == "cpu" and native else None


def graph_distance(loss_cfg: LossConfig, prep: Prepared) -> np.ndarray:
    """The graph loss's A over the leaf classes: their distance in the label tree (losses.taxonomy_distance),
    or with graph_distance "names" the MiniLM cosine distance of their names (sentence.name_distance)."""
    if loss_cfg.graph_distance == "tree":
        return taxonomy_distance(prep.leaf_paths)
    if loss_cfg.graph_distance == "names":
        from ..model.sentence import name_distance  # optional package: a clear error names the install command

        return name_distance(next(h for h in prep.heads if h["name"] == prep.leaf)["classes"])
    raise ValueError(f"unknown graph distance {loss_cfg.graph_distance!r}; choose tree or names")


def make_optimizer(model, cfg: TrainConfig, steps: int, criterion=None):
    """The optimiser over the model's trainable weights and the loss's own (the alignment's scale), and its
    learning-rate schedule. AdamW runs its fused kernel: one pass over all weights instead of a loop per tensor."""
    params = [p for p in model.parameters() if p.requires_grad]
    extra = [p for p in criterion.parameters() if p.requires_grad] if criterion is not None else []
    if cfg.optimizer == "adamw":
        # The loss's scale gets no weight decay (it is a temperature, not a weight).
        groups = [{"params": params}] + ([{"params": extra, "weight_decay": 0.0}] if extra else [])
        opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        if steps >= 4:  # warm-up: a fifth of the steps, at least 2 (torch's one-cycle divides by zero below that)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps,
                                                        pct_start=max(0.2, 2 / steps))
        else:  # 1-3 steps (--max-steps 3): too few for a cycle, the peak rate throughout
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    elif cfg.optimizer == "rmsprop":
        opt = torch.optim.RMSprop(params + extra, lr=cfg.lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)  # the paper's constant rate
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose adamw or rmsprop")
    return opt, sched


def move_schedule(sched, step: int) -> None:
    """Sets a fresh learning-rate schedule (`make_optimizer`'s) to where it stands after `step` steps: a resumed
    run whose number of steps changed (--epochs, --max-steps) carries on along the schedule over the new total.
    Both of make_optimizer's schedules compute the rate from the step number alone."""
    total = getattr(sched, "total_steps", None)
    if total is not None and step > total:
        return  # already past the new total: no step is left to take
    with warnings.catch_warnings():  # "scheduler stepped before the optimizer": here on purpose, no step lost
        warnings.simplefilter("ignore", UserWarning)
        sched.last_epoch = step - 1
        sched.step()


def check_before_decoding(model_cfg: ModelConfig, loss_cfg: LossConfig) -> None:
    """Missing optional packages or offline weights fail now, in one line, not after every photo is decoded."""
    if model_cfg.text_backbone == "minilm" or loss_cfg.graph_distance == "names":
        from ..model.sentence import load_encoder

        load_encoder()
    from ..model.backbones import check_image_weights
    from ..model.hub import check_weights

    check_weights(model_cfg)  # hub encoders
    check_image_weights(model_cfg.backbone, model_cfg.image_weights)  # lite0, torchvision CNNs
