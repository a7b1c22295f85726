"""huse_core: train a shop's own image + text HUSE model, then classify, search and map its catalogue.

The public API (the CLI, the app and the benches use these names):

    from huse_core import DataConfig, train, evaluate, load_run, build_index, Searcher
    train(DataConfig(catalog="shop.csv"), ModelConfig(), LossConfig(), TrainConfig(), "runs/shop")
    evaluate("runs/shop")                                   # test-split metrics, stored in run.json
    run = load_run("runs/shop")                             # the model: encode_images / encode_texts / classify
    run.classify(text="navy striped shirt")                 # {head: {"image"|"text"|"fused": [{label, prob, path}]}}
    build_index("runs/shop")                                # embeddings, Annoy forests, the map
    Searcher.open("runs/shop").search(text="navy striped shirt", target="image", k=10)
    audit("runs/shop", kinds="labels,mismatch,duplicates", top=50)   # catalogue errors, as plain rows

Names load on first use, so `import huse_core` stays light (no torch until a model is needed).
"""

import importlib
import os

# OpenMP's default busy-wait makes torch's threads spin while they wait; on a shared 2-core machine that
# measured ~6x more CPU per training step and ~5x longer steps. Must be set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_API = {  # public name -> the module that defines it
    "DataConfig": "config", "ModelConfig": "config", "LossConfig": "config", "TrainConfig": "config",
    "load_catalog": "data.catalog", "generate_demo": "data.demo",
    "Run": "run", "RunError": "run", "load_run": "run",
    "train": "training.train", "evaluate": "training.evaluate",
    "build_index": "retrieval.build", "Searcher": "retrieval.search", "Hit": "retrieval.search",
    "IndexMissingError": "retrieval.layout", "StaleIndexError": "retrieval.layout",
    "audit": "audit", "AuditError": "audit",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'huse_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
