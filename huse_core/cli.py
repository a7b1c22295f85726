"""The command line: python -m huse_core {demo-data,train,evaluate,...} (run with --help for each)."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys

from .config import DataConfig, LossConfig, ModelConfig, TrainConfig

# Config fields whose flag name differs from the field name (two configs share the name "seed").
RENAMED = {(DataConfig, "seed"): "split-seed", (DataConfig, "catalog"): None}


def _parse_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def field_docs(cls) -> dict[str, str]:
    """Each config field's why-comment, read from the source, so --help says what the config says."""
    src = inspect.getsource(cls)
    return {m[1]: m[2].replace("%", "%%") for m in re.finditer(r"^\s+(\w+): [^#\n]*#\s*(.+)$", src, re.M)}


def add_config_flags(parser: argparse.ArgumentParser, cls, title: str) -> None:
    """One --flag per dataclass field, typed from its default; its help is the field's comment."""
    group = parser.add_argument_group(title)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        flag = RENAMED.get((cls, f.name), f.name.replace("_", "-"))
        if flag is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        help_text = docs.get(f.name, "") + (f" (default: {shown})" if shown != "" else "")
        kw = {"dest": f"{cls.__name__}.{f.name}", "default": None, "help": help_text}
        if isinstance(default, bool):
            group.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, **kw)
        elif isinstance(default, list):
            group.add_argument(f"--{flag}", type=_parse_list, metavar="A,B", **kw)
        elif isinstance(default, tuple):
            group.add_argument(f"--{flag}", metavar="X,Y,Z", type=lambda s: tuple(float(x) for x in _parse_list(s)),
                               **kw)
        else:
            group.add_argument(f"--{flag}", type=type(default), metavar=type(default).__name__.upper(), **kw)


def build_config(args: argparse.Namespace, cls, **fixed):
    """The dataclass with defaults overridden by the flags the user gave."""
    given = {f.name: getattr(args, f"{cls.__name__}.{f.name}") for f in dataclasses.fields(cls)
             if getattr(args, f"{cls.__name__}.{f.name}", None) is not None}
    return cls(**{**given, **fixed})


def cmd_demo_data(args) -> int:
    from .demo import generate_demo

    csv = generate_demo(args.out, n_products=args.products, seed=args.seed, progress=not args.quiet)
    print(f"wrote {csv}")
    return 0


def cmd_train(args) -> int:
    from .train import train

    if not args.resume and not args.catalog:
        raise SystemExit("train: --catalog CSV is required (or --resume to continue a run in --out)")
    data_cfg = build_config(args, DataConfig, catalog=args.catalog or "")
    model_cfg, loss_cfg = build_config(args, ModelConfig), build_config(args, LossConfig)
    train_cfg = build_config(args, TrainConfig)
    if getattr(args, "DataConfig.seed", None) is None and train_cfg.seed:
        data_cfg.seed = train_cfg.seed  # one --seed sets both unless --split-seed says otherwise
    if model_cfg.backbone != "cnn" and args.__dict__.get("DataConfig.image_size") is None:
        data_cfg.image_size = 224  # pretrained backbones were trained on 224 px photos
    meta = train(data_cfg, model_cfg, loss_cfg, train_cfg, args.out, resume=args.resume, progress=not args.quiet)
    best = meta["history"][meta["best_epoch"] - 1] if meta["best_epoch"] else None
    print(f"run saved to {args.out}" + (f" (best epoch {meta['best_epoch']}: val {meta['leaf']} accuracy "
                                         f"{best['val_accuracy']})" if best else ""))
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate, format_tables

    result = evaluate(args.run, split=args.split, progress=not args.quiet)
    print(json.dumps(result, indent=2) if args.json else format_tables(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m huse_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="generate the built-in synthetic demo shop")
    p.add_argument("--out", default="data/demo", help="folder for metadata.csv and images/")
    p.add_argument("--products", type=int, default=3000, help="number of products")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("train", help="train a HUSE run on a catalogue CSV",
                       description="Train a run. Column flags are auto-detected for the common fashion layout.")
    p.add_argument("--catalog", help="catalogue CSV or Parquet")
    p.add_argument("--out", required=True, help="run directory to write (model.pt, run.json)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--quiet", action="store_true")
    for cls, title in ((DataConfig, "catalogue"), (ModelConfig, "model"), (LossConfig, "losses"),
                       (TrainConfig, "training")):
        add_config_flags(p, cls, title)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a run on its test split")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)  # users get the message, not a traceback
        return 2
    except KeyboardInterrupt:
        print("interrupted; `train --resume` continues from the last finished epoch", file=sys.stderr)
        return 130
