"""End to end on a tiny demo shop: train, evaluate, checkpoint round trip, resume, CLI, clear refusals."""

import json
import shutil

import numpy as np
import pytest
import torch

from huse_core.cli import main
from huse_core.config import DataConfig, LossConfig, TrainConfig
from huse_core.data.demo import generate_demo
from huse_core.pipeline import DemoSpec
from huse_core.training.evaluate import evaluate, split_predictions
from huse_core.run import RunError, load_run
from huse_core.training.train import train
from huse_core.training.validation import FUSION_MIN_GAIN, kept_accuracy, selection_score, validation_rows

TINY_MODEL = DemoSpec.tiny().model


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("shop")
    return generate_demo(root / "demo", n_products=240, seed=3, image_size=64, progress=False)


@pytest.fixture(scope="module")
def trained(shop, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    meta = train(DataConfig(catalog=str(shop)), TINY_MODEL, LossConfig(), TrainConfig(epochs=3, batch_size=32,
                                                                                      ema=0.9), run_dir, progress=False)
    return run_dir, meta


def test_training_logs_all_three_terms_and_keeps_the_best_epoch(trained):
    run_dir, meta = trained
    assert meta["status"] == "done" and len(meta["history"]) == 3
    for record in meta["history"]:
        # every term is logged (the selected ones are trained), plus the fusion layer's class loss
        assert set(record["loss"]) == {"cls", "graph", "gap", "fusion", "total"} | set(LossConfig().losses)
        assert set(record["val_accuracy"]) == set(record["val_accuracy_ema"]) == {"image", "text", "product", "fused"}
        raw, ema = (selection_score(record[k]) for k in ("val_accuracy", "val_accuracy_ema"))
        assert record["weights"] == ("ema" if ema > raw else "raw")  # the weights' average, validated beside them
        assert kept_accuracy(record) == record["val_accuracy_ema" if ema > raw else "val_accuracy"]
    assert meta["history"][1]["val_accuracy_ema"] != meta["history"][1]["val_accuracy"]  # a different model
    first, last = meta["history"][0]["loss"], meta["history"][-1]["loss"]
    assert last["total"] < first["total"] and last["cls"] < first["cls"]
    score = {r["epoch"]: max(selection_score(r["val_accuracy"]), selection_score(r["val_accuracy_ema"]))
             for r in meta["history"]}
    assert meta["best_epoch"] == max(score, key=score.get)
    assert meta["best_weights"] == meta["history"][meta["best_epoch"] - 1]["weights"]
    assert (run_dir / "model.pt").is_file() and (run_dir / "last.pt").is_file()
    single = {h["name"] for h in meta["heads"] if h["kind"] == "single"}
    assert set(meta["fusion_weights"]) == single and all(0 <= w <= 1 for w in meta["fusion_weights"].values())
    assert set(meta["fusion_layer_heads"]) <= single and isinstance(meta["flip_tta"], bool)


def test_tuned_fusion_is_never_below_either_modality_on_validation(trained):
    run_dir, meta = trained
    pred = split_predictions(load_run(run_dir), "val")
    for head in meta["fusion_weights"]:
        y = pred["labels"][head]
        acc = {m: (p.argmax(1) == y)[y >= 0].mean() for m, p in pred["probs"][head].items()}
        if head in meta["fusion_layer_heads"]:  # the layer was chosen: no mix beat it by the margin on validation
            assert acc["fused"] == acc["product"]
            assert acc["fused"] >= max(acc["image"], acc["text"]) - FUSION_MIN_GAIN - 1e-9, head
        else:
            assert acc["fused"] >= max(acc["image"], acc["text"]) - 1e-9, head
            assert acc.get("product", 0) < acc["fused"] - FUSION_MIN_GAIN + 1e-9, head


def test_checkpoint_round_trip_gives_the_same_embeddings(trained):
    run_dir, _ = trained
    a, b = load_run(run_dir), load_run(run_dir)
    titles = ["Red Striped Shirt", "Nordvik Women Black Heels", ""]
    assert np.allclose(a.encode_texts(titles), b.encode_texts(titles))
    emb = a.encode_texts(titles)
    assert emb.dtype == np.float32 and emb.shape == (3, TINY_MODEL.dim)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    pixels = np.full((2, 64, 64, 3), 200, np.uint8)
    probs = a.probabilities(image_emb=a.encode_images(pixels), text_emb=a.encode_texts(["red shirt", "blue jeans"]))
    leaf = probs[a.leaf]
    assert set(leaf) == {"image", "text", "product", "fused"} and np.allclose(leaf["fused"].sum(1), 1, atol=1e-5)


def test_evaluate_reports_the_documented_figures(trained):
    run_dir, _ = trained
    result = evaluate(run_dir, progress=False)
    assert result["n_test"] > 0
    leaf = result["classification"][result["leaf"]]
    assert set(leaf) == {"image", "text", "product", "fused"} and 0 <= leaf["fused"]["accuracy"] <= 1
    # t2i_labels: title -> photo as the search ranks a title (retrieval.rerank)
    assert set(result["retrieval"]["class_level"]) == {"i2i", "i2t", "t2i", "t2t", "t2i_labels"}
    assert set(result["retrieval"]["instance"]) == {"i2t", "t2i", "t2i_labels"}
    for r in result["retrieval"]["class_level"].values():
        assert r["R@1"] <= r["R@5"] <= r["R@10"]
    assert -1 <= result["modality_gap"]["mean_pair_cosine"] <= 1
    assert json.loads((run_dir / "run.json").read_text())["metrics"]["test"] == result


def test_resume_continues_an_interrupted_run(shop, tmp_path):
    run_dir = tmp_path / "run"
    cfgs = (DataConfig(catalog=str(shop)), TINY_MODEL, LossConfig(), TrainConfig(epochs=3, batch_size=32))
    calls = []

    def stop_after_first_epoch(event):
        calls.append(event)
        if event["stage"] == "epoch" and event["epoch"] == 1:
            raise KeyboardInterrupt  # what Ctrl-C does mid-run

    with pytest.raises(KeyboardInterrupt):
        train(*cfgs, run_dir, progress=False, callback=stop_after_first_epoch)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "training"
    with pytest.raises(FileExistsError, match="--resume"):
        train(*cfgs, run_dir, progress=False)  # never silently overwrite an unfinished run
    # A kill after last.pt but before run.json took epoch 1's record: the record kept in last.pt restores it.
    saved = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**saved, "history": [], "best_epoch": None}))
    meta = train(*cfgs, run_dir, resume=True, progress=False)
    assert meta["status"] == "done" and [r["epoch"] for r in meta["history"]] == [1, 2, 3]
    assert meta["history"][0] == saved["history"][0]
    assert "val_accuracy_ema" not in meta["history"][0] and meta["best_weights"] == "raw"  # default: no average
    assert load_run(run_dir).meta["status"] == "done"


def test_resume_reproduces_an_uninterrupted_run(shop, tmp_path):
    cfgs = (DataConfig(catalog=str(shop)), TINY_MODEL, LossConfig(), TrainConfig(epochs=2, batch_size=32,
                                                                                 augment=False, ema=0.9))
    straight = train(*cfgs, tmp_path / "a", progress=False)

    def stop(event):
        if event["stage"] == "epoch" and event["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(*cfgs, tmp_path / "b", progress=False, callback=stop)
    resumed = train(*cfgs, tmp_path / "b", resume=True, progress=False)
    assert resumed["history"][1]["loss"]["total"] == pytest.approx(straight["history"][1]["loss"]["total"], rel=1e-3)
    # the weights' average carried on from last.pt (restarted from epoch 1's weights it would validate otherwise)
    for m in ("image", "text"):
        assert resumed["history"][1]["val_accuracy_ema"][m] == pytest.approx(
            straight["history"][1]["val_accuracy_ema"][m], abs=0.02)


def test_damaged_or_foreign_runs_are_refused_with_what_to_do(trained, tmp_path):
    run_dir, _ = trained
    with pytest.raises(RunError, match="train"):
        load_run(tmp_path / "nothing")
    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    meta = json.loads((bad / "run.json").read_text())
    meta["model"]["dim"] = 48  # an edited run.json no longer matches model.pt
    (bad / "run.json").write_text(json.dumps(meta))
    with pytest.raises(RunError, match="does not match"):
        load_run(bad)
    (bad / "run.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(RunError, match="format"):
        load_run(bad)


def test_a_pickle_that_would_run_code_is_refused_unopened(trained, tmp_path):
    run_dir, _ = trained
    evil = tmp_path / "evil"
    shutil.copytree(run_dir, evil)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Exploit()}, evil / "model.pt")
    with pytest.raises(RunError):
        load_run(evil)
    assert not marker.exists()


def test_cli_demo_train_evaluate(tmp_path, capsys, monkeypatch):
    assert main(["demo-data", "--out", str(tmp_path / "demo"), "--products", "160", "--quiet"]) == 0
    csv = tmp_path / "demo" / "metadata.csv"
    assert csv.is_file()
    monkeypatch.chdir(tmp_path / "demo")  # trained from the shop's folder with a relative path ...
    args = ["train", "--catalog", "metadata.csv", "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "32",
            "--cnn-width", "8", "--hidden", "32", "--dim", "16", "--conv-channels", "16", "--word-dim", "8",
            "--losses", "cls,gap", "--quiet"]
    assert main(args) == 0
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["loss"]["losses"] == ["cls", "gap"] and meta["model"]["dim"] == 16
    assert meta["data"]["catalog"] == str(csv.resolve())
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)  # ... and evaluated from another folder: the run still finds its catalogue
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"n_test", "classification", "retrieval", "modality_gap"} <= set(result)
    assert main(["evaluate", "--run", str(tmp_path / "missing")]) == 2
    assert "no run.json" in capsys.readouterr().err
    assert main(["train", "--catalog", str(csv), "--out", str(tmp_path / "r2"), "--text-col", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_runs_saved_before_a_setting_existed_reload_with_what_they_were_trained_with():
    from huse_core.config import from_dict, to_dict

    assert from_dict(LossConfig, {"beta": 1.0}).gap_anchor == "none"  # the paper's gap loss, as trained then
    assert from_dict(TrainConfig, {"epochs": 12}).precision == "fp32"
    assert from_dict(TrainConfig, {"epochs": 12}).val_max == 0  # validated on its whole split, and resumes so
    assert from_dict(LossConfig, to_dict(LossConfig())) == LossConfig()  # today's runs keep today's values
    assert from_dict(TrainConfig, to_dict(TrainConfig())) == TrainConfig()


def test_max_steps_cuts_the_last_epoch_and_decays_the_rate_over_the_steps_taken(shop, tmp_path):
    events = []
    # 240 products: 6 steps an epoch -> 6 + 2; validation on a 10-product sample of the validation split
    cfg = TrainConfig(epochs=5, batch_size=32, max_steps=8, val_max=10)
    meta = train(DataConfig(catalog=str(shop)), TINY_MODEL, LossConfig(), cfg, tmp_path / "run", progress=False,
                 callback=events.append)
    assert meta["status"] == "done" and [r["epoch"] for r in meta["history"]] == [1, 2]
    assert meta["val_used"] == 10 < meta["splits"]["val"]
    steps = [(e["epoch"], e["step"], e["steps"]) for e in events if e["stage"] == "train"]
    assert steps[-1] == (2, 2, 2) and len(steps) == 8
    sched = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["scheduler"]
    assert sched["total_steps"] == 8 and sched["last_epoch"] == 8  # one cycle over the 8 steps, finished
    for few in (1, 3, 5):  # a handful of steps still trains (torch's one-cycle divided by zero at 5)
        short = train(DataConfig(catalog=str(shop)), TINY_MODEL, LossConfig(), TrainConfig(epochs=1, batch_size=32,
                      max_steps=few), tmp_path / f"run-{few}", progress=False)
        assert short["status"] == "done"
    with pytest.raises(ValueError, match="--max-steps"):
        train(DataConfig(catalog=str(shop)), TINY_MODEL, LossConfig(), TrainConfig(epochs=1, max_steps=-1),
              tmp_path / "bad", progress=False)


def test_validation_sample_is_seeded_sorted_and_capped():
    rows = np.arange(100, 400)
    picked = validation_rows(rows, TrainConfig(val_max=50, seed=1))
    assert len(picked) == 50 and len(set(picked)) == 50 and set(picked) <= set(rows)
    assert np.all(np.diff(picked) > 0)  # catalogue order
    assert np.array_equal(picked, validation_rows(rows, TrainConfig(val_max=50, seed=1)))  # same every epoch
    assert not np.array_equal(picked, validation_rows(rows, TrainConfig(val_max=50, seed=2)))
    assert np.array_equal(validation_rows(rows, TrainConfig(val_max=0)), rows)
    assert np.array_equal(validation_rows(rows, TrainConfig(val_max=300)), rows)
    with pytest.raises(ValueError, match="--val-max"):
        validation_rows(rows, TrainConfig(val_max=-1))
