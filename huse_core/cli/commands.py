"""The function behind each `huse` command: read its arguments, call the library, print the result."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging

from .flags import ADD_COLUMNS, given_settings, parse_list, train_configs

log = logging.getLogger(__name__)


def cmd_demo_data(args) -> int:
    from ..data.demo import generate_demo

    csv = generate_demo(args.out, n_products=args.products, seed=args.seed, progress=not args.quiet)
    print(f"wrote {csv}")
    return 0


def cmd_train(args) -> int:
    from ..training.distributed import is_main_process
    from ..training.train import train
    from ..training.validation import kept_accuracy

    if not args.resume and not args.catalog:
        raise SystemExit("train: --catalog CSV is required (or --resume to continue a run in --out)")
    data_cfg, model_cfg, loss_cfg, train_cfg = train_configs(args)
    from ..jobs import progress_writer, training_lock

    callback = progress_writer(args.progress_file) if args.progress_file else None
    # one training per run folder (the app's jobs hold the same lock); under torchrun rank 0 holds it
    with training_lock(args.out) if is_main_process() else contextlib.nullcontext():
        meta = train(data_cfg, model_cfg, loss_cfg, train_cfg, args.out, resume=args.resume,
                     progress=not args.quiet, callback=callback, given=given_settings(args) if args.resume else None)
    if not is_main_process():
        return 0  # under torchrun rank 0 reports
    best = meta["history"][meta["best_epoch"] - 1] if meta["best_epoch"] else None
    kept = ", the weights' moving average" if best and best.get("weights") == "ema" else ""
    print(f"run saved to {args.out}" + (f" (best epoch {meta['best_epoch']}{kept}: val {meta['leaf']} accuracy "
                                         f"{kept_accuracy(best)})" if best else ""))
    return 0


def cmd_evaluate(args) -> int:
    from ..training.evaluate import evaluate, format_tables

    result = evaluate(args.run, split=args.split, progress=not args.quiet, baseline=not args.no_baseline)
    print(json.dumps(result, indent=2) if args.json else format_tables(result))
    return 0


def cmd_index(args) -> int:
    from ..retrieval.annoy_index import N_TREES
    from ..retrieval.build import build_index

    manifest = build_index(args.run, n_trees=args.n_trees or N_TREES, with_map=not args.no_map,
                           progress=not args.quiet, backend=args.backend)
    times = ", ".join(f"{stage} {sec:.1f}s" for stage, sec in manifest["seconds"].items())
    tuned = ("search_k {search_k}" if manifest["backend"] == "annoy" else "nprobe {nprobe} of {nlist}, rerank {rerank}")
    recall = ", ".join(f"{name} {ix['recall_at_10']:.3f} ({tuned.format(**ix)})"
                       for name, ix in manifest["indexes"].items()) or "- (exact search only)"
    print(f"indexed {manifest['n_products']:,} products ({manifest['n_added']:,} added) in {args.run}/index "
          f"({manifest['backend']})\n  times: {times}\n  recall@10 vs exact: {recall}")
    return 0


def cmd_embed(args) -> int:
    from ..retrieval.ray_embed import embed_parts

    result = embed_parts(args.run, engine=args.engine, address=args.address, workers=args.workers,
                         part_size=args.part_size, progress=not args.quiet)
    print(f"embedded {len(result['embedded']):,} of {result['n_parts']:,} parts ({result['skipped']:,} done before) in "
          f"{result['seconds']:.1f}s with {result['engine']}; `python -m huse_core index --run {args.run}` reads them")
    return 0


def cmd_add(args) -> int:
    from ..retrieval.adding import add_catalog

    columns = {name: getattr(args, f"DataConfig.{name}") for name in ADD_COLUMNS
               if getattr(args, f"DataConfig.{name}") is not None}
    result = add_catalog(args.run, args.catalog, columns, progress=not (args.quiet or args.json))
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    skipped = result["skipped"]
    print(f"added {result['added']:,} of {result['added'] + len(skipped):,} products to {args.run} "
          f"({result['added_total']:,} added in all): searchable now, folded in by the next `index`")
    for like in result["resembling"][:20]:
        print(f"  {like['id']} looks like catalogue product {like['like']} (score {like['score']:.2f}): "
              f"a duplicate listing?")
    for s in skipped[:20]:
        print(f"  skipped row {s['row']} (id {s['id'] or '-'}): {s['error']}")
    if len(skipped) > 20:
        print(f"  … and {len(skipped) - 20:,} more (--json lists every one)")
    return 0


def cmd_audit(args) -> int:
    import pandas as pd

    from ..audit import COLUMNS, audit
    from ..data.csvtext import write_csv

    rows = audit(args.run, kinds=args.kinds, top=args.top, progress=not args.quiet)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    elif args.csv:  # formula-safe, written whole or not at all, as every CSV the product writes
        write_csv(pd.DataFrame(rows, columns=list(COLUMNS)), args.csv)
        print(f"wrote {len(rows):,} findings to {args.csv}")
    else:
        for kind in dict.fromkeys(r["kind"] for r in rows):
            found = [r for r in rows if r["kind"] == kind]
            print(f"{kind}: {len(found):,} findings")
            for r in found[:10]:
                print(f"  {r['score']:.2f}  {r['id']:<12} {r['head']}: {r['current']} -> {r['suggested']}  "
                      f"({r['reason']})")
        if not rows:
            print("no findings")
    return 0


def _filter_pair(text: str) -> tuple[str, str]:
    head, sep, value = text.partition("=")
    if not sep or not head.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"--filter takes head=value (e.g. masterCategory=Footwear), got {text!r}")
    return head.strip(), value.strip()


def cmd_search(args) -> int:
    from ..retrieval.search import Searcher

    if args.product and (args.text or args.image):
        raise ValueError("--product searches with a product's own embeddings; leave out --text and --image")
    if not (args.product or args.text or args.image):
        raise ValueError("nothing to search for: pass --text, --image (or both) or --product ID")
    mode = "vector" if args.cosine_only and args.mode == "hybrid" else args.mode  # cosine alone: no keywords
    hits = Searcher.open(args.run).search(text=args.text, image=args.image, product=args.product,
                                          target=args.target, k=args.k, filters=dict(args.filter or []),
                                          image_weight=args.image_weight, use_labels=not args.cosine_only,
                                          mode=mode)
    if args.json:
        print(json.dumps([dataclasses.asdict(h) for h in hits], indent=2, ensure_ascii=False))
        return 0
    if not hits:
        print("no products match")
    elif mode == "keyword" and args.text and not args.image:
        print("ranked by BM25 of your words in each product's title and labels; the number is the cosine")
    elif hits[0].agreement is not None:
        print("ranked by closeness and by how well each product's labels fit the title's predicted classes"
              + (", and by your words in titles and labels (BM25)" if hits[0].keyword is not None else "")
              + " (--cosine-only: without the labels; --mode: keyword or vector alone); the number is the cosine")
    for rank, h in enumerate(hits, 1):
        labels = " / ".join(v for v in h.labels.values() if v)
        print(f"{rank:>3}. {h.score:6.3f}  {h.id:<12} {h.title[:48]:<48}  {labels[:60]}" + ("  [added]" * h.added))
    return 0


def cmd_classify(args) -> int:
    from ..retrieval.layout import index_ready
    from ..run import load_run

    run = load_run(args.run)  # labels need only the model: no index
    if not args.json and not index_ready(args.run):
        log.warning(f"note: nearest products need a search index: `python -m huse_core index --run {args.run}`")
    if args.labels:
        ranked = run.zero_shot(parse_list(args.labels), image=args.image, text=args.text)
        if args.json:
            print(json.dumps([{"label": label, "score": score} for label, score in ranked], indent=2))
        else:
            print("\n".join(f"{score:7.3f}  {label}" for label, score in ranked))
        return 0
    result = run.classify(image=args.image, text=args.text, top=args.top)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    for head, per in result.items():
        print(head)
        for modality, preds in per.items():
            shown = ", ".join(f"{p['path']} {p['prob'] * 100:.1f}%" for p in preds)
            print(f"  {modality:<6} {shown}")
    return 0
