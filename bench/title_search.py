"""Does typing a product's title find that product's photo? Real test-split titles searched as a user would.

    python bench/title_search.py --run RUN [--n 12] [--k 50] [--seed 0] [--cosine-only] [--variant NAME]

The run needs an index (`python -m huse_core index --run RUN`). Titles are a seeded sample of the run's test split
(never trained on); each is typed into `Searcher.search(text=..., target="image")` exactly as the Search page
does, over the whole indexed catalogue. A hit is any product whose normalised title equals the query's (duplicate
titles are the same product to a shopper). Prints, per title, the rank of its first own photo (or "> k") and the
first three results' titles, then R@1 / R@10 / R@k over the sample; writes the same to
bench/results/title_search/<variant>.md.
--cosine-only ranks by the vectors alone (`search --cosine-only`), without the title's class predictions.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
from common import write_result

from huse_core.data.catalog import normalise_title
from huse_core.retrieval.search import Searcher


def sample_titles(searcher: Searcher, n: int, seed: int) -> list[str]:
    """n distinct test-split titles of the run's catalogue, seeded."""
    df = searcher.run.load_catalog().df
    titles = df.loc[df["split"] == "test", "title"].drop_duplicates(keep="first").to_numpy(dtype=object)
    rng = np.random.default_rng(seed)
    return [str(t) for t in titles[np.sort(rng.choice(len(titles), min(n, len(titles)), replace=False))]]


def check(searcher: Searcher, titles: list[str], k: int, use_labels: bool = True) -> list[dict]:
    rows = []
    for title in titles:
        t = time.perf_counter()
        hits = searcher.search(text=title, target="image", k=k, use_labels=use_labels)
        ms = (time.perf_counter() - t) * 1000
        own = normalise_title(title)
        ranks = [i + 1 for i, h in enumerate(hits) if normalise_title(h.title) == own]
        rows.append({"title": title, "rank": ranks[0] if ranks else None, "ms": round(ms, 1),
                     "top3": [h.title for h in hits[:3]]})
    return rows


def report(rows: list[dict], run: str, k: int, n_products: int, flags: str = "") -> str:
    def recall(at: int) -> float:
        return sum(r["rank"] is not None and r["rank"] <= at for r in rows) / max(1, len(rows))

    lines = [f"# Title -> photo search on real test titles ({time.strftime('%Y-%m-%d')})", "",
             f"Run `{run}`; gallery: the whole indexed catalogue ({n_products:,} products); "
             f"{len(rows)} test-split titles (never trained on), seeded. Machine: {platform.machine()}, "
             f"command: `python bench/title_search.py --run {run} --n {len(rows)} --k {k}{flags}`.", "",
             f"R@1 {recall(1):.2f} · R@10 {recall(10):.2f} · R@{k} {recall(k):.2f} · median search "
             f"{np.median([r['ms'] for r in rows]):.1f} ms", "",
             "| typed title | own photo's rank | first three results |", "|---|---:|---|"]
    for r in rows:
        rank = r["rank"] if r["rank"] is not None else f"> {k}"
        lines.append(f"| {r['title']} | {rank} | {' · '.join(r['top3'])} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cosine-only", action="store_true", help="rank by cosine alone, as `search --cosine-only`")
    ap.add_argument("--variant", help="the result's name: bench/results/title_search/VARIANT.md (default: the "
                    "catalogue's size, e.g. 44k, with -cosine for --cosine-only)")
    args = ap.parse_args()
    searcher = Searcher.open(args.run)
    rows = check(searcher, sample_titles(searcher, args.n, args.seed), args.k, not args.cosine_only)
    flags = (f" --seed {args.seed}" if args.seed else "") + (" --cosine-only" if args.cosine_only else "")
    text = report(rows, args.run, args.k, len(searcher.products), flags)
    print(text)
    variant = args.variant or f"{round(len(searcher.products) / 1000)}k" + ("-cosine" if args.cosine_only else "")
    print(f"results: {write_result('title_search', variant, {'run': args.run, 'k': args.k, 'rows': rows}, text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
