"""Scale benchmark: Annoy vs faiss (IVF-SQ8 + exact re-rank) at 100k-10M vectors of dim 512 (build, bytes, recall).

    python bench/scale_vectors.py [--sizes 100000,1000000] [--backends annoy,faiss] [--queries 1000] [--dir DIR]

Vectors are bench/retrieval.py's `synthetic` rows (clustered unit vectors whose local intrinsic dimension matches a
trained run's; `--rank 16` for a harder geometry), generated in chunks into a float32 .npy on disk and opened
memory-mapped, as `index` opens a build's embeddings. Each backend builds with the tuning `index` uses (recall@10
>= 0.98 less two standard errors on 200 tuning queries) in its own subprocess, and is then opened and queried in
a second fresh one, so each peak RSS (VmHWM, restarted after the imports; the float32 rows' and Annoy's
memory-mapped pages that the case touched count) is that case's alone: "build" and "serve" (open + 1,000 single
queries).
Measured queries are 1,000 other rows that tuning never saw; recall@10 is tie-aware as in annoy_index.
Times are wall clock and CPU (build: process CPU seconds, all threads; a query: its thread's CPU time), since on a
shared machine a niced process's wall time mostly measures the other jobs.
Writes bench/results/scale_vectors/<variant>.json (100k-1m, 10m-faiss, ...) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import write_result
from retrieval import DIM, synthetic  # bench/retrieval.py: the vectors of the Annoy benchmark

from huse_core.retrieval import faiss_index
from huse_core.retrieval.annoy_index import N_TREES, AnnoyIndex
from huse_core.retrieval.faiss_index import FaissIndex
from huse_core.retrieval.knn import exact_search

CHUNK = 100_000
TUNE = 200


def rss_mb() -> float:
    """Peak RSS in MB: VmHWM, which `reset_peak` restarts (ru_maxrss can't be reset), else getrusage."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak() -> float:
    """Restart the peak-RSS count at the current RSS (Linux clear_refs): torch's import peaks above what the index
    needs at 100k rows, and the case's own peak is wanted. Returns the current RSS in MB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return rss_mb()


def make_vectors(n: int, n_queries: int, rank: int, folder: Path) -> Path:
    """`folder/vectors-<n>.npy`: n gallery rows, then TUNE + n_queries query rows; written once, reused."""
    path = folder / f"vectors-{n}-r{rank}.npy"
    if path.is_file():
        return path
    tmp = path.with_suffix(".tmp.npy")
    total = n + TUNE + n_queries
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, DIM))
    for i, start in enumerate(range(0, total, CHUNK)):
        m = min(CHUNK, total - start)
        out[start : start + m] = synthetic(m, seed=1000 * n + i, rank=rank)
    out.flush()
    del out
    os.replace(tmp, path)
    return path


def index_path(folder: Path, backend: str, n: int) -> Path:
    return folder / f"{backend}-{n}.{'ann' if backend == 'annoy' else 'faiss'}"


def case_build(backend: str, n: int, vectors: Path, folder: Path) -> dict:
    base = reset_peak()
    all_rows = np.load(vectors, mmap_mode="r")
    emb, tune = all_rows[:n], np.asarray(all_rows[n : n + TUNE])
    t, cpu = time.time(), time.process_time()
    if backend == "annoy":
        index = AnnoyIndex.build(emb, range(n), index_path(folder, backend, n), "bench", N_TREES, queries=tune,
                                 progress=False)
        params = {"n_trees": N_TREES, "search_k": index.search_k}
    else:
        index = FaissIndex.build(emb, range(n), index_path(folder, backend, n), "bench", queries=tune,
                                 progress=False)
        params = {k: index.meta[k] for k in ("nlist", "nprobe", "rerank", "train_rows")}
    return {"build_s": round(time.time() - t, 1), "build_cpu_s": round(time.process_time() - cpu, 1),
            "build_recall_at_10": index.meta["recall_at_10"], "build_recall_at_10_low": index.meta["recall_at_10_low"],
            "file_bytes": index.meta["file_bytes"], "build_peak_rss_mb": round(rss_mb() - base, 1), **params}


def case_serve(backend: str, n: int, vectors: Path, folder: Path, truth_path: Path) -> dict:
    base = reset_peak()
    all_rows = np.load(vectors, mmap_mode="r")
    emb, queries = all_rows[:n], np.asarray(all_rows[n + TUNE :])
    truth = np.load(truth_path)
    t = time.time()
    if backend == "annoy":
        index = AnnoyIndex.load(index_path(folder, backend, n), DIM, "bench")
    else:
        index = FaissIndex.load(index_path(folder, backend, n), emb, "bench")
    open_s = time.time() - t
    for q in queries[:20]:
        index.query(q, 10)  # warm: first touches of the memory maps
    ms, cpu_ms, found = np.empty(len(queries)), np.empty(len(queries)), 0
    for i, q in enumerate(queries):
        t, cpu = time.perf_counter(), time.thread_time()
        _, scores = index.query(q, 10)
        ms[i], cpu_ms[i] = (time.perf_counter() - t) * 1000, (time.thread_time() - cpu) * 1000
        found += min(10, int(np.sum(scores >= truth[i, -1] - 1e-5)))
    return {"open_s": round(open_s, 2), "recall_at_10": round(found / truth.size, 4),
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "cpu_p50_ms": round(float(np.percentile(cpu_ms, 50)), 3),
            "cpu_p99_ms": round(float(np.percentile(cpu_ms, 99)), 3),
            "serve_peak_rss_mb": round(rss_mb() - base, 1), "baseline_rss_mb": round(base, 1)}


def child(args: argparse.Namespace) -> int:
    folder, vectors = Path(args.dir), Path(args.vectors)
    if args.lists_per_sqrt:
        faiss_index.LISTS_PER_SQRT_N = args.lists_per_sqrt
    if args.case == "build":
        result = case_build(args.backend, args.n, vectors, folder)
    else:
        result = case_serve(args.backend, args.n, vectors, folder, Path(args.truth))
    print(json.dumps(result))
    return 0


def run_child(case: str, backend: str, n: int, vectors: Path, folder: Path, truth: Path,
              lists_per_sqrt: float | None) -> dict:
    cmd = [sys.executable, __file__, "--case", case, "--backend", backend, "--n", str(n), "--vectors", str(vectors),
           "--dir", str(folder), "--truth", str(truth)]
    cmd += ["--lists-per-sqrt", str(lists_per_sqrt)] if lists_per_sqrt else []
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{case} {backend} {n}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_size(n: int, backends: list[str], n_queries: int, rank: int, folder: Path,
               lists_per_sqrt: float | None, done) -> list[dict]:
    t = time.time()
    vectors = make_vectors(n, n_queries, rank, folder)
    rows = np.load(vectors, mmap_mode="r")
    print(f"[{n:,}] vectors {time.time() - t:.0f}s", file=sys.stderr, flush=True)
    t = time.time()
    truth_path = folder / f"truth-{n}-r{rank}-q{n_queries}.npy"
    if not truth_path.is_file():  # kept with the vectors in --dir: a second run (other backends) reuses both
        _, truth = exact_search(np.asarray(rows[n + TUNE :]), rows[:n], 10)
        np.save(truth_path.with_suffix(".tmp.npy"), truth)
        os.replace(truth_path.with_suffix(".tmp.npy"), truth_path)
    print(f"[{n:,}] exact truth for {n_queries} queries {time.time() - t:.0f}s", file=sys.stderr, flush=True)
    out = []
    for backend in backends:
        result = {"n": n, "dim": DIM, "backend": backend, "rank": rank, "queries": n_queries}
        for case in ("build", "serve"):
            result.update(run_child(case, backend, n, vectors, folder, truth_path, lists_per_sqrt))
        result["disk_bytes_per_vector"] = round(result["file_bytes"] / n, 1)
        result["serve_rss_bytes_per_vector"] = round(result["serve_peak_rss_mb"] * 2**20 / n, 1)
        result["build_rss_bytes_per_vector"] = round(result["build_peak_rss_mb"] * 2**20 / n, 1)
        print(json.dumps(result), flush=True)
        out.append(result)
        done(result)
        for f in folder.glob(f"{index_path(folder, backend, n).stem}.*"):
            f.unlink()
    return out


def default_variant(sizes: str, backends: str, rank: int) -> str:
    """100000,1000000 -> 100k-1m; 10000000 with faiss alone -> 10m-faiss; rank 16 adds -rank16."""
    parts = [f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{round(n / 1000)}k"
             for n in (int(v) for v in sizes.split(","))]
    parts += [] if backends == "annoy,faiss" else backends.split(",")
    return "-".join(parts + ([f"rank{rank}"] if rank != 8 else []))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--backends", default="annoy,faiss")
    parser.add_argument("--queries", type=int, default=1000, help="measured queries per size")
    parser.add_argument("--rank", type=int, default=8, help="intrinsic rank of the vectors (bench/retrieval.py)")
    parser.add_argument("--lists-per-sqrt", type=float, help="faiss lists = this x sqrt(n) (default: "
                        "faiss_index.LISTS_PER_SQRT_N)")
    parser.add_argument("--dir", help="folder for the vectors and indexes (default: a temp folder, removed)")
    parser.add_argument("--variant", help="the result's name: bench/results/scale_vectors/VARIANT.json (default: the "
                        "sizes, e.g. 100k-1m, with the backends and rank added where they differ from the defaults)")
    for hidden in ("--case", "--backend", "--vectors", "--truth"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        return child(args)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "numpy": np.__version__, "nice": os.nice(0), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
               "load_avg_at_start": [round(x, 1) for x in os.getloadavg()]}
    results, t0 = [], time.time()
    variant = args.variant or default_variant(args.sizes, args.backends, args.rank)

    def save(result: dict) -> None:  # after every case: a long run stopped midway keeps what it measured
        results.append(result)
        machine.update(load_avg_at_end=[round(x, 1) for x in os.getloadavg()], wall_s=round(time.time() - t0))
        write_result("scale_vectors", variant, {"machine": machine, "results": results})

    with tempfile.TemporaryDirectory(prefix="huse-scale-") as tmp:
        folder = Path(args.dir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for n in (int(s) for s in args.sizes.split(",")):
            bench_size(n, args.backends.split(","), args.queries, args.rank, folder, args.lists_per_sqrt, save)
    print("| N | backend | build wall / CPU | params | disk B/vec | serve RSS B/vec | build RSS MB | recall@10 | "
          "p50 / p99 ms wall | p50 / p99 ms CPU |")
    print("|---:|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        params = (f"search_k {r['search_k']:,}" if r["backend"] == "annoy"
                  else f"nlist {r['nlist']:,}, nprobe {r['nprobe']}, rerank {r['rerank']}")
        print(f"| {r['n']:,} | {r['backend']} | {r['build_s']:.0f} / {r['build_cpu_s']:.0f} s | {params} | "
              f"{r['disk_bytes_per_vector']:,.0f} | "
              f"{r['serve_rss_bytes_per_vector']:,.0f} | {r['build_peak_rss_mb']:,.0f} | {r['recall_at_10']:.3f} | "
              f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} | {r['cpu_p50_ms']:.2f} / {r['cpu_p99_ms']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
