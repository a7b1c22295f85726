"""Small shops against the built-in title baseline: the `--small-shops` part of bench/quality.py.

Each shop is built from the real fashion data in another layout (bench/other_shop.py: a `category_path` column
"Master >> Sub >> Article", long product-name titles, photos enlarged 8 times), trained with the default flags (only
the column flags given), then evaluated on its test split (grouped by title) beside the TF-IDF word + char n-gram
LinearSVC baseline that `evaluate` fits on the same train split:

    python bench/quality.py --skip-peers --skip-huse --small-shops 1000,3000   # -> bench/results/quality/small-shops

`table` renders one shop as a markdown table (accuracy and macro-F1 per head: photo, title, fused, baseline).
"""

from __future__ import annotations

import time
from pathlib import Path

from other_shop import TRAIN_FLAGS, build

from huse_core.cli import main as huse
from huse_core.run import read_meta


def run_shop(data: Path, out: Path, n: int, scale: int) -> dict:
    """Build one shop, train it with the default schedule, evaluate it (with the baseline); returns the figures."""
    built = build(data, out, n, scale, quality=90, min_per_class=15, seed=0)
    run = out / "run"
    t0 = time.time()
    if not (run / "model.pt").is_file() or read_meta(run).get("status") != "done":
        code = huse(["train", "--catalog", str(out / "products.csv"), "--out", str(run), *TRAIN_FLAGS, "--quiet"])
        if code:
            raise RuntimeError(f"train failed on the {n}-product shop (exit {code})")
    train_s = time.time() - t0
    t0 = time.time()
    if huse(["evaluate", "--run", str(run), "--quiet"]):
        raise RuntimeError(f"evaluate failed on the {n}-product shop")
    meta = read_meta(run)
    return {"shop": built, "train_seconds": round(train_s, 1), "evaluate_seconds": round(time.time() - t0, 1),
            "schedule": meta.get("schedule"), "epochs_run": len(meta.get("history", [])),
            "test": meta["metrics"]["test"]}


def table(n: int, res: dict) -> str:
    test = res["test"]
    base = (test.get("baseline") or {}).get("heads", {})
    lines = [f"**{n:,}-product shop** ({res['shop']['classes']} article types; train {res['train_seconds']:.0f} s, "
             f"{res['epochs_run']} epochs)", "",
             "| head | photo acc / F1 | title acc / F1 | fusion layer acc / F1 | fused acc / F1 | baseline acc / F1 "
             "| fused − baseline |", "|---|---|---|---|---|---|---|"]
    for head, per in test["classification"].items():
        cells = [f"{per[m]['accuracy'] * 100:.1f} / {per[m]['macro_f1'] * 100:.1f}" if m in per else "–"
                 for m in ("image", "text", "product", "fused")]
        b = base.get(head)
        bcell = f"{b['accuracy'] * 100:.1f} / {b['macro_f1'] * 100:.1f}" if b else "–"
        diff = f"{(per['fused']['accuracy'] - b['accuracy']) * 100:+.1f}" if b and "fused" in per else "–"
        lines.append(f"| {head} | {' | '.join(cells)} | {bcell} | {diff} |")
    return "\n".join(lines)
