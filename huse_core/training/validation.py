"""What training decides on the validation split: the early-stopping score, flip TTA and the fusion weights."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..prepare import Prepared, embed, title_logits

log = logging.getLogger(__name__)

FUSION_MIN_GAIN = 0.002  # validation accuracy a photo + title mix (or flip TTA) must add to be kept
FUSION_GRID = np.round(np.linspace(0, 1, 21), 2)  # photo weights w tried: fused = w * photo + (1 - w) * title


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
    """Per single-label head, the fusion weight w in 0, 0.05, ..., 1 with the best validation accuracy, and the
    heads whose fused prediction comes from the fusion layer instead: every head where the chosen mix does not
    beat the layer by FUSION_MIN_GAIN on validation.

    Where one modality knows a head far better (gender from titles, say) the fixed 0.5 average falls below
    that modality alone; a per-head weight chosen on validation keeps fused at least as good as either.
    Ties prefer the weight closest to 0.5. A mix that beats the better modality alone by less than
    FUSION_MIN_GAIN on validation is noise, not signal (on the real catalogue such mixes fell 0.1-0.2 points
    below text on test), so that head's w goes to the better modality alone: fused then equals it.

    The fusion layer (the seed's classifier of photo and title read together) is preferred within that margin
    too. Measured with bench/fusion_rule.py on 5 trained runs (33 heads; bench/results/fusion-rule-2026-12-02.md):
    requiring it to *beat* the best mix by the margin kept it on few heads, though on test it was often the better
    column; preferring it raised test accuracy on 9 heads (+0.02 to +0.42 points) and lowered it on none.
    """
    image_emb, text_emb = embed(model, prep, rows, device)
    probs = model.probabilities(image_emb, text_emb, wide=title_logits(model, prep, rows, device))
    weights, layer_heads = {}, []
    for h in prep.heads:
        y = torch.from_numpy(prep.labels[h["name"]][rows]).to(device)
        known = y >= 0
        if h["kind"] != "single" or not known.any():
            continue
        p_img, p_txt = probs[h["name"]]["image"][known], probs[h["name"]]["text"][known]
        acc = [float(((w * p_img + (1 - w) * p_txt).argmax(1) == y[known]).float().mean()) for w in FUSION_GRID]
        i = choose_weight(acc)
        weights[h["name"]] = float(FUSION_GRID[i])
        if "product" in probs[h["name"]]:
            layer = float((probs[h["name"]]["product"][known].argmax(1) == y[known]).float().mean())
            if prefers_layer(acc[i], layer):
                layer_heads.append(h["name"])
    return weights, layer_heads


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


