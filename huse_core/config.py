"""The configuration dataclasses, one per concern; runs store them as JSON and rebuild from them."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

# The values each enumerated setting accepts: the CLI offers them as argparse choices, and every config checks its
# own in __post_init__, so a typo stops before any photo is decoded. model.backbones / model.hub build them.
CHOICES = {
    "cnn_pool": ("avg", "avgmax"),
    "gap_anchor": ("text", "none"),
    "nce_anchor": ("none", "text"),  # or None = auto
    "graph_distance": ("tree", "names"),
    "optimizer": ("adamw", "rmsprop"),
    "select_by": ("fused", "mean"),  # or None = auto
    "precision": ("auto", "bf16", "fp32"),
}
IMAGE_BACKBONES = ("cnn", "lite0", "resnet18", "resnet50", "vgg16")  # and hub encoders, HUB_FORMS["image"]
TEXT_BACKBONES = ("conv", "minilm", "ngram", "conv+ngram")  # as model.TEXT_BACKBONES; hub encoders: HUB_FORMS
HUB_FORMS = {"image": {"openclip": "openclip:MODEL[/TAG]", "timm": "timm:NAME"},
             "text": {"openclip": "openclip:MODEL[/TAG]", "st": "st:NAME"}}
LOSS_TERMS = ("cls", "graph", "gap", "nce")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _one_of(values) -> str:
    return ", ".join(values[:-1]) + " or " + values[-1]


def _check_choices(cfg) -> None:
    """ValueError in one line for the first enumerated field of `cfg` holding a value it does not accept."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in CHOICES and value is not None and value not in CHOICES[f.name]:
            raise ValueError(f"unknown {f.name.replace('_', ' ')} {value!r}: choose {_one_of(CHOICES[f.name])} "
                             f"(--{f.name.replace('_', '-')})")


def _check_backbone(name: str, value: str, fixed: tuple, role: str) -> None:
    library, sep, rest = value.partition(":")
    if value in fixed or (sep and library in HUB_FORMS[role] and rest.strip("/")):
        return
    forms = _one_of((*fixed, *HUB_FORMS[role].values()))
    raise ValueError(f"unknown {name.replace('_', ' ')} {value!r}: choose {forms} (--{name.replace('_', '-')})")


@dataclass
class DataConfig:
    """Where a shop's catalogue is and how to read it."""

    catalog: str = ""  # path of the catalogue CSV or Parquet file
    images_root: str = ""  # folder image paths are relative to; "" = the catalogue's folder
    image_col: str = ""  # "" = auto-detect (image, image_path, or images/<id>.jpg)
    text_col: str = ""  # "" = auto-detect (title, productDisplayName, name)
    id_col: str = ""  # "" = auto-detect (id), else the row number
    levels: list[str] = field(default_factory=list)  # hierarchy columns, coarse -> fine; [] = auto
    attributes: list[str] = field(default_factory=list)  # extra single-label heads; [] = auto
    multi_label: list[str] = field(default_factory=list)  # columns whose cells hold "a|b|c" labels
    hierarchy_col: str = ""  # one column holding a category path, split into levels
    hierarchy_sep: str = " >> "  # separator inside hierarchy_col
    max_levels: int = 3  # keep at most this many levels of hierarchy_col
    split_col: str = ""  # a user's own split column (train/val/test); "" = grouped random split
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/val/test fractions by title group
    seed: int = 0  # makes the split reproducible
    # auto (training.schedule): lowered, down to 2, while over 5% of a head's training products would merge.
    min_class_count: int | None = None  # rarer classes (in train) merge into "other"; auto: 3 under 2k products, else 5
    # 80: a 60x80 catalogue photo at full size.  # why: docs/decisions.md#photo-size
    image_size: int = 80  # pixels a side after aspect-preserving resize + pad


@dataclass
class ModelConfig:
    """The HUSE towers and the shared classifier."""

    # Hub encoders (pip install -r requirements-pretrained.txt; model.hub): openclip:MODEL/TAG, timm:NAME.
    backbone: str = "cnn"  # cnn (from scratch) | lite0 (ImageNet) | resnet18 | resnet50 | vgg16 | openclip:M/T | timm:N
    image_weights: str = ""  # pretrained backbones: weights file (or folder); "" = lite0 package, torch / hub cache
    # False: lite0 and torchvision CNNs train whole; hub encoders their last block (features then run every step).
    freeze_backbone: bool = True  # pretrained backbones: features computed once and cached
    cnn_width: int = 32  # channels of the first cnn stage; stages double it (32-64-128-256)
    cnn_pool: str = "avg"  # the cnn's global pooling: avg | avgmax (average and max side by side, twice the features)
    image_layers: int = 5  # HUSE image tower: 5 x (Linear 512, ReLU, Dropout)
    # minilm needs the optional package (pip install -r requirements-minilm.txt); titles then run through it live.
    # ngram = TF-IDF-weighted hashed word 1-2 + char 3-5-grams.  # why: docs/decisions.md#title-tower
    # minilm, openclip:MODEL/TAG (CLIP's text tower) and st:NAME (sentence-transformers) are frozen, features cached.
    text_backbone: str = "ngram"  # ngram | conv (word Conv1D) | conv+ngram | minilm | openclip:MODEL/TAG | st:NAME
    text_weights: str = ""  # weights file (openclip) or folder (st) of a hub text encoder; "" = the hub cache
    # The CLIP pair as downloaded: towers pass the encoder's space through (dim = its width), classes read prompts.
    zero_shot: bool = False  # same openclip: encoder under both towers; no tower MLPs, classifier from class names
    text_layers: int = 2  # HUSE text tower: 2 x (Linear 512, ReLU, Dropout)
    hidden: int = 512  # width of the tower MLPs
    dim: int = 512  # D, the shared space's dimension
    dropout: float | None = None  # tower MLP dropout; auto: 0.15 (the paper's)
    vocab_size: int = 5000  # most frequent training words kept (seed: 5000)
    max_len: int = 20  # tokens per title (seed: 15; real titles run to 14 words)
    word_dim: int = 100  # word embedding size (seed)
    text_dropout: float = 0.2  # after the word embedding (seed)
    conv_channels: int = 256  # Conv1D filters (seed)
    conv_kernel: int = 5  # Conv1D kernel width (seed)
    # ngram / conv+ngram: hashed word and char n-grams, TF-IDF-weighted (huse_core.data.ngrams, model.ngram)
    # Bigger tables (2^18 buckets, 128 dims) gained under a point for 2-4x the table.
    # why: docs/decisions.md#title-tower
    ngram_buckets: int = 1 << 16  # hash buckets = rows of the n-gram embedding table
    ngram_dim: int = 64  # n-gram embedding size
    ngram_word_max: int = 2  # word 1..n-grams
    ngram_char_min: int = 3  # char n-grams within word boundaries (like char_wb), from this length ...
    ngram_char_max: int = 5  # ... to this one
    ngram_max_features: int = 512  # most distinct n-grams kept per title (cut to what the training titles need)
    ngram_dropout: float = 0.0  # in training, share of a title's n-grams dropped
    logit_scale: float = 16.0  # classifier reads s * phi: unit vectors alone give near-zero logits at init
    fusion_weight: float = 0.5  # fused = w * p_image + (1 - w) * p_text
    fusion_layer: bool = True  # the seed's fully connected fusion layer: a whole-product vector (model.fusion)
    # ngram / conv+ngram: the title's prediction adds a linear SVM over its TF-IDF n-grams (model.wide), fitted on
    # the train split after the towers and weighed per head on validation (training.wide_fit).
    # why: docs/decisions.md#wide-head
    wide_head: bool = True  # title logits = shared classifier(text_emb) + t * linear SVM margins of its n-grams

    def __post_init__(self):
        _check_backbone("backbone", self.backbone, IMAGE_BACKBONES, "image")
        _check_backbone("text_backbone", self.text_backbone, TEXT_BACKBONES, "text")
        _check_choices(self)


@dataclass
class LossConfig:
    """The losses and their weights: L = alpha*L_cls + beta*L_graph + gamma*L_gap + delta*L_nce."""

    # nce: the alignment term that tells products apart; runs store their own list, so older ones keep theirs
    losses: list[str] = field(default_factory=lambda: ["cls", "graph", "gap", "nce"])  # terms trained (ablations)
    alpha: float = 1.0  # class-level cross-entropy weight
    beta: float = 4.0  # semantic-graph loss weight  # why: docs/decisions.md#gap-anchor
    gamma: float = 0.5  # cross-modal gap loss weight
    # text: a title's embedding is the photo's fixed target, so the gap loss stops dragging the stronger text
    # tower toward photos.  # why: docs/decisions.md#gap-anchor
    gap_anchor: str = "text"  # text = only photos move toward their titles | none = both towers move
    # names: A(i, j) = 1 - cos of the MiniLM embeddings of the two leaf class names (sentence.name_distance).
    graph_distance: str = "tree"  # graph loss's A: tree = distance in the label tree; names = MiniLM class-name cosine
    zeta: float = 0.7  # graph-loss margin: only pairs closer than this in A and in d count
    label_smoothing: float = 0.1  # softens the cross-entropy targets; helps the image tower generalise
    # nce: symmetric InfoNCE between each photo and its own title over the batch (losses.AlignLoss), instance level.
    # why: docs/decisions.md#alignment-term
    delta: float = 0.3  # alignment loss weight
    # auto (training.schedule): none from 5,000 training products, text below.  # why: docs/decisions.md#alignment-term
    nce_anchor: str | None = None  # none = both towers move | text = only photos move (titles held fixed)
    nce_scale: float = 20.0  # the alignment's inverse temperature at the start
    nce_learn_scale: bool = True  # learn the inverse temperature (clamped to [1, 100])

    def __post_init__(self):
        unknown = [t for t in self.losses if t not in LOSS_TERMS]
        if unknown or not self.losses:
            raise ValueError(f"unknown loss terms {', '.join(map(repr, unknown)) or '(none given)'}: choose from "
                             f"{_one_of(LOSS_TERMS)} (--losses)")
        _check_choices(self)


@dataclass
class TrainConfig:
    """How a run trains. None = auto: chosen from the catalogue's size and class counts by training.schedule,
    which prints each choice and why; run.json stores the values used (and the schedule under "schedule")."""

    # why: docs/decisions.md#epochs
    # 0 (--zero-shot only): the CLIP pair as downloaded, saved untrained, to compare in `evaluate` with a trained run.
    epochs: int | None = None  # upper bound (early stopping may end sooner); auto: ~3,800 steps, 4-40; 0: --zero-shot
    # A huge catalogue in bounded time: the last epoch is cut short, then validated as usual.
    max_steps: int = 0  # stop after this many optimiser steps in all (the rate decays over them); 0 = epochs decide
    # Validation runs every epoch (and flip TTA + fusion weights at the end): a seeded sample keeps a huge
    # catalogue's validation from costing more than its training steps.  # why: docs/decisions.md#schedule
    val_max: int = 10_000  # validation products used; a seeded sample past this; 0 = the whole validation split
    batch_size: int | None = None  # products per step; auto: 32 / 64 / 128 / 256 from 2k / 10k / 100k training products
    optimizer: str = "adamw"  # adamw (default, trains best here) | rmsprop (paper: lr 1.6192e-5, momentum 0.9)
    lr: float | None = None  # peak learning rate (OneCycle for adamw); auto: 2e-3 at batch 128, scaled by sqrt(batch)
    weight_decay: float = 5e-4  # AdamW decoupled weight decay
    patience: int | None = None  # epochs without a better validation score before stopping; auto: epochs / 4, >= 4
    # mean = the mean of photo, title and fused leaf accuracy: steadier on a small validation set than fused alone.
    select_by: str | None = None  # early stopping's validation score: fused | mean; auto: mean under 1,000 val products
    # A moving average of the weights, validated beside them each epoch, the better kept (training.ema); off by
    # default, useful for runs stopped early.  # why: docs/decisions.md#ema
    ema: float = 0.0  # decay of the weights' moving average, e.g. 0.997 (a ~330-step horizon); 0 = off
    augment: bool = True  # random flips and small shifts of training photos
    seed: int = 0  # weights init and batch order
    threads: int = 0  # torch CPU threads; 0 = all cores
    device: str = "auto"  # auto = cuda when present, else cpu
    # bf16 runs the from-scratch cnn's convolutions in bfloat16 while training, faster on a CPU with native bf16;
    # the towers' MLPs, the losses and every prediction and embedding stay float32.  # why: docs/decisions.md#precision
    precision: str = "auto"  # auto = bf16 where the CPU/GPU supports it natively, else fp32 | bf16 | fp32

    def __post_init__(self):
        if not DEVICE.fullmatch(str(self.device)):
            raise ValueError(f"unknown device {self.device!r}: choose auto, cpu, cuda, cuda:N or mps (--device)")
        _check_choices(self)


# What an auto (None) setting means where no training schedule resolved it: a model or catalogue built outside train.
DEFAULT_DROPOUT, DEFAULT_MIN_CLASS_COUNT = 0.15, 5


def to_dict(cfg) -> dict:
    """A JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(cfg)


# Fields added after runs were first saved, with the value older runs were trained with (not today's default):
# a run from before them reloads, and resumes, with its own settings.
LEGACY_VALUES = {"ModelConfig": {"text_backbone": "conv", "fusion_layer": False, "wide_head": False, "cnn_pool": "avg"},
                 "LossConfig": {"gap_anchor": "none", "nce_anchor": "none"},
                 "TrainConfig": {"precision": "fp32", "select_by": "fused", "val_max": 0}}


def from_dict(cls, data: dict):
    """Rebuild a config dataclass from a dict, ignoring keys this version doesn't know."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = LEGACY_VALUES.get(cls.__name__, {}) | {k: v for k, v in data.items() if k in names}
    if "split" in kwargs:
        kwargs["split"] = tuple(kwargs["split"])
    return cls(**kwargs)
