"""bench/common.py: result files named by what they measure, overwritten on a rerun and stamped with where they
were measured; the catalogue found from a CSV, its folder or a tarball."""

from __future__ import annotations

import json
import sys
import tarfile
import types

import pytest

from bench import common


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    return tmp_path / "results"


def _started_as(monkeypatch, argv: list[str], module: str | None = None) -> None:
    """As if Python had been started as `python ARGV` (module None) or `python -m MODULE ARGV[1:]`."""
    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name=module) if module else None
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", argv)


def test_write_result_stamps_provenance_and_overwrites_the_same_variant(results, monkeypatch):
    _started_as(monkeypatch, [str(common.ROOT / "bench" / "retrieval.py"), "--sizes", "2000"])
    path = common.write_result("retrieval", "annoy-2k", {"recall": 0.97}, "| n | recall |\n|---|---|\n| 2000 | 0.97 |")
    assert path == results / "retrieval" / "annoy-2k.json"
    data = json.loads(path.read_text())
    prov = data["provenance"]
    assert data["recall"] == 0.97
    assert {"command", "commit", "date", "cpu", "cores", "load_1min"} <= set(prov)
    assert prov["command"] == "python bench/retrieval.py --sizes 2000"  # as retyped from the repository root
    assert prov["cores"] >= 1 and prov["cpu"] and prov["commit"]
    md = path.with_suffix(".md").read_text()
    assert md.startswith("- command: `python bench/retrieval.py --sizes 2000`") and "| 2000 | 0.97 |" in md

    common.write_result("retrieval", "annoy-2k", {"recall": 0.99})  # a rerun replaces the file, no -2 copy
    assert json.loads(path.read_text())["recall"] == 0.99
    assert sorted(p.name for p in (results / "retrieval").iterdir()) == ["annoy-2k.json", "annoy-2k.md"]


def test_a_study_run_as_a_module_is_named_as_one(monkeypatch):
    _started_as(monkeypatch, [str(common.ROOT / "bench" / "studies" / "precision.py"), "--sizes", "64"],
                "bench.studies.precision")
    assert common.command() == "python -m bench.studies.precision --sizes 64"


def test_resolve_catalog_takes_the_csv_its_folder_or_a_tarball(tmp_path, monkeypatch):
    shop = tmp_path / "shop"
    (shop / "images").mkdir(parents=True)
    csv = shop / "metadata.csv"
    csv.write_text("id,title\n1,Blue Shirt\n")
    assert common.resolve_catalog(csv) == csv
    assert common.resolve_catalog(shop) == csv
    tarball = tmp_path / "shop.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(shop, arcname="shop")
    monkeypatch.setattr(common.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    found = common.resolve_catalog(tarball)
    assert found.name == "metadata.csv" and found.read_text() == csv.read_text()
    assert common.resolve_catalog(tarball) == found  # unpacked once, then reused
    with pytest.raises(FileNotFoundError, match="pass --data"):
        common.resolve_catalog(tmp_path / "missing.csv")
