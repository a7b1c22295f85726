"""Shared session fixtures: a tiny demo shop, a run trained on it in seconds, and that run with its search index."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TINY_PRODUCTS = 240


@pytest.fixture(scope="session")
def tiny_demo_csv(tmp_path_factory) -> Path:
    """metadata.csv of a 240-product synthetic demo shop (images beside it)."""
    from huse_core.data.demo import generate_demo

    return Path(generate_demo(tmp_path_factory.mktemp("tiny_demo"), n_products=TINY_PRODUCTS, seed=0,
                              progress=False))


@pytest.fixture(scope="session")
def tiny_trained_run(tiny_demo_csv, tmp_path_factory) -> Path:
    """A run trained for 2 epochs on the tiny shop with a tiny model (dim 32). Read-only: copy before writing."""
    import torch

    from huse_core.config import DataConfig, LossConfig
    from huse_core.pipeline import DemoSpec
    from huse_core.training.train import train

    run_dir = tmp_path_factory.mktemp("tiny_run")
    threads = torch.get_num_threads()
    tiny = DemoSpec.tiny()  # the tiny model, 2 epochs of 32 on one thread
    try:  # one thread: a model this small only loses time to thread hand-offs (5x on a busy 2-core machine)
        train(DataConfig(catalog=str(tiny_demo_csv)), tiny.model, LossConfig(), tiny.train, run_dir, progress=False)
    finally:
        torch.set_num_threads(threads)  # train() sets it for the whole process; later tests get it back
    return run_dir


@pytest.fixture(scope="session")
def tiny_indexed_run(tiny_trained_run, tmp_path_factory) -> Path:
    """A copy of the tiny run with its search index and map built. Read-only: use `indexed_run_copy` to write."""
    from huse_core.retrieval.build import build_index

    run_dir = tmp_path_factory.mktemp("tiny_indexed") / "run"
    shutil.copytree(tiny_trained_run, run_dir)
    build_index(run_dir, progress=False)
    return run_dir


@pytest.fixture
def indexed_run_copy(tiny_indexed_run, tmp_path) -> Path:
    """A private, writable copy of the indexed tiny run (for tests that add products or rebuild)."""
    return Path(shutil.copytree(tiny_indexed_run, tmp_path / "run"))
