"""Training a HUSE run: data prep, the epoch loop with its losses, checkpoints, resume, early stopping.

The schedule is schedule.py; what is chosen on validation (stopping score, fusion, flip TTA) is validation.py;
the wide head's SVMs, fitted after the epochs, are wide_fit.py; training across processes under torchrun (DDP) is
distributed.py. Over 300 lines: one loop whose resume, checkpoint and end-of-training steps share its state.
"""

from __future__ import annotations

import dataclasses
import logging
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
from ..data.catalog import normalise_title
from ..prepare import Prepared, augment, cache_dir_for, prepare
from .distributed import TrainStep, World
from .ema import make_ema
from .losses import HuseLoss, taxonomy_distance
from .schedule import Schedule, plan
from .wide_fit import fit_wide_head
from .validation import (accuracy_by_modality, choose_flip_tta, selection_score, tune_fusion_weights,
                         validation_rows)
from ..model import build_model
from ..run import RUN_FORMAT

log = logging.getLogger(__name__)

Callback = Callable[[dict], None]
# Early stopping counts epochs without a better smoothed score: smooth = SMOOTHING * smooth + (1 - SMOOTHING) * score.
# A 1,000-product shop (96 validation products), two runs, last two thirds of the epochs: the raw "mean" score sat
# below its best in 12/27 and 20/28 epochs (raw fused: 15/27, 19/28), the smoothed one in 10/27 and 11/28.
SMOOTHING = 0.5


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

    Under torchrun each process trains on its shard of every global batch (`batch_size` products a step in all);
    rank 0 alone writes, prints, validates and decides, and every process returns its run.json dict.
    """
    run_dir = Path(run_dir)
    world = World.from_env(pick_device(train_cfg.device))
    emit = callback if callback is not None and world.is_main else (lambda event: None)
    progress = progress and world.is_main
    last_path, meta_path = run_dir / "last.pt", run_dir / "run.json"
    resume = resume or (world.restarted and last_path.is_file())  # torchrun --max-restarts: carry on
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"nothing to resume in {run_dir}: no last.pt. Start a new run without --resume.")
        saved = read_json(meta_path)
        data_cfg, model_cfg = from_dict(DataConfig, saved["data"]), from_dict(ModelConfig, saved["model"])
        loss_cfg, train_cfg = from_dict(LossConfig, saved["loss"]), from_dict(TrainConfig, saved["train"])
    elif meta_path.exists() and read_json(meta_path).get("status") == "training" and last_path.exists():
        raise FileExistsError(f"{run_dir} holds an unfinished run; pass --resume to continue it, or choose "
                              f"another --out.")
    if train_cfg.epochs == 0:  # the model as built: only the CLIP pair's zero-shot model is one worth keeping
        if not model_cfg.zero_shot:
            raise ValueError("--epochs 0 keeps the model as built, untrained: that is only a model with --zero-shot "
                             "(the same openclip: encoder under both towers); give 1 or more epochs")
        model_cfg = dataclasses.replace(model_cfg, fusion_layer=False)  # an untrained fusion layer is noise
    torch.set_num_threads(train_cfg.threads or world.threads)  # under torchrun: the cores shared by its processes
    torch.manual_seed(train_cfg.seed)
    device = world.device(pick_device(train_cfg.device))

    if model_cfg.text_backbone == "minilm" or loss_cfg.graph_distance == "names":
        from ..model.sentence import load_encoder

        load_encoder()  # a missing optional package fails now, not after every photo is decoded
    from ..model.backbones import check_image_weights
    from ..model.hub import check_weights

    check_weights(model_cfg)  # hub encoders: missing weights offline fail now, in one line, before any decoding
    check_image_weights(model_cfg.backbone, model_cfg.image_weights)  # lite0, torchvision CNNs: the same
    emit({"stage": "data", "message": "reading the catalogue"})
    if resume:  # the stored configs hold the resolved values; runs from before schedules had them all given
        schedule = Schedule.from_dict(saved["schedule"]) if saved.get("schedule") else None
    else:
        data_cfg, model_cfg, train_cfg, schedule, loss_cfg = plan(data_cfg, model_cfg, train_cfg, loss_cfg,
                                                                  device=device.type)
    if schedule is not None:
        emit({"stage": "schedule", "message": f"schedule: batch {train_cfg.batch_size}, lr {train_cfg.lr:g}, "
              f"up to {train_cfg.epochs} epochs", "schedule": schedule.to_dict()})
        if progress:
            log.info(("resuming with the stored " if resume else "") + schedule.describe())
    with world.main_first():  # rank 0 fills the decode cache; the others then read it
        prep = prepare(data_cfg, model_cfg, cache_dir_for(data_cfg, run_dir), progress=progress,
                       tokenizer=None if not resume else saved["tokenizer"])
    if progress:
        log.info(prep.catalog.report.summary())
    model = build_model(model_cfg, prep.heads, prep.tokenizer.n_tokens, idf=prep.tokenizer.idf).to(device)
    distance = graph_distance(loss_cfg, prep)
    criterion = HuseLoss(loss_cfg, {h["name"]: h["kind"] for h in prep.heads}, prep.leaf, distance).to(device)
    if model.image.frozen:
        emit({"stage": "features", "message": f"computing {model_cfg.backbone} features once"})
        with world.main_first():
            prep.compute_features(model, device, progress)

    train_rows, val_rows = prep.split("train"), validation_rows(prep.split("val"), train_cfg, progress)
    per_process = world.per_process_batch(train_cfg.batch_size, len(train_rows))
    global_batch = per_process * world.world_size  # = batch_size unless it doesn't split evenly
    steps_per_epoch = max(1, len(train_rows) // global_batch)
    total_steps = steps_per_epoch * train_cfg.epochs
    if train_cfg.max_steps < 0:
        raise ValueError(f"--max-steps must be 0 (no cap) or more, got {train_cfg.max_steps}")
    if train_cfg.max_steps and train_cfg.max_steps < total_steps:
        total_steps = train_cfg.max_steps
        if progress:
            log.info(f"--max-steps {total_steps:,}: training stops there, in epoch "
                     f"{-(-total_steps // steps_per_epoch)} of {train_cfg.epochs}")
    opt, sched = make_optimizer(model, train_cfg, total_steps, criterion)
    ema = make_ema(model, train_cfg.ema) if world.is_main else None  # validated beside the weights
    # Products with the same normalised title share an id: the alignment loss does not push them apart.
    title_group = prep.catalog.df["title"].map(normalise_title).factorize()[0].astype(np.int64)
    meta = {
        "format": RUN_FORMAT, "status": "training", "huse_core": __version__, "torch": torch.__version__,
        "python": platform.python_version(), "data": to_dict(data_cfg), "model": to_dict(model_cfg),
        "loss": to_dict(loss_cfg), "train": to_dict(train_cfg), "heads": prep.heads, "levels": prep.levels,
        "leaf": prep.leaf, "leaf_paths": prep.leaf_paths, "tokenizer": prep.tokenizer.to_dict(),
        "catalog_size": len(prep.catalog.df), "splits": {s: int(len(prep.split(s))) for s in ("train", "val", "test")},
        "val_used": int(len(val_rows)),
        "load_report": prep.catalog.report.summary(), "history": [], "best_epoch": None,
        "encoders": model.encoders(),  # hub encoders' names, versions and weight fingerprints
        "distributed": world.describe(global_batch, per_process),
        **({"schedule": schedule.to_dict()} if schedule is not None else {}),
    }
    start_epoch, best, stale = 0, -1.0, 0
    smooth, best_smooth = None, -1.0  # the smoothed score and its best: what patience counts against
    if resume:
        state = load_torch(last_path)
        model.load_state_dict(state["model"])
        criterion.load_state_dict(state.get("criterion", criterion.state_dict()))
        opt.load_state_dict(state["optimizer"])
        if ema is not None and "ema" in state:  # a last.pt without one (older, or --ema given now) starts it afresh
            ema.load_state_dict(state["ema"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, best, stale = int(state["epoch"]) + 1, float(state["best"]), int(state["stale"])
        smooth, best_smooth = state.get("smooth"), float(state.get("best_smooth", best))  # older last.pt: raw only
        torch.set_rng_state(state["rng"])
        # last.pt is written before run.json: its own copy of the history survives a kill between the two
        meta["history"] = state.get("history", saved["history"][:start_epoch])
        meta["best_epoch"] = state.get("best_epoch", saved.get("best_epoch"))
        meta["best_weights"] = state.get("best_weights", saved.get("best_weights", "raw"))
    if world.is_main:
        write_json(meta_path, meta)
    if train_cfg.epochs == 0 and world.is_main:  # saved as built; validation still picks flip TTA and fusion
        save_torch(run_dir / "model.pt", model.state_dict())
        meta["best_epoch"] = 0
    forward = world.wrap(TrainStep(model, criterion, world.gather if world.enabled else None), loss_cfg.losses)

    low_precision = training_autocast(train_cfg.precision, device)
    for epoch in range(start_epoch, -(-total_steps // steps_per_epoch)):  # = epochs, unless --max-steps cuts them
        model.train()
        model.image.autocast = low_precision
        rng = np.random.default_rng(train_cfg.seed * 1000 + epoch)  # per-epoch order: resumes reproduce it
        order = rng.permutation(train_rows)  # the same on every process; each takes its shard of every batch
        aug_rng = world.seed_epoch(train_cfg.seed, epoch, rng)
        sums: dict[str, float] = {}
        seen, t0 = 0, time.time()
        steps = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)  # fewer in the last (--max-steps)
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{train_cfg.epochs}", disable=not progress,
                   leave=False, file=sys.stderr)
        for step in bar:
            rows = world.shard(order[step * global_batch : (step + 1) * global_batch])
            text_input = prep.text_input(rows).to(device)  # token ids, or cached sentence embeddings (minilm)
            if model.image.frozen:
                image_input = torch.from_numpy(prep.features[rows]).to(device)
            else:
                pixels = torch.from_numpy(prep.pixels[rows]).to(device)
                image_input = augment(pixels, aug_rng) if train_cfg.augment else pixels
            labels = {h: torch.from_numpy(y[rows]).to(device) for h, y in prep.labels.items()}
            terms = forward(image_input, text_input, labels, torch.from_numpy(title_group[rows]).to(device))
            opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            seen += len(rows)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(rows)
            rate = seen * world.world_size / max(time.time() - t0, 1e-9)  # products/s of all processes
            bar.set_postfix({k: f"{v / seen:.3f}" for k, v in sums.items()} | {"prod/s": f"{rate:.0f}"})
            emit({"stage": "train", "epoch": epoch + 1, "epochs": train_cfg.epochs, "step": step + 1,
                  "steps": steps, "loss": {k: v / seen for k, v in sums.items()}})
        sums = world.mean(sums)  # loss sums of every process (each saw `seen` products)
        stop = False
        if world.is_main:  # validated, recorded and decided once; the others get the decision
            model.eval()
            model.image.autocast = None  # validation measures what inference will give: fp32
            val = accuracy_by_modality(model, prep, val_rows, device)
            val_ema = accuracy_by_modality(ema.module, prep, val_rows, device) if ema is not None else None
            score = selection_score(val, train_cfg.select_by)
            ema_score = selection_score(val_ema, train_cfg.select_by) if val_ema is not None else -1.0
            use_ema, score = ema_score > score, max(score, ema_score)
            record = {"epoch": epoch + 1, "seconds": round(time.time() - t0, 2), "products_per_s": round(rate, 1),
                      "loss": {k: round(v / seen, 5) for k, v in sums.items()},
                      "val_accuracy": {k: round(v, 5) for k, v in val.items()},
                      **({"val_accuracy_ema": {k: round(v, 5) for k, v in val_ema.items()},
                          "weights": "ema" if use_ema else "raw"} if val_ema is not None else {}),
                      **({"nce_scale": round(float(criterion.nce.scale.detach()), 3)} if criterion.nce else {})}
            meta["history"].append(record)
            if score > best:  # model.pt: the best epoch by the score itself, as the weights or their average
                best, meta["best_epoch"] = score, epoch + 1
                meta["best_weights"] = record.get("weights", "raw")
                save_torch(run_dir / "model.pt", (ema.module if use_ema else model).state_dict())
            smooth = score if smooth is None else SMOOTHING * smooth + (1 - SMOOTHING) * score
            stale = 0 if smooth > best_smooth else stale + 1  # stopping: its smoothed value, steadier on few products
            best_smooth = max(best_smooth, smooth)
            save_torch(last_path, {"model": model.state_dict(), "criterion": criterion.state_dict(),
                                   "optimizer": opt.state_dict(),
                                   "scheduler": sched.state_dict(), "epoch": epoch, "best": best, "stale": stale,
                                   "smooth": smooth, "best_smooth": best_smooth,
                                   **({"ema": ema.state_dict()} if ema is not None else {}),
                                   "history": meta["history"], "best_epoch": meta["best_epoch"],
                                   "best_weights": meta.get("best_weights", "raw"),
                                   "rng": torch.get_rng_state()})  # dropout draws: a resumed run repeats them
            write_json(meta_path, meta)
            emit({"stage": "epoch", **record, "epochs": train_cfg.epochs})
            if progress:
                terms_txt = " ".join(f"{k}={v:.4f}" for k, v in record["loss"].items())
                accs = " ".join(f"{k}={v:.3f}" for k, v in val.items())
                if val_ema is not None:
                    accs += " | ema " + " ".join(f"{k}={v:.3f}" for k, v in val_ema.items()) + (" (better)" * use_ema)
                log.info(f"epoch {epoch + 1}: {terms_txt} | val {prep.leaf} acc {accs} | {record['seconds']:.0f}s")
            stop = stale >= train_cfg.patience
            if stop and progress:
                log.info(f"early stop: no better smoothed validation score ({train_cfg.select_by}) for {stale} "
                         f"epochs")
        if world.broadcast(stop):
            break
    drift = world.max_drift(model, criterion)  # DDP keeps the copies equal; this checks it (0.0 = identical)
    if world.is_main:
        meta["distributed"] |= {"weight_drift": drift} if world.enabled else {}
        model.load_state_dict(load_torch(run_dir / "model.pt"))  # the best epoch, as saved
        train_rows = prep.split("train")
        meta["wide_head"] = fit_wide_head(model, prep, train_rows, val_rows, device, train_cfg.seed, progress)
        if model.wide is not None:  # the towers as the best epoch left them, the wide head fitted on top
            save_torch(run_dir / "model.pt", model.state_dict())
        meta["flip_tta"] = choose_flip_tta(model, prep, val_rows, device, progress)
        meta["fusion_weights"], meta["fusion_layer_heads"] = tune_fusion_weights(model, prep, val_rows, device)
        meta["status"] = "done"
        write_json(meta_path, meta)
        emit({"stage": "done", "best_epoch": meta["best_epoch"]})
    meta = world.broadcast(meta)  # every process returns the run's dict
    world.close()
    return meta
