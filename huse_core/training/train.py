"""Training a HUSE run: data prep, the epoch loop with all three losses, checkpoints, resume, early stopping.

Just over 300 lines: the loop, its checkpoints and resume read best in one file (the schedule is schedule.py).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..artifacts import load_torch, read_json, save_torch, write_json
from ..config import DataConfig, LossConfig, ModelConfig, TrainConfig, from_dict, to_dict
from ..data.catalog import load_catalog
from ..prepare import Prepared, augment, cache_dir_for, embed, prepare
from .losses import HuseLoss, taxonomy_distance
from .schedule import Schedule, plan_schedule
from ..model import build_model
from ..run import RUN_FORMAT

Callback = Callable[[dict], None]
# Early stopping counts epochs without a better smoothed score: smooth = SMOOTHING * smooth + (1 - SMOOTHING) * score.
# A 1,000-product shop (96 validation products), two runs, last two thirds of the epochs: the raw "mean" score sat
# below its best in 12/27 and 20/28 epochs (raw fused: 15/27, 19/28), the smoothed one in 10/27 and 11/28.
SMOOTHING = 0.5
FUSION_MIN_GAIN = 0.002  # validation accuracy a photo + title mix must add over the better one alone


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def training_autocast(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype the cnn backbone trains in: bfloat16 for "bf16", or for "auto" where the hardware has native
    bf16 (emulated bf16 is slower than fp32); None = plain fp32."""
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


@torch.inference_mode()
def tune_fusion_weights(model, prep: Prepared, rows: np.ndarray, device: torch.device) -> dict[str, float]:
    """Per single-label head, the fusion weight w in 0, 0.05, ..., 1 with the best validation accuracy.

    Where one modality knows a head far better (gender from titles, say) the fixed 0.5 average falls below
    that modality alone; a per-head weight chosen on validation keeps fused at least as good as either.
    Ties prefer the weight closest to 0.5. A mix that beats the better modality alone by less than
    FUSION_MIN_GAIN on validation is noise, not signal (on the real catalogue such mixes fell 0.1-0.2 points
    below text on test), so that head's w goes to the better modality alone: fused then equals it.
    """
    image_emb, text_emb = embed(model, prep, rows, device)
    probs = model.probabilities(image_emb, text_emb)
    grid = np.round(np.linspace(0, 1, 21), 2)
    weights = {}
    for h in prep.heads:
        y = torch.from_numpy(prep.labels[h["name"]][rows]).to(device)
        known = y >= 0
        if h["kind"] != "single" or not known.any():
            continue
        p_img, p_txt = probs[h["name"]]["image"][known], probs[h["name"]]["text"][known]
        acc = [float(((w * p_img + (1 - w) * p_txt).argmax(1) == y[known]).float().mean()) for w in grid]
        best = max(acc)
        w = float(min((w for w, a in zip(grid, acc) if a == best), key=lambda w: abs(w - 0.5)))
        if best - max(acc[0], acc[-1]) < FUSION_MIN_GAIN:
            w = 1.0 if acc[-1] > acc[0] else 0.0  # grid[0] = text alone, grid[-1] = image alone
        weights[h["name"]] = w
    return weights


@torch.inference_mode()
def accuracy_by_modality(model, prep: Prepared, rows: np.ndarray, device: torch.device) -> dict[str, float]:
    """Leaf-head accuracy of image, text and fused predictions on `rows` (validation during training)."""
    image_emb, text_emb = embed(model, prep, rows, device)
    probs = model.probabilities(image_emb, text_emb)[prep.leaf]
    y = torch.from_numpy(prep.labels[prep.leaf][rows]).to(device)
    known = y >= 0
    return {m: float((p.argmax(1) == y)[known].float().mean()) for m, p in probs.items()}


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


def plan(data_cfg: DataConfig, model_cfg: ModelConfig, train_cfg: TrainConfig):
    """The catalogue's schedule (training.schedule) and the three configs with its values in place of auto (None).

    The catalogue is read once first, without merging rare classes, for its split sizes and class counts.
    """
    catalog = load_catalog(dataclasses.replace(data_cfg, min_class_count=1), progress=False)
    train_rows = catalog.split_indices("train")
    labels = catalog.labels(train_rows)
    counts = {h.name: [int(c) for c in np.bincount(labels[h.name][labels[h.name] >= 0]) if c]
              for h in catalog.heads if h.kind == "single"}
    schedule = plan_schedule(len(train_rows), counts, train_cfg, n_val=len(catalog.split_indices("val")),
                             dropout=model_cfg.dropout, min_class_count=data_cfg.min_class_count)
    train_cfg = dataclasses.replace(train_cfg, batch_size=schedule.batch_size, lr=schedule.lr, epochs=schedule.epochs,
                                    patience=schedule.patience, select_by=schedule.select_by)
    return (dataclasses.replace(data_cfg, min_class_count=schedule.min_class_count),
            dataclasses.replace(model_cfg, dropout=schedule.dropout), train_cfg, schedule)


def graph_distance(loss_cfg: LossConfig, prep: Prepared) -> np.ndarray:
    """The graph loss's A over the leaf classes: their distance in the label tree (losses.taxonomy_distance),
    or with graph_distance "names" the MiniLM cosine distance of their names (sentence.name_distance)."""
    if loss_cfg.graph_distance == "tree":
        return taxonomy_distance(prep.leaf_paths)
    if loss_cfg.graph_distance == "names":
        from ..model.sentence import name_distance  # optional package: a clear error names the install command

        return name_distance(next(h for h in prep.heads if h["name"] == prep.leaf)["classes"])
    raise ValueError(f"unknown graph distance {loss_cfg.graph_distance!r}; choose tree or names")


def make_optimizer(model, cfg: TrainConfig, steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 1), pct_start=0.2)
    elif cfg.optimizer == "rmsprop":
        opt = torch.optim.RMSprop(params, lr=cfg.lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)  # the paper's constant rate
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose adamw or rmsprop")
    return opt, sched


def train(
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    loss_cfg: LossConfig,
    train_cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    callback: Callback | None = None,
) -> dict:
    """Train a run into `run_dir` and return its run.json dict.

    Settings left on auto (None) are chosen from the catalogue's size (`plan`), printed, and stored resolved
    in run.json (with the schedule and its reasons under "schedule"). Every epoch rewrites last.pt (for --resume)
    and run.json atomically; model.pt is the best epoch on validation (`selection_score`). `callback` gets a dict
    per event, for live progress in the app.
    """
    run_dir = Path(run_dir)
    emit = callback or (lambda event: None)
    last_path, meta_path = run_dir / "last.pt", run_dir / "run.json"
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"nothing to resume in {run_dir}: no last.pt. Start a new run without --resume.")
        saved = read_json(meta_path)
        data_cfg, model_cfg = from_dict(DataConfig, saved["data"]), from_dict(ModelConfig, saved["model"])
        loss_cfg, train_cfg = from_dict(LossConfig, saved["loss"]), from_dict(TrainConfig, saved["train"])
    elif meta_path.exists() and read_json(meta_path).get("status") == "training" and last_path.exists():
        raise FileExistsError(f"{run_dir} holds an unfinished run; pass --resume to continue it, or choose "
                              f"another --out.")
    torch.set_num_threads(train_cfg.threads or os.cpu_count() or 1)
    torch.manual_seed(train_cfg.seed)
    device = pick_device(train_cfg.device)

    if model_cfg.text_backbone == "minilm" or loss_cfg.graph_distance == "names":
        from ..model.sentence import load_encoder

        load_encoder()  # a missing optional package fails now, not after every photo is decoded
    emit({"stage": "data", "message": "reading the catalogue"})
    if resume:  # the stored configs hold the resolved values; runs from before schedules had them all given
        schedule = Schedule.from_dict(saved["schedule"]) if saved.get("schedule") else None
    else:
        data_cfg, model_cfg, train_cfg, schedule = plan(data_cfg, model_cfg, train_cfg)
    if schedule is not None:
        emit({"stage": "schedule", "message": f"schedule: batch {train_cfg.batch_size}, lr {train_cfg.lr:g}, "
              f"up to {train_cfg.epochs} epochs", "schedule": schedule.to_dict()})
        if progress:
            print(("resuming with the stored " if resume else "") + schedule.describe(), file=sys.stderr)
    prep = prepare(data_cfg, model_cfg, cache_dir_for(data_cfg, run_dir), progress=progress,
                   tokenizer=None if not resume else saved["tokenizer"])
    if progress:
        print(prep.catalog.report.summary(), file=sys.stderr)
    model = build_model(model_cfg, prep.heads, prep.tokenizer.n_tokens, idf=prep.tokenizer.idf).to(device)
    distance = graph_distance(loss_cfg, prep)
    criterion = HuseLoss(loss_cfg, {h["name"]: h["kind"] for h in prep.heads}, prep.leaf, distance).to(device)
    if model.image.frozen:
        emit({"stage": "features", "message": f"computing {model_cfg.backbone} features once"})
        prep.compute_features(model, device, progress)

    train_rows, val_rows = prep.split("train"), prep.split("val")
    steps_per_epoch = max(1, len(train_rows) // train_cfg.batch_size)
    opt, sched = make_optimizer(model, train_cfg, steps_per_epoch * train_cfg.epochs)
    meta = {
        "format": RUN_FORMAT, "status": "training", "huse_core": __version__, "torch": torch.__version__,
        "python": platform.python_version(), "data": to_dict(data_cfg), "model": to_dict(model_cfg),
        "loss": to_dict(loss_cfg), "train": to_dict(train_cfg), "heads": prep.heads, "levels": prep.levels,
        "leaf": prep.leaf, "leaf_paths": prep.leaf_paths, "tokenizer": prep.tokenizer.to_dict(),
        "catalog_size": len(prep.catalog.df), "splits": {s: int(len(prep.split(s))) for s in ("train", "val", "test")},
        "load_report": prep.catalog.report.summary(), "history": [], "best_epoch": None,
        **({"schedule": schedule.to_dict()} if schedule is not None else {}),
    }
    start_epoch, best, stale = 0, -1.0, 0
    smooth, best_smooth = None, -1.0  # the smoothed score and its best: what patience counts against
    if resume:
        state = load_torch(last_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, best, stale = int(state["epoch"]) + 1, float(state["best"]), int(state["stale"])
        smooth, best_smooth = state.get("smooth"), float(state.get("best_smooth", best))  # older last.pt: raw only
        torch.set_rng_state(state["rng"])
        meta["history"], meta["best_epoch"] = saved["history"][:start_epoch], saved.get("best_epoch")
    write_json(meta_path, meta)

    low_precision = training_autocast(train_cfg.precision, device)
    for epoch in range(start_epoch, train_cfg.epochs):
        model.train()
        model.image.autocast = low_precision
        rng = np.random.default_rng(train_cfg.seed * 1000 + epoch)  # per-epoch order: resumes reproduce it
        order = rng.permutation(train_rows)
        sums: dict[str, float] = {}
        seen, t0 = 0, time.time()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{train_cfg.epochs}", disable=not progress,
                   leave=False, file=sys.stderr)
        for step in bar:
            rows = np.sort(order[step * train_cfg.batch_size : (step + 1) * train_cfg.batch_size])
            text_input = prep.text_input(rows).to(device)  # token ids, or cached sentence embeddings (minilm)
            if model.image.frozen:
                image_emb = model.encode_image_features(torch.from_numpy(prep.features[rows]).to(device))
            else:
                pixels = torch.from_numpy(prep.pixels[rows]).to(device)
                image_emb = model.encode_image(augment(pixels, rng) if train_cfg.augment else pixels)
            text_emb = model.encode_text(text_input)
            labels = {h: torch.from_numpy(y[rows]).to(device) for h, y in prep.labels.items()}
            logits = {"image": model.logits(image_emb), "text": model.logits(text_emb)}
            terms = criterion(image_emb, text_emb, logits, labels)
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            opt.step()
            sched.step()
            seen += len(rows)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(rows)
            rate = seen / max(time.time() - t0, 1e-9)
            bar.set_postfix({k: f"{v / seen:.3f}" for k, v in sums.items()} | {"prod/s": f"{rate:.0f}"})
            emit({"stage": "train", "epoch": epoch + 1, "epochs": train_cfg.epochs, "step": step + 1,
                  "steps": steps_per_epoch, "loss": {k: v / seen for k, v in sums.items()}})
        model.eval()
        model.image.autocast = None  # validation measures what inference will give: fp32
        val = accuracy_by_modality(model, prep, val_rows, device)
        record = {"epoch": epoch + 1, "seconds": round(time.time() - t0, 2), "products_per_s": round(rate, 1),
                  "loss": {k: round(v / seen, 5) for k, v in sums.items()},
                  "val_accuracy": {k: round(v, 5) for k, v in val.items()}}
        meta["history"].append(record)
        score = selection_score(val, train_cfg.select_by)
        if score > best:  # model.pt: the best epoch by the score itself
            best, meta["best_epoch"] = score, epoch + 1
            save_torch(run_dir / "model.pt", model.state_dict())
        smooth = score if smooth is None else SMOOTHING * smooth + (1 - SMOOTHING) * score
        stale = 0 if smooth > best_smooth else stale + 1  # stopping: its smoothed value, steadier on few products
        best_smooth = max(best_smooth, smooth)
        save_torch(last_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "epoch": epoch, "best": best, "stale": stale,
                               "smooth": smooth, "best_smooth": best_smooth,
                               "rng": torch.get_rng_state()})  # dropout draws: a resumed run repeats them
        write_json(meta_path, meta)
        emit({"stage": "epoch", **record, "epochs": train_cfg.epochs})
        if progress:
            terms_txt = " ".join(f"{k}={v:.4f}" for k, v in record["loss"].items())
            accs = " ".join(f"{k}={v:.3f}" for k, v in val.items())
            print(f"epoch {epoch + 1}: {terms_txt} | val {prep.leaf} acc {accs} | {record['seconds']:.0f}s",
                  file=sys.stderr)
        if stale >= train_cfg.patience:
            if progress:
                print(f"early stop: no better smoothed validation score ({train_cfg.select_by}) for {stale} "
                      f"epochs", file=sys.stderr)
            break
    model.load_state_dict(load_torch(run_dir / "model.pt"))  # the best epoch, as saved
    meta["fusion_weights"] = tune_fusion_weights(model, prep, val_rows, device)
    meta["status"] = "done"
    write_json(meta_path, meta)
    emit({"stage": "done", "best_epoch": meta["best_epoch"]})
    return meta
