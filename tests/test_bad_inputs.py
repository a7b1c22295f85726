"""The bad-input corpus (tests/bad_corpus.py) through the command line and the app's upload screens.

Every refused input must give one line naming the file, row or title and its problem, never a traceback; every
accepted one must give results; and the good inputs of the same call go on. A ledger counts what each check
saw and the module ends by printing the totals quoted in the README's "Bad input" section.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bad_corpus as bc

TINY = ["--cnn-width", "8", "--hidden", "64", "--dim", "32", "--conv-channels", "32", "--word-dim", "16"]
record = bc.record


@pytest.fixture(scope="module", autouse=True)
def ledger_report(request):
    """Prints the corpus size and what the checks saw, whatever -q or -s say."""
    bc.LEDGER.clear()
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    line = bc.ledger_summary(request.session.testsfailed)
    if line and reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # past pytest's capture, so -q runs show it too
            reporter.write_line("")
            reporter.write_line(line)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The image files written out, the titles, and a good photo and title to pair them with."""
    folder = tmp_path_factory.mktemp("bad_corpus")
    images = bc.images()
    for item in images:
        (folder / item.name).write_bytes(item.data)
    return {"dir": folder, "images": images, "titles": bc.titles(), "good_title": "Blue Striped Cotton Shirt"}


# ---------------------------------------------------------------- the command line


def cli(capsys, *argv) -> tuple[int, str, str]:
    from huse_core.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return code, out, err


def assert_refused(code: int, err: str, *fragments: str) -> None:
    """Exit status 2 and exactly one line, `error: ...`, holding every fragment (file name, problem)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


def test_cli_classify_and_search_each_image(corpus, tiny_indexed_run, capsys):
    good = corpus["good_title"]
    for item in corpus["images"]:
        path = corpus["dir"] / item.name
        runs = {
            "classify --image": ["classify", "--run", tiny_indexed_run, "--image", path, "--json"],
            "classify --image --text": ["classify", "--run", tiny_indexed_run, "--image", path, "--text", good,
                                        "--json"],
            "search --image": ["search", "--run", tiny_indexed_run, "--image", path, "-k", 3, "--json"],
        }
        for where, argv in runs.items():
            code, out, err = cli(capsys, *argv)
            record(item, f"cli {where}", item.refused)
            if item.refused:
                assert_refused(code, err, str(path), item.problem)
                continue
            assert code == 0, err
            result = json.loads(out)
            if where.startswith("search"):
                assert len(result) == 3 and all(-1.001 <= h["score"] <= 1.001 for h in result)
            else:
                modalities = {m for per in result.values() for m in per}
                assert modalities == ({"image", "text", "fused"} if "--text" in where else {"image"}), item.name
                assert all(per["image"][0]["label"] for per in result.values())


def test_cli_classify_and_search_each_title(corpus, tiny_indexed_run, capsys):
    photo = corpus["dir"] / "exif-rotated.jpg"  # accepted: a title goes with a photo
    for item in corpus["titles"]:
        title = item.data
        for where, argv in {"classify --text": ["classify", "--run", tiny_indexed_run, "--text", title, "--json"],
                            "search --text": ["search", "--run", tiny_indexed_run, "--text", title, "-k", 3, "--json"],
                            "search --target text": ["search", "--run", tiny_indexed_run, "--text", title,
                                                     "--target", "text", "--json"]}.items():
            code, out, err = cli(capsys, *argv)
            record(item, f"cli {where}", item.refused)
            if item.refused:
                lines = err.strip().splitlines()
                assert code == 2 and len(lines) == 1 and ("nothing to" in err or "empty query" in err), err
            else:
                assert code == 0, err
                assert json.loads(out), f"no result for the {item.name} title"
        # With a photo, an empty title is left out and the photo alone decides; other titles join it.
        code, out, err = cli(capsys, "classify", "--run", tiny_indexed_run, "--image", photo, "--text", title,
                             "--json")
        record(item, "cli classify --image --text", False)
        assert code == 0, err
        modalities = {m for per in json.loads(out).values() for m in per}
        assert modalities == ({"image"} if item.refused else {"image", "text", "fused"}), item.name


def test_cli_zero_shot_with_bad_titles_as_labels(corpus, tiny_indexed_run, capsys):
    """The titles as zero-shot labels: empty ones are dropped, the others ranked (commas would split them)."""
    labels = [t.data.replace(",", " ") for t in corpus["titles"]]
    code, out, err = cli(capsys, "classify", "--run", tiny_indexed_run, "--text", corpus["good_title"],
                         "--labels", ",".join(labels), "--json")
    assert code == 0, err
    ranked = [r["label"] for r in json.loads(out)]
    assert sorted(ranked) == sorted(x.strip() for x in labels if x.strip())


def test_accepted_images_decode_to_what_they_show(corpus):
    """Each accepted image's pixels, upright, in RGB on white: the checks that a wrong decode would fail."""
    from huse_core.data.images import decode_image

    red, blue, white = np.array(bc.RED), np.array(bc.BLUE), np.array((255, 255, 255))

    def px(out, y, x):
        return out[y, x].astype(int)

    def near(a, b, tol=30):
        return bool(np.all(np.abs(a - b) <= tol))

    out = {b.name: decode_image(corpus["dir"] / b.name, 64) for b in corpus["images"] if not b.refused}
    assert all(o.shape == (64, 64, 3) and o.dtype == np.uint8 for o in out.values())
    grey = round(40000 / 257)  # 16-bit scaled to 8 bits, not clipped to white
    assert near(px(out["16-bit.png"], 32, 32), np.array([grey] * 3), 2)
    assert near(px(out["cmyk.jpg"], 32, 32), red, 60)
    assert near(px(out["palette-transparent.png"], 32, 8), white, 5), "transparent half on white"
    assert near(px(out["palette-transparent.png"], 32, 56), red, 5)
    assert near(px(out["animated.gif"], 32, 32), red, 5), "the first frame"
    rot = out["exif-rotated.jpg"]  # stored sideways with EXIF orientation 6: red must be on top again
    assert near(px(rot, 8, 32), red) and near(px(rot, 56, 32), blue)
    assert near(px(rot, 32, 2), white) and near(px(rot, 32, 61), white), "tall photo padded left and right"
    wide = out["wide-12000px.jpg"]  # 12000 x 1600 -> 64 x 9: red left, blue right, white above and below
    assert near(px(wide, 32, 8), red) and near(px(wide, 32, 56), blue)
    assert near(px(wide, 8, 32), white) and near(px(wide, 56, 32), white)


def test_wide_photo_decodes_in_bounded_memory(corpus):
    """A 12000-px-wide JPEG is decoded at 1/8 scale: the decode's peak memory stays far below the 58 MB a
    full-size decode needs (measured in a fresh process, whose peak RSS is its own; without the 1/8 draft it
    grows by ~150 MB, with it by ~3 MB)."""
    pytest.importorskip("resource", reason="peak memory is read with the Unix resource module")
    full = bc.WIDE[0] * bc.WIDE[1] * 3
    probe = ("import resource, sys\nfrom huse_core.data.images import decode_image\n"
             "decode_image(sys.argv[1], 16)  # warm up: imports and Pillow's codecs\n"
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "out = decode_image(sys.argv[2], 64)\n"
             "print(out.shape, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", probe, str(corpus["dir"] / "cmyk.jpg"),
                           str(corpus["dir"] / "wide-12000px.jpg")], capture_output=True, text=True, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert done.returncode == 0, done.stderr
    shape, grew_kb = done.stdout.rsplit(" ", 1)
    assert shape == "(64, 64, 3)"
    assert int(grew_kb) * 1024 < full / 4, f"decode grew the process by {int(grew_kb) / 1024:.0f} MB"


# ---------------------------------------------------------------- training on a catalogue with every bad row


@pytest.fixture(scope="module")
def bad_catalogue(corpus, tiny_demo_csv, tmp_path_factory) -> dict:
    """The tiny demo shop's 240 good rows plus a row per corpus image, title and catalogue-row problem.

    "bad" maps each refused row (1-based, as the report counts) to (corpus item, fragments of its report line).
    """
    return bc.training_catalogue(corpus, tiny_demo_csv, tmp_path_factory.mktemp("bad_catalogue"))


def test_cli_train_skips_and_names_each_bad_row_and_trains_on_the_rest(bad_catalogue, tmp_path, capsys):
    import torch

    threads = torch.get_num_threads()
    try:
        code, out, err = cli(capsys, "train", "--catalog", bad_catalogue["csv"], "--out", tmp_path / "run",
                             "--epochs", 1, "--batch-size", 32, "--threads", 1, *TINY)
    finally:
        torch.set_num_threads(threads)  # train() sets it for the whole process
    assert code == 0, err
    bad, n = bad_catalogue["bad"], bad_catalogue["n"]
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["status"] == "done" and (tmp_path / "run" / "model.pt").is_file()
    assert meta["catalog_size"] == n - len(bad), "every good row (the odd titles and images too) is trained on"
    report = meta["load_report"]
    assert report in err, "the load report is printed"
    assert f"read {n:,} rows, kept {n - len(bad):,}, skipped {len(bad):,}" in report
    unreadable = sum(b.refused for b in bc.images())  # each refused photo of the corpus
    for reason, count in (("unreadable image", unreadable), ("empty title", 2),
                          ("image path outside the catalogue folder", 2),
                          ("missing image file", 1), ("duplicate id", 1), ("missing label articleType", 1)):
        assert f"skipped {count}: {reason}" in report
    named = [line for line in report.splitlines() if line.startswith("    ") and "…" not in line]
    unnamed = 0
    for item, fragments in bad.values():
        lines = [line for line in named if all(f in line for f in fragments)]
        assert len(lines) <= 1
        unnamed += not lines
        bc.LEDGER.append((item.kind, item.name, "cli train", "refused" if lines else "counted"))
    assert len(named) == min(10, len(bad)), "one line per bad row, the first 10 named"
    assert unnamed == len(bad) - len(named)
    if unnamed:
        assert f"… and {unnamed} more (counted above)" in report
    assert "articleType: 1 rare classes merged into 'other' (Kilts)" in report
    for item in bad_catalogue["items"]:
        if not item.refused:
            record(item, "cli train", False)


def test_cli_train_refuses_a_catalogue_without_a_title_column_or_that_is_not_csv(bad_catalogue, tmp_path, capsys):
    csv = bad_catalogue["csv"]
    no_title = csv.with_name("no-title.csv")
    pd.read_csv(csv, dtype=str).drop(columns=["title"]).to_csv(no_title, index=False)
    png = csv.with_name("photo-renamed.csv")
    png.write_bytes((csv.parent / "images" / "10000.png").read_bytes())
    for path, name in ((no_title, "missing column"), (png, "not a CSV (a PNG renamed .csv)")):
        item = bad_catalogue["whole_files"][name]
        code, _, err = cli(capsys, "train", "--catalog", path, "--out", tmp_path / path.stem, "--quiet")
        assert_refused(code, err, str(path), item.problem)
        assert not (tmp_path / path.stem / "model.pt").exists()
        record(item, "cli train", True)
    code, _, err = cli(capsys, "train", "--catalog", csv, "--out", tmp_path / "x", "--text-col", "name", "--quiet")
    assert_refused(code, err, str(csv), "title column 'name' not found", "columns are: id, image, title")
    record(bad_catalogue["whole_files"]["missing column"], "cli train --text-col", True)


# ---------------------------------------------------------------- the app's upload screens

MIME = {".jpg": "image/jpeg", ".png": "image/png", ".gif": "image/gif"}


@pytest.fixture(scope="module")
def bad_app_root(tiny_demo_csv, tiny_indexed_run, tmp_path_factory) -> Path:
    """The app's folder layout with the tiny shop and run, private to this module (it adds products)."""
    root = tmp_path_factory.mktemp("bad_app")
    shutil.copytree(tiny_demo_csv.parent, root / "data" / "demo")
    shutil.copytree(tiny_indexed_run, root / "runs" / "demo")
    return root


@pytest.fixture
def app(bad_app_root, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("HUSE_RUNS_DIR", str(bad_app_root / "runs"))
    monkeypatch.setenv("HUSE_DATA_DIR", str(bad_app_root / "data"))
    monkeypatch.delenv("HUSE_RUN", raising=False)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    return at.run()


def no_exception(at) -> None:
    assert not at.exception, "\n".join(str(e.value) + "\n" + "\n".join(e.stack_trace) for e in at.exception)


def rendered_markdown(at) -> list[str]:
    """The raw Markdown source of every element Streamlit would interpret (markdown, captions, messages)."""
    kinds = ("markdown", "caption", "info", "warning", "error", "success", "subheader", "title")
    return [str(e.value) for kind in kinds for e in getattr(at, kind)]


def assert_shown_as_text(at, title: str) -> None:
    """A title reaches the page verbatim through st.text, or escaped in Markdown: never as live markup."""
    raw = " ".join(title.split())
    for source in rendered_markdown(at):
        assert "<script>" not in source and "**bold**" not in source and "](http" not in source, source[:200]
        assert raw not in source or not any(c in raw for c in "*[]<>"), source[:200]


def test_app_classify_upload_of_every_image(app, corpus):
    images = corpus["images"]
    app.file_uploader(key="cls_files").set_value([(b.name, b.data, MIME[Path(b.name).suffix]) for b in images])
    app.run()
    no_exception(app)
    errors = [bc.plain(e.value) for e in app.error]
    for item in images:
        mine = [e for e in errors if item.name in e]
        record(item, "app Classify upload", bool(mine))
        if item.refused:
            assert len(mine) == 1 and item.problem in mine[0] and mine[0].startswith("Skipped "), (item.name, errors)
        else:
            assert not mine, mine
    assert len(errors) == sum(b.refused for b in images)
    cards = [m for m in app.markdown if m.value == "**Closest catalogue products**"]
    assert len(cards) == sum(not b.refused for b in images), "one result card per good photo"
    shown = [bc.plain(c.value) for c in app.caption]
    assert all(b.name in shown for b in images if not b.refused)


def test_app_classify_and_search_with_every_title(app, corpus):
    for item in corpus["titles"]:
        app.text_input(key="cls_title").input(item.data).run()
        no_exception(app)
        record(item, "app Classify title", item.refused)
        if item.refused:
            assert any("type a title" in i.value for i in app.info)
            continue
        assert [t.value for t in app.text] == [item.data.strip()], "the title is shown verbatim, as text"
        assert any(m.value == "**Closest catalogue products**" for m in app.markdown)
        assert_shown_as_text(app, item.data)
    app.switch_page("pages/search.py").run()
    for item in corpus["titles"]:
        app.text_input(key="search_text").input(item.data).run()
        no_exception(app)
        record(item, "app Search title", item.refused)
        if item.refused:
            assert any("Type a few words" in i.value for i in app.info)
            continue
        assert "Matching photos" in [s.value for s in app.subheader] and not app.error
        assert_shown_as_text(app, item.data)


def test_app_search_by_every_image(app, corpus):
    app.switch_page("pages/search.py").run()
    uploader = app.file_uploader(key="search_photo")
    for item in corpus["images"]:
        uploader.set_value((item.name, item.data, MIME[Path(item.name).suffix]))
        app.run()
        no_exception(app)
        errors = [bc.plain(e.value) for e in app.error]
        record(item, "app Search photo", bool(errors))
        if item.refused:
            assert len(errors) == 1 and item.name in errors[0] and item.problem in errors[0], errors
        else:
            assert not errors and "Matching photos" in [s.value for s in app.subheader], item.name
        uploader = app.file_uploader(key="search_photo")


def test_app_add_one_product_with_every_image(app, corpus):
    app.switch_page("pages/catalogue.py").run()
    for item in corpus["images"]:
        app.file_uploader(key="add_photo").set_value((item.name, item.data, MIME[Path(item.name).suffix]))
        app.text_input(key="add_title").input(corpus["good_title"])
        app.run()
        no_exception(app)
        errors = [bc.plain(e.value) for e in app.error]
        record(item, "app Catalogue add one", bool(errors))
        if item.refused:
            assert len(errors) == 1 and f"can't be used: {item.name}: " in errors[0] and item.problem in errors[0]
        else:
            assert not errors and app.button(key="add_one"), item.name


def test_app_add_many_with_bad_rows_and_a_bad_zip(app, corpus, bad_app_root):
    good_png = sorted((bad_app_root / "data" / "demo" / "images").glob("*.png"))[0].read_bytes()
    entries = bc.archive_entries(good_png)
    photos = [(b.name, b.data) for b in corpus["images"]] + [("good.png", good_png)]
    by_name = {b.name: b for b in bc.catalogue_rows()}
    rows, expect, items = [], [], []  # expect: the problem column, row by row ("" = ready to add)

    def add(item: bc.Bad | None, problem: str, **row) -> None:
        rows.append({"id": "", "title": corpus["good_title"], "image": "good.png", **row})
        expect.append(problem)
        items.append(item)

    for item in corpus["titles"]:  # first: the Browse grid below shows the first 12 added
        add(item, "empty title" if item.refused else "", title=item.data)
    for item in corpus["images"]:
        add(item, item.problem if item.refused else "", image=item.name)
    for item in entries:  # each refused from the zip, so its row has no photo
        add(item, "photo not in the zip (or refused)", image=item.name)
    add(by_name["missing image file"], "photo not in the zip (or refused)", image="not-in-the-zip.png")
    add(None, "", id="dup-1", title="First of two")  # a good row: the one after it clashes
    add(by_name["duplicate id"], "", id="dup-1", title="Second of two")  # refused when added: ids are checked then
    table = pd.DataFrame(rows).to_csv(index=False).encode()

    app.switch_page("pages/catalogue.py").run()
    app.file_uploader(key="bulk_csv").set_value(("products.csv", table, "text/csv"))
    app.file_uploader(key="bulk_zip").set_value(("photos.zip", bc.archive(entries, photos), "application/zip"))
    app.run()
    no_exception(app)
    preds = next(d.value for d in app.dataframe if "problem" in d.value.columns)
    got = [str(p) for p in preds["problem"]]
    assert len(got) == len(expect)
    for want, have, row in zip(expect, got, rows):
        assert (want in have) if want else have == "", (row["image"], row["title"][:40], have)
    zip_notes = "\n".join(t.value for t in app.text)
    for item in entries:
        assert f"{item.name}: refused" in zip_notes and item.problem in zip_notes, item.name
        record(item, "app Catalogue zip", True)
    n_ok = expect.count("")
    assert app.button(key="bulk_add").label.startswith(f"Add {n_ok} ")
    app.button(key="bulk_add").click().run()
    no_exception(app)
    assert any(f"Added {n_ok - 1} product(s)" in s.value for s in app.success)
    errors = [bc.plain(e.value) for e in app.error]
    assert len(errors) == 1 and "Second of two" in errors[0] and "already used" in errors[0], errors
    app.toggle(key="cat_only_new").set_value(True).run()  # the added products in the Browse tab's grid
    no_exception(app)
    captions = [bc.plain(c.value) for c in app.caption]
    for item in corpus["titles"]:
        if not item.refused:
            assert any(c.startswith(item.data[:40]) for c in captions), f"{item.name} title not in the grid"
            assert_shown_as_text(app, item.data)
    for item, problem, row in zip(items, expect, rows):
        if item is not None:
            record(item, "app Catalogue add many", bool(problem) or row["title"] == "Second of two")


def test_app_add_many_refuses_a_table_that_is_not_a_csv_or_lacks_columns(app, corpus, bad_app_root):
    photo = sorted((bad_app_root / "data" / "demo" / "images").glob("*.png"))[0].read_bytes()
    zipped = bc.zip_bytes([("good.png", photo)])
    app.switch_page("pages/catalogue.py").run()
    by_name = {b.name: b for b in bc.catalogue_rows()}
    for name, data, problem in (("renamed-photo.csv", photo, "binary file"),
                                ("no-image-column.csv", b"title,colour\nBlue shirt,blue\n",
                                 "needs a 'title' and an 'image' column")):
        app.file_uploader(key="bulk_csv").set_value((name, data, "text/csv"))
        app.file_uploader(key="bulk_zip").set_value(("photos.zip", zipped, "application/zip"))
        app.run()
        no_exception(app)
        errors = [bc.plain(e.value) for e in app.error]
        assert len(errors) == 1 and name in errors[0] and problem in errors[0], errors
        record(by_name["not a CSV (a PNG renamed .csv)" if "photo" in name else "missing column"],
               "app Catalogue add many", True)
