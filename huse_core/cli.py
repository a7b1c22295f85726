"""The `huse` command line (also `python -m huse_core`): one argparse parser and a thin function per command."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import logging
import os
import re
import signal
import sys
import threading

from . import __version__
from .config import CHOICES, DataConfig, LossConfig, ModelConfig, TrainConfig
from .errors import one_line
from .logs import to_stderr
from .retrieval.hybrid import DEFAULT_MODE, MODES

log = logging.getLogger(__name__)

# Config fields whose flag name differs from the field name (two configs share the name "seed").
RENAMED = {(DataConfig, "seed"): "split-seed", (DataConfig, "catalog"): None}
AUTO_TYPES = {"int": int, "float": float, "str": str}  # a field defaulting to None (auto): its type by annotation
ADD_COLUMNS = ("text_col", "image_col", "id_col", "images_root")  # the DataConfig flags `add` takes from `train`


def _parse_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def field_docs(cls) -> dict[str, str]:
    """Each config field's why-comment, read from the source, so --help says what the config says."""
    src = inspect.getsource(cls)
    return {m[1]: m[2].replace("%", "%%") for m in re.finditer(r"^\s+(\w+): [^#\n]*#\s*(.+)$", src, re.M)}


def add_config_flags(parser: argparse.ArgumentParser, cls, title: str) -> None:
    """One --flag per dataclass field, typed from its default (from its annotation where the default is None =
    auto); its help is the field's comment."""
    group = parser.add_argument_group(title)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        flag = RENAMED.get((cls, f.name), f.name.replace("_", "-"))
        if flag is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        help_text = docs.get(f.name, "") + (f" (default: {'auto' if default is None else shown})" if shown != ""
                                             else "")
        kw = {"dest": f"{cls.__name__}.{f.name}", "default": None, "help": help_text}
        if f.name in CHOICES:  # a fixed set: a typo stops here, before anything is read
            group.add_argument(f"--{flag}", choices=CHOICES[f.name], metavar="|".join(CHOICES[f.name]), **kw)
        elif default is None:
            kind = AUTO_TYPES[str(f.type).split("|")[0].strip()]
            group.add_argument(f"--{flag}", type=kind, metavar=kind.__name__.upper(), **kw)
        elif isinstance(default, bool):
            group.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, **kw)
        elif isinstance(default, list):
            group.add_argument(f"--{flag}", type=_parse_list, metavar="A,B", **kw)
        elif isinstance(default, tuple):
            group.add_argument(f"--{flag}", metavar="X,Y,Z", type=lambda s: tuple(float(x) for x in _parse_list(s)),
                               **kw)
        else:
            group.add_argument(f"--{flag}", type=type(default), metavar=type(default).__name__.upper(), **kw)


def build_config(args: argparse.Namespace, cls, base=None, **fixed):
    """The dataclass (`base`, else its defaults) overridden by the flags the user gave."""
    given = {f.name: getattr(args, f"{cls.__name__}.{f.name}") for f in dataclasses.fields(cls)
             if getattr(args, f"{cls.__name__}.{f.name}", None) is not None}
    return dataclasses.replace(base, **given, **fixed) if base is not None else cls(**{**given, **fixed})


def train_configs(args: argparse.Namespace) -> tuple[DataConfig, ModelConfig, LossConfig, TrainConfig]:
    """`train`'s four configs: a --preset's settings (else the defaults), then the flags the user gave."""
    from .model import default_image_size
    from .pipeline import DemoSpec

    spec = DemoSpec() if args.preset == "demo" else None  # demo: what the app's first start trains
    data_base = DataConfig(seed=spec.seed, image_size=spec.image_size) if spec else None
    data_cfg = build_config(args, DataConfig, data_base, catalog=args.catalog or "")
    model_cfg = build_config(args, ModelConfig, spec and spec.model)
    loss_cfg = build_config(args, LossConfig, spec and spec.loss)
    train_cfg = build_config(args, TrainConfig, spec and spec.train)
    if getattr(args, "DataConfig.seed", None) is None and train_cfg.seed:
        data_cfg.seed = train_cfg.seed  # one --seed sets both unless --split-seed says otherwise
    same_photos = spec is not None and model_cfg.backbone == spec.model.backbone
    if getattr(args, "DataConfig.image_size", None) is None and not same_photos:
        data_cfg.image_size = default_image_size(model_cfg.backbone)  # pretrained backbones: 224 px photos
    return data_cfg, model_cfg, loss_cfg, train_cfg


def cmd_demo_data(args) -> int:
    from .data.demo import generate_demo

    csv = generate_demo(args.out, n_products=args.products, seed=args.seed, progress=not args.quiet)
    print(f"wrote {csv}")
    return 0


def cmd_train(args) -> int:
    from .training.distributed import is_main_process
    from .training.train import train
    from .training.validation import kept_accuracy

    if not args.resume and not args.catalog:
        raise SystemExit("train: --catalog CSV is required (or --resume to continue a run in --out)")
    data_cfg, model_cfg, loss_cfg, train_cfg = train_configs(args)
    from .jobs import progress_writer, training_lock

    callback = progress_writer(args.progress_file) if args.progress_file else None
    # one training per run folder (the app's jobs hold the same lock); under torchrun rank 0 holds it
    with training_lock(args.out) if is_main_process() else contextlib.nullcontext():
        meta = train(data_cfg, model_cfg, loss_cfg, train_cfg, args.out, resume=args.resume,
                     progress=not args.quiet, callback=callback)
    if not is_main_process():
        return 0  # under torchrun rank 0 reports
    best = meta["history"][meta["best_epoch"] - 1] if meta["best_epoch"] else None
    kept = ", the weights' moving average" if best and best.get("weights") == "ema" else ""
    print(f"run saved to {args.out}" + (f" (best epoch {meta['best_epoch']}{kept}: val {meta['leaf']} accuracy "
                                         f"{kept_accuracy(best)})" if best else ""))
    return 0


def cmd_evaluate(args) -> int:
    from .training.evaluate import evaluate, format_tables

    result = evaluate(args.run, split=args.split, progress=not args.quiet, baseline=not args.no_baseline)
    print(json.dumps(result, indent=2) if args.json else format_tables(result))
    return 0


def cmd_index(args) -> int:
    from .retrieval.annoy_index import N_TREES
    from .retrieval.build import build_index

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
    from .retrieval.ray_embed import embed_parts

    result = embed_parts(args.run, engine=args.engine, address=args.address, workers=args.workers,
                         part_size=args.part_size, progress=not args.quiet)
    print(f"embedded {len(result['embedded']):,} of {result['n_parts']:,} parts ({result['skipped']:,} done before) in "
          f"{result['seconds']:.1f}s with {result['engine']}; `python -m huse_core index --run {args.run}` reads them")
    return 0


def cmd_add(args) -> int:
    from .retrieval.adding import add_catalog

    columns = {name: getattr(args, f"DataConfig.{name}") for name in ADD_COLUMNS
               if getattr(args, f"DataConfig.{name}") is not None}
    result = add_catalog(args.run, args.catalog, columns, progress=not (args.quiet or args.json))
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    skipped = result["skipped"]
    print(f"added {result['added']:,} of {result['added'] + len(skipped):,} products to {args.run} "
          f"({result['added_total']:,} added in all): searchable now, folded in by the next `index`")
    for s in skipped[:20]:
        print(f"  skipped row {s['row']} (id {s['id'] or '-'}): {s['error']}")
    if len(skipped) > 20:
        print(f"  … and {len(skipped) - 20:,} more (--json lists every one)")
    return 0


def _filter_pair(text: str) -> tuple[str, str]:
    head, sep, value = text.partition("=")
    if not sep or not head.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"--filter takes head=value (e.g. masterCategory=Footwear), got {text!r}")
    return head.strip(), value.strip()


def cmd_search(args) -> int:
    from .retrieval.search import Searcher

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
    from .retrieval.layout import index_ready
    from .run import load_run

    run = load_run(args.run)  # labels need only the model: no index
    if not args.json and not index_ready(args.run):
        log.warning(f"note: nearest products need a search index: `python -m huse_core index --run {args.run}`")
    if args.labels:
        ranked = run.zero_shot(_parse_list(args.labels), image=args.image, text=args.text)
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


DESCRIPTION = """\
Train an image + text model on your shop's catalogue (a CSV of titles, photo paths and categories), then classify
new products from a photo and/or a title, search the catalogue by words, photo or product, and add new products
to a trained run's search index. Everything runs locally; nothing is downloaded unless you ask for a hub encoder.

Start with `huse demo-data`, then `huse train --catalog data/demo/metadata.csv --out runs/demo --preset demo`,
`huse index --run runs/demo` and `huse search --run runs/demo --text "red dress"`.
`huse COMMAND --help` lists each command's flags."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the flag, the problem, where help is) instead of the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the flags)\n")


def add_demo_data_command(sub) -> None:
    """The `demo-data` command's flags."""
    p = sub.add_parser("demo-data", help="write the built-in synthetic demo shop (a catalogue CSV and its photos)",
                       description="Write a synthetic shop to try the workbench on: metadata.csv and images/.")
    p.add_argument("--out", default="data/demo", help="folder for metadata.csv and images/")
    p.add_argument("--products", type=int, default=3000, help="number of products")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo_data)


def add_train_command(sub) -> None:
    """The `train` command's flags."""
    p = sub.add_parser("train", help="train a model on a catalogue CSV or Parquet file into a run folder",
                       description="Train a run: the photo and title towers and their shared classifier, written to "
                                   "--out (model.pt, run.json). Column flags are auto-detected for the common "
                                   "fashion layout; settings left at auto are chosen from the catalogue's size.")
    p.add_argument("--catalog", help="catalogue CSV or Parquet")
    p.add_argument("--out", required=True, help="run directory to write (model.pt, run.json)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--preset", choices=["demo"], help="start from a named set of settings; flags given still win. "
                   "demo: what the app's first start trains the demo shop with (pipeline.DemoSpec)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--progress-file", metavar="PATH", help="append training events (step losses, epoch accuracies) "
                   "to PATH as JSON lines, for a monitor such as the app's Train page")
    for cls, title in ((DataConfig, "catalogue"), (ModelConfig, "model"), (LossConfig, "losses"),
                       (TrainConfig, "training")):
        add_config_flags(p, cls, title)
    p.set_defaults(func=cmd_train)


def add_evaluate_command(sub) -> None:
    """The `evaluate` command's flags."""
    p = sub.add_parser("evaluate", help="measure a run on its test split (accuracy, retrieval); stored in run.json",
                       description="Measure a run on a split: accuracy per head from photo, title and both, "
                                   "retrieval recall, and a TF-IDF title baseline beside it; stored in run.json.")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the TF-IDF title baseline (word + char n-grams, LinearSVC on the train split)")
    p.set_defaults(func=cmd_evaluate)


def add_index_command(sub) -> None:
    """The `index` command's flags."""
    p = sub.add_parser("index", help="embed the catalogue, build the search index and the map",
                       description="Embed every product with the run's model, build the search index (Annoy, faiss "
                                   "or exact) and the 2-D map; `search`, `add` and the app read them.")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--n-trees", type=int, default=None,
                   help="Annoy trees per modality (default 16; more: slower build, slightly better recall)")
    p.add_argument("--no-map", action="store_true", help="skip the 2-D map (UMAP, the slow part)")
    p.add_argument("--backend", choices=["auto", "annoy", "faiss", "exact"], default="auto",
                   help="auto: faiss from 100,000 products on when installed (pip install -r "
                        "requirements-faiss.txt), else Annoy; exact: embeddings only, searched exactly")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_index)


def add_embed_command(sub) -> None:
    """The `embed` command's flags."""
    p = sub.add_parser("embed", help="embed the catalogue into index/parts/, here or on Ray workers",
                       description="Embed the catalogue in parts (index/parts/); a rerun skips finished parts and "
                                   "`index` reads them instead of embedding again.")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="ray: Ray Data decodes on CPU "
                   "workers, a pool of model actors embeds (pip install -r requirements-ray.txt); local: here")
    p.add_argument("--address", help="Ray cluster to join (auto: `ray start`'s); default: Ray on this machine")
    p.add_argument("--workers", type=int, default=2, help="model actors (each loads the model once)")
    p.add_argument("--part-size", type=int, default=4096, help="products per part file")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_embed)


def add_add_command(sub) -> None:
    """The `add` command's flags."""
    p = sub.add_parser("add", help="add new products (titles + photos) to a run's search index",
                       description="Embed and label new products with the run's model and store them beside its "
                                   "search index: searches find them at once, the next `index` folds them in. Bad "
                                   "rows are reported and skipped, by the same rules as `train`.")
    p.add_argument("--run", required=True, help="run directory (with an index)")
    p.add_argument("--catalog", required=True,
                   help="CSV or Parquet of new products: a title and a photo column, optionally an id (labels are "
                        "predicted; without an id a product gets the next new-N)")
    group = p.add_argument_group("columns (as for train; default: the run's own, else auto-detected)")
    for name in ADD_COLUMNS:
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"DataConfig.{name}", metavar="STR",
                           help=field_docs(DataConfig)[name])
    p.add_argument("--json", action="store_true", help='print {"added": n, "skipped": [...], "added_total": m}')
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_add)


def add_search_command(sub) -> None:
    """The `search` command's flags."""
    p = sub.add_parser("search", help="search the catalogue by text, image (or both) or a product id",
                       description="Find the products nearest a title, a photo, both, or a product of the catalogue.")
    p.add_argument("--run", required=True, help="run directory (with an index)")
    p.add_argument("--text", help="query words")
    p.add_argument("--image", help="query photo; with --text the query mixes both")
    p.add_argument("--product", help="a product id: find products like it (the product itself is left out)")
    p.add_argument("--target", choices=["image", "text", "product"], default="image",
                   help="search the products' photos (image), titles (text) or whole products (product: the fusion "
                        "layer's vector of photo + title; with --image and --text the query is fused the same way)")
    p.add_argument("-k", type=int, default=10, help="number of hits")
    p.add_argument("--filter", type=_filter_pair, action="append", metavar="HEAD=VALUE",
                   help="keep products with this label, e.g. masterCategory=Footwear (repeatable)")
    p.add_argument("--image-weight", type=float, default=0.5,
                   help="share of the image in a text+image or --product query (0..1)")
    p.add_argument("--cosine-only", action="store_true",
                   help="rank a --text query by cosine alone; by default its hits are also ranked by how likely "
                        "the title's class predictions find each product's labels and by its words (docs/search.md)")
    p.add_argument("--mode", choices=list(MODES), default=DEFAULT_MODE,
                   help="for words alone: hybrid (default) = the shared space, labels and keywords (BM25 over "
                        "titles and label words, typo-tolerant) on one ranking; vector = without the keywords; "
                        "keyword = BM25 alone (docs/search-modes.md)")
    p.add_argument("--json", action="store_true", help="print a JSON list of hits, best first")
    p.set_defaults(func=cmd_search)


def add_classify_command(sub) -> None:
    """The `classify` command's flags."""
    p = sub.add_parser("classify", help="predict a product's labels from its photo and/or title",
                       description="Predict each head's labels from a photo, a title or both; with --labels, rank "
                                   "your own labels instead (zero-shot).")
    p.add_argument("--run", required=True, help="run directory (a trained run; no index needed)")
    p.add_argument("--image", help="product photo")
    p.add_argument("--text", help="product title")
    p.add_argument("--labels", help="rank these comma-separated labels instead (zero-shot), e.g. 'dress,jeans'")
    p.add_argument("--top", type=int, default=3, help="labels shown per head")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_classify)


COMMANDS = (add_demo_data_command, add_train_command, add_evaluate_command, add_index_command, add_embed_command,
            add_add_command, add_search_command, add_classify_command)


def build_parser() -> argparse.ArgumentParser:
    """huse's argument parser: one sub-command per COMMANDS entry, in the order `huse --help` lists them."""
    parser = Parser(prog="huse", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def _interrupted(args, err: KeyboardInterrupt) -> str:
    """What a Ctrl-C left behind, for the command that was running."""
    if str(err):
        return str(err)  # the command said what it stored (`add`)
    if args.command == "train":
        return "interrupted; `train --resume` continues from the last finished epoch"
    return f"interrupted; {args.command} did not finish (its files are written whole or not at all): run it again"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    to_stderr()  # progress, notes and warnings on stderr; results and JSON on stdout
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file over the size limit: an OSError we report, not a kill
    try:
        return args.func(args)
    except KeyboardInterrupt as err:
        print(_interrupted(args, err), file=sys.stderr)
        return 130
    except Exception as err:
        if os.environ.get("HUSE_DEBUG"):
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)  # users get one line, not a traceback
        return 2
