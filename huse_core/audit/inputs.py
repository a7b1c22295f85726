"""What an audit reads: a trained run, its index's catalogue rows and embeddings, checked against the catalogue."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..retrieval.index import load_index
from ..retrieval.layout import IndexMissingError
from ..run import Run, load_run


class AuditError(ValueError):
    """An audit that cannot run as asked (no index, a changed catalogue, an unknown kind); one line says the fix."""


@dataclass
class AuditInputs:
    """A run's catalogue products (the index build's rows, added products left out) and their embeddings."""

    run: Run
    products: pd.DataFrame  # id, title, image (absolute), split, one column per head
    image_emb: np.ndarray  # (N, D) float32 unit rows
    text_emb: np.ndarray  # (N, D)
    _codes: dict = field(default_factory=dict)
    memo: dict = field(default_factory=dict)  # what one audit's kinds share, made once (core.title_probs)

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    def __len__(self) -> int:
        return len(self.products)

    def codes(self, head: dict) -> np.ndarray:
        """(N,) int64 class index of each product's catalogue label in `head` (-1: none or unknown)."""
        if head.name not in self._codes:
            index = {c: i for i, c in enumerate(head.classes)}
            other = index.get("other", -1)
            self._codes[head.name] = np.array(
                [index.get(v, other) if v else -1 for v in self.products[head.name].astype(str)], dtype=np.int64)
        return self._codes[head.name]

    def path_of(self, row: int) -> tuple[str, ...]:
        """The product's catalogue category path (its hierarchy levels, coarse first)."""
        return tuple(str(self.products[level].iat[row]) for level in self.run.levels)


def _changed(run: Run, products: pd.DataFrame) -> str | None:
    """Why the catalogue on disk no longer matches what the run was trained and indexed on, or None."""
    catalog = run.data_cfg.catalog
    if not Path(catalog).is_file():
        return f"the run's catalogue {catalog} is not there any more"
    size = run.meta.get("catalog_size")
    current = run.load_catalog(progress=False).df
    if size is not None and len(current) != size:
        return f"the catalogue {catalog} has {len(current):,} usable products, the run was trained on {size:,}"
    cols = ["id", "title"] + [h.name for h in run.heads if h.kind == "single"]
    now = current[cols].astype(str).reset_index(drop=True)
    then = products[cols].astype(str).reset_index(drop=True)
    if len(now) != len(then):
        return f"the catalogue {catalog} has {len(now):,} products, the index {len(then):,}"
    differ = (now != then).any(axis=1).to_numpy()
    if differ.any():
        first = int(np.flatnonzero(differ)[0])
        return (f"{int(differ.sum()):,} products of {catalog} changed since the index was built "
                f"(first: id {now['id'].iat[first]})")
    return None


def load_inputs(run_dir: str | Path, check_catalog: bool = True) -> AuditInputs:
    """The run and its index's catalogue rows; AuditError (one line) when there is no index or the catalogue
    changed since training and indexing."""
    run = load_run(run_dir)
    try:
        _, products, image_emb, text_emb, _, _ = load_index(run, backend="exact")
    except IndexMissingError as err:
        raise AuditError(f"{err} — the audit reads the index's embeddings") from None
    keep = ~products["added"].to_numpy(dtype=bool) if "added" in products else np.ones(len(products), bool)
    products = products[keep].reset_index(drop=True)
    if check_catalog:
        why = _changed(run, products)
        if why:
            raise AuditError(f"{why}: retrain on it (`python -m huse_core train`) or index again "
                             f"(`python -m huse_core index --run {run_dir}`), then audit")
    image_emb = np.ascontiguousarray(np.asarray(image_emb)[keep], dtype=np.float32)
    text_emb = np.ascontiguousarray(np.asarray(text_emb)[keep], dtype=np.float32)
    return AuditInputs(run, products, image_emb, text_emb)
