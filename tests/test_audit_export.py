"""The audit's corrected catalogue trains: accepted fixes exported beside the input, then a run trained on it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd


def test_the_corrected_catalogue_trains(indexed_run_copy, tmp_path):
    import torch

    from huse_core.audit import audit, export_corrected, record
    from huse_core.config import DataConfig, LossConfig
    from huse_core.pipeline import DemoSpec
    from huse_core.training.train import train

    rows = audit(indexed_run_copy, kinds="labels,duplicates")
    path_row = next(r for r in rows if r["head"] == "category path")
    record(indexed_run_copy, [path_row], "accept")
    result = export_corrected(indexed_run_copy)
    fixed = pd.read_csv(result["path"], dtype=str).set_index("id").loc[path_row["id"]]
    assert " › ".join(fixed[["masterCategory", "subCategory", "articleType"]]) == path_row["suggested"]

    tiny = DemoSpec.tiny()
    threads = torch.get_num_threads()
    try:
        train(DataConfig(catalog=result["path"]), tiny.model, LossConfig(),
              dataclasses.replace(tiny.train, epochs=1), tmp_path / "again", progress=False)
    finally:
        torch.set_num_threads(threads)
    meta = json.loads((tmp_path / "again" / "run.json").read_text())
    assert Path(meta["data"]["catalog"]) == Path(result["path"]).resolve()
    assert meta["catalog_size"] == result["rows"]  # every exported row read back as a product
