"""How well a run's photo tower fits its own training photos: leaf accuracy of the photo alone on train, val and test.

A tower far below 100 % on the photos it trained on is under-fitting (capacity or steps are short), so regularisers
(mixup, cutmix, stronger augmentation, more label smoothing) have nothing to remove; one near 100 % with a large gap
to validation is over-fitting and wants them. Photos are read as inference reads them (no augmentation).

    python -m bench.studies.photo_fit RUN [RUN ...]

Prints a markdown table (run, split, products, photo / title accuracy on the leaf head).
"""

from __future__ import annotations

import argparse
import sys

from bench.common import write_result
from huse_core.run import load_run
from huse_core.training.evaluate import classification_metrics, prepare_run, split_predictions


def fit_rows(run_dir: str) -> list[str]:
    run = load_run(run_dir)
    prep = prepare_run(run)
    leaf = run.leaf_head
    rows = []
    for split in ("train", "val", "test"):
        pred = split_predictions(run, split, prep=prep)
        acc = classification_metrics(pred["probs"], pred["labels"], [leaf])[leaf["name"]]
        rows.append(f"| {run_dir} | {split} | {int((pred['labels'][leaf['name']] >= 0).sum()):,} | "
                    f"{100 * acc['image']['accuracy']:.2f} | {100 * acc['text']['accuracy']:.2f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run directories")
    args = p.parse_args(argv)
    lines = ["| run | split | products | photo leaf accuracy % | title leaf accuracy % |", "|---|---|---:|---:|---:|"]
    for run_dir in args.runs:
        lines += fit_rows(run_dir)
    print("\n".join(lines))
    print(f"results: {write_result('studies', 'photo-fit', {'runs': args.runs}, chr(10).join(lines))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
