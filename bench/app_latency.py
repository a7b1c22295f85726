"""App latency through the running server: Search (title -> photo grid) and Classify (title or photo -> labels).

    python bench/app_latency.py --run runs/demo --n 20          # the demo shop (smoke check)
    python bench/app_latency.py --run runs/real --n 50          # the real 44k catalogue (the < 300 ms p50 goal)

Starts `streamlit run app.py` on 127.0.0.1 with HUSE_RUN=<run>, drives Debian's Chromium with Playwright, warms up
(the first script run loads the model and the index), then times each action from the keypress or upload until the
answer for that query is on screen: the photo grid's first titles are the ones `Searcher.search` gives in this
process, or the result card shows this title / photo with the expected label heading and a confidence bar per head.
Only elements Streamlit has not marked stale (data-stale="true") count, and each repetition uses another catalogue
title or photo, chosen so that the page can't show the expected answer before the query is sent. "Run over" is
when no element is stale any more (the whole page redrawn). The Searcher calls the page makes are also timed
in-process (with the server idle), so a reader sees how much is the model and the index, and how much Streamlit.
Writes bench/results/app_latency/<variant>.json (default: the catalogue's size, e.g. 44k) and prints a Markdown
table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT as REPO
from common import write_result

CHROMIUM = os.environ.get("HUSE_CHROMIUM") or "/usr/bin/chromium"
WAIT_MS = 60_000  # a single answer slower than this is a failure, not a latency
SEARCH_K = 12  # the Search page's default "Results"
CLASSIFY_K = 6  # nearest products on a Classify card
SHOWN = 3  # grid titles that must match the expected hits (more than one: catalogues repeat titles)

FRESH = '[data-testid="stElementContainer"]:not([data-stale="true"])'
NORM = "const norm = t => (t || '').replace(/\\u200b/g, '').replace(/\\s+/g, ' ').trim();"
# The first SHOWN photo-grid captions (titles; score lines skipped) of this script run are the expected titles.
GRID_SHOWS = "(expected) => {" + NORM + f"""
  const caps = [...document.querySelectorAll('{FRESH} [data-testid="stCaptionContainer"]')]
    .map(e => norm(e.textContent)).filter(t => !t.startsWith('score '));
  for (let i = 0; i + expected.length <= caps.length; i++)
    if (expected.every((t, j) => caps[i + j] === t)) return true;
  return false; }}"""
# A result card of this run: the query's title (st.text) or photo name (caption), the expected heading, and a bar
# per head.
CARD_SHOWS = "(want) => {" + NORM + f"""
  const fresh = sel => [...document.querySelectorAll('{FRESH} ' + sel)];
  const marker = fresh(want.photo ? '[data-testid="stCaptionContainer"]' : '[data-testid="stText"]')
    .some(e => norm(e.textContent) === want.marker);
  const heading = fresh('h4').some(e => norm(e.textContent) === want.heading);
  return marker && heading && fresh('[data-testid="stProgress"]').length >= want.bars; }}"""
# Classify with nothing to classify: its hint is on screen, no result card and no photo in the uploader.
CLASSIFY_EMPTY = f"""() => [...document.querySelectorAll('{FRESH} [data-testid="stAlert"]')]
    .some(e => e.textContent.includes('Upload a product photo or type a title'))
  && !document.querySelector('[data-testid="stMain"] h4') && !document.querySelector('[data-testid="stFileChip"]')
  && !document.querySelector('[data-testid="stStatusWidget"]')"""
SETTLED = """() => !document.querySelector('[data-testid="stStatusWidget"]')
  && !document.querySelector('[data-testid="stElementContainer"][data-stale="true"]')"""


def norm(text: str) -> str:
    return " ".join(str(text).replace("\u200b", "").split())


def short(text, n: int = 80) -> str:
    """A title as a grid card shows it (ui.short; importing ui here would start Streamlit's caches)."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - t) * 1000


def plan(searcher, n: int, seed: int) -> dict:
    """Distinct queries with what the page must show for each, and the page's Searcher calls timed in-process."""
    products = searcher.products
    products = products[~products["added"].astype(bool)]
    rng = np.random.default_rng(seed)
    leaf = ([h["name"] for h in searcher.heads if h.get("level") is not None] or [searcher.heads[0]["name"]])[-1]
    bars = len(searcher.heads)
    searcher.search(text=str(products["title"].iloc[0]), k=SEARCH_K)  # first calls compile and page in
    searcher.classify(text=str(products["title"].iloc[0]))
    titles = list(dict.fromkeys(products["title"].astype(str).iloc[rng.permutation(len(products))]))
    search, classify_title, shown = [], [], []
    for title in titles:
        if len(search) == n:
            break
        hits, ms_img = timed(searcher.search, text=title, target="image", k=SEARCH_K)
        grid = [norm(short(h.title, 80)) for h in hits]
        expected = grid[:SHOWN]
        if any(shown[i : i + SHOWN] == expected for i in range(len(shown))):
            continue  # the previous query's grid already shows these titles: the wait could end before the answer
        shown = grid
        _, ms_txt = timed(searcher.search, text=title, target="text", k=SEARCH_K)
        search.append({"query": title, "expected": expected, "server_ms": ms_img + ms_txt})
        pred, ms_cls = timed(searcher.classify, text=title, top=3)
        _, ms_near = timed(searcher.search, text=title, target="image", k=CLASSIFY_K)
        classify_title.append({"query": title, "want": {"photo": False, "marker": norm(title), "bars": bars,
                                                        "heading": norm(pred[leaf]["text"][0]["path"])},
                               "server_ms": ms_cls + ms_near})
    photos = [p for p in products["image"].astype(str).iloc[rng.permutation(len(products))] if Path(p).is_file()]
    photos = list({Path(p).name: p for p in photos}.values())[:n]  # the card names a photo by its file name
    classify_photo = []
    for path in photos:
        data = Path(path).read_bytes()
        pred, ms_cls = timed(searcher.classify, image=data, top=3)
        _, ms_near = timed(searcher.search, image=data, target="image", k=CLASSIFY_K)
        classify_photo.append({"query": path, "want": {"photo": True, "marker": Path(path).name, "bars": bars,
                                                       "heading": norm(pred[leaf]["image"][0]["path"])},
                               "server_ms": ms_cls + ms_near})
    return {"search": search, "classify_title": classify_title, "classify_photo": classify_photo}


def settle(page) -> None:
    page.wait_for_timeout(100)  # the script run starts over the websocket; let it begin before checking it ended
    page.wait_for_function(SETTLED, timeout=WAIT_MS)


def answer(page, act, js: str, arg) -> tuple[float, float]:
    """(ms until the expected answer is on screen, ms until the script run is over) after `act()`."""
    t = time.perf_counter()
    act()
    page.wait_for_function(js, arg=arg, polling="raf", timeout=WAIT_MS)
    shown = (time.perf_counter() - t) * 1000
    page.wait_for_function(SETTLED, polling="raf", timeout=WAIT_MS)
    return shown, (time.perf_counter() - t) * 1000


def measure(page, url: str, queries: dict, warmup: int, shots: Path | None) -> tuple[dict, dict]:
    """Drive the pages; returns ({action: [(shown_ms, settled_ms) | None per query]}, first-load seconds)."""
    results, first = {}, {}

    def run_all(name: str, items: list, act_for, js: str, arg_for) -> None:
        out = []
        for i, item in enumerate(items):
            try:
                timing = answer(page, act_for(item), js, arg_for(item))
            except Exception as err:  # noqa: BLE001 - one missed answer is reported and the run goes on
                print(f"{name}: no answer for {item['query']!r}: {str(err).splitlines()[0]}", file=sys.stderr)
                timing = None
                if shots:
                    page.screenshot(path=str(shots / f"app_latency-miss-{name}-{i}.png"), full_page=True)
                settle(page)
            if i >= warmup:
                out.append(timing)
        results[name] = out

    t = time.perf_counter()
    page.goto(f"{url}/search")
    page.get_by_role("heading", name="Search the catalogue").wait_for()
    page.get_by_role("textbox", name="Search by title", exact=True).wait_for()
    first["search_page_s"] = round(time.perf_counter() - t, 2)  # the model and the index load here
    settle(page)
    box = page.get_by_role("textbox", name="Search by title", exact=True)

    def type_into(target):
        return lambda item: (lambda: (target.fill(item["query"]), target.press("Enter")))

    run_all("search", queries["search"], type_into(box), GRID_SHOWS, lambda item: item["expected"])

    t = time.perf_counter()
    page.goto(url)
    page.get_by_role("heading", name="Classify products").wait_for()
    first["classify_page_s"] = round(time.perf_counter() - t, 2)
    settle(page)
    title = page.get_by_role("textbox", name="Product title", exact=True)
    run_all("classify_title", queries["classify_title"], type_into(title), CARD_SHOWS, lambda item: item["want"])
    title.fill("")
    title.press("Enter")
    page.wait_for_function(CLASSIFY_EMPTY, polling="raf", timeout=WAIT_MS)
    upload = page.locator('[data-testid="stFileUploader"] input[type="file"]').first

    def photo_act(item):
        remove = page.locator('[data-testid="stFileChipDeleteBtn"] button, button[data-testid="stFileChipDeleteBtn"]')
        while remove.count():  # the uploader keeps earlier photos: one card per query
            remove.first.click()
            page.wait_for_timeout(100)
        page.wait_for_function(CLASSIFY_EMPTY, polling="raf", timeout=WAIT_MS)
        return lambda: upload.set_input_files(item["query"])

    run_all("classify_photo", queries["classify_photo"], photo_act, CARD_SHOWS, lambda item: item["want"])
    if page.locator('[data-testid="stException"]').count():
        print("the page shows an exception: " + page.locator('[data-testid="stException"]').first.inner_text()[:300],
              file=sys.stderr)
    return results, first


ACTIONS = {"search": "Search: title → photo grid", "classify_title": "Classify: title → labels",
           "classify_photo": "Classify: photo → labels"}


def summarise(results: dict, queries: dict, warmup: int) -> dict:
    out = {}
    for name, timings in results.items():
        ok = [t for t in timings if t is not None]
        shown, settled = np.array([t[0] for t in ok]), np.array([t[1] for t in ok])
        server = np.array([q["server_ms"] for q in queries[name][warmup:]])
        pct = lambda a, p: round(float(np.percentile(a, p)), 1) if len(a) else None  # noqa: E731
        out[name] = {"label": ACTIONS[name], "n": len(ok), "failures": len(timings) - len(ok),
                     "p50_ms": pct(shown, 50), "p95_ms": pct(shown, 95), "settled_p50_ms": pct(settled, 50),
                     "settled_p95_ms": pct(settled, 95), "server_p50_ms": pct(server, 50),
                     "server_p95_ms": pct(server, 95), "shown_ms": [round(float(x), 1) for x in shown],
                     "settled_ms": [round(float(x), 1) for x in settled],
                     "queries": [q["query"] for q in queries[name][warmup:]]}
    return out


def table(report: dict) -> str:
    lines = ["| action | n | on screen p50 | p95 | run over p50 | in-process Searcher p50 |",
             "|---|---:|---:|---:|---:|---:|"]
    for a in report["actions"].values():
        fail = f" ({a['failures']} missed)" if a["failures"] else ""
        lines.append(f"| {a['label']} | {a['n']}{fail} | {a['p50_ms']} ms | {a['p95_ms']} ms "
                     f"| {a['settled_p50_ms']} ms | {a['server_p50_ms']} ms |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="an indexed run folder (python -m huse_core index --run RUN)")
    p.add_argument("--n", type=int, default=20, help="timed repetitions per action, each with another query")
    p.add_argument("--warmup", type=int, default=3, help="untimed repetitions first (caches, lazy imports)")
    p.add_argument("--port", type=int, default=0, help="server port on 127.0.0.1 (0: a free one)")
    p.add_argument("--seed", type=int, default=0, help="which catalogue titles and photos are the queries")
    p.add_argument("--variant", help="the result's name: bench/results/app_latency/VARIANT.json, overwritten on a "
                   "rerun (default: the catalogue's size, e.g. 44k or 3k)")
    p.add_argument("--shots", help="folder for a screenshot of each missed answer (default: none)")
    args = p.parse_args(argv)
    run_dir = Path(args.run).expanduser().resolve()
    if args.n < 1 or args.warmup < 0:
        print("--n must be at least 1 and --warmup at least 0", file=sys.stderr)
        return 2
    if not Path(CHROMIUM).is_file():
        print(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set HUSE_CHROMIUM)", file=sys.stderr)
        return 2
    try:
        from playwright.sync_api import sync_playwright

        from huse_core.app_server import free_port, streamlit_server
        from huse_core.retrieval.search import Searcher

        searcher = Searcher.open(run_dir)
    except Exception as err:  # noqa: BLE001 - a missing package or an unindexed run: one line, no traceback
        print(f"cannot open {run_dir}: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
              file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    queries = plan(searcher, args.n + args.warmup, args.seed)
    info = {"n_products": len(searcher.products), "backend": searcher.backend}
    del searcher  # the server loads its own
    port = args.port or free_port()
    log_path = Path(tempfile.gettempdir()) / f"app_latency-server-{port}.log"
    with streamlit_server(REPO / "app.py", {"HUSE_RUN": str(run_dir)}, port, log_path) as url, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(WAIT_MS)
        results, first = measure(page, url, queries, args.warmup, Path(args.shots) if args.shots else None)
        browser.close()
    log_path.unlink(missing_ok=True)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": "python " + " ".join(sys.argv), "run": str(run_dir),
              **info, "n": args.n, "warmup": args.warmup, "first_load": first,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "load_before": [round(x, 2) for x in load_before],
                          "load_after": [round(x, 2) for x in os.getloadavg()]},
              "actions": summarise(results, queries, args.warmup)}
    path = write_result("app_latency", args.variant or f"{round(info['n_products'] / 1000)}k", report)
    print(f"{info['n_products']:,} products ({info['backend']} search), {args.n} queries per action after "
          f"{args.warmup} warm-up; load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores\n")
    print(table(report))
    print(f"\nwritten {path}")
    return 0 if all(a["failures"] == 0 for a in report["actions"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
