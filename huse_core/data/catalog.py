"""Reading any shop's catalogue (CSV/Parquet) into rows, label heads, a grouped split and a load report.

Over 300 lines on purpose: every check a row passes (photo, title, labels, id, split) and the one report they
fill belong together; table reading and column names live in tables.py.
"""

from __future__ import annotations

import os
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from huse_core.config import DEFAULT_MIN_CLASS_COUNT, DataConfig

from .heads import Head
from .tables import ATTRIBUTE_COLS, IMAGE_COLS, LEVEL_COLS, TEXT_COLS, pick_column, read_table

IMAGE_EXTS = (".jpg", ".png", ".jpeg", ".webp")
SPLITS = ("train", "val", "test")
MAX_TITLE = 1000  # characters; longer "titles" are pasted descriptions and only slow tokenising
OTHER = "other"
OUTSIDE = "image path outside the catalogue folder"


@dataclass
class LoadReport:
    """What loading kept, skipped and merged, so users can fix their file."""

    n_rows: int
    n_kept: int
    bad_rows: dict[str, int] = field(default_factory=dict)  # reason -> count
    examples: list[str] = field(default_factory=list)  # first ~10 problems, naming row and id
    merged: dict[str, list[str]] = field(default_factory=dict)  # head -> classes merged into "other"
    dropped: dict[str, list[str]] = field(default_factory=dict)  # multi-label head -> labels too rare to keep

    def summary(self) -> str:
        """A short human-readable multi-line report."""
        lines = [f"read {self.n_rows:,} rows, kept {self.n_kept:,}, skipped {self.n_rows - self.n_kept:,}"]
        lines += [f"  skipped {n:,}: {reason}" for reason, n in sorted(self.bad_rows.items(), key=lambda kv: -kv[1])]
        if self.examples:
            lines.append("  first problems:")
            lines += [f"    {e}" for e in self.examples]
            unnamed = self.n_rows - self.n_kept - len(self.examples)
            if unnamed > 0:  # say so, or a reader takes the named ones for the whole list
                lines.append(f"    … and {unnamed:,} more (counted above)")
        tables = ((f"rare classes merged into '{OTHER}'", self.merged), ("rare labels dropped", self.dropped))
        for what, table in tables:
            for head, names in table.items():
                shown = ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
                lines.append(f"  {head}: {len(names)} {what} ({shown})")
        return "\n".join(lines)


@dataclass
class Catalog:
    """The kept rows of a catalogue with their heads, hierarchy and split."""

    df: pd.DataFrame  # columns id, title, image (absolute), split, and one per head
    heads: list[Head]
    levels: list[str]  # hierarchy head names, coarse -> fine
    root: Path  # folder image paths are resolved against
    report: LoadReport
    config: DataConfig

    def labels(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Per head: single -> int64 (N,) with -1 where missing/unknown; multi -> float32 (N, C) multi-hot."""
        df = self.df if rows is None else self.df.iloc[np.asarray(rows)]
        out: dict[str, np.ndarray] = {}
        for h in self.heads:
            if h.kind == "single":
                codes = pd.Categorical(df[h.name].to_numpy(dtype=object), categories=h.classes).codes
                out[h.name] = codes.astype(np.int64)
            else:
                index = {c: i for i, c in enumerate(h.classes)}
                out[h.name] = hot = np.zeros((len(df), len(h.classes)), dtype=np.float32)
                for r, cell in enumerate(df[h.name]):
                    hot[r, [index[c] for c in cell if c in index]] = 1.0
        return out

    def split_indices(self, split: str) -> np.ndarray:
        """Row positions of the "train", "val" or "test" split."""
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}'; splits are: {', '.join(SPLITS)}")
        return np.flatnonzero(self.df["split"].to_numpy(dtype=object) == split)

    @property
    def leaf(self) -> str:
        """The finest hierarchy level, else the first single-label head."""
        return self.levels[-1] if self.levels else next(h.name for h in self.heads if h.kind == "single")

    def head(self, name: str) -> Head:
        """The head called `name`."""
        found = [h for h in self.heads if h.name == name]
        if found:
            return found[0]
        raise KeyError(f"no head '{name}'; heads are: {', '.join(h.name for h in self.heads)}")

    def parent_paths(self) -> dict[str, list[str]]:
        """Leaf class -> its class names coarse -> fine (the most common path in the data)."""
        classes = self.head(self.leaf).classes
        if not self.levels:
            return {c: [c] for c in classes}
        counts = Counter(zip(*(self.df[c].to_numpy(dtype=object) for c in self.levels)))
        best: dict[str, list[str]] = {}
        for path, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):  # most common first, ties by name
            best.setdefault(path[-1], list(path))
        return {c: best.get(c, [c] * len(self.levels)) for c in classes}


def normalise_title(title: str) -> str:
    """Lowercase, collapse whitespace, strip punctuation at the ends: near-duplicate titles compare equal."""
    t = " ".join(str(title).lower().split())
    keep = [not (ch.isspace() or unicodedata.category(ch).startswith("P")) for ch in t]  # any script's punctuation
    return t[keep.index(True) : len(t) - keep[::-1].index(True)] if True in keep else ""


def _missing(v) -> bool:
    return v is None or (not isinstance(v, (str, list, np.ndarray)) and bool(pd.isna(v)))


def _cells(s: pd.Series) -> np.ndarray:
    """Stripped text cells as an object array, "" where missing."""
    return np.array(["" if _missing(v) else str(v).strip() for v in s], dtype=object)


def _multi(s: pd.Series) -> list[list[str]]:
    cells = [list(v) if isinstance(v, (list, np.ndarray)) else [] if _missing(v) else str(v).split("|") for v in s]
    return [[str(x).strip() for x in cell if str(x).strip()] for cell in cells]


def _split_rows(titles: np.ndarray, fractions, seed: int) -> np.ndarray:
    """Grouped split: every row with the same normalised title lands in the same split."""
    groups, inverse = np.unique(np.array([normalise_title(t) for t in titles], dtype=object), return_inverse=True)
    g = len(groups)
    fr = np.clip(np.asarray(fractions, dtype=float), 0, None)
    fr = fr / fr.sum() if fr.sum() > 0 else np.array([0.8, 0.1, 0.1])
    n_val, n_test = round(fr[1] * g), round(fr[2] * g)
    if g >= 3:  # an empty val or test split breaks early stopping and evaluation
        n_val, n_test = max(1, n_val), max(1, n_test)
        while n_val + n_test > g - 1:
            n_val, n_test = (n_val - 1, n_test) if n_val >= n_test else (n_val, n_test - 1)
    order = np.random.default_rng(seed).permutation(g)
    which = np.zeros(g, dtype=np.int64)
    which[order[g - n_val - n_test : g - n_test]] = 1
    which[order[g - n_test :]] = 2
    return np.array(SPLITS, dtype=object)[which[inverse.ravel()]]


def _image_paths(raw: pd.DataFrame, cfg: DataConfig, ids: np.ndarray, has_id: bool, root: Path) -> np.ndarray:
    """Image paths as written in the catalogue, or images/<id>.<ext> when there is no image column."""
    cols = list(raw.columns)
    image_col = pick_column(cols, cfg.image_col, IMAGE_COLS, "image", "--image-col")
    if image_col:
        return _cells(raw[image_col])
    sample = [i for i in ids[:50] if i] if has_id else []
    hits = {e: sum(os.path.isfile(root / "images" / f"{i}{e}") for i in sample) for e in IMAGE_EXTS}
    ext = max(hits, key=hits.get)
    if not hits[ext]:
        raise ValueError(f"no image column found (looked for {', '.join(IMAGE_COLS)}, or images/<id>.jpg under "
                         f"{root}); columns are: {', '.join(cols)} — pass --image-col <column>")
    return np.array([f"images/{i}{ext}" if i else "" for i in ids], dtype=object)


def _label_columns(raw: pd.DataFrame, cfg: DataConfig, heads: list[Head] | None):
    """(levels, attributes, multi-label) column names; a hierarchy column becomes level1..levelK in `raw`."""
    cols = list(raw.columns)
    hier = pick_column(cols, cfg.hierarchy_col, (), "hierarchy", "--hierarchy-col") if cfg.hierarchy_col else None
    if hier:
        paths = [[p.strip() for p in c.split(cfg.hierarchy_sep) if p.strip()] for c in _cells(raw[hier])]
        depths = Counter(len(p) for p in paths if p)
        saved_depth = sum(h.level is not None for h in heads or [])  # a saved run keeps its own depth
        depth = saved_depth or (min(max(1, cfg.max_levels), depths.most_common(1)[0][0]) if depths else 1)
        levels = [f"level{k + 1}" for k in range(depth)]
        for k, name in enumerate(levels):  # short paths repeat their last part so every row has a leaf
            raw[name] = [p[min(k, len(p) - 1)] if p else "" for p in paths]
    elif heads is not None:
        levels = [h.name for h in sorted((h for h in heads if h.level is not None), key=lambda h: h.level)]
    else:
        levels = [pick_column(cols, c, (), "level", "--levels") for c in cfg.levels]
        levels = levels or [c for c in (pick_column(cols, "", (c,)) for c in LEVEL_COLS) if c]
    if heads is not None:  # a saved run's heads decide the columns
        attrs = [h.name for h in heads if h.level is None and h.kind == "single"]
        multis = [h.name for h in heads if h.kind == "multi"]
    else:
        multis = [pick_column(cols, c, (), "multi-label", "--multi-label") for c in cfg.multi_label]
        attrs = [pick_column(cols, c, (), "attribute", "--attributes") for c in cfg.attributes]
        attrs = attrs or [c for c in (pick_column(cols, "", (c,)) for c in ATTRIBUTE_COLS) if c]
        attrs = [c for c in attrs if c not in levels and c not in multis]
    for c in levels + attrs + multis:
        if c not in raw.columns:
            raise ValueError(f"label column '{c}' of the saved run not found; columns are: {', '.join(cols)}")
    if not levels and not attrs:
        raise ValueError(f"no label columns found; columns are: {', '.join(cols)} — pass --levels, "
                         "--hierarchy-col or --attributes")
    return levels, attrs, multis


def _check_rows(df: pd.DataFrame, rel: np.ndarray, levels: list[str], has_id: bool, root: Path,
                undecoded: dict[int, str] | None = None):
    """(keep mask, absolute image paths, LoadReport): each bad row counted once, under its first problem.
    `undecoded`: {row position: (why, cell)} of rows with bytes not in the file's encoding (read_table's)."""
    n, ids = len(df), df["id"].to_numpy(dtype=object)
    reason, detail = np.full(n, "", dtype=object), np.full(n, "", dtype=object)

    def mark(mask, why: str, what=None) -> None:
        new = np.asarray(mask, dtype=bool) & (reason == "")
        reason[new] = why
        if what is not None:
            detail[new] = what[new]

    if undecoded:
        whys, cells = np.full(n, "", dtype=object), np.full(n, "", dtype=object)
        for i, (why, cell) in undecoded.items():
            whys[i], cells[i] = why, cell
        for why in set(whys[whys != ""]):
            mark(whys == why, why, cells)

    if has_id:
        mark(ids == "", "missing id")
        mark(pd.Series(ids).duplicated().to_numpy() & (ids != ""), "duplicate id")  # the first one stays
    mark(df["title"].to_numpy(dtype=object) == "", "empty title")
    for c in levels:
        mark(df[c].to_numpy(dtype=object) == "", f"missing label {c}")
    mark(rel == "", "no image path")
    # Textual containment check (normpath, not resolve): the catalogue's text must not point outside the
    # images root, while a symlinked images folder the shop set up itself keeps working.
    prefix = str(root).rstrip(os.sep) + os.sep
    rel = np.array([r.replace("\\", "/") if os.sep == "/" else r for r in rel], dtype=object)  # Windows exports
    full = np.array([os.path.normpath(os.path.join(root, r)) if r else "" for r in rel], dtype=object)
    mark(np.array([not f.startswith(prefix) for f in full]), OUTSIDE, rel)
    alive = np.flatnonzero(reason == "")
    exists = np.zeros(n, dtype=bool)
    exists[alive] = [os.path.isfile(full[i]) for i in alive]
    mark(~exists, "missing image file", rel)
    keep = reason == ""
    bad = np.flatnonzero(~keep)
    examples = [f"row {i + 1} (id {ids[i] or '?'}): {reason[i]}" + (f" {detail[i]}" if detail[i] else "")
                for i in bad[:10]]
    report = LoadReport(n_rows=n, n_kept=int(keep.sum()), bad_rows=dict(Counter(reason[bad])), examples=examples)
    return keep, full, report


def _make_heads(df: pd.DataFrame, cfg: DataConfig, cols: tuple, heads: list[Head] | None, report: LoadReport):
    """Class lists (train counts decide what merges into "other"), or a saved run's lists as they were."""
    levels, attrs, multis = cols
    saved = {h.name: h for h in heads or []}
    train = df["split"].to_numpy(dtype=object) == "train"
    min_count = DEFAULT_MIN_CLASS_COUNT if cfg.min_class_count is None else cfg.min_class_count  # None: not resolved
    out: list[Head] = []
    for c in levels + attrs:
        values = df[c].to_numpy(dtype=object)
        if c in saved:  # unknown values -> "other" when the run had it, else -1 in labels()
            classes = list(saved[c].classes)
            rare = {v for v in set(values) if v and v not in classes} if OTHER in classes else set()
        else:
            counts = Counter(values[train])
            present = sorted(set(values) - {"", OTHER})
            rare = {v for v in present if counts[v] < min_count}
            classes = [v for v in present if v not in rare] + ([OTHER] if rare or OTHER in set(values) else [])
            if rare:
                report.merged[c] = sorted(rare)
        if rare:
            df[c] = [OTHER if v in rare else v for v in values]
        out.append(Head(name=c, kind="single", classes=classes, level=levels.index(c) if c in levels else None))
    for c in multis:
        if c in saved:
            classes = list(saved[c].classes)
        else:  # multi-label has no "other": labels too rare in train are dropped
            counts = Counter(x for cell, t in zip(df[c], train) if t for x in set(cell))
            seen = sorted({x for cell in df[c] for x in cell})
            classes = [x for x in seen if counts[x] >= min_count]
            if len(classes) < len(seen):
                report.dropped[c] = [x for x in seen if counts[x] < min_count]
        known = set(classes)
        df[c] = [[x for x in cell if x in known] for cell in df[c]]
        out.append(Head(name=c, kind="multi", classes=classes))
    return out


def load_catalog(cfg: DataConfig, heads: list[Head] | None = None, progress: bool = True) -> Catalog:
    """Read, check and split a catalogue; bad rows are skipped and counted in `catalog.report`."""
    path = Path(cfg.catalog).expanduser()
    raw = read_table(path)
    undecoded = raw.attrs.get("bad_rows", {})
    raw.columns = [str(c).strip() for c in raw.columns]
    raw = raw.reset_index(drop=True)
    cols, n = list(raw.columns), len(raw)
    root = Path(os.path.abspath(Path(cfg.images_root).expanduser() if cfg.images_root else path.parent))

    try:  # a missing column is the file's problem: the message names the file
        text_col = pick_column(cols, cfg.text_col, TEXT_COLS, "title", "--text-col")
        if text_col is None:
            raise ValueError(f"no title column found (looked for {', '.join(TEXT_COLS)}); columns are: "
                             f"{', '.join(cols)} — pass --text-col <column>")
        id_col = pick_column(cols, cfg.id_col, ("id",), "id", "--id-col")
        ids = _cells(raw[id_col]) if id_col else np.array([str(i + 1) for i in range(n)], dtype=object)
        rel = _image_paths(raw, cfg, ids, bool(id_col), root)
        levels, attrs, multis = _label_columns(raw, cfg, heads)
        split_col = pick_column(cols, cfg.split_col, (), "split", "--split-col") if cfg.split_col else None
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None

    df = pd.DataFrame({"id": ids, "title": _cells(raw[text_col])})
    for c in levels + attrs:
        df[c] = _cells(raw[c])
    for c in multis:
        df[c] = _multi(raw[c])
    keep, full, report = _check_rows(df, rel, levels, bool(id_col), root, undecoded)
    df["image"] = full
    df = df[keep].reset_index(drop=True)
    if len(df) == 0:
        raise ValueError(f"no usable rows in {path}:\n{report.summary()}")
    df["title"] = [t[:MAX_TITLE] for t in df["title"]]

    if split_col:
        values = np.array([v.lower() for v in _cells(raw[split_col])[keep]], dtype=object)
        wrong = sorted(set(values) - set(SPLITS))
        if wrong:
            raise ValueError(f"split column '{split_col}' has values {', '.join(repr(w) for w in wrong[:5])}; "
                             "allowed: train, val, test")
        df["split"] = values
    else:
        df["split"] = _split_rows(df["title"].to_numpy(dtype=object), cfg.split, cfg.seed)
    out_heads = _make_heads(df, cfg, (levels, attrs, multis), heads, report)
    df = df[["id", "title", "image", "split"] + levels + attrs + multis]
    return Catalog(df=df, heads=out_heads, levels=levels, root=root, report=report, config=cfg)
