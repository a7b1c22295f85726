"""Load test: concurrent browser sessions searching and classifying against one `streamlit run app.py` server.

Over 300 lines: one asyncio driver whose sessions, expected answers and timings share one browser and one clock.

    nice -n 19 python bench/load.py --run runs/demo --sessions 8 --seconds 60

One Chromium (Playwright over the system /usr/bin/chromium), one browser context per session, all driven from one
asyncio loop against one server on 127.0.0.1 opened on the run with HUSE_RUN. Each session cycles through its own
titles to classify, photos to upload and words to search; what it finds on screen (hit titles and scores, the
Classify card's label) is compared with what huse_core.retrieval.search.Searcher answers for that session's own query,
computed here beforehand. A screen that never shows the expected answer is an error: "mixed" when it shows
another session's answer, "wrong results" when it shows nobody's. Times run from the action (Enter, the upload)
until the expected results are on screen. Writes bench/results/load/<sessions>-sessions.json and prints a
Markdown table.
Stops by itself after --seconds (plus the actions under way, each bounded by --timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import ROOT, write_result

ACTIONS = ("search_title", "classify_title", "classify_photo")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SEARCH_K, CLASSIFY_K = 12, 6  # the Search page's default number of results; the Classify card's nearest products
PER_SESSION = 3  # queries of each kind per session, cycled: consecutive answers differ, so a stale screen never passes
STARTUP_S = 180  # the first page load opens the model and the index; on a busy 2-core machine that takes a while


@dataclass
class Expected:
    """What one query must put on screen, computed with the Searcher the server uses."""

    query: str  # the words typed, or the photo's path
    titles: list[str]  # hit-grid titles in order, as ui.hit_grid shows them
    scores: list[str]  # the "score 0.93" captions in order
    heading: str | None = None  # Classify: the leaf label's path heading the result card


def shown(title: str, n: int = 80) -> str:
    """A title as ui.hit_grid prints it (ui.short(title, 80)); not imported, since ui needs a Streamlit runtime."""
    text = " ".join(str(title).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def expect(searcher, query: str, hits: list, pred: dict | None = None) -> Expected:
    heading = None
    if pred is not None:  # the Classify page's card: the leaf head's top label from the best modality present
        modality = next(m for m in ("fused", "image", "text") if any(m in per for per in pred.values()))
        levels = [h["name"] for h in searcher.heads if h.get("level") is not None]
        top = pred[levels[-1] if levels else next(iter(pred))][modality][0]
        heading = top.get("path") or top["label"]
    return Expected(query, [shown(h.title) for h in hits], [f"score {h.score:.2f}" for h in hits], heading)


def plan(run: str, sessions: int) -> list[dict[str, list[Expected]]]:
    """PER_SESSION queries of each kind per session, every one with a different answer from all the others."""
    from huse_core.retrieval.search import Searcher

    searcher = Searcher.open(run)
    products = searcher.products[~searcher.products["added"].astype(bool)]
    order = np.random.default_rng(0).permutation(len(products))
    need, seen, pools = sessions * PER_SESSION, set(), {kind: [] for kind in ACTIONS}
    for i in order:
        title, photo = products["title"].iloc[i], products["image"].iloc[i]
        words = " ".join(title.lower().split()[-3:])  # "red striped shirt": what a shopper types
        kind = min(pools, key=lambda k: len(pools[k]))
        if kind == "search_title":
            exp = expect(searcher, words, searcher.search(text=words, target="image", k=SEARCH_K))
        elif kind == "classify_title":
            exp = expect(searcher, title, searcher.search(text=title, target="image", k=CLASSIFY_K),
                         searcher.classify(text=title))
        else:
            data = Path(photo).read_bytes()
            exp = expect(searcher, photo, searcher.search(image=data, target="image", k=CLASSIFY_K),
                         searcher.classify(image=data))
        key = (tuple(exp.titles), exp.heading)
        if key not in seen and exp.query not in {e.query for e in pools[kind]}:
            seen.add(key)
            pools[kind].append(exp)
        if all(len(p) == need for p in pools.values()):
            break
    if not all(len(p) == need for p in pools.values()):
        raise SystemExit(f"the run has too few distinct products for {sessions} sessions")
    return [{k: p[s * PER_SESSION : (s + 1) * PER_SESSION] for k, p in pools.items()} for s in range(sessions)]


# In the page: "ok" once the expected hits (and heading) are on screen; an exception or error box ends the wait.
CHECK_JS = """([titles, scores, heading]) => {
  const exc = document.querySelector('[data-testid="stException"]');
  if (exc) return 'exception: ' + exc.innerText.slice(0, 200);
  const err = document.querySelector('[data-testid="stAlertContentError"]');
  if (err) return 'error box: ' + err.innerText.slice(0, 200);
  const caps = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')].map(e => e.innerText.trim());
  const t = [], s = [];
  caps.forEach((c, i) => {
    if (i > 0 && /^score -?[0-9]/.test(c)) { t.push(caps[i - 1]); s.push(c.split(' · ')[0]); }
  });
  if (JSON.stringify(t) !== JSON.stringify(titles) || JSON.stringify(s) !== JSON.stringify(scores)) return false;
  const h4 = [...document.querySelectorAll('h4')].map(h => h.textContent.trim());
  if (heading !== null && !h4.includes(heading)) return false;
  return 'ok';
}"""
SHOWN_JS = """() => { const caps = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
  .map(e => e.innerText.trim()); return caps.filter((c, i) => i + 1 < caps.length && /^score /.test(caps[i + 1])); }"""

# What the page says when an action fails: the main area's text, and the files the uploader holds.
SCREEN_JS = """() => ({main: (document.querySelector('[data-testid="stMain"]') || document.body).innerText
  .replace(/\\s+/g, ' ').slice(0, 400), chips: [...document.querySelectorAll('[data-testid="stFileChip"]')]
  .map(e => e.innerText.replace(/\\s+/g, ' ')), running: !!document.querySelector('[data-testid="stStatusWidget"]')})"""

# The Classify page once the cleared-title run is over: its hint shown, no result card, no photo in the uploader,
# nothing running or stale. A photo given earlier can be lost: Streamlit answers the uploader's request for upload
# URLs on the session's message queue, and a script run starting before that answer is sent clears the queue
# (ForwardMsgQueue.clear keeps lifecycle messages only), so the uploader waits forever with nothing to show.
CLASSIFY_EMPTY = """() => document.body.innerText.includes('Upload a product photo or type a title')
  && !document.querySelector('[data-testid="stMain"] h4') && !document.querySelector('[data-testid="stFileChip"]')
  && !document.querySelector('[data-testid="stStatusWidget"]') && !document.querySelector('[data-stale="true"]')"""


async def idle(page, timeout_ms: int) -> None:
    """Wait until Streamlit has finished the script run (its "running" indicator is gone)."""
    await page.wait_for_timeout(300)
    await page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                                 timeout=timeout_ms, polling=100)


async def open_page(page, link: str, heading: str, timeout_ms: int) -> None:
    """Switch pages through the sidebar, in the same Streamlit session (the other page's widgets reset)."""
    await page.locator('[data-testid="stSidebarNavLink"]', has_text=link).first.click()
    await page.get_by_role("heading", name=heading).wait_for(timeout=timeout_ms)
    await idle(page, timeout_ms)


async def act(page, kind: str, exp: Expected, others: list[Expected], timeout_ms: int) -> dict:
    """Do one action and wait until its expected results are on screen: {"kind", "seconds", "error"}."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    if kind == "classify_photo":
        t0 = time.perf_counter()
        await page.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(exp.query)
    else:
        box = page.get_by_label("Search by title" if kind == "search_title" else "Product title", exact=True)
        await box.fill(exp.query)
        t0 = time.perf_counter()
        await box.press("Enter")
    try:
        handle = await page.wait_for_function(CHECK_JS, arg=[exp.titles, exp.scores, exp.heading], polling=50,
                                              timeout=timeout_ms)
        outcome = await handle.json_value()
    except PlaywrightTimeout:
        outcome = "timeout"
    record = {"kind": kind, "seconds": round(time.perf_counter() - t0, 3), "error": None}
    if outcome != "ok":
        titles, screen = await page.evaluate(SHOWN_JS), await page.evaluate(SCREEN_JS)
        if outcome == "timeout" and titles:  # something else stayed on screen: another session's answer?
            outcome = "mixed" if any(titles == o.titles for o in others) else "wrong results"
        elif outcome == "timeout" and kind == "classify_photo" and not screen["chips"]:
            outcome = "upload lost: the uploader never listed the photo"
        record.update(error=outcome.split(":")[0], detail=f"{exp.query!r}: {outcome}; shown {titles[:3]}",
                      screen=screen)
    return record


async def session(n: int, browser, url: str, mine: dict, others: list[Expected], start: asyncio.Event,
                  ready: list, stop_at: list, timeout_ms: int) -> list[dict]:
    """One shopper: Classify a title, then a photo; Search words; again, with the next of its own queries."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(timeout_ms)
    records: list[dict] = []
    try:
        await page.goto(url)
        await page.get_by_role("heading", name="Classify products").wait_for(timeout=STARTUP_S * 1000)
        await idle(page, STARTUP_S * 1000)
        ready.append(n)
        await start.wait()
        j = 0
        while time.monotonic() < stop_at[0]:
            step = j % PER_SESSION
            try:
                records.append(await act(page, "classify_title", mine["classify_title"][step], others, timeout_ms))
                box = page.get_by_label("Product title", exact=True)  # cleared, so the photo is classified alone
                await box.fill("")
                await box.press("Enter")  # a fixed pause is not enough under load: the rerun may not have started
                await page.wait_for_function(CLASSIFY_EMPTY, polling=50, timeout=timeout_ms)
                if time.monotonic() < stop_at[0]:
                    records.append(await act(page, "classify_photo", mine["classify_photo"][step], others, timeout_ms))
                await open_page(page, "Search", "Search the catalogue", timeout_ms)
                if time.monotonic() < stop_at[0]:
                    records.append(await act(page, "search_title", mine["search_title"][step], others, timeout_ms))
                await open_page(page, "Classify", "Classify products", timeout_ms)
            except Exception as err:  # noqa: BLE001 - a stuck page is counted, then the session starts afresh
                records.append({"kind": "navigation", "seconds": None, "error": type(err).__name__,
                                "detail": str(err).splitlines()[0][:200]})
                await page.goto(url)
                await page.get_by_role("heading", name="Classify products").wait_for(timeout=timeout_ms)
            j += 1
    finally:
        await context.close()
    for r in records:
        r["session"] = n
    return records


def others(plans: list[dict], n: int) -> list[Expected]:
    """Every other session's queries: a screen showing one of their answers is a mix-up."""
    return [e for m, p in enumerate(plans) if m != n for kind in ACTIONS for e in p[kind]]


async def drive(url: str, plans: list[dict], seconds: float, timeout_ms: int, chromium: str) -> list[dict]:
    from playwright.async_api import async_playwright

    start, ready, stop_at = asyncio.Event(), [], [0.0]
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            tasks = [asyncio.create_task(session(n, browser, url, mine, others(plans, n), start, ready, stop_at,
                                                 timeout_ms)) for n, mine in enumerate(plans)]
            deadline = time.monotonic() + STARTUP_S
            while len(ready) < len(plans) and time.monotonic() < deadline and not any(t.done() for t in tasks):
                await asyncio.sleep(0.2)
            stop_at[0] = time.monotonic() + seconds  # the clock starts once every session has its page open
            start.set()
            done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True),
                                          timeout=seconds + 3 * timeout_ms / 1000 + 60)
        finally:
            await browser.close()
    records = []
    for n, result in enumerate(done):
        if isinstance(result, BaseException):
            records.append({"kind": "session", "seconds": None, "error": type(result).__name__, "session": n,
                            "detail": str(result).splitlines()[0][:200] if str(result) else ""})
        else:
            records.extend(result)
    return records


def server_env(run: str) -> tuple[dict, Path]:
    """(environment, log file) for `streamlit run app.py` opened on `run` with nothing built: HUSE_RUN, and an
    empty runs folder in a fresh temporary folder, so the picker lists HUSE_RUN only, not runs still training."""
    work = Path(tempfile.mkdtemp(prefix="huse-load-"))  # the server's log, and the empty runs folder
    (work / "runs").mkdir()
    env = {"HUSE_RUN": str(Path(run).resolve()), "HUSE_RUNS_DIR": str(work / "runs"), "HUSE_AUTOBUILD": "0"}
    return env, work / "streamlit.log"


def summarize(records: list[dict]) -> dict:
    out = {}
    for kind in (*ACTIONS, "all"):
        mine = [r for r in records if kind == "all" or r["kind"] == kind]
        ok = np.array([r["seconds"] for r in mine if r["error"] is None])
        out[kind] = {"actions": len([r for r in mine if r["kind"] in ACTIONS]), "ok": int(len(ok)),
                     "errors": sum(r["error"] is not None for r in mine),
                     "p50_s": round(float(np.percentile(ok, 50)), 3) if len(ok) else None,
                     "p95_s": round(float(np.percentile(ok, 95)), 3) if len(ok) else None,
                     "max_s": round(float(ok.max()), 3) if len(ok) else None}
    return out


def main() -> int:
    from huse_core.app_server import streamlit_server

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo", help="a trained, indexed run (default runs/demo)")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent browser sessions")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the sessions keep acting")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one action may take before it is an error")
    parser.add_argument("--variant", help="the result's name: bench/results/load/VARIANT.json, overwritten on a rerun "
                        "(default: SESSIONS-sessions)")
    parser.add_argument("--chromium", default=os.environ.get("HUSE_CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args()
    if args.sessions < 1 or args.seconds <= 0:
        parser.error("--sessions must be at least 1 and --seconds positive")
    t0 = time.time()
    plans = plan(args.run, args.sessions)
    print(f"planned {args.sessions} x {PER_SESSION} queries of each kind in {time.time() - t0:.0f} s", file=sys.stderr)
    load_before = os.getloadavg()
    env, log_path = server_env(args.run)
    with ExitStack() as server:
        try:  # on a free loopback port; waits for its health check
            url = server.enter_context(streamlit_server(ROOT / "app.py", env, log_path=log_path, timeout=STARTUP_S))
        except RuntimeError as err:
            raise SystemExit(str(err)) from None
        records = asyncio.run(drive(url, plans, args.seconds, int(args.timeout * 1000), args.chromium))
    summary = summarize(records)
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "run": args.run, "sessions": args.sessions, "seconds": args.seconds,
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "load_avg_before": [round(x, 2) for x in load_before],
                          "load_avg_after": [round(x, 2) for x in os.getloadavg()],
                          "python": platform.python_version()},
              "measures": "seconds from Enter / the upload until the session's own expected hits are on screen",
              "summary": summary, "per_session": {n: sum(r["session"] == n for r in records if r["kind"] in ACTIONS)
                                                  for n in range(args.sessions)},
              "errors": [r for r in records if r["error"] is not None][:50],
              "queries": [{k: [e.query for e in p[k]] for k in ACTIONS} for p in plans]}
    path = write_result("load", args.variant or f"{args.sessions}-sessions", result)
    print(f"\n{args.sessions} sessions x {args.seconds:.0f} s against one server ({args.run}); load average before "
          f"{load_before[0]:.2f}; results in {path}\n")
    print("| action | actions | errors | p50 | p95 | max |\n|---|---|---|---|---|---|")
    for kind, s in summary.items():
        cells = " | ".join("–" if s[k] is None else f"{s[k]:.2f} s" for k in ("p50_s", "p95_s", "max_s"))
        print(f"| {kind.replace('_', ' ')} | {s['actions']} | {s['errors']} | {cells} |")
    for r in result["errors"][:10]:
        print(f"error (session {r['session']}, {r['kind']}): {r['error']} — {r.get('detail', '')}")
        if r.get("screen"):
            print(f"  on screen: {r['screen']}")
    return 1 if summary["all"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
