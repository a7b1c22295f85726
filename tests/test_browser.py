"""The app in a real browser: `streamlit run app.py` driven by Chromium through Playwright.

Needs `/usr/bin/chromium` (apt-get install chromium) and `pip install playwright` (no `playwright install`: the
system Chromium is used). Skipped, saying why, when either is missing. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from huse_core.app_server import streamlit_server

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("HUSE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
WAIT_MS = 60_000  # the first script run loads the model and the index

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver", allow_module_level=True)


@pytest.fixture(scope="session")
def app_root(tiny_demo_csv, tiny_indexed_run, tmp_path_factory) -> Path:
    """The same app folder as test_app.py: data/demo and runs/demo from conftest's tiny indexed run."""
    from test_app import app_folder

    return app_folder(tiny_demo_csv, tiny_indexed_run, tmp_path_factory)


@pytest.fixture(scope="module")
def server(app_root):
    env = {"HUSE_RUNS_DIR": str(app_root / "runs"), "HUSE_DATA_DIR": str(app_root / "data"), "HUSE_RUN": None}
    try:
        with streamlit_server(REPO / "app.py", env, log_path=app_root / "streamlit.log", timeout=60) as url:
            yield url
    except RuntimeError as err:  # it did not start: its log says why
        pytest.fail(str(err))


@pytest.fixture(scope="module")
def page(server):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(WAIT_MS)
        yield page
        browser.close()


def goto(page, server: str, path: str, title: str) -> None:
    page.goto(f"{server}/{path}")
    page.get_by_role("heading", name=title).wait_for()
    idle(page)


def idle(page) -> None:
    """Wait until Streamlit has finished the script run (its "running" indicator is gone)."""
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=WAIT_MS)


def no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
        '[data-testid="stException"]').first.inner_text()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_classify_a_photo_in_the_browser(page, server, app_root):
    goto(page, server, "", "Classify products")
    photo = sorted((app_root / "data" / "demo" / "images").glob("*.png"))[0]
    page.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(photo))
    page.get_by_text("Closest catalogue products").wait_for()
    page.locator('[data-testid="stProgress"]').nth(6).wait_for()  # a confidence bar per head (7 heads)
    idle(page)
    assert page.get_by_text("From the photo").first.is_visible()
    assert page.get_by_text("›").first.is_visible(), "the category path"
    no_exception(page)
    shot(page, "classify")


def test_search_by_title_in_the_browser(page, server):
    goto(page, server, "search", "Search the catalogue")
    box = page.get_by_label("Search by title")
    box.fill("blue jeans")
    box.press("Enter")
    page.get_by_text("Matching photos").wait_for()
    idle(page)
    assert page.get_by_text("score ").count() >= 4
    no_exception(page)
    shot(page, "search")


def test_neighbours_in_the_browser(page, server):
    goto(page, server, "neighbours", "Neighbours")
    page.get_by_role("button", name="Random").click()
    page.get_by_text("title → photo").wait_for()
    idle(page)
    no_exception(page)
    shot(page, "neighbours")


def test_map_box_selection_shows_the_selected_products(page, server):
    goto(page, server, "map", "Map of the shared space")
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for()
    page.locator('.modebar-btn[data-title="Box Select"]').first.click()
    drag = page.locator(".nsewdrag").first.bounding_box()
    x0, y0 = drag["x"] + drag["width"] * 0.05, drag["y"] + drag["height"] * 0.05
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + drag["width"] * 0.5, y0 + drag["height"] * 0.5, steps=12)
    page.mouse.move(drag["x"] + drag["width"] * 0.95, drag["y"] + drag["height"] * 0.95, steps=12)
    page.mouse.up()
    page.get_by_text("selected products").wait_for()
    page.locator('[data-testid="stDataFrame"]').first.wait_for()  # the selected products' table
    idle(page)
    assert page.get_by_role("button", name="Show its neighbours").is_visible(), "the photo panel of a selected product"
    assert page.locator('[data-testid="stImage"]').count() >= 6, "the selected products' photo grid"
    no_exception(page)
    shot(page, "map")


def test_catalogue_and_train_pages_in_the_browser(page, server):
    goto(page, server, "catalogue", "Catalogue")
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    no_exception(page)
    shot(page, "catalogue")
    goto(page, server, "train", "Train & evaluate")
    page.get_by_role("tab", name="Evaluation").click()
    page.get_by_text("Confusion matrix").wait_for()
    idle(page)
    no_exception(page)
    shot(page, "train")


def test_added_product_appears_and_its_markup_title_stays_text(page, server, app_root):
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    goto(page, server, "catalogue", "Catalogue")
    page.get_by_role("tab", name="Add one product").click()
    photo = sorted((app_root / "data" / "demo" / "images").glob("*.png"))[9]
    page.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(photo))
    page.get_by_text("Both a photo and a title are needed").wait_for()  # the upload's rerun is over
    title = '<img src=x onerror="alert(1)"> **Sale** [deal](http://example.test) Red Shirt'
    box = page.get_by_role("textbox", name="Title", exact=True)
    box.fill(title)
    box.press("Enter")
    page.get_by_role("button", name="Add to the catalogue").click()
    page.get_by_text("Added 1 product").wait_for()
    idle(page)
    goto(page, server, "neighbours", "Neighbours")
    box = page.get_by_role("textbox", name="Find a product", exact=True)
    box.fill("onerror")
    box.press("Enter")
    page.get_by_role("heading", name=title).wait_for()  # the whole title, literally, as the heading
    page.get_by_text("title → photo").wait_for()
    idle(page)
    assert page.locator('img[src="x"]').count() == 0 and not dialogs, "a title must never become HTML"
    assert page.locator('a[href*="example.test"]').count() == 0, "nor a link"
    no_exception(page)
    shot(page, "added-product")
