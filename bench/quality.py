"""Quality benchmark on a real catalogue: HUSE (train + evaluate) beside TF-IDF and pixel LogisticRegression peers.

Everything runs on one split: huse_core.catalog.load_catalog's split grouped by normalised title (DataConfig
defaults: 80/10/10, seed 0). Choices (C, fusion weight) are made on VAL; every reported figure is TEST.

    python bench/quality.py --data /tmp/data/fashion-product-images-small/metadata.csv --out runs/real
    python bench/quality.py --data ../shared/data/fashion-product-images-small.tar.gz --skip-huse
    python bench/quality.py --data CSV --out runs/real --skip-peers --reuse bench/results/quality/44k-default.json
    python bench/quality.py --data CSV --out runs/real --skip-peers --no-train   # evaluate a run already there
    python bench/quality.py --data CSV --out runs/abl --skip-peers --skip-huse --ablation --ablation-epochs 6

Any training flag of `python -m huse_core train` passes through (--epochs, --losses, --image-size, --beta, ...).
Over 300 lines: one benchmark whose parts (peers, HUSE, ablation, small shops) share one split, its configs
and --reuse; the report it writes is bench/quality_report.py.
Results: a markdown table on stdout, and bench/results/quality/<variant>.json and .md (--variant).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# huse_core sets OMP_WAIT_POLICY=PASSIVE before torch loads (spinning OpenMP threads burn ~6x the CPU per step
# on a busy 2-core machine); it is imported before anything that imports torch.
from huse_core.cli import add_config_flags, build_config
from huse_core.config import DataConfig, LossConfig, ModelConfig, TrainConfig, to_dict
from huse_core.model import default_image_size
from common import DEFAULT_DATA, ROOT, resolve_catalog, write_result
from quality_report import markdown

log = logging.getLogger("quality")

PIXEL_SIZE = (16, 21)  # width x height: the 60x80 photos' aspect; the reference peer's raw-pixel size
TEXT_CS = (10.0, 30.0)  # TF-IDF LogisticRegression C grid, chosen on val (97.0-97.1% val either way)
PIXEL_CS = (0.1,)  # pixel LogisticRegression C; on val 0.1 beat 1.0 (73.3 vs 72.7 %) at half the fit time
FUSION_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)  # HUSE fusion weights tried on val
ABLATIONS = (("cls",), ("cls", "gap"), ("cls", "graph"), ("cls", "graph", "gap"), ("cls", "graph", "gap", "nce"))


# ---------------------------------------------------------------------------------------------- data


def _small_photo(path: str) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("RGB", (PIXEL_SIZE[0] * 2, PIXEL_SIZE[1] * 2))  # JPEG: decode at 1/2..1/8 scale, much faster
            return np.asarray(im.convert("RGB").resize(PIXEL_SIZE, Image.Resampling.BOX), dtype=np.uint8)
    except Exception:  # noqa: BLE001 - an unreadable photo drops its row, as in huse_core
        return None


def small_pixels(paths: list[str], cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 21, 16, 3) uint8 photos squeezed to 16x21 (box filter) and ok (N,) bool; cached by paths."""
    key = hashlib.sha1("\n".join(paths).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    npy = cache_dir / f"peer-pixels-{PIXEL_SIZE[0]}x{PIXEL_SIZE[1]}-{key}.npz"
    if npy.is_file():
        with np.load(npy) as z:
            return z["pixels"], z["ok"]
    from tqdm import tqdm

    out = np.zeros((len(paths), PIXEL_SIZE[1], PIXEL_SIZE[0], 3), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for i, px in enumerate(tqdm(pool.map(_small_photo, paths, chunksize=256), total=len(paths),
                                    desc="16x21 photos", unit="img")):
            if px is not None:
                out[i], ok[i] = px, True
    try:
        np.savez(npy, pixels=out, ok=ok)
    except OSError:
        pass  # a read-only cache folder only costs a decode next time
    return out, ok


# ---------------------------------------------------------------------------------------------- peers


def _fit_best(make, cs, x_train, y_train, x_val, y_val, what: str):
    """Fit one model per C; keep the best on val. Returns (model, C, {C: val accuracy}, seconds)."""
    t0, best, scores = time.time(), None, {}
    for c in cs:
        t = time.time()
        model = make(c).fit(x_train, y_train)
        scores[c] = float((model.predict(x_val) == y_val).mean())
        log.info("%s C=%g: val accuracy %.4f (%.0fs)", what, c, scores[c], time.time() - t)
        if best is None or scores[c] > scores[best[1]]:
            best = (model, c)
    return best[0], best[1], scores, time.time() - t0


def _probs_in(model, x, n_classes: int) -> np.ndarray:
    """predict_proba with columns for every class index 0..n_classes-1 (classes absent from train get 0)."""
    p = np.zeros((x.shape[0], n_classes), dtype=np.float64)
    p[:, model.classes_] = model.predict_proba(x)
    return p


def _acc(p: np.ndarray, y: np.ndarray) -> float:
    known = y >= 0
    return round(float((p.argmax(1)[known] == y[known]).mean()), 4)


def run_peers(data_cfg: DataConfig, cache_dir: Path) -> dict:
    """TF-IDF (word 1-2 + char_wb 2-5) + LR per hierarchy level, 16x21 pixels + LR on the leaf, their average."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_union
    from sklearn.preprocessing import StandardScaler

    from huse_core.data.catalog import load_catalog

    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # saga at tol 1e-3 is converged enough
    t_all = time.time()
    catalog = load_catalog(data_cfg, progress=False)
    pixels, ok = small_pixels(list(catalog.df["image"]), cache_dir)
    if not ok.all():
        log.warning("%d photos unreadable: their rows are left out of every peer", int((~ok).sum()))
    split = catalog.df["split"].to_numpy(dtype=object)
    tr, va, te = (np.flatnonzero((split == s) & ok) for s in ("train", "val", "test"))
    labels = catalog.labels()
    levels, leaf = catalog.levels, catalog.leaf
    out: dict = {"n": {"train": len(tr), "val": len(va), "test": len(te)}, "text": {}, "pixels": {}, "average": {}}

    t = time.time()
    titles = catalog.df["title"].to_numpy(dtype=object)
    vec = make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
                     TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2))
    x_tr = vec.fit_transform(titles[tr])  # fitted on train titles only
    x_va, x_te = vec.transform(titles[va]), vec.transform(titles[te])
    log.info("TF-IDF: %d features (%.0fs)", x_tr.shape[1], time.time() - t)
    text_probs = {}
    for head in levels:
        y, n_classes = labels[head], len(catalog.head(head).classes)
        model, c, scores, secs = _fit_best(
            lambda c: LogisticRegression(C=c, solver="saga", max_iter=200, tol=1e-3), TEXT_CS,
            x_tr, y[tr], x_va, y[va], f"TF-IDF+LR {head}")
        text_probs[head] = _probs_in(model, x_te, n_classes)
        out["text"][head] = {"accuracy": _acc(text_probs[head], y[te]), "C": c, "val_accuracy": scores,
                             "classes": n_classes, "seconds": round(secs, 1)}

    t = time.time()
    flat = pixels.reshape(len(pixels), -1).astype(np.float32) / 255.0
    scaler = StandardScaler().fit(flat[tr])
    p_tr, p_va, p_te = (scaler.transform(flat[r]) for r in (tr, va, te))
    y = labels[leaf]
    model, c, scores, secs = _fit_best(lambda c: LogisticRegression(C=c, max_iter=300, tol=1e-3), PIXEL_CS,
                                       p_tr, y[tr], p_va, y[va], f"pixels LR {leaf}")
    pixel_probs = _probs_in(model, p_te, len(catalog.head(leaf).classes))
    out["pixels"][leaf] = {"accuracy": _acc(pixel_probs, y[te]), "C": c, "val_accuracy": scores,
                           "features": int(flat.shape[1]), "seconds": round(time.time() - t, 1)}
    out["average"][leaf] = {"accuracy": _acc(0.5 * pixel_probs + 0.5 * text_probs[leaf], y[te])}
    out["seconds"] = round(time.time() - t_all, 1)
    return out


# ---------------------------------------------------------------------------------------------- HUSE


def run_huse(cfgs: tuple, run_dir: Path, progress: bool, no_train: bool = False) -> dict:
    """Train into `run_dir` (or take the run already there), evaluate on test, pick a fusion weight on val."""
    from huse_core.artifacts import read_json
    from huse_core.training.evaluate import evaluate
    from huse_core.training.train import train

    t = time.time()
    if no_train:  # e.g. an interrupted run: its best epoch so far; train time = the sum of its epochs
        meta = read_json(run_dir / "run.json")
        log.info("evaluating the existing run in %s (status %s, %d epochs)", run_dir, meta["status"],
                 len(meta["history"]))
        train_s = sum(h["seconds"] for h in meta["history"])
    else:
        meta = train(*cfgs, run_dir, progress=progress)
        train_s = time.time() - t
    t = time.time()
    result = evaluate(run_dir, split="test", progress=progress)
    eval_s = time.time() - t
    history = meta["history"]
    return {
        "run_dir": str(run_dir), "config": {k: meta[k] for k in ("data", "model", "loss", "train")},
        "status": meta["status"], "splits": meta["splits"], "best_epoch": meta["best_epoch"],
        "epochs_run": len(history),
        "history": history, "train_seconds": round(train_s, 1), "trained_here": not no_train,
        "evaluate_seconds": round(eval_s, 1),
        "epoch_seconds": [h["seconds"] for h in history], "test": result, "tuned_fusion": tuned_fusion(run_dir),
    }


def tuned_fusion(run_dir: Path) -> dict:
    """The fusion weight w that maximises leaf accuracy on val, and every head's test accuracy with it."""
    import torch

    from huse_core.prepare import cache_dir_for, embed, prepare, title_logits
    from huse_core.run import load_run

    run = load_run(run_dir)
    prep = prepare(run.data_cfg, run.model_cfg, cache_dir_for(run.data_cfg, run.run_dir), progress=False,
                   tokenizer=run.meta["tokenizer"], heads=run.heads)
    probs, labels = {}, {}
    for split in ("val", "test"):
        rows = prep.split(split)
        image_emb, text_emb = embed(run.model, prep, rows, torch.device("cpu"))
        wide = title_logits(run.model, prep, rows, torch.device("cpu"))
        probs[split] = run.probabilities(image_emb.numpy(), text_emb.numpy(), wide=wide)
        labels[split] = {h: y[rows] for h, y in prep.labels.items()}
    single = [h["name"] for h in run.heads if h["kind"] == "single"]

    def accuracy(split: str, head: str, w: float) -> float:
        p = probs[split][head]
        return _acc(w * p["image"] + (1 - w) * p["text"], labels[split][head])

    val_curve = {float(w): accuracy("val", run.leaf, w) for w in FUSION_GRID}
    w_best = max(val_curve, key=lambda w: (val_curve[w], -abs(w - 0.5)))  # ties: nearest the default 0.5
    per_head_w = {h: float(max(FUSION_GRID, key=lambda w: (accuracy("val", h, w), -abs(w - 0.5)))) for h in single}
    return {"weight": w_best, "val_leaf_accuracy": val_curve,
            "test_accuracy": {h: accuracy("test", h, w_best) for h in single},
            "per_head_weight": per_head_w,
            "test_accuracy_per_head_weight": {h: accuracy("test", h, per_head_w[h]) for h in single}}


def run_ablation(cfgs: tuple, out: Path, epochs: int | None, progress: bool, main: dict | None) -> list[dict]:
    """The ABLATIONS loss settings; reuses the main run where its settings match."""
    data_cfg, model_cfg, loss_cfg, train_cfg = cfgs
    rows = []
    for losses in ABLATIONS:
        name = "+".join(losses)
        tc = copy.deepcopy(train_cfg)
        tc.epochs = epochs or train_cfg.epochs
        lc = copy.deepcopy(loss_cfg)
        lc.losses = list(losses)
        same = main is not None and main["config"]["loss"] == to_dict(lc) and all(  # auto (None) matches what it chose
            main["config"]["train"].get(k) == v for k, v in to_dict(tc).items() if v is not None)
        if same:
            log.info("ablation %s: same settings as the main run, reusing it", name)
            res = main
        else:
            log.info("ablation %s: training %s epochs", name, tc.epochs or "auto")
            res = run_huse((data_cfg, model_cfg, lc, tc), out / f"ablation-{'-'.join(losses)}", progress)
        leaf = res["test"]["leaf"]
        acc = res["test"]["classification"][leaf]
        rows.append({"losses": name, "epochs": res["config"]["train"]["epochs"], "epochs_run": res["epochs_run"],
                     "best_epoch": res["best_epoch"], "train_seconds": res["train_seconds"],
                     **{m: acc[m]["accuracy"] for m in ("image", "text", "fused")},
                     "fusion_layer": acc["product"]["accuracy"] if "product" in acc else None,
                     "mean_pair_cosine": res["test"]["modality_gap"]["mean_pair_cosine"],
                     "class_R@1_i2t": res["test"]["retrieval"]["class_level"]["i2t"]["R@1"],
                     "instance_R@10_t2i": res["test"]["retrieval"]["instance"]["t2i"]["R@10"],
                     **({"catalog_t2i_R@10": res["test"]["retrieval_catalog"]["t2i"]["R@10"],
                         "catalog_t2i_R@1": res["test"]["retrieval_catalog"]["t2i"]["R@1"]}
                        if res["test"].get("retrieval_catalog") else {}),
                     "run_dir": res["run_dir"]})
    return rows


def default_variant(args: argparse.Namespace, n_products: int) -> str:
    """The result's name from what was measured: 44k-default, 44k-epochs-16, small-shops, ablation-12k, ..."""
    size = f"{round(n_products / 1000)}k"
    if args.skip_huse and args.small_shops:
        return "small-shops"
    if args.skip_huse and args.ablation:
        return f"ablation-{size}"
    if args.skip_huse:
        return f"{size}-peers"
    changed = []  # every training flag given (None = not given), as it reads: epochs-16, no-fusion-layer, ...
    for dest, value in sorted(vars(args).items()):
        if "." not in dest or value is None:
            continue
        name = dest.split(".", 1)[1].replace("_", "-")
        if isinstance(value, bool):
            changed.append(name if value else f"no-{name}")
        else:
            changed.append(f"{name}-{'+'.join(map(str, value)) if isinstance(value, list) else value}")
    return "-".join([size, *changed]) if changed else f"{size}-default"


# ---------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help=f"catalogue CSV, its folder, or a .tar.gz of it (default: {DEFAULT_DATA})")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "quality", help="HUSE run directory to write")
    p.add_argument("--variant", default=None,
                   help="the result's name: bench/results/quality/VARIANT.json and .md, overwritten on a rerun "
                        "(default: from what was measured, e.g. 44k-default, 44k-epochs-16, small-shops)")
    p.add_argument("--skip-peers", action="store_true", help="don't fit the TF-IDF / pixel LR peers")
    p.add_argument("--skip-huse", action="store_true", help="don't train HUSE (peers and/or ablation only)")
    p.add_argument("--ablation", action="store_true",
                   help="also train the five loss settings cls / cls+gap / cls+graph / the three / the three + nce "
                        "(long)")
    p.add_argument("--ablation-epochs", type=int, default=None, help="epochs per ablation run (default: --epochs)")
    p.add_argument("--reuse", type=Path, action="append", default=[], metavar="JSON",
                   help="an earlier results JSON on the same split; sections this run skips (peers, huse, "
                        "ablation, small shops) are taken from it (repeatable: the last file holding a section wins)")
    p.add_argument("--no-train", action="store_true",
                   help="evaluate the run already in --out (e.g. an interrupted one) instead of training")
    p.add_argument("--quiet", action="store_true", help="no HUSE progress bars")
    p.add_argument("--small-shops", default="", metavar="SIZES",
                   help="also build shops of these sizes from the data in another layout, train them with default "
                        "flags and evaluate them beside the built-in baseline (bench/small_shops.py), e.g. 1000,3000")
    p.add_argument("--small-shops-out", type=Path, default=Path("/tmp/small-shops"), help="folder for those shops")
    for cls, title in ((DataConfig, "catalogue (HUSE train flags)"), (ModelConfig, "model"), (LossConfig, "losses"),
                       (TrainConfig, "training")):
        add_config_flags(p, cls, title)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        catalog = resolve_catalog(args.data)
    except (FileNotFoundError, tarfile.TarError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # The split seed is --split-seed only (unlike `huse_core train`, --seed does not move it): one split for all.
    data_cfg = build_config(args, DataConfig, catalog=str(catalog))
    model_cfg, loss_cfg, train_cfg = (build_config(args, c) for c in (ModelConfig, LossConfig, TrainConfig))
    if getattr(args, "DataConfig.image_size") is None:
        data_cfg.image_size = default_image_size(model_cfg.backbone)  # as `huse_core train` chooses it
    cfgs = (data_cfg, model_cfg, loss_cfg, train_cfg)
    reused = [(path, json.loads(path.read_text())) for path in args.reuse]

    from huse_core.data.catalog import load_catalog
    from huse_core.prepare import cache_dir_for

    try:
        cat = load_catalog(data_cfg, progress=False)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    splits = {s: int(len(cat.split_indices(s))) for s in ("train", "val", "test")}
    reuse: dict = {}
    for path, old in reused:
        if old.get("splits") != splits or old.get("split_seed") != data_cfg.seed:
            print(f"error: {path} was measured on another split ({old.get('splits')}, seed {old.get('split_seed')}); "
                  f"not reusing it", file=sys.stderr)
            return 2
        reuse.update({k: old[k] for k in ("peers", "huse", "ablation", "small_shops") if old.get(k)})
    log.info("%s: %s products, train/val/test %s", catalog, f"{len(cat.df):,}", splits)
    res = {"date": dt.date.today().isoformat(), "catalog": str(catalog), "split_seed": data_cfg.seed,
           "splits": splits, "machine": {"cpus": os.cpu_count(), "load_start": round(os.getloadavg()[0], 1),
                                          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                                          "python": platform.python_version()}}
    out = args.out.expanduser()
    try:
        if args.skip_peers:
            res["peers"] = reuse.get("peers")
        else:
            log.info("peers: TF-IDF + LR per level, 16x21 pixels + LR, their average")
            load = round(os.getloadavg()[0], 1)
            res["peers"] = run_peers(data_cfg, cache_dir_for(data_cfg, out))
            res["peers"]["load_avg"] = [load, round(os.getloadavg()[0], 1)]
        if args.skip_huse:
            res["huse"] = reuse.get("huse")
        else:
            log.info("HUSE: training into %s", out)
            load = round(os.getloadavg()[0], 1)
            res["huse"] = run_huse(cfgs, out, progress=not args.quiet, no_train=args.no_train)
            res["huse"]["load_avg"] = [load, round(os.getloadavg()[0], 1)]
        if args.ablation:
            res["ablation"] = run_ablation(cfgs, out, args.ablation_epochs, not args.quiet,
                                           None if args.skip_huse else res["huse"])
        elif reuse.get("ablation"):
            res["ablation"] = reuse["ablation"]
        if not args.small_shops and reuse.get("small_shops"):
            res["small_shops"] = reuse["small_shops"]
        if args.small_shops:
            from small_shops import run_shop, table

            res["small_shops"] = {}
            for n in (int(v) for v in args.small_shops.split(",")):
                log.info("small shop: %d products", n)
                load = round(os.getloadavg()[0], 1)
                shop = run_shop(args.data, args.small_shops_out / f"shop{n}", n, 8)
                res["small_shops"][str(n)] = {**shop, "table": table(n, shop),
                                              "load_avg": [load, round(os.getloadavg()[0], 1)]}
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    res["machine"]["load_end"] = round(os.getloadavg()[0], 1)
    path = write_result("quality", args.variant or default_variant(args, len(cat.df)), res, markdown(res))
    print(markdown(res))
    print(f"wrote {path} and {path.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
