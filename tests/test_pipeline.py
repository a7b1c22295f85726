"""Tests of the app's first-start build (huse_core.pipeline): it builds a whole run, is idempotent, and resumes."""

from __future__ import annotations

import pytest

from huse_core.artifacts import read_json
from huse_core.pipeline import DemoSpec, build_demo, is_complete, stage_state


def tiny_spec(epochs: int = 2) -> DemoSpec:
    return DemoSpec.tiny(epochs, patience=10)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    events: list[dict] = []
    run_dir = build_demo(root / "data" / "demo", root / "runs" / "demo", tiny_spec(), callback=events.append)
    return root, run_dir, events


def test_build_makes_a_complete_run_with_metrics_index_and_map(built):
    _, run_dir, events = built
    meta = read_json(run_dir / "run.json")
    assert meta["status"] == "done"
    assert (run_dir / "model.pt").is_file()
    assert meta["data"]["image_size"] == tiny_spec().image_size == 64  # the demo's own photo size, not 80
    assert "test" in meta["metrics"]
    assert is_complete(run_dir)
    assert stage_state(run_dir)["done"] == ["demo", "train", "evaluate", "index", "map"]
    assert read_json(run_dir / "index" / "index.json")["map"] is True, "the map is built with the index, and says so"
    from huse_core.retrieval.search import Searcher

    searcher = Searcher.open(run_dir)
    assert len(searcher.products) > 0
    frame = searcher.map_frame()
    assert set(frame["modality"]) == {"image", "text", "product"}  # the demo trains a fusion layer
    assert frame[["x", "y"]].notna().all().all()


def test_build_reports_every_stage_with_rising_overall_progress(built):
    _, _, events = built
    stages = [e["stage"] for e in events]
    for stage in ("demo", "train", "epoch", "evaluate", "index", "map", "complete"):
        assert stage in stages
    overall = [e["overall"] for e in events]
    assert all(0.0 <= x <= 1.0 for x in overall)
    assert overall[-1] == 1.0
    assert all(b >= a - 1e-9 for a, b in zip(overall, overall[1:])), "progress must never go backwards"


def test_build_again_finds_the_run_and_does_nothing(built):
    root, run_dir, _ = built
    stamp = (run_dir / "model.pt").stat().st_mtime_ns
    events: list[dict] = []
    build_demo(root / "data" / "demo", run_dir, tiny_spec(), callback=events.append)
    assert [e["stage"] for e in events] == ["complete"]
    assert (run_dir / "model.pt").stat().st_mtime_ns == stamp


class Interrupt(Exception):
    pass


def test_interrupted_training_resumes_and_is_not_offered_meanwhile(built, tmp_path):
    root, _, _ = built
    run_dir = tmp_path / "runs" / "demo"

    def stop_after_first_epoch(event: dict) -> None:
        if event["stage"] == "epoch":
            raise Interrupt  # like a closed browser tab: the script stops inside the callback

    with pytest.raises(Interrupt):
        build_demo(root / "data" / "demo", run_dir, tiny_spec(), callback=stop_after_first_epoch)
    assert read_json(run_dir / "run.json")["status"] == "training"
    assert not is_complete(run_dir)

    events: list[dict] = []
    build_demo(root / "data" / "demo", run_dir, tiny_spec(), callback=events.append)
    assert any("resuming" in e.get("message", "") for e in events)
    epochs = [e["epoch"] for e in events if e["stage"] == "epoch"]
    assert epochs == [2], "the finished first epoch is not trained again"
    assert is_complete(run_dir)
    assert len(read_json(run_dir / "run.json")["history"]) == 2


def test_interrupted_after_training_is_not_complete_and_finishes_later(built, tmp_path):
    root, _, _ = built
    run_dir = tmp_path / "runs" / "demo"

    def stop_at_index(event: dict) -> None:
        if event["stage"] == "index":
            raise Interrupt

    with pytest.raises(Interrupt):
        build_demo(root / "data" / "demo", run_dir, tiny_spec(epochs=1), callback=stop_at_index)
    assert read_json(run_dir / "run.json")["status"] == "done"  # trained, yet the build is unfinished
    assert not is_complete(run_dir)
    events: list[dict] = []
    build_demo(root / "data" / "demo", run_dir, tiny_spec(epochs=1), callback=events.append)
    stages = [e["stage"] for e in events]
    assert "epoch" not in stages, "a finished training is not repeated"
    assert "index" in stages and is_complete(run_dir)
