"""The typed view of run.json (huse_core.summary) and the one Head type (huse_core.data.heads)."""

from __future__ import annotations

import json
import shutil

import pytest

from huse_core.data.heads import Head, as_heads
from huse_core.summary import RunSummary, read_summary


def test_head_round_trips_through_run_json_and_reads_like_its_dict():
    head = Head("colour", "single", ["Black", "Red"])
    stored = json.loads(json.dumps(head.to_dict()))
    assert Head.from_dict(stored) == head and stored == {"name": "colour", "kind": "single",
                                                         "classes": ["Black", "Red"], "level": None}
    assert head["name"] == "colour" and head.get("level") is None and head.get("nope", 1) == 1
    with pytest.raises(KeyError):
        head["nope"]  # noqa: B018
    assert as_heads([stored, head]) == [head, head]
    with pytest.raises(ValueError, match="kind must be one of"):
        Head("colour", "sometimes", [])


def test_a_trained_run_holds_heads_as_head_and_stores_dicts(tiny_trained_run):
    from huse_core.artifacts import read_json
    from huse_core.run import load_run

    run = load_run(tiny_trained_run)
    assert run.heads and all(isinstance(h, Head) for h in run.heads)
    assert all(isinstance(h, Head) for h in run.model.heads) and isinstance(run.leaf_head, Head)
    assert read_json(tiny_trained_run / "run.json")["heads"] == [h.to_dict() for h in run.heads]
    assert run.load_catalog().heads == run.heads  # the catalogue read back with the run's heads


def test_summary_of_an_evaluated_run_gives_the_figures_the_app_shows(tiny_trained_run, tmp_path):
    from huse_core.training.evaluate import evaluate

    run_dir = shutil.copytree(tiny_trained_run, tmp_path / "run")
    assert read_summary(run_dir).test is None  # not evaluated yet
    result = evaluate(run_dir, progress=False, baseline=False)
    s = read_summary(run_dir)
    assert s.catalog_size == 240 and s.leaf == result["leaf"] and s.history and s.dim == 32
    assert [h.name for h in s.heads] == [h["name"] for h in json.loads((run_dir / "run.json").read_text())["heads"]]
    t = s.test
    assert t.n == result["n_test"] and t.leaf == s.leaf
    assert t.accuracy() == result["classification"][s.leaf]["fused"]["accuracy"]
    assert t.accuracy("gender", "text") == result["classification"]["gender"]["text"]["accuracy"]
    assert t.recall("t2i") == result["retrieval"]["class_level"]["t2i"]["R@10"]
    assert t.recall("t2i", 1, "instance") == result["retrieval"]["instance"]["t2i"]["R@1"]
    assert t.search_r10 == result["retrieval"]["class_level"]["t2i_labels"]["R@10"]
    assert t.pair_cosine == result["modality_gap"]["mean_pair_cosine"]
    assert t.catalog.n_gallery == 240 and set(t.catalog.directions) >= {"t2i", "i2t"}
    assert t.baseline_model is None  # evaluated without the title baseline


def test_summary_tolerates_runs_written_before_newer_figures(tiny_trained_run):
    """A run.json from an earlier version: no whole-catalogue retrieval, no re-ranked title search, no modality
    gap, no baseline, no history, no dim."""
    meta = json.loads((tiny_trained_run / "run.json").read_text())
    meta.pop("history", None)
    meta["model"].pop("dim", None)
    meta["metrics"] = {"test": {"n_test": 24, "leaf": meta["leaf"],
                                "classification": {meta["leaf"]: {"fused": {"accuracy": 0.5}}},
                                "retrieval": {"class_level": {"t2i": {"R@10": 0.75}}, "instance": {}}}}
    s = RunSummary.from_meta(meta, tiny_trained_run)
    assert s.history == [] and s.dim is None
    t = s.test
    assert t.accuracy() == 0.5 and t.accuracy(modality="image") is None and t.search_r10 == 0.75
    assert t.catalog is None and t.pair_cosine is None and t.baseline_model is None
    assert RunSummary.from_meta({"heads": []}).test is None  # a run.json with almost nothing in it
