"""An exponential moving average of the weights (torch's AveragedModel), validated beside them every epoch.

Off by default: the average validates better mid-run but the same at the end, where the one-cycle rate has
annealed to ~0, and it costs a second validation each epoch (why: docs/decisions.md#ema).
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel


def warmed_decay(decay: float, n_averaged: int) -> float:
    """The decay applied at the n-th update: min(decay, (1 + n) / (10 + n)), so the random first weights are
    forgotten within the first tens of steps whatever the decay (timm's and TensorFlow's warm-up)."""
    return min(decay, (1.0 + n_averaged) / (10.0 + n_averaged))


def make_ema(model: torch.nn.Module, decay: float) -> AveragedModel | None:
    """An AveragedModel of `model` (a deep copy, its BatchNorm statistics averaged too) updated by
    W_ema <- d * W_ema + (1 - d) * W with d = warmed_decay(decay, n); None when decay is 0 (off)."""
    if not decay:
        return None
    if not 0.0 < decay < 1.0:
        raise ValueError(f"--ema must be 0 (off) or a decay in (0, 1), got {decay}")

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        d = warmed_decay(decay, int(n_averaged))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # integer buffers (BatchNorm's batch counts): the current value
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    ema = AveragedModel(model, multi_avg_fn=update, use_buffers=True)
    ema.module.eval()
    return ema
