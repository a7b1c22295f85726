"""Memory and time of `train --epochs 1` and `index` on synthetic catalogues of 44k, 200k (1M) products.

    python bench/scale.py --sizes 44000                       # one size: ~10 min on 2 cores
    python bench/scale.py --sizes 44000,200000,1000000        # disk: ~19 kB of decoded photo per product
    python bench/scale.py --sizes 44000 --baseline /tmp/huse-head   # also older code (a `git archive` copy)

Each catalogue is the real fashion catalogue (../shared/data/fashion-product-images-small.tar.gz, unpacked once
into /tmp by bench/common.resolve_catalog) repeated under new ids, copies' titles varied with extra words, so
every row's photo is really decoded and tokenised. Each command runs in its own process; its peak memory is the
kernel's ru_maxrss for it (wait4), and its peak anonymous and file-backed resident memory are sampled from
/proc every 0.2 s (file-backed pages are page cache the kernel can drop; anonymous ones are the process's own).
The decoded-photo cache is written beside each catalogue: the first `train` of a size decodes, later ones reuse it.
Nothing here is committed: the catalogues, runs and caches stay under --work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd

from common import DEFAULT_DATA, ROOT, resolve_catalog, write_result

WORDS = ["Classic", "Slim", "Relaxed", "Essential", "Premium", "Everyday", "Urban", "Sport", "Soft", "Light"]
GB = 1 << 30


def synthetic_catalogue(real_csv: Path, n: int, work: Path) -> Path:
    """work/catalogue-<n>/metadata.csv: the real rows repeated to n, new ids, copies' titles varied; the photos
    are the real ones (an `images` symlink), so each row still decodes a real photo."""
    folder = work / f"catalogue-{n}"
    csv = folder / "metadata.csv"
    if csv.is_file():
        return csv
    folder.mkdir(parents=True, exist_ok=True)
    real = pd.read_csv(real_csv, dtype=str, keep_default_na=False)
    rows = real.iloc[[i % len(real) for i in range(n)]].reset_index(drop=True)
    copy = [i // len(real) for i in range(n)]
    rows["id"] = [f"{c}-{pid}" for c, pid in zip(copy, rows["id"], strict=True)]
    rows["title"] = [t if c == 0 else f"{t} {WORDS[c % len(WORDS)]} {WORDS[(c // len(WORDS) + 3) % len(WORDS)]}"
                     for t, c in zip(rows["title"], copy, strict=True)]
    link = folder / "images"
    if not link.exists():
        link.symlink_to(real_csv.parent / "images", target_is_directory=True)
    rows.to_csv(folder / "metadata.part.csv", index=False)
    (folder / "metadata.part.csv").replace(csv)
    return csv


def _status(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0]) * 1024
    return out


def measure(cmd: list[str], log: Path, env: dict, cwd: Path) -> dict:
    """Run `cmd`; wall seconds, exit code, peak RSS (ru_maxrss) and sampled peaks of anonymous / file-backed RSS."""
    peaks: dict[str, int] = {}
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for k, v in _status(proc.pid).items():
                peaks[k] = max(peaks.get(k, 0), v)
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not every child's so far
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    maxrss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"cmd": " ".join(cmd), "rc": proc.returncode, "wall_s": round(time.time() - t0, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),  # under load, what the step itself cost
            "peak_rss_gb": round(maxrss / GB, 3), "peak_anon_gb": round(peaks.get("RssAnon", 0) / GB, 3),
            "peak_file_gb": round(peaks.get("RssFile", 0) / GB, 3), "log": str(log)}


PREPARE = ("import sys; from huse_core.config import DataConfig, ModelConfig; from huse_core.prepare import prepare; "
           "p = prepare(DataConfig(catalog=sys.argv[1]), ModelConfig(), sys.argv[2], progress=False); "
           "print(len(p.catalog.df), 'products prepared')")


# The map step of `index` alone, on the run's current build (its embeddings read as `index` reads them), written to
# a scratch folder: UMAP on 20k points, placing the rest, saving map.parquet. A rerun of the slowest, largest-frame
# phase without re-embedding the catalogue.
MAP_STEP = ("import sys; from huse_core.retrieval.build import _rows; from huse_core.retrieval.layout import "
            "load_embeddings, load_product_emb; from huse_core.retrieval.map import build_map; from huse_core.run "
            "import load_run; run = load_run(sys.argv[1]); products, image, text = load_embeddings(sys.argv[1] + "
            "'/index'); p = load_product_emb(sys.argv[1] + '/index'); build_map(products, _rows(image), _rows(text), "
            "run.heads, sys.argv[2], progress=False, product_emb=None if p is None else _rows(p)); "
            "print(len(products), 'products mapped')")


def run_size(n: int, real_csv: Path, work: Path, epochs: int, code: Path | None, label: str, steps: list[str],
             save, max_steps: int = 0, train_flags: list[str] | None = None) -> dict:
    """`steps` (prepare, train, index) on one catalogue size with one version of the code; save(partial) after each.
    prepare alone is data.prepare in a process of its own (decode or open the cache, tokenise): the data's memory
    without a model's."""
    csv = synthetic_catalogue(real_csv, n, work)
    cache = csv.parent / ".huse_cache"
    decoded_before = any(cache.glob("pixels-*.npy")) if cache.is_dir() else False
    run_dir = work / f"run-{n}-{label}"
    # The package comes from `code` (older code) or this checkout; the processes run in `work`, so the checkout
    # beside the current directory can't shadow it.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code or ROOT), os.environ.get("PYTHONPATH", "")]))
    py = [sys.executable, "-m", "huse_core"]
    out = {"products": n, "code": label, "cache_was_warm": decoded_before}
    if "prepare" in steps:
        print(f"[{label}] {n:,} products: prepare", file=sys.stderr, flush=True)
        out["prepare"] = measure([sys.executable, "-c", PREPARE, str(csv), str(cache)],
                                 work / f"prepare-{n}-{label}.log", env, work)
        print(f"  {out['prepare']}", file=sys.stderr, flush=True)
        save(out)
    if "train" in steps:
        shutil.rmtree(run_dir, ignore_errors=True)  # a run left by an earlier bench
        print(f"[{label}] {n:,} products: train --epochs {epochs}", file=sys.stderr, flush=True)
        cap = ["--max-steps", str(max_steps)] if max_steps else []
        out["train"] = measure(py + ["train", "--catalog", str(csv), "--out", str(run_dir), "--epochs", str(epochs),
                                     *cap, *(train_flags or []), "--quiet"], work / f"train-{n}-{label}.log", env, work)
        out["train"] |= _trained(run_dir)
        print(f"  {out['train']}", file=sys.stderr, flush=True)
        save(out)
    trained = out["train"]["rc"] == 0 if "train" in out else (run_dir / "model.pt").is_file()  # or an earlier bench's
    if trained and "index" in steps:
        print(f"[{label}] {n:,} products: index", file=sys.stderr, flush=True)
        out["index"] = measure(py + ["index", "--run", str(run_dir), "--quiet"], work / f"index-{n}-{label}.log",
                               env, work)
        print(f"  {out['index']}", file=sys.stderr, flush=True)
    if "map" in steps and (run_dir / "index" / "index.json").is_file():
        print(f"[{label}] {n:,} products: the map step of index", file=sys.stderr, flush=True)
        scratch = work / f"map-{n}-{label}"
        scratch.mkdir(exist_ok=True)
        out["map"] = measure([sys.executable, "-c", MAP_STEP, str(run_dir), str(scratch)],
                             work / f"map-{n}-{label}.log", env, work)
        print(f"  {out['map']}", file=sys.stderr, flush=True)
    out["cache_gb"] = round(sum(p.stat().st_size for p in cache.glob("*.npy")) / GB, 3) if cache.is_dir() else 0
    return out


def _trained(run_dir: Path) -> dict:
    """What the run did: optimiser steps, global batch, training seconds and products/s of its epochs (run.json)."""
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    hist, batch = meta.get("history", []), meta["train"]["batch_size"]
    seconds = sum(h["seconds"] for h in hist)
    rate = sum(h["products_per_s"] * h["seconds"] for h in hist) / max(seconds, 1e-9)
    per_epoch = meta["splits"]["train"] // batch
    return {"batch_size": batch, "steps_per_epoch": per_epoch, "train_products": meta["splits"]["train"],
            "epoch_seconds_incl_validation": round(seconds, 1), "train_products_per_s": round(rate, 1),
            "full_epoch_estimate_s": round(meta["splits"]["train"] / max(rate, 1e-9), 1)}


def table(results: list[dict]) -> str:
    lines = ["| products | code | command | wall | peak RSS | peak anonymous | peak file-backed |",
             "|---:|---|---|---:|---:|---:|---:|"]
    for r in results:
        first = next((s for s in ("prepare", "train", "index") if s in r), None)
        for step in ("prepare", "train", "index", "map"):
            if step in r:
                m = r[step]
                what = f"{step} (decodes)" if step == first and not r["cache_was_warm"] else step
                lines.append(f"| {r['products']:,} | {r['code']} | {what} | {m['wall_s']:.0f} s "
                             f"| {m['peak_rss_gb']:.2f} GB | {m['peak_anon_gb']:.2f} GB | {m['peak_file_gb']:.2f} GB |"
                             + ("" if m["rc"] == 0 else f" rc {m['rc']}"))
    return "\n".join(lines)


def default_variant(sizes: str, steps: str) -> str:
    """44000,200000 + all steps -> 44k-200k; 1000000 + train -> 1m-train."""
    name = "-".join(f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{round(n / 1000)}k"
                    for n in (int(v) for v in sizes.split(",")))
    return name if steps == "prepare,train,index" else f"{name}-{steps.replace(',', '-')}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the real catalogue: tarball, folder or CSV")
    ap.add_argument("--sizes", default="44000,200000", help="products per catalogue, comma-separated")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps", default="prepare,train,index", help="which of prepare,train,index,map to measure (map: "
                    "index's map step alone, on the run's current build)")
    ap.add_argument("--max-steps", type=int, default=0, help="train --max-steps: cap each training run's optimiser "
                    "steps (a 1M-product epoch is ~3,900 steps, hours on 2 cores); 0 = the whole epoch")
    ap.add_argument("--work", type=Path, default=Path("/tmp/huse-scale"), help="catalogues, caches, runs, logs")
    ap.add_argument("--baseline", type=Path, help="a copy of older code (its huse_core/) to measure as well")
    ap.add_argument("--variant", help="the result's name: bench/results/scale/VARIANT.json, overwritten on a rerun "
                    "(default: the sizes and steps, e.g. 44k-200k or 1m-train)")
    ap.add_argument("--train-flags", default="", help="more `train` flags, e.g. \"--cnn-width 8\": a narrow photo "
                    "tower embeds ~16x faster, so `index` at 1M measures the data path in minutes, not hours")
    ap.add_argument("--label", default="current", help="names this code's runs and logs (run-<n>-<label>)")
    args = ap.parse_args()
    real_csv = resolve_catalog(args.data)
    args.work.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GB:.0f} GB RAM",
            "load_before": [round(x, 2) for x in os.getloadavg()], "nice": os.nice(0),
            "omp_threads": os.environ.get("OMP_NUM_THREADS", "")}
    variant = args.variant or default_variant(args.sizes, args.steps)
    results: list[dict] = []
    out: Path | None = None

    def save(partial: dict | None = None) -> None:  # after every step: a long run stopped early keeps its figures
        nonlocal out
        meta["load_now"] = [round(x, 2) for x in os.getloadavg()]
        out = write_result("scale", variant, {"meta": meta, "results": results + ([partial] if partial else [])})

    for n in (int(s) for s in args.sizes.split(",")):
        for code, label in [(None, args.label)] + ([(args.baseline, "baseline")] if args.baseline else []):
            results.append(run_size(n, real_csv, args.work, args.epochs, code, label, args.steps.split(","), save,
                                    args.max_steps, args.train_flags.split()))
            save()
    print(json.dumps(meta))
    print(table(results))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
