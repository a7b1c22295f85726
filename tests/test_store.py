"""The added-products store (SQLite, WAL) and the `add` command: concurrent writers in threads and processes,
kill -9 mid-write, importing the old Parquet store, the command's output and bad rows."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

import huse_core
from huse_core.cli import main
from huse_core.data.images import decode_image
from huse_core.retrieval.adding import refresh_added
from huse_core.retrieval.layout import added_path, added_photo_path, index_dir, legacy_added_path
from huse_core.retrieval.search import Searcher
from huse_core.retrieval.store import count_added, read_added, write_added
from huse_core.run import load_run

ROOT = Path(huse_core.__file__).parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def new_products(folder: Path, demo_csv: Path, n: int, prefix: str | None, **extra_rows) -> Path:
    """A CSV of n new products (demo photos under new titles) in `folder`, photos relative to it; ids
    `prefix`-0.. or, with no prefix, no id column (the store gives new-N)."""
    folder.mkdir(parents=True)
    (folder / "images").symlink_to(demo_csv.parent / "images")
    demo = pd.read_csv(demo_csv, dtype=str)
    rows = [{"title": f"{demo['title'][i % len(demo)]} {prefix or 'auto'} {i}", "image": demo["image"][i % len(demo)]}
            for i in range(n)]
    if prefix:
        rows = [{"id": f"{prefix}-{i}", **row} for i, row in enumerate(rows)]
    path = folder / "new.csv"
    pd.DataFrame(rows + list(extra_rows.values())).to_csv(path, index=False)
    return path


def stored(run_dir: Path) -> pd.DataFrame:
    """Every stored row straight from SQLite (id, auto_n, dim, embedding sizes), checked to be a whole database."""
    with sqlite3.connect(added_path(index_dir(run_dir))) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        return pd.read_sql("SELECT seq, id, auto_n, dim, length(image_emb) AS ib, length(text_emb) AS tb, image "
                           "FROM added ORDER BY seq", con)


def assert_whole(run_dir: Path) -> pd.DataFrame:
    """Every stored product is whole: unique id, both embeddings unit rows of the run's size, a label per head,
    its photo on disk and decodable. Returns read_added's table."""
    run = load_run(run_dir)
    rows = stored(run_dir)
    assert rows["id"].is_unique and (rows["ib"] == 4 * run.dim).all() and (rows["tb"] == 4 * run.dim).all()
    df, image_emb, text_emb = read_added(index_dir(run_dir), run.dim)
    assert list(df["id"]) == list(rows["id"]) and image_emb.dtype == np.float32
    assert image_emb.shape == text_emb.shape == (len(df), run.dim)
    assert np.allclose(np.linalg.norm(image_emb, axis=1), 1, atol=1e-4)
    assert np.allclose(np.linalg.norm(text_emb, axis=1), 1, atol=1e-4)
    assert all((df[h["name"]] != "").all() or h["kind"] == "multi" for h in run.heads)
    for path in df["image"]:
        assert Path(path).is_absolute() and Image.open(path).size == (256, 256)
    return df


# Workers are forked from one process that has loaded torch and the run but run no model yet, so each child is a
# separate process with its own SQLite connection that starts in ~0.1 s, not the ~4 s of a fresh `python -m`.
WORKERS = """
import json, multiprocessing as mp, sys
import huse_core.retrieval.adding as adding
from huse_core.run import load_run
adding.ADD_BATCH = 10  # 5 transactions per worker: more chances to interleave
run_dir, csvs = sys.argv[1], sys.argv[2:]
load_run(run_dir)
ctx = mp.get_context("fork")
barrier, results = ctx.Barrier(len(csvs)), ctx.Queue()
def work(csv):
    barrier.wait()
    results.put(adding.add_catalog(run_dir, csv))  # what `python -m huse_core add` runs
procs = [ctx.Process(target=work, args=(csv,)) for csv in csvs]
for p in procs: p.start()
out = [results.get(timeout=900) for _ in procs]
for p in procs: p.join()
print(json.dumps({"codes": [p.exitcode for p in procs], "results": out}))
"""


def test_eight_processes_adding_50_products_each_store_exactly_400(indexed_run_copy, tiny_demo_csv, tmp_path):
    csvs = [new_products(tmp_path / f"w{w}", tiny_demo_csv, 50, f"w{w}" if w % 2 else None) for w in range(8)]
    proc = subprocess.run([sys.executable, "-c", WORKERS, str(indexed_run_copy), *map(str, csvs)], env=ENV,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["codes"] == [0] * 8 and [r["added"] for r in report["results"]] == [50] * 8
    assert all(r["skipped"] == [] for r in report["results"])
    df = assert_whole(indexed_run_copy)
    assert len(df) == 400 and count_added(index_dir(indexed_run_copy)) == 400
    auto = sorted(int(i[4:]) for i in df["id"] if i.startswith("new-"))
    assert auto == list(range(1, 201))  # automatic ids handed out once each, none skipped, none twice
    assert {f"w{w}-{i}" for w in (1, 3, 5, 7) for i in range(50)} <= set(df["id"])
    assert not list((index_dir(indexed_run_copy) / "delta" / "images").glob(".staged-*"))  # no temp photos left
    searcher = Searcher.open(indexed_run_copy)
    assert searcher.products["added"].sum() == 400 and searcher.search(product="w3-7", k=1)


def test_app_threads_adding_at_once_lose_nothing_and_other_searchers_see_it(indexed_run_copy):
    app, other = Searcher.open(indexed_run_copy), Searcher.open(indexed_run_copy)
    photos = list(app.products["image"][:6])
    errors: list[BaseException] = []

    def add(t: int) -> None:
        try:
            for call in range(4):
                items = [{"title": f"thread {t} call {call} item {i}", "image": photos[i],
                          **({"id": f"t{t}-{call}-{i}"} if i % 2 else {})} for i in range(3)]
                assert all(r["ok"] for r in app.add_products(items))
        except BaseException as err:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=add, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    df = assert_whole(indexed_run_copy)
    assert len(df) == 48 and sorted(int(i[4:]) for i in df["id"] if i.startswith("new-")) == list(range(1, 33))
    assert app.products["added"].sum() == 48 and app.fingerprint.endswith("-48")
    assert other.refresh() and other.products["added"].sum() == 48  # a second app (or process) takes them in
    assert other.search(product="t2-3-1", k=1)[0].id != "t2-3-1"
    refused = app.add_products([{"title": "again", "image": photos[0], "id": "t1-0-1"}])[0]
    assert not refused["ok"] and "already used" in refused["error"] and count_added(index_dir(indexed_run_copy)) == 48


# Adds batches of 20 in a loop and prints "committed N" after each; from the second batch on, renaming each photo
# takes 0.2 s and the first one prints "inside", so the test's kill -9 lands with part of a batch's photos
# renamed and part of its rows written, inside the transaction.
KILLED = """
import os, sys, time
import huse_core.retrieval.store as store
from huse_core.retrieval.search import Searcher
searcher = Searcher.open(sys.argv[1])
photos = list(searcher.products["image"][:20])
real_replace, state = os.replace, {"slow": False, "said": False}
def slow_replace(src, dst):
    real_replace(src, dst)
    if state["slow"] and str(dst).endswith(".png"):
        if not state["said"]:
            print("inside", flush=True)
            state["said"] = True
        time.sleep(0.2)
store.os.replace = slow_replace
for batch in range(100):
    assert all(r["ok"] for r in searcher.add_products([{"title": f"b{batch} p{i}", "image": p}
                                                       for i, p in enumerate(photos)]))
    print(f"committed {20 * (batch + 1)}", flush=True)
    state["slow"] = True
"""


def test_kill_9_in_the_middle_of_an_addition_leaves_whole_products_only(indexed_run_copy):
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(indexed_run_copy)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.strip() == "inside":
            break
    assert lines[-1:] == ["inside"], proc.stderr.read()[-2000:]
    time.sleep(0.3)  # a few photos renamed, a few rows written, no COMMIT
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    df = assert_whole(indexed_run_copy)
    assert len(df) == 20 and list(df["title"]) == [f"b0 p{i}" for i in range(20)]  # batch 1 whole, batch 2 none
    orphans = {p.name for p in (index_dir(indexed_run_copy) / "delta" / "images").glob("*.png")} - {
        Path(p).name for p in df["image"]}
    assert orphans  # batch 2's renamed photos: files without rows, replaced when their ids are next given
    searcher = Searcher.open(indexed_run_copy)
    source = searcher.products["image"].iloc[30]  # not the photo batch 2 left under new-21.png
    result = searcher.add_products([{"title": "after the crash", "image": source}])[0]
    assert result["ok"] and result["id"] == "new-21"
    assert np.array_equal(np.asarray(Image.open(added_photo_path(index_dir(indexed_run_copy), "new-21"))),
                          decode_image(source, 256))
    assert len(assert_whole(indexed_run_copy)) == 21


def old_parquet_store(run_dir: Path) -> tuple[pd.DataFrame, int]:
    """Add three products, then turn the store into the Parquet file earlier versions wrote (rows, image paths
    relative to delta/, both embeddings as list cells) and delete the SQLite one. Returns the rows and the run's
    embedding size."""
    searcher = Searcher.open(run_dir)
    photos = list(searcher.products["image"][:3])
    searcher.add_products([{"title": f"old {i}", "image": p, **({"id": "new-7"} if i == 1 else {})}
                           for i, p in enumerate(photos)])
    out = index_dir(run_dir)
    df, image_emb, text_emb = read_added(out, searcher.run.dim)
    table = df.drop(columns=["seq"])
    table["image"] = [str(Path(p).relative_to(out / "delta")) for p in table["image"]]
    table["image_emb"], table["text_emb"] = list(image_emb), list(text_emb)
    table.to_parquet(legacy_added_path(out), index=False)
    for path in added_path(out).parent.glob("added.sqlite*"):
        path.unlink()
    return df, searcher.run.dim


def test_an_old_parquet_store_is_imported_once_and_keeps_working(indexed_run_copy):
    out = index_dir(indexed_run_copy)
    old, dim = old_parquet_store(indexed_run_copy)
    assert list(old["id"]) == ["new-1", "new-7", "new-8"] and not added_path(out).exists()
    readers = [threading.Thread(target=read_added, args=(out, dim)) for _ in range(4)]  # racing to import it
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    df = assert_whole(indexed_run_copy)
    assert list(df["id"]) == list(old["id"]) and list(df["title"]) == list(old["title"])
    assert legacy_added_path(out).is_file() and not list(added_path(out).parent.glob(".added.sqlite.*"))
    searcher = Searcher.open(indexed_run_copy)
    assert searcher.add_products([{"title": "new", "image": df["image"].iloc[0]}])[0]["id"] == "new-9"
    pd.read_parquet(legacy_added_path(out)).head(1).to_parquet(legacy_added_path(out))  # not read again
    assert list(read_added(out, dim)[0]["id"]) == ["new-1", "new-7", "new-8", "new-9"]


def test_products_of_an_earlier_model_are_re_embedded_in_place(indexed_run_copy):
    searcher = Searcher.open(indexed_run_copy)
    photos = list(searcher.products["image"][:3])
    searcher.add_products([{"title": f"p{i}", "image": p} for i, p in enumerate(photos)])
    out, run = index_dir(indexed_run_copy), searcher.run
    df, image_emb, text_emb = read_added(out, run.dim)
    stale = df.iloc[[1]].assign(fingerprint="an-older-model", articleType="wrong")
    write_added(out, stale, np.zeros_like(image_emb[[1]]), text_emb[[1]])  # replaced in place, not appended
    assert list(read_added(out, run.dim)[0]["id"]) == ["new-1", "new-2", "new-3"]
    refresh_added(run, out, progress=False)
    again, again_image, _ = read_added(out, run.dim)
    assert list(again["seq"]) == list(df["seq"]) and (again["fingerprint"] == run.fingerprint).all()
    assert np.allclose(again_image, image_emb, atol=1e-5) and again["articleType"][1] == df["articleType"][1]


def test_add_command_json_shape_bad_rows_and_searchable_at_once(indexed_run_copy, tiny_demo_csv, tmp_path, capsys):
    catalogue_id = Searcher.open(indexed_run_copy).products["id"].iloc[0]
    bad = {  # one per rule: the loader's (as for train), then the store's
        "dup": {"id": "ok-0", "title": "same id as row 1", "image": "images/10000.png"},
        "title": {"id": "b-title", "title": "", "image": "images/10000.png"},
        "missing": {"id": "b-missing", "title": "gone", "image": "images/nope.png"},
        "outside": {"id": "b-outside", "title": "elsewhere", "image": "../x.png"},
        "chars": {"id": "../b", "title": "odd id", "image": "images/10000.png"},
        "photo": {"id": "b-photo", "title": "not a photo", "image": "not-a-photo.png"},
        "taken": {"id": catalogue_id, "title": "a catalogue id", "image": "images/10000.png"},
    }
    csv = new_products(tmp_path / "csv", tiny_demo_csv, 4, "ok", **bad)
    (csv.parent / "not-a-photo.png").write_bytes(b"hello")
    cmd = [sys.executable, "-m", "huse_core", "add", "--run", str(indexed_run_copy), "--catalog", str(csv), "--json"]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert set(result) == {"added", "skipped", "added_total", "resembling"}
    assert result["added"] == result["added_total"] == 4
    assert all(set(s) == {"row", "id", "title", "error"} for s in result["skipped"])
    errors = {s["row"]: s["error"] for s in result["skipped"]}
    assert sorted(errors) == list(range(5, 12))
    for row, text in zip(range(5, 12), ["duplicate id", "empty title", "missing image file images/nope.png",
                                        "outside the catalogue folder", "only letters", "not an image",
                                        "already used"]):
        assert text in errors[row], (row, errors[row])
    searcher = Searcher.open(indexed_run_copy)  # searchable at once, by a photo they share with the catalogue
    assert "ok-2" in {h.id for h in searcher.search(image=csv.parent / "images" / "10002.png", k=5)}

    assert main(["add", "--run", str(indexed_run_copy), "--catalog", str(csv), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"added 0 of 11 products to {indexed_run_copy} (4 added in all)")
    assert "skipped row 1 (id ok-0): id 'ok-0' is already used" in out


def test_add_without_an_index_says_to_build_it(tiny_trained_run, tiny_demo_csv, tmp_path, capsys):
    csv = new_products(tmp_path / "csv", tiny_demo_csv, 2, "n")
    assert main(["add", "--run", str(tiny_trained_run), "--catalog", str(csv)]) == 2
    err = capsys.readouterr().err
    assert f"python -m huse_core index --run {tiny_trained_run}" in err and "then `add` again" in err
    assert not (tiny_trained_run / "index").exists()
