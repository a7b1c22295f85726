"""Time demo-data + train + evaluate on the built-in demo shop and print the demo's results table.

    python bench/demo.py [--out /tmp/huse-demo-bench] [--products 3000]
    python bench/demo.py --first-start     # the app's first-start build (pipeline.build_demo), empty numba cache

--first-start times what the app runs on a fresh machine before its first page is usable — demo shop, training,
evaluation, index and map — in a fresh process with an empty numba cache (UMAP's JIT compiles from nothing), per
stage; the browser and Streamlit's own start are not in it (a few seconds, `tests/test_browser.py`).
Results: bench/results/demo/cli.json and .md, or demo/first-start.json and .md, overwritten on a rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, write_result


def demo_train_flags() -> list[str]:
    """The app's demo schedule (pipeline.DemoSpec) as train flags: the bench times what the first start trains."""
    from huse_core.pipeline import DemoSpec

    spec = DemoSpec()
    cfg = spec.train
    return ["--epochs", str(cfg.epochs), "--batch-size", str(cfg.batch_size), "--lr", str(cfg.lr), "--patience",
            str(cfg.patience), "--select-by", cfg.select_by, "--image-size", str(spec.image_size)]


def step(args: list[str]) -> float:
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "huse_core", *args], cwd=ROOT, check=True)
    return time.time() - t0


FIRST_START = """
import json, sys, time
from huse_core.pipeline import build_demo
stages, t0, last = {}, time.time(), [None, time.time()]
TRAIN = {"data", "features", "schedule", "epoch", "done"}  # train's own events: its stage
def on(event):
    event = {**event, "stage": "train" if event.get("stage") in TRAIN else event.get("stage")}
    if event.get("stage") != last[0]:
        now = time.time()
        if last[0] is not None:
            stages[last[0]] = stages.get(last[0], 0.0) + now - last[1]
        last[:] = [event.get("stage"), now]
build_demo(sys.argv[1], sys.argv[2], callback=on)
print(json.dumps({"total": time.time() - t0, "stages": {k: round(v, 1) for k, v in stages.items()}}))
"""


def first_start(out: Path) -> int:
    """The app's first-start build in a fresh process, numba cache empty; prints stage times and the demo's accuracy."""
    import tempfile

    with tempfile.TemporaryDirectory() as numba_cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": numba_cache}
        done = subprocess.run([sys.executable, "-c", FIRST_START, str(out / "demo"), str(out / "run")], cwd=ROOT,
                              env=env, check=True, capture_output=True, text=True)
    timing = json.loads(done.stdout.strip().splitlines()[-1])
    test = json.loads((out / "run" / "run.json").read_text())["metrics"]["test"]
    acc = {m: round(p["accuracy"] * 100, 1) for m, p in test["classification"][test["leaf"]].items()}
    text = (f"first-start build {timing['total']:.0f} s; by stage (s): {timing['stages']}\n\n"
            f"demo {test['leaf']} test accuracy (%): {acc}")
    print(text)
    path = write_result("demo", "first-start", {**timing, "leaf_accuracy": acc, "test": test}, text)
    print(f"results: {path}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/huse-demo-bench")
    parser.add_argument("--products", type=int, default=3000)
    parser.add_argument("--first-start", action="store_true", help="time the app's first-start build instead")
    args = parser.parse_args()
    out = Path(args.out)
    subprocess.run(["rm", "-rf", str(out)], check=True)
    if args.first_start:
        return first_start(out)
    times = {
        "demo-data": step(["demo-data", "--out", str(out / "demo"), "--products", str(args.products), "--quiet"]),
        "train": step(["train", "--catalog", str(out / "demo" / "metadata.csv"), "--out", str(out / "run"),
                       *demo_train_flags(), "--quiet"]),
        "evaluate": step(["evaluate", "--run", str(out / "run"), "--quiet"]),
    }
    meta = json.loads((out / "run" / "run.json").read_text())
    result = meta["metrics"]["test"]
    leaf = result["classification"][result["leaf"]]
    cl, inst = result["retrieval"]["class_level"], result["retrieval"]["instance"]
    spent = ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
    lines = [f"wall time: {spent}, total {sum(times.values()):.0f} s (torch threads = cores)",
             f"epochs run: {len(meta['history'])} (best {meta['best_epoch']}); test products: {result['n_test']}", "",
             "| measure | image | text | fused |", "|---|---|---|---|"]
    for head, per in result["classification"].items():
        cells = " | ".join(f"{per[m]['accuracy'] * 100:.1f} %" for m in ("image", "text", "fused"))
        lines.append(f"| {head} accuracy | {cells} |")
    lines += ["", "| class-level retrieval | R@1 | R@5 | R@10 |", "|---|---|---|---|"]
    for d, r in {**cl, **{f"{k} (instance)": v for k, v in inst.items()}}.items():
        lines.append(f"| {d} | {r['R@1']:.3f} | {r['R@5']:.3f} | {r['R@10']:.3f} |")
    lines.append(f"\nmean paired image-title cosine: {result['modality_gap']['mean_pair_cosine']:.3f}")
    first, last = meta["history"][0]["loss"], meta["history"][-1]["loss"]
    lines.append("loss terms, first -> last epoch: " + ", ".join(f"{k} {first[k]:.3f} -> {last[k]:.3f}" for k in first))
    lines.append(f"fused {result['leaf']} accuracy {leaf['fused']['accuracy'] * 100:.1f} %")
    print("\n".join(lines))
    payload = {"seconds": {k: round(v, 1) for k, v in times.items()}, "epochs_run": len(meta["history"]),
               "best_epoch": meta["best_epoch"], "test": result}
    variant = "cli" if args.products == 3000 else f"cli-{args.products}"
    print(f"results: {write_result('demo', variant, payload, chr(10).join(lines))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
