"""kill -9 at any moment of `train` or `index` leaves complete artifacts; `train --resume` / `index` again finish."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from huse_core.data.demo import generate_demo
from huse_core.run import load_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "4", "--batch-size", "32", "--cnn-width", "8", "--hidden", "32", "--dim", "16",
        "--conv-channels", "16", "--word-dim", "8", "--quiet"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return generate_demo(tmp_path_factory.mktemp("crash") / "demo", n_products=200, seed=5, progress=False)


def start_train(csv: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "huse_core", "train", "--catalog", str(csv), "--out", str(out), *TINY, *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def epochs_done(out: Path) -> int:
    try:
        return len(json.loads((out / "run.json").read_text())["history"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


@pytest.mark.parametrize("extra_delay", [0.0, 0.3])
def test_sigkill_mid_training_then_resume(shop, tmp_path, extra_delay):
    out = tmp_path / "run"
    proc = start_train(shop, out)
    deadline = time.time() + 240
    while epochs_done(out) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(extra_delay)  # land the kill at different moments of the next epoch / checkpoint write
    if proc.poll() is not None:
        pytest.fail(f"training ended before it could be killed: {proc.stderr.read()[-500:]}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Whatever moment it died at, every artifact present is complete: JSON parses, checkpoints load.
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "training"
    assert load_run(out).meta["history"]
    resumed = subprocess.run([sys.executable, "-m", "huse_core", "train", "--out", str(out), "--resume", "--quiet"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-800:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "done"
    assert [r["epoch"] for r in meta["history"]] == [1, 2, 3, 4]


# -- index ------------------------------------------------------------------------------------------------------

QUERIES = ("red sneakers", "blue denim jeans", "black leather watch")


def index_files(run: Path) -> dict[str, int]:
    """path under index/ -> inode, for every file outside delta/ (inodes change on every atomic replace)."""
    for _ in range(100):
        out = {}
        try:
            for p in (run / "index").rglob("*"):
                try:
                    if p.is_file() and "delta" not in p.relative_to(run / "index").parts:
                        out[str(p.relative_to(run / "index"))] = p.stat().st_ino
                except OSError:  # removed between listing and stat: the build is cleaning up
                    pass
            return out
        except FileNotFoundError:  # a whole build folder removed while rglob walked it: list again
            time.sleep(0.005)
    raise AssertionError(f"{run / 'index'} kept changing while it was listed")


def kill_when(run: Path, moment: str, *extra: str) -> None:
    """Start `index` on `run` and SIGKILL it at `moment`, seen by polling the index folder every 5 ms:
    "embeddings" as soon as a new image_emb.npy is in place, "map" 0.3 s into the map step (after the new
    text.ann.json), "late" right after the new text.ann.json of a build without a map: somewhere in writing
    index.json, removing the old build, or exiting (a build that finished first is not killed)."""
    before = index_files(run)
    proc = subprocess.Popen([sys.executable, "-m", "huse_core", "index", "--run", str(run), "--quiet", *extra],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marker = "image_emb.npy" if moment == "embeddings" else "text.ann.json"
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        new = [Path(p).name for p, ino in index_files(run).items() if before.get(p) != ino]
        if marker in new:
            break
        time.sleep(0.005)
    if moment == "map":
        time.sleep(0.3)  # into the map step (importing umap alone takes longer)
    if proc.poll() is not None and moment != "late":
        pytest.fail(f"`index` ended before the {moment!r} moment: {proc.stderr.read()[-800:]}")
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def grown_run(tiny_indexed_run, tmp_path_factory):
    """The tiny indexed run with two products added since its build, and the exact hits of QUERIES on it.

    Rebuilding it folds the two in, so every index file changes (more rows) and an old/new mix is visible."""
    from huse_core.retrieval.search import Searcher

    run = Path(shutil.copytree(tiny_indexed_run, tmp_path_factory.mktemp("grown") / "run"))
    searcher = Searcher.open(run, backend="exact")
    photos = list(searcher.products["image"][:2])
    assert all(r["ok"] for r in searcher.add_products([{"title": "red canvas sneakers", "image": photos[0]},
                                                       {"title": "blue denim jacket", "image": photos[1]}]))
    # the vector ranking: the hybrid one also reads BM25 statistics, which a rebuild rightly updates with the added
    expected = {(q, t): [round(h.score, 4) for h in searcher.search(text=q, target=t, k=6, mode="vector")]
                for q in QUERIES for t in ("image", "text")}
    return run, len(searcher.products), searcher.manifest["build_id"], expected


def assert_consistent(run: Path, n_products: int, expected: dict) -> dict:
    """Whatever moment `index` died at, the run serves one complete build: the Searcher opens with both backends,
    every hit's title belongs to the embedding row that matched, the hits are those before the rebuild, and the
    map covers every product (or, built without one, says to build it). Every artifact under a real name loads.
    Returns the manifest."""
    from huse_core.retrieval.search import IndexMissingError, Searcher

    for path in (run / "index").rglob("*"):
        if path.is_file() and not path.name.endswith(".tmp"):  # temp names (.<name>.XXXX.tmp) are never read
            {".npy": np.load, ".parquet": pd.read_parquet, ".json": lambda p: json.loads(p.read_text())}.get(
                path.suffix, lambda p: None)(path)
    for backend in ("exact", "annoy"):
        searcher = Searcher.open(run, backend=backend)
        assert len(searcher.products) == n_products
        for query in QUERIES:
            q = searcher.query_vector(text=query)
            hits = searcher.search(text=query, target="text", k=6)
            # each hit's score is its own title's cosine: titles and embedding rows line up (no old/new mix)
            assert np.allclose([h.score for h in hits], searcher.run.encode_texts([h.title for h in hits]) @ q,
                               atol=1e-4)
            if backend == "exact":
                for target in ("image", "text"):
                    assert [round(h.score, 4) for h in searcher.search(text=query, target=target, k=6,
                                                                       mode="vector")] == \
                        pytest.approx(expected[query, target], abs=2e-4)
        if not searcher.manifest["map"]:  # built with --no-map
            with pytest.raises(IndexMissingError, match="without --no-map"):
                searcher.map_frame()
            continue
        frame = searcher.map_frame()
        assert len(frame) == 3 * n_products and set(frame["id"]) == set(searcher.products["id"])  # photo, title,
        assert set(frame["modality"]) == {"image", "text", "product"}  # whole-product points (fusion layer)
    return searcher.manifest


@pytest.mark.parametrize("moment", ["embeddings", "map", "late"])
def test_sigkill_mid_index_leaves_the_old_or_the_new_index_then_index_again_succeeds(grown_run, tmp_path, moment):
    source, n_products, old_build, expected = grown_run
    run = Path(shutil.copytree(source, tmp_path / "run"))
    extra = () if moment == "map" else ("--no-map",)  # the map's UMAP takes 20-40 s; only "map" needs it
    kill_when(run, moment, *extra)
    manifest = assert_consistent(run, n_products, expected)
    # old build: the two added products are still waiting in delta/; new: folded in. Never the manifest of one
    # build over the files of the other.
    assert manifest["n_added"] == (0 if manifest["build_id"] == old_build else 2)
    again = subprocess.run([sys.executable, "-m", "huse_core", "index", "--run", str(run), "--quiet", "--no-map"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)  # the map was tested above
    assert again.returncode == 0, again.stderr[-800:]
    manifest = assert_consistent(run, n_products, expected)
    assert manifest["n_added"] == 2 and manifest["build_id"] != old_build
    # the finished build removed what the killed one left: temp files, its half-written build folder
    leftovers = [p.name for p in (run / "index").rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, f"temp files left after a finished build: {leftovers}"
    current = json.loads((run / "index" / "index.json").read_text())["dir"]
    assert sorted(p.name for p in (run / "index").iterdir()) == sorted([current, "delta", "index.json"])


def test_sigkill_during_the_first_index_build_says_to_run_index(tiny_trained_run, tmp_path):
    from huse_core.retrieval.search import IndexMissingError, Searcher

    run = Path(shutil.copytree(tiny_trained_run, tmp_path / "run"))
    kill_when(run, "embeddings", "--no-map")
    with pytest.raises(IndexMissingError, match=r"python -m huse_core index --run"):
        Searcher.open(run)
