"""Title search with and without the classifier's re-ranking (retrieval.rerank), on the whole-catalogue protocol.

    python -m bench.studies.search_rerank RUN [--split val] [--candidates 500,1000] [--scales 20]

Every product of the run's catalogue is embedded; up to 2,000 distinct titles of `--split` query all photos (t2i),
a hit = any product with the same normalised title (evaluate's `retrieval_catalog`). Rows: cosine alone; the
search's rule (s = the run's alignment scale, 1,000 candidates) and variants (fewer candidates, another s); and
photo -> title re-ranked by the photo's own class predictions, which the search does not do. Choices are made on
`--split val`; `evaluate` reports the test split.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from bench.common import write_result

from huse_core.data.catalog import normalise_title
from huse_core.prepare import embed
from huse_core.retrieval.rerank import CANDIDATES, class_log_probs, search_scale
from huse_core.run import load_run
from huse_core.training.evaluate import catalog_picks, prepare_run, product_codes, ranked_hits, title_log_probs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--split", default="val", choices=["val", "test"])
    ap.add_argument("--candidates", default="500,1000")
    ap.add_argument("--scales", default="20", help="values of s tried beside the run's own")
    ap.add_argument("--variant", default="search-rerank",
                    help="bench/results/studies/VARIANT.md (default: %(default)s)")
    args = ap.parse_args()
    t0 = time.time()
    run = load_run(args.run)
    prep = prepare_run(run)
    rows, cpu = np.arange(len(prep.catalog.df)), torch.device("cpu")
    image_emb, text_emb = (e.numpy() for e in embed(run.model, prep, rows, cpu))
    norm = np.array([normalise_title(t) for t in prep.catalog.df["title"]], dtype=object)
    picks = catalog_picks(norm, prep.split(args.split))
    lp, codes, scale = title_log_probs(run, prep, picks, text_emb[picks]), product_codes(run, prep, rows), \
        search_scale(run)
    lines = [f"# Title search re-ranking: `python -m bench.studies.search_rerank {args.run} --split {args.split}`", "",
             f"{len(picks):,} distinct {args.split} titles against all {len(rows):,} photos (titles against all "
             f"titles for i2t); the run's alignment scale s = {scale:.1f}.", "",
             "| ranking | R@1 | R@10 | MRR |", "|---|---:|---:|---:|"]

    def row(name: str, r: dict) -> None:
        lines.append(f"| {name} | {r['R@1']:.3f} | {r['R@10']:.3f} | {r['MRR']:.3f} |")

    row("t2i, cosine alone", ranked_hits(text_emb[picks], image_emb, norm[picks], norm))
    row(f"t2i, the search's rule (s = {scale:.1f}, {CANDIDATES:,} candidates)",
        ranked_hits(text_emb[picks], image_emb, norm[picks], norm, rerank=(lp, codes, scale)))
    for k in (int(c) for c in args.candidates.split(",") if int(c) != CANDIDATES):
        row(f"t2i, s = {scale:.1f}, {k:,} candidates",
            ranked_hits(text_emb[picks], image_emb, norm[picks], norm, rerank=(lp, codes, scale), candidates=k))
    for s in (float(v) for v in args.scales.split(",") if v):
        row(f"t2i, s = {s:g}, {CANDIDATES:,} candidates",
            ranked_hits(text_emb[picks], image_emb, norm[picks], norm, rerank=(lp, codes, s)))
    row("i2t, cosine alone (what the search does for a photo)",
        ranked_hits(image_emb[picks], text_emb, norm[picks], norm))
    photo = class_log_probs(run.probabilities(image_emb[picks], None), "image")
    row(f"i2t, re-ranked by the photo's own class predictions (s = {scale:.1f})",
        ranked_hits(image_emb[picks], text_emb, norm[picks], norm, rerank=(photo, codes, scale)))
    text = "\n".join(lines) + f"\n\n({time.time() - t0:.0f} s on {torch.get_num_threads()} threads)\n"
    print(text)
    print(f"results: {write_result('studies', args.variant, {'run': str(args.run), 'split': args.split}, text)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
