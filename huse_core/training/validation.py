"""What training decides on the validation split: the early-stopping score, flip TTA and the fusion weights."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..model.fusion_rule import FUSION_GRID, FUSION_MIN_GAIN, choose_weight, prefers_layer, tune
from ..prepare import Prepared, embed, title_logits

__all__ = ["FUSION_GRID", "FUSION_MIN_GAIN", "accuracy_by_modality", "choose_flip_tta", "choose_weight",
           "kept_accuracy", "prefers_layer", "selection_score", "tune_fusion_weights", "validation_rows"]

log = logging.getLogger(__name__)


def validation_rows(rows: np.ndarray, train_cfg, progress: bool = False) -> np.ndarray:
    """The validation rows training reads: all of them, or a seeded sample of train_cfg.val_max in catalogue
    order when there are more (0 = no cap). Every epoch's score, flip TTA and the fusion weights read the same
    sample, so the epochs stay comparable."""
    cap = int(train_cfg.val_max or 0)
    if cap < 0:
        raise ValueError(f"--val-max must be 0 (the whole validation split) or more, got {cap}")
    if not cap or len(rows) <= cap:
        return rows
    picked = np.sort(np.random.default_rng(train_cfg.seed).choice(rows, cap, replace=False))
    if progress:
        log.info(f"validation: a seeded sample of {cap:,} of the {len(rows):,} validation products "
                 f"(--val-max; 0 uses all)")
    return picked


@torch.inference_mode()
def tune_fusion_weights(model, prep: Prepared, rows: np.ndarray, device: torch.device
                        ) -> tuple[dict[str, float], list[str]]:
    """(run.json's "fusion_weights", "fusion_layer_heads"): the fusion rule chosen on validation `rows`
    (model.fusion_rule.tune): per single-label head the photo weight w, and the heads fused by the fusion layer.

    Where one modality knows a head far better (gender from titles, say) a fixed 0.5 average falls below that
    modality alone; a per-head weight chosen on validation keeps fused at least as good as either.
    """
    image_emb, text_emb = embed(model, prep, rows, device)
    probs = model.probabilities(image_emb, text_emb, wide=title_logits(model, prep, rows, device))
    labels = {h["name"]: torch.from_numpy(prep.labels[h["name"]][rows]).to(device) for h in prep.heads}
    rule = tune(probs, labels, prep.heads)
    return rule.weights, list(rule.layer_heads)


@torch.inference_mode()
def accuracy_by_modality(model, prep: Prepared, rows: np.ndarray, device: torch.device) -> dict[str, float]:
    """Leaf-head accuracy of image, text and fused predictions on `rows` (validation during training)."""
    image_emb, text_emb = embed(model, prep, rows, device)
    probs = model.probabilities(image_emb, text_emb, wide=title_logits(model, prep, rows, device))[prep.leaf]
    y = torch.from_numpy(prep.labels[prep.leaf][rows]).to(device)
    known = y >= 0
    return {m: float((p.argmax(1) == y)[known].float().mean()) for m, p in probs.items()}


def choose_flip_tta(model, prep: Prepared, rows: np.ndarray, device: torch.device, progress: bool = False) -> bool:
    """Whether averaging each photo with its mirror image at inference (HuseModel.flip_tta) raises the photo's
    leaf accuracy on validation by FUSION_MIN_GAIN; sets the model's flag to the answer. Frozen backbones read
    cached features, so they never flip."""
    # why: docs/decisions.md#flip-tta
    if model.image.frozen:
        return False
    model.flip_tta = False
    plain = accuracy_by_modality(model, prep, rows, device)["image"]
    model.flip_tta = True
    flipped = accuracy_by_modality(model, prep, rows, device)["image"]
    model.flip_tta = flipped - plain >= FUSION_MIN_GAIN
    if progress:
        log.info(f"flip test-time augmentation: validation photo accuracy {plain:.4f} -> {flipped:.4f}: "
                 f"{'kept' if model.flip_tta else 'not kept'}")
    return model.flip_tta


def kept_accuracy(record: dict) -> dict[str, float]:
    """An epoch's record (run.json history) -> the validation accuracies of the weights it kept: their moving
    average where that validated better ("weights": "ema"), else the weights themselves."""
    return record["val_accuracy_ema"] if record.get("weights") == "ema" else record["val_accuracy"]


def selection_score(val_accuracy: dict[str, float], select_by: str = "mean") -> float:
    """What early stopping maximises (TrainConfig.select_by) over leaf validation accuracies: "fused" = fused,
    ties going to the better single modalities; "mean" = the mean of photo, title and fused, ties going to fused.

    On a ~100-product validation set each accuracy moves by whole products from epoch to epoch; the mean of the
    three, smoothed over epochs (SMOOTHING), is what patience counts against there.
    """
    if select_by == "fused":
        return val_accuracy["fused"] + 1e-3 * (val_accuracy["image"] + val_accuracy["text"])
    if select_by == "mean":
        return sum(val_accuracy[m] for m in ("image", "text", "fused")) / 3 + 1e-3 * val_accuracy["fused"]
    raise ValueError(f"unknown early-stopping score {select_by!r}; choose fused or mean")


