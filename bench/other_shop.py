"""Another shop's catalogue built from the fashion data: one category-path column, long titles, large photos.

    python bench/other_shop.py                                  # build /tmp/other-shop (3,000 products) and print
                                                                # the train / evaluate / index / search commands
    python bench/other_shop.py --n 1000 --scale 20 --out /tmp/shop2
    python bench/other_shop.py --run                            # build, then time decoding and run the commands
                                                                # (results: bench/results/other_shop/)

products.csv names every column differently from the fashion layout (sku, product_name, category_path, photo,
colour, audience, season), so `train` reads it only through its column flags. Photos are the 60x80 originals
upscaled (Pillow LANCZOS) to 2400x3200 JPEGs; titles are the product name plus a description of 30-60 words.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from common import DEFAULT_DATA, ROOT, resolve_catalog, write_result

LOCAL_DATA = Path("/tmp/data/fashion-product-images-small/metadata.csv")
AUDIENCE = {"Men": "for men", "Women": "for women", "Boys": "for boys", "Girls": "for girls", "Unisex": "for everyone"}
# Shop boilerplate: long titles in real feeds are mostly text like this, which says nothing about the category.
FILLER = (
    "Crafted with attention to detail and finished to last through everyday use.",
    "Easy to pair with the rest of your wardrobe for a {usage} look.",
    "Ships in the original brand packaging, with free delivery on orders above Rs. 999.",
    "Returns and exchanges are accepted within 30 days of delivery, no questions asked.",
    "Colours may look slightly different from the photos depending on your screen settings.",
    "Check the size and fit guide before ordering; our team answers questions within a day.",
    "A 100% original product, sourced directly from the brand or its authorised distributors.",
    "Cash on delivery and easy monthly instalments are available in most cities.",
)
TRAIN_FLAGS = ["--id-col", "sku", "--text-col", "product_name", "--image-col", "photo",
               "--hierarchy-col", "category_path", "--hierarchy-sep", " >> ", "--attributes", "colour,audience"]
SEARCH_TEXT = "navy blue running shoes for men"


def pick_products(df: pd.DataFrame, n: int, min_per_class: int, seed: int) -> pd.DataFrame:
    """About n rows, round-robin over the articleTypes with at least `min_per_class` products: every class gets
    min(its size, an equal share), so rare classes keep all they have and no class swamps the rest."""
    counts = df["articleType"].value_counts()
    df = df[df["articleType"].isin(counts.index[counts >= min_per_class])]
    rng = np.random.default_rng(seed)
    shuffled = df.iloc[rng.permutation(len(df))]
    rank = shuffled.groupby("articleType").cumcount().to_numpy()  # position within its class, random order
    return shuffled.iloc[np.argsort(rank, kind="stable")[:n]].sort_index()


def long_title(row: pd.Series) -> str:
    """Product name + a generated description (30-60 words) from its colour, audience and usage.

    Seeded by the name, so products sharing a name (and these attributes) share the long title and the grouped
    split still keeps them together; season is left out of it because it varies most within one name."""
    rng = random.Random(row["title"])
    head = f"{row['title']} | {row['baseColour']} {row['usage'].lower()} wear {AUDIENCE.get(row['gender'], '')}."
    sentences = [s.format(usage=row["usage"].lower()) for s in rng.sample(FILLER, len(FILLER))]
    words, target = len(head.split()), rng.randint(30, 60)
    out = [head]
    for s in sentences:
        if words >= target or words + len(s.split()) > 60:
            break
        out.append(s)
        words += len(s.split())
    return " ".join(out)


def upscale(src: Path, dst: Path, scale: int, quality: int) -> int:
    """Write src enlarged `scale` times as a JPEG (kept when already there at that size); returns its bytes."""
    from PIL import Image

    with Image.open(src) as im:
        size = (im.width * scale, im.height * scale)
        if dst.is_file():
            try:
                with Image.open(dst) as old:
                    if old.size == size:
                        return dst.stat().st_size
            except OSError:
                pass  # a damaged earlier write: make it again
        big = im.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    part = dst.with_name(dst.name + ".part")  # rename after writing: an interrupted build leaves no half photo
    big.save(part, "JPEG", quality=quality)
    os.replace(part, dst)
    return dst.stat().st_size


def build(data: Path, out: Path, n: int, scale: int, quality: int, min_per_class: int, seed: int) -> dict:
    """Write out/products.csv and out/photos/<sku>.jpg; returns what was built and how long it took."""
    t0 = time.time()
    csv = resolve_catalog(data)
    src = pd.read_csv(csv, dtype=str).dropna()
    picked = pick_products(src, n, min_per_class, seed)
    photos = out / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    skus = [f"FP-{int(i):06d}" for i in picked["id"]]
    jobs = [(csv.parent / rel, photos / f"{sku}.jpg") for rel, sku in zip(picked["image"], skus)]

    def work(job) -> int:
        try:
            return upscale(*job, scale, quality)
        except OSError as err:  # one unreadable original drops its product, the rest go on
            print(f"skipped {job[0]}: {err}", file=sys.stderr)
            return -1

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # Pillow releases the GIL in resize and encode
        sizes = np.array(list(pool.map(work, jobs)))
    table = pd.DataFrame({
        "sku": skus,
        "product_name": [long_title(r) for _, r in picked.iterrows()],
        "category_path": (picked["masterCategory"] + " >> " + picked["subCategory"] + " >> "
                          + picked["articleType"]).to_list(),
        "photo": [f"photos/{sku}.jpg" for sku in skus],
        "colour": picked["baseColour"].to_list(),
        "audience": picked["gender"].to_list(),
        "season": picked["season"].to_list(),  # a column the flags don't name: ignored
    })[sizes >= 0]
    from huse_core.artifacts import atomic_write

    atomic_write(out / "products.csv", lambda tmp: table.to_csv(tmp, index=False))
    n_words = table["product_name"].str.split().str.len()
    return {"products": len(table), "classes": int(picked["articleType"].nunique()),
            "per_class": [int(picked["articleType"].value_counts().min()),
                          int(picked["articleType"].value_counts().max())],
            "title_words": [int(n_words.min()), int(n_words.median()), int(n_words.max())],
            "names": int(picked["title"].str.lower().nunique()), "long_titles": int(table["product_name"].nunique()),
            "photo_px": f"{60 * scale}x{80 * scale}", "photo_mb": round(float(sizes[sizes >= 0].sum()) / 2**20, 1),
            "seconds": round(time.time() - t0, 1)}


def commands(out: Path, epochs: int | None, batch_size: int | None) -> list[list[str]]:
    run = str(out / "run")
    given = [*(["--epochs", str(epochs)] if epochs else []), *(["--batch-size", str(batch_size)] if batch_size else [])]
    return [["train", "--catalog", str(out / "products.csv"), "--out", run, *TRAIN_FLAGS, *given],
            ["evaluate", "--run", run], ["index", "--run", run, "--no-map"],
            ["search", "--run", run, "--text", SEARCH_TEXT, "-k", "5"]]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_decoding(out: Path, originals: list[Path]) -> dict:
    """Seconds to decode every large photo to the training size: no cache, a first run (decode + write the cache),
    a later run (read the cache); and the 60x80 originals of the same products, for comparison.

    The first run writes into an empty folder, then its files move into the catalogue's cache (keys don't depend
    on the folder), so `train` reads them as a later run would."""
    from huse_core.data.catalog import load_catalog
    from huse_core.config import DataConfig
    from huse_core.prepare import cache_dir_for
    from huse_core.data.images import decode_many

    cfg = DataConfig(catalog=str(out / "products.csv"), id_col="sku", text_col="product_name", image_col="photo",
                     hierarchy_col="category_path", attributes=["colour", "audience"])
    paths = list(load_catalog(cfg, progress=False).df["image"])
    fresh = Path(tempfile.mkdtemp(prefix=".decode-timing-", dir=out))
    result, before = {}, _peak_mb()
    for name, where, files in (("originals 60x80, no cache", None, originals), ("large, no cache", None, paths),
                               ("large, first run", fresh, paths), ("large, cached", fresh, paths)):
        t = time.time()
        _, ok, _ = decode_many([str(p) for p in files], cfg.image_size, where, progress=False)
        result[name] = {"seconds": round(time.time() - t, 2), "ok": int(ok.sum())}
    result["peak_rss_growth_mb"] = round(_peak_mb() - before)
    cache = cache_dir_for(cfg, out / "run")
    for f in fresh.iterdir():
        os.replace(f, cache / f.name)
    fresh.rmdir()
    return result


def run_example(out: Path, epochs: int | None, batch_size: int | None, originals: list[Path]) -> dict:
    """Time decoding, then run the printed commands one by one, timing each (niced with the caller)."""
    report = {"decode": time_decoding(out, originals), "steps": {}}
    for args in commands(out, epochs, batch_size):
        t = time.time()
        done = subprocess.run([sys.executable, "-m", "huse_core", *args, *(["--json"] if args[0] == "evaluate" else
                              []), *(["--quiet"] if args[0] != "search" else [])], cwd=ROOT, check=True,
                              stdout=subprocess.PIPE, text=True)
        report["steps"][args[0]] = round(time.time() - t, 1)
        if args[0] == "evaluate":
            report["evaluate"] = json.loads(done.stdout)
        elif args[0] == "search":
            print(done.stdout)
    report["train_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    meta = json.loads((out / "run" / "run.json").read_text())
    report["epochs"] = [(h["epoch"], h["seconds"], h["val_accuracy"]["fused"]) for h in meta["history"]]
    report["best_epoch"], report["load_report"] = meta["best_epoch"], meta["load_report"]
    return report


def print_results(report: dict) -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average now "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for name, d in report["decode"].items():
        print(f"decode {name}: {d}")
    print("steps (s):", report["steps"], "| peak RSS of the biggest step:", report["train_peak_rss_mb"], "MB")
    print("epochs (epoch, s, val fused leaf acc):", report["epochs"], "best", report["best_epoch"])
    print(report["load_report"])
    result = report["evaluate"]
    print(f"\ntest products: {result['n_test']}\n| head | image | text | fused |\n|---|---|---|---|")
    for head, per in result["classification"].items():
        cells = " | ".join(f"{per[m]['accuracy'] * 100:.1f} %" for m in ("image", "text", "fused"))
        print(f"| {head} | {cells} |")
    cl = result["retrieval"]["class_level"]
    print(f"class-level R@1 i2t {cl['i2t']['R@1']:.3f} t2i {cl['t2i']['R@1']:.3f}; instance t2i R@10 "
          f"{result['retrieval']['instance']['t2i']['R@10']:.3f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=LOCAL_DATA if LOCAL_DATA.is_file() else DEFAULT_DATA,
                   help="fashion metadata.csv, its folder or the fashion-product-images-small tarball")
    p.add_argument("--out", type=Path, default=Path("/tmp/other-shop"), help="folder to write (not in the repo)")
    p.add_argument("--n", type=int, default=3000, help="products to take, spread evenly over the classes")
    p.add_argument("--min-per-class", type=int, default=15, help="leave out articleTypes with fewer products")
    p.add_argument("--scale", type=int, default=40, help="photo enlargement: 40 turns 60x80 into 2400x3200")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the large photos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run", action="store_true", help="then time decoding and run train/evaluate/index/search")
    # Before train's schedule adapted to a catalogue's size, this shop needed --epochs 12 --batch-size 32: ~25
    # products a class, 128-product batches gave too few optimiser steps (6 epochs: val 52 % vs 73 % at 32).
    p.add_argument("--epochs", type=int, default=None, help="training epochs in the commands (default: train's auto)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch size in the commands (default: auto)")
    args = p.parse_args(argv)
    out = args.out.expanduser().resolve()
    if out == ROOT or ROOT in out.parents:
        print(f"error: --out {out} is inside the repository; the built shop holds the real data's photos, which "
              "must never be committed — choose a folder such as /tmp/other-shop", file=sys.stderr)
        return 2
    try:
        built = build(args.data, out, args.n, args.scale, args.quality, args.min_per_class, args.seed)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    disk = sum(f.stat().st_size for f in out.rglob("*") if f.is_file() and "run" not in f.relative_to(out).parts)
    print(f"built {out / 'products.csv'}: {json.dumps(built)}; folder now {disk / 2**20:.0f} MB (with any cache)")
    print("\n".join(f"python -m huse_core {shlex.join(c)}" for c in commands(out, args.epochs, args.batch_size)))
    if args.run:
        csv = resolve_catalog(args.data)
        src = pd.read_csv(csv, dtype=str)
        by_id = dict(zip(src["id"], src["image"]))
        originals = [csv.parent / by_id[str(int(sku[3:]))] for sku in pd.read_csv(out / "products.csv")["sku"]]
        report = run_example(out, args.epochs, args.batch_size, originals)
        print_results(report)
        path = write_result("other_shop", f"{args.n}-products-scale-{args.scale}", {"shop": built, **report})
        print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
