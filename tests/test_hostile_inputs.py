"""Hostile uploads and damaged files through the command line and the app's helpers: photos in formats that run
other programs, ids that overflow, formula cells, a full disk, tampered run files and stores, planted links, zip
tricks, the encodings shops export in, and an interrupted `add` run again. Each ends in one line naming the file
and the fix, with nothing written outside the run and nothing half-written."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import bad_corpus as bc

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def cli(capsys, *argv) -> tuple[int, str, str]:
    from huse_core.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return code, out, err


def one_error(code: int, err: str, *fragments: str) -> str:
    """Exit status 2 and one line, `error: ...`, holding every fragment."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def shop(folder: Path, demo_csv: Path, rows: list[dict], name: str = "new.csv") -> Path:
    """A CSV of new products in `folder` (photo names a.png, b.png, ... copied from the demo shop)."""
    folder.mkdir(parents=True, exist_ok=True)
    demo = sorted((demo_csv.parent / "images").glob("*.png"))
    for i, row in enumerate(rows):
        if not (folder / row["image"]).exists():
            (folder / row["image"]).write_bytes(demo[i % len(demo)].read_bytes())
    path = folder / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def stored(run_dir: Path) -> list[str]:
    from huse_core.retrieval.layout import added_path, index_dir

    with sqlite3.connect(added_path(index_dir(run_dir))) as con:
        return [r[0] for r in con.execute("SELECT id FROM added ORDER BY seq")]


# ---------------------------------------------------------------- 1. formats that run other programs


def test_eps_and_pdf_named_png_are_refused_without_starting_ghostscript(tmp_path, tiny_indexed_run):
    """A fake `gs` first on PATH leaves a marker if anything starts it: the CLI and the app's upload check."""
    bin_dir, marker = tmp_path / "bin", tmp_path / "gs-ran"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\nexit 1\n")
    (bin_dir / "gs").chmod(0o755)
    env = {**ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for name, data, fmt in (("ps.png", bc.EPS, "EPS"), ("pdf.png", bc.PDF, "PDF"),
                            ("binary-eps.jpg", b"\xc5\xd0\xd3\xc6" + b"\0" * 28 + bc.EPS, "EPS")):
        photo = tmp_path / name
        photo.write_bytes(data)
        proc = subprocess.run([sys.executable, "-m", "huse_core", "classify", "--run", str(tiny_indexed_run),
                               "--image", str(photo)], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert f"format {fmt} is not accepted" in proc.stderr and str(photo) in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    check = ("import sys; from huse_core.data import uploads; from pathlib import Path\n"
             "print(uploads.check_image(Path(sys.argv[1]).read_bytes(), 'upload.png'))")
    proc = subprocess.run([sys.executable, "-c", check, str(tmp_path / "ps.png")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert "format EPS is not accepted" in proc.stdout, proc.stdout + proc.stderr
    assert not marker.exists(), marker.read_text()


# ---------------------------------------------------------------- 2. ids are text


def test_huge_new_n_ids_are_text_and_later_automatic_ids_still_work(tmp_path, indexed_run_copy, tiny_demo_csv,
                                                                     capsys):
    big = "new-" + "9" * 60
    given = shop(tmp_path / "a", tiny_demo_csv, [
        {"id": big, "title": "Blue denim jacket", "image": "a.png"},
        {"id": "new-9223372036854775807", "title": "Red wool scarf", "image": "b.png"},
        {"id": "new-999999999999999", "title": "Green canvas tote", "image": "c.png"}])
    code, out, err = cli(capsys, "add", "--run", indexed_run_copy, "--catalog", given, "--json")
    assert code == 0 and json.loads(out)["added"] == 3, err
    auto = shop(tmp_path / "b", tiny_demo_csv, [{"title": f"Plain grey tee {i}", "image": f"{i}.png"}
                                                for i in range(3)])
    for _ in range(2):  # automatic ids past the largest new-N: never an overflow, never a taken id
        code, out, err = cli(capsys, "add", "--run", indexed_run_copy, "--catalog", auto, "--json")
        assert code == 0, err
    ids = stored(indexed_run_copy)
    assert ids[:3] == [big, "new-9223372036854775807", "new-999999999999999"]
    assert len(ids) == 6 and len(set(ids)) == 6 and all(i.startswith("new-") for i in ids[3:])
    code, out, err = cli(capsys, "search", "--run", indexed_run_copy, "--product", big, "-k", 2, "--json")
    assert code == 0, err


# ---------------------------------------------------------------- 3. formula cells


def test_every_csv_written_is_formula_safe_under_pandas_string_dtypes(tmp_path):
    from huse_core.data.csvtext import csv_bytes, write_csv

    cells = ["=HYPERLINK(\"http://e\")", "+1", "-2", "@SUM(A1)", "\t=1", "\r=1", "plain", None]
    for dtype in ("str", "string", object, "category"):
        table = pd.DataFrame({"title": pd.Series(cells, dtype=dtype), "n": range(len(cells))})
        back = list(csv.reader(io.StringIO(csv_bytes(table).decode("utf-8"), newline="")))
        assert [r[0] for r in back[1:8]] == ["'" + c for c in cells[:6]] + ["plain"], dtype
        assert [r[1] for r in back[1:]] == [str(i) for i in range(len(cells))]
    path = write_csv(pd.DataFrame({"=cmd": pd.Series(["-3"], dtype="str")}), tmp_path / "out.csv")
    assert path.read_text(encoding="utf-8").splitlines() == ["\"'=cmd\"", "\"'-3\""]


# ---------------------------------------------------------------- 4. errors as one line


def test_a_full_disk_ends_add_in_one_line_with_nothing_half_written(tmp_path, indexed_run_copy, tiny_demo_csv):
    """RLIMIT_FSIZE in a child: every write past 4 KiB fails as a full disk would (EFBIG)."""
    from huse_core.retrieval.layout import DELTA, index_dir

    csv = shop(tmp_path / "new", tiny_demo_csv, [{"title": f"Blue shirt {i}", "image": f"{i}.png"}
                                                  for i in range(4)])
    limit = textwrap.dedent("""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
        from huse_core.cli import main
        sys.exit(main(sys.argv[2:]))""")
    proc = subprocess.run([sys.executable, "-c", limit, str(4 << 10), "add", "--run", str(indexed_run_copy),
                           "--catalog", str(csv), "--quiet"], env=ENV, capture_output=True, text=True, timeout=600)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "free" in lines[0] and str(index_dir(indexed_run_copy)) in lines[0], lines[0]
    delta = index_dir(indexed_run_copy) / DELTA
    leftovers = [p.name for p in (delta / "images").glob("*")] if (delta / "images").is_dir() else []
    assert leftovers == [], leftovers  # no staged photo left behind
    if (delta / "added.sqlite").exists():
        assert stored(indexed_run_copy) == []


def test_tampered_run_and_index_files_end_in_one_line(tmp_path, tiny_indexed_run, capsys):
    import shutil

    for name, body, fragment in (("run.json", "[1, 2]", "holds a JSON list"),
                                 ("run.json", "{not json", "is not valid JSON"),
                                 ("run.json", "drop data", "has no data section"),
                                 ("index/index.json", "\x00\x01garbage", "the index is damaged"),
                                 ("index/index.json", '"a string"', "the index is damaged")):
        run = Path(shutil.copytree(tiny_indexed_run, tmp_path / f"run-{len(list(tmp_path.iterdir()))}"))
        target = run / name
        if body == "drop data":
            meta = json.loads(target.read_text())
            del meta["data"]
            body = json.dumps(meta)
        target.write_text(body)
        for argv in (["search", "--run", run, "--text", "blue shirt"], ["index", "--run", run]):
            if name == "index/index.json" and argv[0] == "index":
                continue  # a new build replaces a damaged index
            code, _, err = cli(capsys, *argv)
            line = one_error(code, err, fragment)
            assert str(target) in line or str(run) in line, line


def test_a_locked_store_ends_add_in_one_line(tmp_path, indexed_run_copy, tiny_demo_csv, capsys, monkeypatch):
    from huse_core.retrieval import store
    from huse_core.retrieval.layout import added_path, index_dir

    csv = shop(tmp_path / "new", tiny_demo_csv, [{"title": "Blue shirt", "image": "a.png"}])
    code, _, err = cli(capsys, "add", "--run", indexed_run_copy, "--catalog", csv, "--quiet")
    assert code == 0, err
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.2)
    other = shop(tmp_path / "other", tiny_demo_csv, [{"title": "Red shirt", "image": "b.png"}])
    holder = sqlite3.connect(added_path(index_dir(indexed_run_copy)), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        code, _, err = cli(capsys, "add", "--run", indexed_run_copy, "--catalog", other, "--quiet")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    one_error(code, err, "added.sqlite is busy", "run this again")


# ---------------------------------------------------------------- 5. damaged stores and planted links


@pytest.mark.parametrize("content", [b"", b"this is not a database" * 100, b"SQLite format 3\x00" + b"\xff" * 4080],
                         ids=["empty", "not-sqlite", "damaged-pages"])
def test_a_damaged_store_is_named_before_sqlite_reads_it(tmp_path, indexed_run_copy, tiny_demo_csv, capsys,
                                                         content):
    from huse_core.retrieval.layout import added_path, index_dir

    path = added_path(index_dir(indexed_run_copy))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    csv = shop(tmp_path / "new", tiny_demo_csv, [{"title": "Blue shirt", "image": "a.png"}])
    for argv in (["add", "--run", indexed_run_copy, "--catalog", csv], ["search", "--run", indexed_run_copy,
                                                                          "--text", "shirt"],
                 ["index", "--run", indexed_run_copy]):
        code, _, err = cli(capsys, *argv)
        one_error(code, err, str(path), "move it away")
    assert path.read_bytes() == content


def test_planted_links_never_make_add_write_outside_the_run(tmp_path, indexed_run_copy, tiny_demo_csv, capsys):
    from huse_core.retrieval.layout import added_path, added_photo_path, index_dir

    out = index_dir(indexed_run_copy)
    victim = tmp_path / "victim.sqlite"
    victim.write_bytes(b"precious")
    store = added_path(out)
    store.parent.mkdir(parents=True, exist_ok=True)
    store.symlink_to(victim)
    csv = shop(tmp_path / "new", tiny_demo_csv, [{"title": "Blue shirt", "image": "a.png"}])
    code, _, err = cli(capsys, "add", "--run", indexed_run_copy, "--catalog", csv)
    one_error(code, err, str(store), "symbolic link")
    assert victim.read_bytes() == b"precious"
    store.unlink()

    photo_victim = tmp_path / "victim.png"
    photo_victim.write_bytes(b"precious")
    slot = added_photo_path(out, "new-1")
    slot.parent.mkdir(parents=True, exist_ok=True)
    slot.symlink_to(photo_victim)  # the slot the first automatic id's photo goes to
    code, out_text, err = cli(capsys, "add", "--run", indexed_run_copy, "--catalog", csv, "--json")
    assert code == 0 and json.loads(out_text)["added"] == 1, err
    assert photo_victim.read_bytes() == b"precious" and not slot.is_symlink()

    outside = tmp_path / "outside-images"
    outside.mkdir()
    images = slot.parent
    for p in images.iterdir():
        p.unlink()
    images.rmdir()
    images.symlink_to(outside, target_is_directory=True)
    csv2 = shop(tmp_path / "new2", tiny_demo_csv, [{"title": "Red shirt", "image": "b.png"}])
    code, _, err = cli(capsys, "add", "--run", indexed_run_copy, "--catalog", csv2)
    one_error(code, err, "symbolic link")
    assert list(outside.iterdir()) == []


# ---------------------------------------------------------------- 6. zip uploads


def test_zip_name_clash_long_names_and_many_small_bombs(tmp_path):
    from huse_core.data import uploads

    good = bc._save(bc.photo(2), "PNG")
    entries = bc.archive_entries(good)
    data = bc.archive(entries, [("good.png", good)])
    result = uploads.safe_extract(data, tmp_path / "one")
    assert set(result.files) == {"good.png"}
    for item in entries:
        assert any(p.startswith(item.name[:60]) and item.problem in p for p in result.problems), item.name
    assert all(len(p.splitlines()) == 1 for p in result.problems)

    bombs = bc.zip_bytes(bc.small_bombs(64) + [("good.png", good)])  # 64 MiB of zeros in a ~70 KB zip
    result = uploads.safe_extract(bombs, tmp_path / "two")
    written = sum(p.stat().st_size for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert written <= 100 * len(bombs) + (1 << 20), written  # the whole archive's ratio cap
    assert sum("contents exceed" in p for p in result.problems) >= 40, result.problems[:3]
    assert not [p for p in (tmp_path / "two").rglob(".*part")]


def test_upload_folders_are_deleted_when_no_longer_needed(tmp_path):
    import time

    from huse_core.data import uploads

    old, fresh = tmp_path / "old", tmp_path / "fresh"
    for folder in (old, fresh):
        folder.mkdir()
        (folder / "x.png").write_bytes(b"x")
    week = time.time() - 7 * 86400
    os.utime(old, (week, week))
    assert uploads.sweep(tmp_path) == [old]
    assert not old.exists() and fresh.exists()
    uploads.discard(fresh)
    assert not fresh.exists()


# ---------------------------------------------------------------- 7. encodings and separators


def test_tables_in_the_encodings_shops_export_are_added_right(tmp_path, indexed_run_copy, tiny_demo_csv, capsys):
    from huse_core.retrieval.store import read_added

    folder = tmp_path / "shop"
    shop(folder, tiny_demo_csv, [{"id": i, "title": t, "image": im} for i, t, im in bc.TABLE_ROWS], "seed.csv")
    titles = {i: t for i, t, _ in bc.TABLE_ROWS}
    for n, item in enumerate(bc.tables()):
        (folder / item.name).write_bytes(item.data.replace(b"sku-", f"t{n}-".encode()) if "16" not in item.name
                                         else item.data.decode("utf-16").replace("sku-", f"t{n}-").encode(
                                             "utf-16-le" if "no-bom" in item.name else "utf-16"))
        code, out, err = cli(capsys, "add", "--run", indexed_run_copy, "--catalog", folder / item.name, "--json")
        assert code == 0, (item.name, err)
        result = json.loads(out)
        if item.refused:
            assert result["added"] == 2 and len(result["skipped"]) == 1, (item.name, result)
            skipped = result["skipped"][0]
            assert skipped["row"] == 3 and "not UTF-8" in skipped["error"], skipped
        else:
            assert result["added"] == 3 and not result["skipped"], (item.name, result)
    added, *_ = read_added(Path(indexed_run_copy) / "index", 32)
    got = dict(zip(added["id"], added["title"]))
    for n, item in enumerate(bc.tables()):
        for sku, title in titles.items():
            pid = sku.replace("sku-", f"t{n}-")
            if item.refused and sku == "sku-3":
                assert pid not in got
            else:
                assert got.get(pid) == title, (item.name, pid, got.get(pid))  # given ids kept, text right


def test_app_table_reader_reports_the_bad_row_not_a_latin1_reread():
    from huse_core.data.tables import read_table

    mixed = next(t for t in bc.tables() if t.refused)
    table = read_table(mixed.data, mixed.name, missing_as_nan=False)
    assert table["title"][0] == "Café crème T-shirt – 20 €"  # not "CafÃ©": the file stays UTF-8
    assert list(table.attrs["bad_rows"]) == [2]
    with pytest.raises(ValueError, match="utf16-broken.csv"):
        read_table(b"\xff\xfe" + "id,title\r\n1,x".encode("utf-16-le") + b"\x00", "utf16-broken.csv")


# ---------------------------------------------------------------- 8. interrupting add, then running it again


def test_interrupted_add_says_what_was_stored_and_a_rerun_adds_each_row_once(tmp_path, indexed_run_copy,
                                                                            tiny_demo_csv, capsys, monkeypatch):
    from huse_core.retrieval import adding

    monkeypatch.setattr(adding, "ADD_BATCH", 3)
    csv = shop(tmp_path / "new", tiny_demo_csv, [{"title": f"Wool scarf {i}", "image": f"{i}.png"}
                                                  for i in range(8)])
    real, calls = adding.add_products, []

    def cut_off(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(adding, "add_products", cut_off)
    code, _, err = cli(capsys, "add", "--run", indexed_run_copy, "--catalog", csv, "--quiet")
    assert code == 130 and "train --resume" not in err, err
    assert "3 products" in err and "up to row 3" in err and "again" in err, err
    assert len(stored(indexed_run_copy)) == 3
    monkeypatch.setattr(adding, "add_products", real)
    code, out, err = cli(capsys, "add", "--run", indexed_run_copy, "--catalog", csv, "--json")
    result = json.loads(out)
    assert code == 0 and result["added"] == 5 and result["added_total"] == 8, result
    assert [s["row"] for s in result["skipped"]] == [1, 2, 3]
    assert all("already added as new-" in s["error"] for s in result["skipped"])
    ids = stored(indexed_run_copy)
    assert len(ids) == 8 and len(set(ids)) == 8


# ---------------------------------------------------------------- the app


def test_app_explains_a_damaged_store_and_deletes_replaced_uploads(tmp_path, tiny_demo_csv, tiny_indexed_run,
                                                                   monkeypatch):
    import shutil

    from streamlit.testing.v1 import AppTest

    from huse_core.retrieval.layout import added_path, index_dir

    root = tmp_path / "app"
    shutil.copytree(tiny_demo_csv.parent, root / "data" / "demo")
    shutil.copytree(tiny_indexed_run, root / "runs" / "demo")
    store = added_path(index_dir(root / "runs" / "demo"))
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_bytes(b"not a database" * 50)
    monkeypatch.setenv("HUSE_RUNS_DIR", str(root / "runs"))
    monkeypatch.setenv("HUSE_DATA_DIR", str(root / "data"))
    monkeypatch.delenv("HUSE_RUN", raising=False)
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    app.switch_page("pages/catalogue.py").run()
    assert not app.exception, [e.value for e in app.exception]
    errors = [bc.plain(e.value) for e in app.error]
    assert any("added.sqlite can't be read as the added-products store" in e and "move it away" in e
               for e in errors), errors

    store.unlink()  # a new session on a sound store: add-many uploads, one replaced by another
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    app.switch_page("pages/catalogue.py").run()
    photo = sorted((root / "data" / "demo" / "images").glob("*.png"))[0].read_bytes()
    table = b"title,image\nBlue shirt,a.png\n"
    app.file_uploader(key="bulk_csv").set_value(("t.csv", table, "text/csv"))
    app.file_uploader(key="bulk_zip").set_value(("one.zip", bc.zip_bytes([("a.png", photo)]), "application/zip"))
    app.run()
    assert not app.exception
    first = Path(app.session_state["bulk_folder"])
    assert (first / "a.png").is_file()
    app.file_uploader(key="bulk_zip").set_value(("two.zip", bc.zip_bytes([("a.png", photo[::-1][::-1])]),
                                                 "application/zip"))
    app.run()
    second = Path(app.session_state["bulk_folder"])
    assert second != first and not first.exists() and (second / "a.png").is_file()
    app.button(key="bulk_add").click().run()
    assert any("Added 1 product" in s.value for s in app.success)
    app.button(key="bulk_add").click().run()  # a second click adds nothing twice
    assert not app.success and any("already added as new-1" in bc.plain(e.value) for e in app.error)
