"""The fused prediction, decided in one place: how it is formed at inference and how training chooses it.

Per head, fused = w * p_image + (1 - w) * p_text, or the fusion layer's prediction ("product") for the heads
training chose it for. The wide head's title logits (model.wide) are added to the two predictions that read the
title, "text" and "product"; its scale is chosen against the prediction that fuses (`wide_target`). HuseModel,
Run, training.validation and training.wide_fit all read these rules from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# why: docs/decisions.md#fusion-rule
FUSION_MIN_GAIN = 0.002  # validation accuracy a photo + title mix (or flip TTA) must add to be kept
FUSION_GRID = np.round(np.linspace(0, 1, 21), 2)  # photo weights w tried: fused = w * photo + (1 - w) * title
READS_TITLE = ("text", "product")  # the predictions that add the wide head's title logits; a photo never does


def wide_target(has_fusion_layer: bool) -> str:
    """The prediction whose validation log-loss sets the wide head's scale: the fusion layer's where the model has
    one (it reads photo and title), else the title's."""
    return "product" if has_fusion_layer else "text"


def mix(p_image: torch.Tensor, p_text: torch.Tensor, w: float) -> torch.Tensor:
    """HUSE's weighted average of the two modalities' probabilities: w * p_image + (1 - w) * p_text."""
    return w * p_image + (1 - w) * p_text


def choose_weight(acc: list[float]) -> int:
    """The index into FUSION_GRID of the mix kept, from validation accuracies `acc` at each grid weight: the best,
    ties going to the weight nearest 0.5; the better modality alone where no mix beats it by FUSION_MIN_GAIN."""
    best = max(acc)
    i = min((i for i, a in enumerate(acc) if a == best), key=lambda i: abs(FUSION_GRID[i] - 0.5))
    if best - max(acc[0], acc[-1]) < FUSION_MIN_GAIN:
        i = len(acc) - 1 if acc[-1] > acc[0] else 0  # grid[0] = text alone, grid[-1] = image alone
    return i


def prefers_layer(mix_acc: float, layer_acc: float) -> bool:
    """Whether the fusion layer gives the fused prediction: unless the chosen mix beats it by FUSION_MIN_GAIN."""
    return mix_acc - layer_acc < FUSION_MIN_GAIN


@dataclass(frozen=True)
class FusionRule:
    """How a run fuses each head: `weights` is one photo weight w for every head or a w per head (heads it doesn't
    name, or None, take `default`, the config's fusion_weight); heads in `layer_heads` take the fusion layer's
    prediction instead. A trained run stores both in run.json ("fusion_weights", "fusion_layer_heads")."""

    weights: float | dict[str, float] | None = None
    layer_heads: tuple[str, ...] = ()
    default: float = 0.5

    @classmethod
    def from_meta(cls, meta: dict, default: float) -> FusionRule:
        """The rule a trained run's run.json records (runs from before tuning: `default` for every head)."""
        return cls(meta.get("fusion_weights"), tuple(meta.get("fusion_layer_heads", [])), default)

    def weight(self, head: str) -> float:
        w = self.weights.get(head, self.default) if isinstance(self.weights, dict) else self.weights
        return self.default if w is None else w

    def fuse(self, probs: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
        """Adds "fused" to each head's {modality: probabilities} that has both "image" and "text"; returns `probs`."""
        for head, per in probs.items():
            if "image" in per and "text" in per:
                per["fused"] = (per["product"] if head in self.layer_heads and "product" in per
                                else mix(per["image"], per["text"], self.weight(head)))
        return probs


def tune(probs: dict[str, dict[str, torch.Tensor]], labels: dict[str, torch.Tensor], heads: list[dict]
         ) -> FusionRule:
    """The rule chosen on validation from each head's probabilities and labels (-1 = unknown): per single-label
    head the w in FUSION_GRID with the best accuracy (`choose_weight`), and the fusion layer wherever the chosen mix
    does not beat it by FUSION_MIN_GAIN (`prefers_layer`). Multi-label heads keep the default."""
    weights, layer_heads = {}, []
    for h in heads:
        y = labels[h["name"]]
        known = y >= 0
        if h["kind"] != "single" or not known.any():
            continue
        per, y = probs[h["name"]], y[known]
        acc = [float((mix(per["image"][known], per["text"][known], w).argmax(1) == y).float().mean())
               for w in FUSION_GRID]
        i = choose_weight(acc)
        weights[h["name"]] = float(FUSION_GRID[i])
        if "product" in per and prefers_layer(acc[i], float((per["product"][known].argmax(1) == y).float().mean())):
            layer_heads.append(h["name"])
    return FusionRule(weights, tuple(layer_heads))
