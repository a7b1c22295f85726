"""The package's shape: layers import one way with no cycle, the public API, runs and indexes in the on-disk
layout of earlier versions open, and classify needs no index."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import huse_core
from huse_core.cli import main

PACKAGE = Path(huse_core.__file__).parent
# Lower layers never import higher ones: base <- data <- model <- (prepare, run) <- training, retrieval <- (pipeline,
# jobs) <- top.
LAYER = {"artifacts": 0, "compat": 0, "config": 0, "errors": 0, "logs": 0, "data": 1, "model": 2, "prepare": 3,
         "run": 3, "summary": 3, "training": 4, "retrieval": 4, "pipeline": 5, "jobs": 5, "cli": 6, "__main__": 6,
         "__init__": 6}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the huse_core modules it imports (at top level or inside functions)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name, package = _module_name(path), _module_name(path).split(".")
        if path.name != "__init__.py":
            package = package[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                found |= {f"{target}.{a.name}" if f"{target}.{a.name}".replace(".", "/") in _all_paths() else target
                          for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("huse_core"):
                found.add(node.module)
        graph[name] = {m for m in found if m != name}
    return graph


def _all_paths() -> set[str]:
    return {_module_name(p).replace(".", "/") for p in PACKAGE.rglob("*.py")}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYER[parts[1]] if len(parts) > 1 else LAYER["__init__"]


# Numeric modules of retrieval that evaluation reads too, so that it measures what the search does: exact k-NN and
# the title re-ranking, the keyword side and the hybrid rule. They import nothing else of retrieval (checked below).
SHARED_NUMERICS = {"huse_core.retrieval.knn", "huse_core.retrieval.rerank", "huse_core.retrieval.keyword",
                   "huse_core.retrieval.hybrid"}


def test_modules_import_downwards_only_and_without_cycles():
    graph = _imports()
    upward = [(m, t) for m, targets in graph.items() for t in targets
              if t in graph and _layer(t) > _layer(m) and "huse_core" not in (m, t)]  # the root: __version__
    assert not upward, f"imports that point up a layer: {upward}"
    same_layer_cross = [(m, t) for m, targets in graph.items() for t in targets
                        if t in graph and _layer(t) == _layer(m) == 4 and m.split(".")[1] != t.split(".")[1]
                        and t not in SHARED_NUMERICS]
    assert not same_layer_cross, f"training and retrieval import each other: {same_layer_cross}"
    assert not {t for m in SHARED_NUMERICS for t in graph.get(m, ())
                if t.startswith("huse_core.retrieval") and t not in SHARED_NUMERICS}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph or nxt.endswith("huse_core"):
                continue
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join(trail + [nxt])}"
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


# ---------------------------------------------------------------------------------- the app and the benches
REPO = PACKAGE.parent
BENCH = REPO / "bench"


def _file_imports(path: Path) -> set[str]:
    """The modules a file imports, anywhere in it (relative imports resolved against its package)."""
    package = path.relative_to(REPO).with_suffix("").parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            found.add(".".join(base + ([node.module] if node.module else [])))
    return found


def _tops(path: Path) -> set[str]:
    return {m.split(".")[0] for m in _file_imports(path)}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (module -> modules it imports), or None."""
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return trail + [nxt]
            if nxt in graph and nxt not in state and (found := visit(nxt, trail + [nxt])):
                return found
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module, [module])):
            return found
    return None


def _bench_graph() -> dict[str, set[str]]:
    """bench module -> the bench modules it imports. Scripts (`python bench/NAME.py`) are named NAME and import
    their siblings by that name; studies (`python -m bench.studies.NAME`) are bench.studies.NAME; bench.common is
    common, the same file."""
    scripts = {p.stem for p in BENCH.glob("*.py") if p.stem != "__init__"}
    studies = {f"bench.studies.{p.stem}" for p in (BENCH / "studies").glob("*.py") if p.stem != "__init__"}

    def name(module: str) -> str | None:
        if module in scripts or module in studies:
            return module
        if module.startswith("bench."):
            return module.removeprefix("bench.") if module.removeprefix("bench.") in scripts else module
        return None

    graph = {}
    for path in [*BENCH.glob("*.py"), *(BENCH / "studies").glob("*.py")]:
        if path.stem == "__init__":
            continue
        me = path.stem if path.parent == BENCH else f"bench.studies.{path.stem}"
        graph[me] = {n for m in _file_imports(path) if (n := name(m)) and n != me}
    return graph


def test_bench_imports_run_one_way_without_cycles_or_sys_path_edits():
    graph = _bench_graph()
    assert {"common", "quality", "other_shop", "small_shops", "retrieval"} <= set(graph)
    assert _cycle(graph) is None, f"import cycle in bench/: {' -> '.join(_cycle(graph))}"
    studies = {m for m in graph if m.startswith("bench.studies.")}
    assert studies, "bench/studies/ holds the one-off studies"
    # scripts never import studies; a study (run with -m from the repo root) reaches bench/ only through bench.common
    assert not {(m, t) for m, ts in graph.items() if m not in studies for t in ts if t in studies}
    assert not {(m, t) for m in studies for t in graph[m] if t != "common"}, "a study imports another bench module"
    for path in [*BENCH.rglob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edits = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "path"
                 and isinstance(n.value, ast.Name) and n.value.id == "sys"]
        assert not edits, f"{path.relative_to(REPO)} touches sys.path (lines {edits})"
        assert not _tops(path) & {"ui", "pages", "app"}, f"{path.relative_to(REPO)} imports the app"


def test_app_layers_import_one_way():
    """pages -> ui -> huse_core: huse_core imports neither (nor streamlit), ui never imports pages, pages never
    import each other, and no layer imports the benches."""
    for path in PACKAGE.rglob("*.py"):
        bad = _tops(path) & {"ui", "pages", "app", "bench", "streamlit"}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"
    ui_graph = {}
    for path in (REPO / "ui").glob("*.py"):
        bad = _tops(path) & {"pages", "app", "bench"}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"
        me = "ui" if path.stem == "__init__" else f"ui.{path.stem}"
        ui_graph[me] = {m for m in _file_imports(path) if m.startswith("ui.") and m != me}
    assert _cycle(ui_graph) is None, f"import cycle in ui/: {_cycle(ui_graph)}"
    pages = sorted((REPO / "pages").glob("*.py"))
    assert pages
    for path in pages:
        bad = _tops(path) & {"pages", "app", "bench"}
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"
    assert not _tops(REPO / "app.py") & {"pages", "bench"}


DECISION_SLUGS = {"title-tower", "photo-size", "schedule", "epochs", "ema", "cnn-pool", "wide-head", "fusion-rule",
                  "search-rerank", "alignment-term", "lite0", "index-backend", "annoy-trees", "map-sample", "flip-tta",
                  "precision", "hybrid-search", "audit"}


def _heading_slugs(markdown: str) -> set[str]:
    """The anchors a Markdown renderer gives the headings (GitHub's rule: lowercase, punctuation dropped,
    spaces to hyphens)."""
    import re

    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in markdown.splitlines() if line.startswith("#")}


def test_every_decision_pointer_names_a_section_of_decisions_md():
    """`docs/decisions.md#SLUG` in code, benches and docs lands on a heading, and each agreed slug has one."""
    import re

    slugs = _heading_slugs((REPO / "docs" / "decisions.md").read_text(encoding="utf-8"))
    assert DECISION_SLUGS <= slugs, f"docs/decisions.md lacks sections {sorted(DECISION_SLUGS - slugs)}"
    files = [*PACKAGE.rglob("*.py"), *BENCH.rglob("*.py"), *(REPO / "ui").glob("*.py"),
             *(REPO / "pages").glob("*.py"), REPO / "app.py", *(REPO / "docs").glob("*.md"), REPO / "README.md"]
    dangling = [f"{path.relative_to(REPO)}: #{slug}" for path in files
                for slug in re.findall(r"decisions\.md#([a-z0-9][a-z0-9-]*)", path.read_text(encoding="utf-8"))
                if slug not in slugs]
    assert not dangling, "pointers to no section of docs/decisions.md:\n" + "\n".join(dangling)


def test_loading_an_index_or_the_package_does_not_load_torch():
    code = ("import sys, huse_core, huse_core.retrieval.index, huse_core.retrieval.map, huse_core.data.catalog\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_public_api_names_resolve_and_unknown_names_fail():
    from huse_core.retrieval.search import Searcher
    from huse_core.run import load_run

    assert huse_core.Searcher is Searcher and huse_core.load_run is load_run
    assert all(callable(getattr(huse_core, name)) for name in huse_core.__all__ if name != "__version__")
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        huse_core.nothing_here  # noqa: B018


def test_the_command_runs_from_any_folder(tmp_path):
    out = subprocess.run([sys.executable, "-m", "huse_core", "--help"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0 and "classify" in out.stdout
    huse = shutil.which("huse")
    if huse:  # present once the package is installed (`pip install -r requirements.txt`)
        same = subprocess.run([huse, "--help"], capture_output=True, text=True, cwd=tmp_path)
        assert same.returncode == 0 and same.stdout.split("\n", 1)[1] == out.stdout.split("\n", 1)[1]


def test_classify_works_on_a_run_without_an_index(tiny_trained_run, capsys):
    assert not (tiny_trained_run / "index").exists()
    assert main(["classify", "--run", str(tiny_trained_run), "--text", "red striped shirt", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {h["name"] for h in json.loads((tiny_trained_run / "run.json").read_text())["heads"]}
    assert main(["classify", "--run", str(tiny_trained_run), "--text", "red striped shirt"]) == 0
    captured = capsys.readouterr()
    assert "nearest products need a search index" in captured.err and "index --run" in captured.err
    run = huse_core.load_run(tiny_trained_run)
    labels = run.classify(text="blue jeans", top=2)
    assert all(len(per["text"]) == 2 for per in labels.values())
    assert run.leaf_head["name"] == run.leaf


def test_a_run_and_index_in_the_earlier_layout_open_with_this_code(indexed_run_copy):
    """The files an earlier version wrote, by name: run.json + model.pt; index/index.json naming build-<id>/ with
    products.parquet, image_emb.npy, text_emb.npy, image.ann.json / text.ann.json and their forests, map.parquet;
    delta/added.sqlite (before it delta/added.parquet: tests/test_store.py imports one) + delta/images/<id>.png
    for added products. Then the same index in the pre-folder (flat)
    layout, index.json without "dir", still opens."""
    run_dir = indexed_run_copy
    assert (run_dir / "run.json").is_file() and (run_dir / "model.pt").is_file()
    manifest = json.loads((run_dir / "index" / "index.json").read_text())
    build = run_dir / "index" / manifest["dir"]
    names = {p.name for p in build.iterdir()}
    assert {"products.parquet", "image_emb.npy", "text_emb.npy", "image.ann.json", "text.ann.json",
            "map.parquet"} <= names
    for modality in ("image", "text"):
        forest = json.loads((build / f"{modality}.ann.json").read_text())["file"]
        assert forest in names and forest.startswith(f"{modality}.") and forest.endswith(".ann")
    searcher = huse_core.Searcher.open(run_dir)
    title = searcher.products["title"].iloc[0]
    first = [h.id for h in searcher.search(text=title, k=5)]
    photo = searcher.products["image"].iloc[0]
    assert searcher.add_products([{"id": "later-1", "title": "red striped shirt", "image": photo}])[0]["ok"]
    assert (run_dir / "index" / "delta" / "added.sqlite").is_file()
    assert (run_dir / "index" / "delta" / "images" / "later-1.png").is_file()

    for path in build.iterdir():  # the flat layout of indexes built before build folders
        shutil.move(path, run_dir / "index" / path.name)
    build.rmdir()
    flat = {k: v for k, v in manifest.items() if k != "dir"}
    (run_dir / "index" / "index.json").write_text(json.dumps(flat))
    reopened = huse_core.Searcher.open(run_dir)
    assert [h.id for h in reopened.search(text=title, k=5)] == first
    assert "later-1" in set(reopened.products["id"])
    assert len(reopened.map_frame()) == 3 * len(reopened.products)  # photo, title and whole-product points
    assert np.isfinite(reopened.map_frame()[["x", "y"]].to_numpy()).all()
