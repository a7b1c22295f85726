"""A typed view of a run's run.json: the figures the app shows (model, heads, test metrics, history), read without
loading the model, and tolerant of runs written by earlier versions (a figure they lack is None or empty)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .artifacts import read_json
from .data.heads import Head, as_heads


@dataclass
class CatalogRetrieval:
    """Whole-catalogue retrieval: each query among every product of the catalogue; a hit has the same title."""

    n_queries: int
    n_gallery: int
    directions: dict[str, dict[str, float]]  # "t2i" | "i2t" | "t2i_labels" -> {"R@1": .., "R@10": .., "MRR": ..}


@dataclass
class SplitFigures:
    """One split's evaluation (`huse evaluate`), as run.json's metrics[split] holds it."""

    split: str
    n: int  # products evaluated
    leaf: str
    # head -> modality ("image" | "text" | "product" | "fused") -> {"accuracy": .., "macro_f1": ..}
    classification: dict[str, dict[str, dict[str, float]]]
    class_level: dict[str, dict[str, float]]  # direction ("t2i", "i2t", ...) -> {"R@1", "R@5", "R@10"}: same class
    instance: dict[str, dict[str, float]]  # direction -> recall: the product itself (or the same title)
    catalog: CatalogRetrieval | None = None  # runs evaluated before the whole-catalogue protocol lack it
    pair_cosine: float | None = None  # mean cosine of a product's photo and title points (the modality gap)
    baseline_model: str | None = None  # the title baseline fitted beside it (training/baseline.py), if any
    raw: dict = field(default_factory=dict, repr=False)  # the whole entry, for the tables that read it as written

    @classmethod
    def from_dict(cls, d: dict, split: str = "test", leaf: str = "") -> SplitFigures:
        retrieval = d.get("retrieval") or {}
        cat = d.get("retrieval_catalog")
        catalog = (CatalogRetrieval(int(cat.get("n_queries", 0)), int(cat.get("n_gallery", 0)),
                                    {k: v for k, v in cat.items() if isinstance(v, dict)}) if cat else None)
        return cls(split=d.get("split", split), n=int(d.get(f"n_{split}", d.get("n", 0)) or 0),
                   leaf=d.get("leaf") or leaf, classification=d.get("classification") or {},
                   class_level=retrieval.get("class_level") or {}, instance=retrieval.get("instance") or {},
                   catalog=catalog, pair_cosine=(d.get("modality_gap") or {}).get("mean_pair_cosine"),
                   baseline_model=(d.get("baseline") or {}).get("model"), raw=d)

    def accuracy(self, head: str | None = None, modality: str = "fused") -> float | None:
        """Accuracy of `head` (default: the leaf) from one modality; None where not measured."""
        return self.classification.get(head or self.leaf, {}).get(modality, {}).get("accuracy")

    def macro_f1(self, head: str | None = None, modality: str = "fused") -> float | None:
        return self.classification.get(head or self.leaf, {}).get(modality, {}).get("macro_f1")

    def recall(self, direction: str, k: int = 10, level: str = "class_level") -> float | None:
        """R@k of a direction ("t2i": title -> photo, ...) at class level or "instance"; None where not measured."""
        table = self.class_level if level == "class_level" else self.instance
        return table.get(direction, {}).get(f"R@{k}")

    @property
    def search_r10(self) -> float | None:
        """Class-level title -> photo R@10 as the Search page ranks a title (re-ranked), else by cosine alone."""
        found = self.recall("t2i_labels")
        return found if found is not None else self.recall("t2i")


@dataclass
class RunSummary:
    """What the app shows of a run, from its run.json."""

    run_dir: Path
    status: str  # "training" while a run trains, "done" after
    backbone: str
    dim: int | None
    catalog_size: int
    heads: list[Head]
    leaf: str
    history: list[dict]  # one record per epoch: epoch, seconds, loss {term: value}, val_accuracy {modality: ..}
    best_epoch: int | None
    metrics: dict[str, SplitFigures]  # split -> its evaluation

    @classmethod
    def from_meta(cls, meta: dict, run_dir: str | Path = "") -> RunSummary:
        model = meta.get("model") or {}
        heads = as_heads(meta.get("heads") or [])
        leaf = meta.get("leaf") or next((h.name for h in heads if h.kind == "single"), "")
        metrics = {split: SplitFigures.from_dict(d, split, leaf)
                   for split, d in (meta.get("metrics") or {}).items() if isinstance(d, dict)}
        return cls(run_dir=Path(run_dir), status=meta.get("status", "done"), backbone=model.get("backbone", "?"),
                   dim=model.get("dim"), catalog_size=int(meta.get("catalog_size", 0) or 0), heads=heads, leaf=leaf,
                   history=list(meta.get("history") or []), best_epoch=meta.get("best_epoch"), metrics=metrics)

    @property
    def test(self) -> SplitFigures | None:
        """The test split's evaluation; None until the run is evaluated."""
        return self.metrics.get("test")

    @property
    def single_heads(self) -> list[Head]:
        return [h for h in self.heads if h.kind == "single"]

    def head(self, name: str) -> Head:
        found = [h for h in self.heads if h.name == name]
        if not found:
            raise KeyError(f"no head {name!r}; heads are: {', '.join(h.name for h in self.heads)}")
        return found[0]


def read_summary(run_dir: str | Path) -> RunSummary:
    """The RunSummary of the run in `run_dir` (its run.json)."""
    return RunSummary.from_meta(read_json(Path(run_dir) / "run.json"), run_dir)
