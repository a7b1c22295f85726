"""The `huse` command line (also `python -m huse_core`): one argparse parser, a sub-command each, and main().

  cli.flags     the config dataclasses as flags; the configs `train` builds
  cli.commands  the thin function behind each command
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from .. import __version__
from ..config import DataConfig, LossConfig, ModelConfig, TrainConfig
from ..errors import one_line
from ..logs import to_stderr
from ..retrieval.hybrid import DEFAULT_MODE, MODES
from .commands import (_filter_pair, cmd_add, cmd_audit, cmd_classify, cmd_demo_data, cmd_embed, cmd_evaluate,
                       cmd_index, cmd_search, cmd_train)
from .flags import ADD_COLUMNS, RENAMED, add_config_flags, build_config, field_docs, given_settings, train_configs

__all__ = ["COMMANDS", "RENAMED", "add_config_flags", "build_config", "build_parser", "given_settings", "main",
           "train_configs"]

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


def add_audit_command(sub) -> None:
    """The `audit` command's flags."""
    p = sub.add_parser("audit", help="find catalogue errors: wrong labels, photo/title mismatches, duplicates",
                       description="Audit a trained, indexed run's own catalogue: labels the model doubts (out of "
                                   "sample, per head), photos that don't match their titles, and duplicate listings. "
                                   "Reads what train and index stored; review the findings on the app's Audit page.")
    p.add_argument("--run", required=True, help="run directory (trained and indexed)")
    p.add_argument("--kinds", default="labels,mismatch,duplicates",
                   help="comma-separated: labels, mismatch, duplicates (default all)")
    p.add_argument("--top", type=int, default=None, help="keep each kind's N highest-scoring findings")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the findings as a JSON list")
    out.add_argument("--csv", metavar="OUT", help="write the findings to this CSV file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_audit)


COMMANDS = (add_demo_data_command, add_train_command, add_evaluate_command, add_index_command, add_embed_command,
            add_add_command, add_search_command, add_classify_command, add_audit_command)


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
