"""Catalogue embedding in parts (`embed --engine ray|local`): photos decoded on CPU workers, embedded by a pool of
model actors (Ray Data), each part written once; a rerun skips finished parts and `index` reads them as one."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..artifacts import atomic_write, read_json, save_npy, write_json
from ..data.images import decode_many
from ..data.rowfile import write_rows
from ..run import Run, load_run
from .embed import products_frame
from .layout import IMAGE_EMB, PRODUCTS, TEXT_EMB, index_dir

log = logging.getLogger(__name__)

PARTS = "parts"  # index/parts/: products/part-k.parquet, image_emb/part-k.npy, text_emb/part-k.npy, parts.json
PART_SIZE = 4096  # products per part: ~80 MB of 80 px photos in flight per worker, a few seconds of work each
ENGINES = ("ray", "local")
RAY_HINT = ("Ray is not installed: `pip install -r requirements-ray.txt` (or embed without it: "
            "`python -m huse_core index --run RUN`)")


def parts_dir(run_dir: str | Path) -> Path:
    """Where a run's embedded parts live: `run_dir/index/parts`."""
    return index_dir(run_dir) / PARTS


def part_files(folder: Path, k: int) -> tuple[Path, Path, Path]:
    """(products, image_emb, text_emb) of part k; the products file is written last: the part is done when it is."""
    return (folder / "products" / f"part-{k}.parquet", folder / "image_emb" / f"part-{k}.npy",
            folder / "text_emb" / f"part-{k}.npy")


def part_done(folder: Path, k: int) -> bool:
    return all(p.is_file() for p in part_files(folder, k))


def _stamp(run: Run) -> dict:
    """What the parts were embedded from: the model's fingerprint and the catalogue file's size and time."""
    path = Path(run.data_cfg.catalog)
    stat = path.stat() if path.is_file() else None
    return {"fingerprint": run.fingerprint, "catalog": str(path),
            "catalog_bytes": stat.st_size if stat else None, "catalog_mtime_ns": stat.st_mtime_ns if stat else None}


def _manifest(folder: Path) -> dict | None:
    try:
        return read_json(folder / "parts.json")
    except (OSError, ValueError):
        return None


def parts_ready(run: Run | str | Path) -> bool:
    """True when every part of the run's catalogue is embedded with its current model (index then reads them)."""
    run = run if isinstance(run, Run) else load_run(run)
    folder = parts_dir(run.run_dir)
    manifest = _manifest(folder)
    if not manifest or {k: manifest.get(k) for k in _stamp(run)} != _stamp(run):
        return False
    return all(part_done(folder, k) for k in range(int(manifest["n_parts"])))


def decode_part(images: list[str], image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixels (n, S, S, 3) uint8, ok (n,) bool) of one part's photos, decoded as `index` decodes them."""
    pixels, ok, _ = decode_many(list(images), image_size, progress=False)
    return pixels, ok


def embed_part(run: Run, pixels: np.ndarray, ok: np.ndarray, titles) -> tuple[np.ndarray, np.ndarray]:
    """(image_emb, text_emb) float32 unit rows of the part's products whose photo decoded."""
    titles = [str(t) for t, good in zip(titles, ok) if good]
    return run.encode_images(pixels[ok]), run.encode_texts(titles)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


class EmbedActor:
    """A Ray Data actor: loads the run once, then embeds parts and writes their embedding files."""

    def __init__(self, run_dir: str, threads: int, device: str = "cpu"):
        import torch

        torch.set_num_threads(threads)
        self.run, self.device = load_run(run_dir), device
        if device != "cpu":  # photos on the GPU; titles stay on the CPU (the n-gram tower is a table lookup)
            self.run.model.image.to(device)

    def __call__(self, row: dict) -> dict:
        t = time.time()
        ok = np.asarray(row["ok"], bool)
        if self.device == "cpu":
            image_emb, text_emb = embed_part(self.run, np.asarray(row["pixels"]), ok, row["titles"])
        else:
            import torch

            with torch.inference_mode():
                px = torch.from_numpy(np.ascontiguousarray(np.asarray(row["pixels"])[ok])).to(self.device)
                image_emb = self.run.model.encode_image(px).float().cpu().numpy()
            text_emb = self.run.encode_texts([str(x) for x, good in zip(row["titles"], ok) if good])
        _, image_path, text_path = part_files(Path(row["folder"]), int(row["part"]))
        save_npy(image_path, image_emb)
        save_npy(text_path, text_emb)
        return {"part": row["part"], "ok": ok, "embed_s": round(time.time() - t, 3), "pid": os.getpid(),
                "rss_mb": _peak_rss_mb(), "decode_pid": row["decode_pid"], "decode_rss_mb": row["decode_rss_mb"]}


def _decode_row(row: dict, image_size: int) -> dict:
    pixels, ok = decode_part(row["images"], image_size)
    return {"part": row["part"], "folder": row["folder"], "pixels": pixels, "ok": ok, "titles": row["titles"],
            "decode_pid": os.getpid(), "decode_rss_mb": _peak_rss_mb()}


def start_local_ray(workers: int, log_to_driver: bool = False) -> None:
    """Ray on this machine for `workers` model actors: a CPU each and one for decoding (with exactly `workers` CPUs
    the decode tasks never got one and the run hung), its workers able to import huse_core from this checkout."""
    import ray

    # The raylet waits this long for its agents; on a busy 2-core machine they took over the default to start.
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
    path = os.pathsep.join(filter(None, [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=workers + 1, include_dashboard=False, log_to_driver=log_to_driver,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})


def _ray_parts(run: Run, items: list[dict], address: str | None, workers: int, progress: bool):
    """Yield each part's result row from a Ray Data pipeline: parts -> decode (tasks) -> embed (actor pool)."""
    try:
        import ray
    except ImportError as err:
        raise RuntimeError(RAY_HINT) from err
    started = not ray.is_initialized()
    if started and address:  # a running cluster: its nodes need huse_core installed (or shipped here)
        ray.init(address=address, runtime_env={"py_modules": [str(Path(__file__).parents[1])]})
    elif started:
        start_local_ray(workers, log_to_driver=progress)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = progress
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        ds = ds.map(_decode_row, fn_kwargs={"image_size": run.image_size}, num_cpus=1)
        # On CPUs Ray Data fuses the decoding into the actors (no photos through the object store); an actor that
        # holds a GPU asks for other resources, so there the photos decode in CPU tasks beside it.
        ds = ds.map(EmbedActor, fn_constructor_args=(str(run.run_dir), 1, "cuda" if gpus else "cpu"),
                    compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=0 if gpus else 1, num_gpus=gpus)
        yield from ds.iter_rows()
    finally:
        if started:
            ray.shutdown()


def _local_parts(run: Run, items: list[dict]):
    """The same work in this process, part after part (no Ray): the reference path, and small catalogues."""
    for item in items:
        t = time.time()
        pixels, ok = decode_part(item["images"], run.image_size)
        image_emb, text_emb = embed_part(run, pixels, ok, item["titles"])
        _, image_path, text_path = part_files(Path(item["folder"]), item["part"])
        save_npy(image_path, image_emb)
        save_npy(text_path, text_emb)
        yield {"part": item["part"], "ok": ok, "embed_s": round(time.time() - t, 3), "pid": os.getpid(),
               "rss_mb": _peak_rss_mb(), "decode_pid": os.getpid(), "decode_rss_mb": _peak_rss_mb()}


def embed_parts(run_dir: str | Path, engine: str = "ray", address: str | None = None, workers: int = 2,
                part_size: int = PART_SIZE, progress: bool = True) -> dict:
    """Embed a run's catalogue into `index/parts/` part by part and return a summary (parts embedded and skipped,
    seconds, per-worker peak RSS). Parts already done for this model and catalogue are skipped; a new model or
    catalogue starts the folder afresh. `index` then reads the parts (gather_parts) instead of embedding again.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose {' or '.join(ENGINES)}")
    if workers < 1 or part_size < 1:
        raise ValueError(f"--workers and the part size must be at least 1, got {workers} and {part_size}")
    if engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as err:
            raise RuntimeError(RAY_HINT) from err
    t0 = time.time()
    run = load_run(run_dir)
    df = run.load_catalog().df
    folder = parts_dir(run.run_dir)
    manifest = _manifest(folder)
    stamp = _stamp(run) | {"n_products": len(df)}
    if manifest is None or {k: manifest.get(k) for k in stamp} != stamp:
        shutil.rmtree(folder, ignore_errors=True)  # another model or catalogue: nothing there is reusable
        manifest = {**stamp, "part_size": part_size, "n_parts": max(1, -(-len(df) // part_size))}
        write_json(folder / "parts.json", manifest)
    size, n_parts = int(manifest["part_size"]), int(manifest["n_parts"])
    todo = [k for k in range(n_parts) if not part_done(folder, k)]
    items = [{"part": k, "folder": str(folder), "images": [str(x) for x in df["image"].iloc[k * size:(k + 1) * size]],
              "titles": [str(x) for x in df["title"].iloc[k * size:(k + 1) * size]]} for k in todo]
    rows = _ray_parts(run, items, address, workers, progress) if engine == "ray" else _local_parts(run, items)
    done, workers_rss, busy = [], {}, 0.0
    for out in rows:  # the driver commits each part: its products file, written last
        k = int(out["part"])
        part = df.iloc[k * size:(k + 1) * size][np.asarray(out["ok"], bool)]
        atomic_write(part_files(folder, k)[0], lambda tmp, p=part: products_frame(p, run.heads, added=False)
                     .to_parquet(tmp, index=False))
        done.append(k)
        busy += float(out["embed_s"])
        for pid, rss in ((out["pid"], out["rss_mb"]), (out["decode_pid"], out["decode_rss_mb"])):
            workers_rss[int(pid)] = max(workers_rss.get(int(pid), 0.0), float(rss))
        if progress:
            log.info(f"part {k + 1}/{n_parts} embedded ({len(part):,} products)")
    return {"engine": engine, "n_parts": n_parts, "embedded": sorted(done), "skipped": n_parts - len(todo),
            "n_products": len(df), "seconds": round(time.time() - t0, 2), "busy_seconds": round(busy, 2),
            "peak_rss_mb": workers_rss}


def gather_parts(run: Run, out_dir: str | Path, added: tuple | None = None) -> pd.DataFrame:
    """Write the parts as one catalogue into `out_dir` (image_emb.npy, text_emb.npy, products.parquet), exactly
    what embed_catalog writes, part by part (memory holds one part), with `added` products appended as there."""
    folder, out = parts_dir(run.run_dir), Path(out_dir)
    n_parts = int(read_json(folder / "parts.json")["n_parts"])
    frames = [pd.read_parquet(part_files(folder, k)[0]) for k in range(n_parts)]
    products = pd.concat(frames, ignore_index=True)
    extra, extra_image, extra_text = added if added is not None else (None, None, None)
    if extra is not None:  # a product the shop has since put in its catalogue file is served from there
        new = ~extra["id"].isin(set(products["id"])).to_numpy()
        extra, extra_image, extra_text = extra[new], np.asarray(extra_image)[new], np.asarray(extra_text)[new]
        products = pd.concat([products, products_frame(extra, run.heads, added=True)], ignore_index=True)
    shape = (len(products), run.dim)
    for name, index, more in ((IMAGE_EMB, 1, extra_image), (TEXT_EMB, 2, extra_text)):

        def fill(put, index=index, more=more) -> None:
            at = 0
            for k in range(n_parts):
                block = np.load(part_files(folder, k)[index])
                put(at, block)
                at += len(block)
            if more is not None and len(more):
                put(at, more)

        write_rows(out / name, shape, np.float32, fill)
    atomic_write(out / PRODUCTS, lambda tmp: products.to_parquet(tmp, index=False))
    return products
