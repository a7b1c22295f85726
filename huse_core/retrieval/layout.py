"""The on-disk layout of a run's search index: the only module that knows its file and folder names."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import file_sha, read_json

INDEX_FORMAT = 1  # bump when the sidecar or the index folder changes incompatibly
PRODUCTS, IMAGE_EMB, TEXT_EMB = "products.parquet", "image_emb.npy", "text_emb.npy"
PRODUCT_EMB = "product_emb.npy"  # whole products (the fusion layer), in builds of runs that have one
DELTA = "delta"  # products added after the build: delta/added.sqlite and delta/images/<id>.png
MAP = "map.parquet"  # the 2-D map of a build (huse_core.retrieval.map)
KEYWORD = "keyword"  # the keyword side of a build (huse_core.retrieval.keyword_store): bm25s's files and keyword.json
MANIFEST = "index.json"  # written last by build_index: the index folder is complete when it exists
# Each build writes every file into its own index/build-<build_id>/ and index.json names that folder, so writing
# index.json is the one atomic step that switches readers from one complete build to the next: `kill -9` at any
# moment leaves the old build or the new one, never new embeddings beside an old map or old forests.
BUILD_DIR = re.compile(r"build-[0-9a-f]{12}")
FLAT_FILES = ("products.parquet", "image_emb.npy", "text_emb.npy", "map.parquet")  # indexes built before folders


class IndexMissingError(RuntimeError):
    """No usable search index for a run; the message says which command builds it."""


class StaleIndexError(IndexMissingError):
    """An index built for another model, dimension or catalogue: it must be rebuilt, never loaded."""


def rebuild_hint(run_dir: str | Path, backend: str | None = None) -> str:
    flag = f" --backend {backend}" if backend else ""
    return f"run `python -m huse_core index --run {run_dir}{flag}` again"


def index_dir(run_dir: str | Path) -> Path:
    """The index folder of a run: `run_dir/index`."""
    return Path(run_dir) / "index"


def forest_path(folder: str | Path, modality: str) -> Path:
    """`<build folder>/<modality>.ann`: the Annoy forest over one modality's rows (its sidecar adds .json)."""
    return Path(folder) / f"{modality}.ann"


def faiss_path(folder: str | Path, modality: str) -> Path:
    """`<build folder>/<modality>.faiss`: the faiss index over one modality's rows (its sidecar adds .json)."""
    return Path(folder) / f"{modality}.faiss"


def keyword_path(folder: str | Path) -> Path:
    """`<build folder>/keyword/`: the build's stored keyword index (BM25, brand words, untitled rows)."""
    return Path(folder) / KEYWORD


def added_path(out_dir: str | Path) -> Path:
    """The added-products store of an index folder: `delta/added.sqlite` (WAL mode: -wal and -shm files beside)."""
    return Path(out_dir) / DELTA / "added.sqlite"


def legacy_added_path(out_dir: str | Path) -> Path:
    """Where added products were kept before the SQLite store, `delta/added.parquet`: imported once, then unused."""
    return Path(out_dir) / DELTA / "added.parquet"


def added_photo_path(out_dir: str | Path, pid: str) -> Path:
    """Where an added product's decoded photo is kept: `delta/images/<id>.png`."""
    return Path(out_dir) / DELTA / "images" / f"{pid}.png"


def build_folder(out_dir: str | Path, manifest: dict | None = None) -> Path:
    """The folder holding the files of the build that `manifest` (default: `out_dir`/index.json) names: its
    build-<id>/ folder, or `out_dir` itself for an index from before build folders, or a folder with no manifest
    (what embed_catalog and build_map write to directly)."""
    out = Path(out_dir)
    if manifest is None:
        try:
            manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return out
    name = manifest.get("dir") if isinstance(manifest, dict) else None
    if name is None:
        return out
    if not isinstance(name, str) or not BUILD_DIR.fullmatch(name) or not (out / name).is_dir():
        raise StaleIndexError(f"{out / MANIFEST} names a build folder {name!r} that is not there: "
                              f"{rebuild_hint(out.parent)}")
    return out / name




def new_build_folder(out_dir: str | Path, build_id: str) -> Path:
    """`out_dir/build-<build_id>`: where one build writes all its files before index.json names it."""
    return Path(out_dir) / f"build-{build_id}"


def load_embeddings(out_dir: str | Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(products, image_emb, text_emb) of an index folder's current build, or of the folder embed_catalog wrote to;
    the arrays are memory-mapped, read-only."""
    out = build_folder(out_dir)
    products = pd.read_parquet(out / PRODUCTS)
    image_emb = np.load(out / IMAGE_EMB, mmap_mode="r")
    text_emb = np.load(out / TEXT_EMB, mmap_mode="r")
    return products, image_emb, text_emb


def load_product_emb(out_dir: str | Path) -> np.ndarray | None:
    """The whole-product vectors of an index folder's current build (memory-mapped, read-only), or None: a run
    without a fusion layer, or a build from before they were stored."""
    path = build_folder(out_dir) / PRODUCT_EMB
    return np.load(path, mmap_mode="r") if path.is_file() else None


def load_map(out_dir: str | Path) -> pd.DataFrame | None:
    """The saved map of an index folder's current build (or of a build folder), or None when built with --no-map."""
    path = build_folder(out_dir) / MAP
    return pd.read_parquet(path) if path.is_file() else None


def index_ready(run_dir: str | Path) -> bool:
    """True when the run has a search index built for its current model."""
    manifest = index_dir(run_dir) / MANIFEST
    try:
        return read_json(manifest).get("fingerprint") == file_sha(Path(run_dir) / "model.pt")
    except (OSError, ValueError):
        return False


def map_ready(run_dir: str | Path) -> bool:
    """True when the current index was built with its map (index.json says so and the map file is there)."""
    out = index_dir(run_dir)
    try:
        manifest = read_json(out / MANIFEST)
        folder = build_folder(out, manifest)
        if manifest.get("map") and (folder / MAP).is_file():
            return True
        # an index from before build folders, whose map an older pipeline drew after writing index.json
        return folder == out and (out / MAP).stat().st_mtime >= (out / MANIFEST).stat().st_mtime
    except (OSError, ValueError, IndexMissingError):
        return False


def remove_other_builds(out: Path, keep: Path) -> None:
    """Delete build folders other than `keep` (replaced, or left by a killed build), the files of a pre-folder
    index, and temp files a killed write left. An app still serving an old build keeps its memory maps (POSIX)."""
    for path in out.iterdir():
        if path == keep:
            continue
        if path.is_dir() and BUILD_DIR.fullmatch(path.name):
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and (path.name in FLAT_FILES or path.name.endswith((".ann", ".ann.json", ".tmp"))):
            path.unlink(missing_ok=True)
