"""How each rule for the fused prediction would have scored on trained runs: mix of photo + title vs fusion layer.

    python -m bench.studies.fusion_rule RUN [RUN ...] [--variant fusion-rule]

For every single-label head of each run: the validation and test accuracy of the photo, the title, every photo +
title mix on training's grid, and the fusion layer; then the test accuracy of `fused` under two rules, both chosen
on validation only (validation.tune_fusion_weights picks the mix the same way):
  "beat": the layer only where it beats the best mix by FUSION_MIN_GAIN (the earlier rule);
  "prefer": the layer unless the chosen mix beats it by FUSION_MIN_GAIN (the rule now);
  "log-loss": the layer or mix with the least validation log-loss (ties to the layer), as the wide head's t is chosen.
Runs need a fusion layer; their catalogue (and decoded-photo cache) must still be where they were trained.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from bench.common import write_result

from huse_core.run import load_run
from huse_core.training.evaluate import prepare_run, split_predictions
from huse_core.training.validation import FUSION_GRID, FUSION_MIN_GAIN, choose_weight, prefers_layer

def head_accuracies(run_dir: Path) -> dict[str, dict[str, dict]]:
    """{head: {split: {"image", "text", "product": acc, "grid": [acc at each FUSION_GRID weight], "n"}}}."""
    run = load_run(run_dir)
    prep = prepare_run(run, False)
    out: dict[str, dict[str, dict]] = {}
    for split in ("val", "test"):
        pred = split_predictions(run, split, False, prep=prep)
        for h in (h for h in run.heads if h["kind"] == "single"):
            y = pred["labels"][h["name"]]
            known = y >= 0
            p = {m: np.asarray(v)[known] for m, v in pred["probs"][h["name"]].items()}
            row = {m: float((p[m].argmax(1) == y[known]).mean()) for m in ("image", "text", "product") if m in p}
            row["grid"] = [float(((w * p["image"] + (1 - w) * p["text"]).argmax(1) == y[known]).mean())
                           for w in FUSION_GRID]
            picked = np.arange(int(known.sum())), y[known]
            row["loss"] = [float(-np.log(np.clip((w * p["image"] + (1 - w) * p["text"])[picked], 1e-6, 1)).mean())
                           for w in FUSION_GRID]
            if "product" in p:
                row["product_loss"] = float(-np.log(np.clip(p["product"][picked], 1e-6, 1)).mean())
            row["n"] = int(known.sum())
            out.setdefault(h["name"], {})[split] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--variant", default="fusion-rule", help="bench/results/studies/VARIANT.md (default: %(default)s)")
    args = ap.parse_args()
    lines = ["| run | head | test n | val: chosen mix / layer | test: beat / prefer / log-loss / layer alone | "
             "prefer − beat | log-loss − prefer |", "|---|---|---:|---:|---:|---:|---:|"]
    diffs, loss_diffs, t0 = [], [], time.time()
    for run_dir in args.runs:
        for head, v in head_accuracies(run_dir).items():
            va, te = v["val"], v["test"]
            if "product" not in va:
                continue
            i = choose_weight(va["grid"])
            beat = te["product"] if va["product"] - max(va["grid"]) >= FUSION_MIN_GAIN else te["grid"][i]
            prefer = te["product"] if prefers_layer(va["grid"][i], va["product"]) else te["grid"][i]
            j = int(np.argmin(np.round(va["loss"], 6)))
            by_loss = te["product"] if va["product_loss"] <= va["loss"][j] + 1e-6 else te["grid"][j]
            diffs.append(prefer - beat)
            loss_diffs.append(by_loss - prefer)
            lines.append(f"| {run_dir} | {head} | {te['n']:,} | {va['grid'][i] * 100:.2f} / {va['product'] * 100:.2f} "
                         f"| {beat * 100:.2f} / {prefer * 100:.2f} / {by_loss * 100:.2f} / {te['product'] * 100:.2f} "
                         f"| {(prefer - beat) * 100:+.2f} | {(by_loss - prefer) * 100:+.2f} |")
    d, e = np.asarray(diffs), np.asarray(loss_diffs)
    lines.append(f"\n{len(d)} heads: prefer raised test accuracy on {(d > 0).sum()}, lowered it on {(d < 0).sum()}; "
                 f"mean {d.mean() * 100:+.3f} points. Log-loss against prefer: raised on {(e > 0).sum()}, lowered on "
                 f"{(e < 0).sum()}; mean {e.mean() * 100:+.3f} points ({time.time() - t0:.0f} s)")
    text = "\n".join(lines)
    print(text)
    print(f"results: {write_result('studies', args.variant, {'runs': [str(r) for r in args.runs]}, text)}")


if __name__ == "__main__":
    main()
