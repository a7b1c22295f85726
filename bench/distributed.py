"""Scaling out on one machine: training at 1 and 2 processes (torchrun) and catalogue embedding plain vs Ray Data.

    python bench/distributed.py                                  # a 1,000-product demo shop, 2 epochs each
    python bench/distributed.py --products 3000 --epochs 4 --work /tmp/huse-dist

Training, each in its own process tree on the same demo catalogue and settings (global batch --batch):
  1 process x 1 thread, 1 process x 2 threads, and `torchrun --nproc_per_node 2` (1 thread each, gloo).
  products/s is run.json's, epochs after the first (the first decodes and warms up), summed over processes;
  scaling efficiency = 2-process rate / (2 x the 1 x 1 rate); validation accuracy is the last epoch's.
Embedding, the 1 x 1 run's model over its whole catalogue, photos decoded from the files each time:
  plain = embed_catalog over the Catalog (chunked, in-process); local = embed_parts here, part after part;
  ray-1 / ray-2 = embed_parts on a local Ray with 1 / 2 model actors (num_cpus = workers + 1).
  start-up = ray.init; products/s counts the embedding after it (actors start lazily: their torch import and
  model load are in it); busy s = the parts' decode + embed seconds summed over workers; peak RSS is ru_maxrss.
Writes bench/results/distributed/<products>.json (800, 4k, ...) and prints the tables of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, write_result


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def train_case(name: str, csv: Path, out: Path, args) -> dict:
    flags = ["--catalog", str(csv), "--out", str(out), "--epochs", str(args.epochs), "--batch-size", str(args.batch),
             "--quiet"]
    if name == "2 processes x 1 thread":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "huse_core", "train", *flags, "--threads", "1"]
    else:
        cmd = [sys.executable, "-m", "huse_core", "train", *flags, "--threads", "2" if "2 threads" in name else "1"]
    shutil.rmtree(out, ignore_errors=True)
    load, t = _load(), time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.time() - t
    meta = json.loads((out / "run.json").read_text())
    later = meta["history"][1:] or meta["history"]
    return {"case": name, "wall_s": round(wall, 1), "products_per_s": round(sum(r["products_per_s"] for r in later)
                                                                            / len(later), 1),
            "epoch_s": [r["seconds"] for r in meta["history"]], "val_accuracy": meta["history"][-1]["val_accuracy"],
            "distributed": meta.get("distributed"), "load_before": load, "load_after": _load()}


def embed_case(engine: str, run_dir: str, workers: int, part_size: int) -> dict:
    """One embedding measurement, in this (fresh) process."""
    from huse_core.retrieval.embed import embed_catalog
    from huse_core.retrieval.ray_embed import embed_parts, parts_dir
    from huse_core.run import load_run

    load, startup = _load(), 0.0
    shutil.rmtree(parts_dir(run_dir), ignore_errors=True)
    if engine == "plain":
        t = time.time()
        run = load_run(run_dir)
        products = embed_catalog(run, run.load_catalog(), Path(run_dir) / "bench-plain", progress=False)
        seconds, n, workers_rss = time.time() - t, len(products), {}
        busy = seconds
        shutil.rmtree(Path(run_dir) / "bench-plain")
    else:
        if engine == "ray":
            from huse_core.retrieval.ray_embed import start_local_ray

            t = time.time()
            start_local_ray(workers)
            startup = time.time() - t
        t = time.time()
        result = embed_parts(run_dir, engine=engine, workers=workers, part_size=part_size, progress=False)
        seconds, n, workers_rss = time.time() - t, result["n_products"], result["peak_rss_mb"]
        busy = result["busy_seconds"]
    return {"case": engine if engine != "ray" else f"ray-{workers}", "products": n, "startup_s": round(startup, 1),
            "embed_s": round(seconds, 1), "products_per_s": round(n / seconds, 1), "busy_s": round(busy, 1),
            "driver_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "worker_rss_mb": sorted(workers_rss.values()), "load_before": load, "load_after": _load()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--products", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=64, help="global batch (2 processes: half each)")
    p.add_argument("--part-size", type=int, default=256)
    p.add_argument("--work", type=Path, default=Path("/tmp/huse-distributed"))
    p.add_argument("--skip-train", action="store_true", help="reuse the runs in --work")
    p.add_argument("--variant", help="the result's name: bench/results/distributed/VARIANT.json (default: the "
                   "products, e.g. 800 or 4k)")
    p.add_argument("--one", nargs=4, metavar=("ENGINE", "RUN", "WORKERS", "PART"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:  # a child: one embedding measurement, JSON on stdout
        print(json.dumps(embed_case(args.one[0], args.one[1], int(args.one[2]), int(args.one[3]))))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    csv = args.work / "shop" / "metadata.csv"
    if not csv.is_file():
        subprocess.run([sys.executable, "-m", "huse_core", "demo-data", "--out", str(csv.parent), "--products",
                        str(args.products), "--quiet"], check=True, cwd=ROOT)
    training = []
    if not args.skip_train:
        for i, name in enumerate(("1 process x 1 thread", "1 process x 2 threads", "2 processes x 1 thread")):
            training.append(train_case(name, csv, args.work / f"run-{i}", args))
            print(json.dumps(training[-1]), flush=True)
        one = training[0]["products_per_s"]
        training[2]["scaling_efficiency"] = round(training[2]["products_per_s"] / (2 * one), 3)
        training[1]["scaling_efficiency"] = round(training[1]["products_per_s"] / (2 * one), 3)
    embedding = []
    for engine, workers in (("plain", 1), ("local", 1), ("ray", 1), ("ray", 2)):
        out = subprocess.run([sys.executable, __file__, "--one", engine, str(args.work / "run-0"), str(workers),
                              str(args.part_size)], check=True, cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        embedding.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(embedding[-1]), flush=True)
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} cores, {platform.machine()}",
           "nice": os.nice(0), "products": args.products, "epochs": args.epochs, "batch": args.batch,
           "training": training, "embedding": embedding}
    n = args.products
    path = write_result("distributed", args.variant or (f"{n // 1000}k" if n % 1000 == 0 else str(n)), res)
    print("| training | products/s | scaling eff. | epoch s | val leaf acc (fused) | load before → after |")
    for r in training:
        print(f"| {r['case']} | {r['products_per_s']} | {r.get('scaling_efficiency', 1.0)} | {r['epoch_s']} | "
              f"{r['val_accuracy']['fused']:.3f} | {r['load_before'][0]} → {r['load_after'][0]} |")
    print("\n| embedding | products/s | start-up s | embed s | busy s | peak RSS per worker MB | driver MB | load |")
    for r in embedding:
        print(f"| {r['case']} | {r['products_per_s']} | {r['startup_s']} | {r['embed_s']} | {r['busy_s']} | "
              f"{r['worker_rss_mb']} | "
              f"{r['driver_rss_mb']} | {r['load_before'][0]} → {r['load_after'][0]} |")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
