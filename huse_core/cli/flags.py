"""The config dataclasses as command-line flags: one --flag per field, its help from the field's comment; the
configs `train` builds from them (a --preset first), and the flags a user gave (what `train --resume` checks)."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re

from ..config import CHOICES, DataConfig, LossConfig, ModelConfig, TrainConfig

# Config fields whose flag name differs from the field name (two configs share the name "seed").
RENAMED = {(DataConfig, "seed"): "split-seed", (DataConfig, "catalog"): None}
AUTO_TYPES = {"int": int, "float": float, "str": str}  # a field defaulting to None (auto): its type by annotation
ADD_COLUMNS = ("text_col", "image_col", "id_col", "images_root")  # the DataConfig flags `add` takes from `train`


def parse_list(text: str) -> list[str]:
    """"a, b,c" -> ["a", "b", "c"]."""
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
            group.add_argument(f"--{flag}", type=parse_list, metavar="A,B", **kw)
        elif isinstance(default, tuple):
            group.add_argument(f"--{flag}", metavar="X,Y,Z", type=lambda s: tuple(float(x) for x in parse_list(s)),
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
    from ..model import default_image_size
    from ..pipeline import DemoSpec

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


def given_settings(args: argparse.Namespace) -> list:
    """The config flags the user gave, as training.resume.Given (train --resume applies or refuses each)."""
    from ..training.resume import SECTIONS, Given

    given = [Given("--catalog", "data", "catalog", args.catalog)] if args.catalog else []
    preset = dict(zip(SECTIONS, train_configs(args))) if getattr(args, "preset", None) else {}  # what it sets
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            flag = RENAMED.get((cls, f.name), f.name.replace("_", "-"))
            value = getattr(args, f"{cls.__name__}.{f.name}", None)
            if flag is not None and value is not None:
                given.append(Given(f"--{flag}", section, f.name, value))
            elif section in preset and getattr(preset[section], f.name) not in (None, getattr(cls(), f.name)):
                given.append(Given(f"--preset {args.preset}", section, f.name, getattr(preset[section], f.name)))
    return given
