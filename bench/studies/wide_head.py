"""What the wide head adds, read from one trained run: the title's prediction with and without its n-gram logits.

    python -m bench.studies.wide_head RUN [RUN ...] [--split test] [--variant wide-head]

The wide head is fitted after the towers have trained (training.wide_fit) and nothing else reads it, so the towers,
the shared classifier and the fusion layer of a run with it are the weights a run without it learns: the same run
read without the wide logits is the deep-only model, like for like. Per head and split: photo; title, fusion layer
and fused without / with the wide logits (fused: the run's stored photo weights and layer-or-mix choice, which
were made with them); and the built-in TF-IDF + LinearSVC baseline fitted on the run's train split
(training/baseline.py), all on the same rows, accuracy / macro-F1 in %. Runs need their catalogue (and
decoded-photo cache) where they were trained.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import write_result
from huse_core.run import load_run
from huse_core.training.evaluate import baseline_metrics, classification_metrics, prepare_run, split_predictions


def run_table(run_dir: Path, split: str) -> list[str]:
    run = load_run(run_dir)
    if run.model.wide is None:
        raise SystemExit(f"{run_dir} has no wide head (trained before it, or with --no-wide-head)")
    prep = prepare_run(run, False)
    pred = split_predictions(run, split, False, prep=prep)
    # The same weights and choices, the title's n-gram logits left out of every prediction
    deep = run.probabilities(pred["image_emb"], pred["text_emb"])
    probs = {h: {**per, **{f"{m}-deep": p for m, p in deep[h].items() if m != "image"}}
             for h, per in pred["probs"].items()}
    scored = classification_metrics(probs, pred["labels"], run.heads)
    base = baseline_metrics(prep, split, run.heads, scored)["heads"]
    rows = []
    for h in run.heads:
        per = scored[h["name"]]
        cells = [f"{per[m]['accuracy'] * 100:.2f} / {per[m]['macro_f1'] * 100:.1f}" if m in per else "–"
                 for m in ("image", "text-deep", "text", "product-deep", "product", "fused-deep", "fused")]
        b = base.get(h["name"])
        bcell = f"{b['accuracy'] * 100:.2f} / {b['macro_f1'] * 100:.1f}" if b else "–"
        gap = f"{(per['fused']['accuracy'] - b['accuracy']) * 100:+.2f}" if b and "fused" in per else "–"
        rows.append(f"| {run_dir} | {split} | {h['name']} | {' | '.join(cells)} | {bcell} | {gap} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--split", default="test", choices=["val", "test"])
    ap.add_argument("--variant", default="wide-head", help="bench/results/studies/VARIANT.md (default: %(default)s)")
    args = ap.parse_args()
    t0 = time.time()
    lines = ["| run | split | head | photo | title, deep only | title + wide | fusion layer, deep only | "
             "fusion layer + wide | fused, deep only | fused | baseline | fused − baseline |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run_dir in args.runs:
        lines += run_table(run_dir, args.split)
    text = "\n".join(lines) + f"\n\n(accuracy / macro-F1, %; {time.time() - t0:.0f} s)\n"
    print(text)
    path = write_result("studies", args.variant, {"runs": [str(r) for r in args.runs], "split": args.split},
                        f"# Wide head, with and without its logits\n\n{text}")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
