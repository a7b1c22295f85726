"""huse_core: train a shop's own image + text HUSE model, then classify, search and map its catalogue.

The public API (the CLI, the app and the benches use these names):

    from huse_core import DataConfig, train, evaluate, load_run, build_index, Searcher
    train(DataConfig(catalog="shop.csv"), ModelConfig(), LossConfig(), TrainConfig(), "runs/shop")
    evaluate("runs/shop")                                   # test-split metrics, stored in run.json
    run = load_run("runs/shop")                             # the model: encode_images / encode_texts / classify
    run.classify(text="navy striped shirt")                 # {head: {"image"|"text"|"fused": [{label, prob, path}]}}
    read_summary("runs/shop").test.accuracy()               # run.json's figures, typed (no model loaded)
    build_index("runs/shop")                                # embeddings, Annoy forests, the map
    Searcher.open("runs/shop").search(text="navy striped shirt", target="image", k=10)

Names load on first use, so `import huse_core` stays light (no torch until a model is needed).
"""

import importlib
import os

from .logs import to_stderr as _to_stderr

# OpenMP's default busy-wait makes torch's threads spin while they wait, several times the CPU and time per
# training step on a shared machine. Must be set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"  # the version: pyproject.toml reads it from here

_API = {  # public name -> the module that defines it
    "DataConfig": "config", "ModelConfig": "config", "LossConfig": "config", "TrainConfig": "config",
    "load_catalog": "data.catalog", "generate_demo": "data.demo",
    "Head": "data.heads", "Run": "run", "RunError": "run", "load_run": "run",
    "RunSummary": "summary", "read_summary": "summary",
    "train": "training.train", "evaluate": "training.evaluate",
    "build_index": "retrieval.build", "Searcher": "retrieval.search", "Hit": "retrieval.search",
    "IndexMissingError": "retrieval.layout", "StaleIndexError": "retrieval.layout",
}
__all__ = ["__version__", *_API]

# Progress, notes and warnings (each module's logging.getLogger(__name__)) show on stderr, as a command-line tool's
# would; a program with its own logging removes this handler: logging.getLogger("huse_core").handlers.clear().
_to_stderr()


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'huse_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))
