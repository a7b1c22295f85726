"""Seconds from opening a run's index to its first word searches, each in a fresh process: what a merchandiser
waits for after starting the app or a CLI `search`.

    python bench/first_search.py RUN [RUN ...] [--repeats 3] [--variant NAME]

Per run and repeat, a new Python process imports the Searcher, opens the index (`Searcher.open`), runs one vector
search (the model's first query, so it is not counted below), then a hybrid search (the first to read the keyword
side: stored by `index`, or built in memory for a build without one), a search holding a typo (the typo vocabulary)
and one more. Give a run indexed before the keyword index was stored (or without it) and one indexed since to
compare the two. Writes bench/results/search_queries/<variant>.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
from common import write_result

CHILD = r"""
import json, sys, time
t0 = time.time()
from huse_core.retrieval.search import Searcher
t1 = time.time()
s = Searcher.open(sys.argv[1])
t2 = time.time()
s.search(text="blue denim jeans", k=10, mode="vector")
t3 = time.time()
s.search(text="men black casual shoes", k=10)
t4 = time.time()
s.search(text="puma blakc tshirt", k=10)
t5 = time.time()
s.search(text="nike women running shoes", k=10)
t6 = time.time()
print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "first_vector_s": t3 - t2, "first_word_s": t4 - t3,
                  "first_typo_s": t5 - t4, "next_s": t6 - t5, "keyword_source": s.keyword_source}))
"""
KEYS = ("open_s", "first_word_s", "first_typo_s", "next_s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per run (alternated between runs)")
    ap.add_argument("--variant", default="first-search", help="result file name")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    found: dict = {run: [] for run in args.runs}
    for _ in range(args.repeats):
        for run in args.runs:
            out = subprocess.run([sys.executable, "-c", CHILD, run], capture_output=True, text=True, env=env,
                                 check=True)
            found[run].append({**json.loads(out.stdout.strip().splitlines()[-1]), "load_1min": os.getloadavg()[0]})
            print(run, found[run][-1], flush=True)
    payload = {"runs": found}
    md = ["# First searches after opening an index, in fresh processes", "",
          "Seconds (min–max over the repeats); the first hybrid search is the first to read the keyword side.", "",
          "| run | keyword index | repeats | open s | first word search s | first typo search s | next search s |",
          "|---|---|---:|---:|---:|---:|---:|"]
    for run, rows in found.items():
        cells = [f"{min(r[k] for r in rows):.2f}–{max(r[k] for r in rows):.2f}" for k in KEYS]
        sources = sorted({r["keyword_source"] for r in rows})
        md.append(f"| {run} | {', '.join(sources)} | {len(rows)} | " + " | ".join(cells) + " |")
    payload["median"] = {run: {k: round(float(np.median([r[k] for r in rows])), 3) for k in KEYS}
                         for run, rows in found.items()}
    print(write_result("search_queries", args.variant, payload, "\n".join(md) + "\n"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
