"""The TF-IDF title baseline inside `evaluate`: figures per head, verdicts, --no-baseline, multi-label heads."""

import json
import re
import shutil

import numpy as np
import pytest

from huse_core.cli import main
from huse_core.run import load_run
from huse_core.training.baseline import comparison_table, fit_predict, verdict
from huse_core.training.evaluate import evaluate, format_tables, prepare_run

VERDICT = re.compile(r"^(\w+): fused (beats|trails|ties) the title baseline by [+-]\d+\.\d\d accuracy points "
                     r"\(macro-F1 [+-]\d+\.\d\d\)$", re.M)


@pytest.fixture(scope="module")
def evaluated(tiny_trained_run, tmp_path_factory):
    """A copy of the tiny run evaluated with the baseline: (run_dir, result)."""
    run_dir = shutil.copytree(tiny_trained_run, tmp_path_factory.mktemp("baseline") / "run")
    return run_dir, evaluate(run_dir, progress=False)


def test_evaluate_reports_the_title_baseline_above_chance_on_every_head(evaluated):
    run_dir, result = evaluated
    run = load_run(run_dir)
    prep = prepare_run(run)
    test_rows = prep.split("test")
    base = result["baseline"]
    assert base["n_train"] == len(prep.split("train")) and base["seconds"] >= 0
    assert set(base["heads"]) == {h["name"] for h in run.heads if h["kind"] == "single"}
    for head, figures in base["heads"].items():
        assert 0 <= figures["macro_f1"] <= 1 and 0 <= figures["accuracy"] <= 1
        y = prep.labels[head][test_rows]
        y = y[y >= 0]
        majority = np.bincount(y).max() / len(y)  # always guessing the commonest test class
        if head != "season":  # the demo's titles name every other head's class; a season only leans on the article
            assert figures["accuracy"] > majority, (head, figures, majority)
        gap = (result["classification"][head]["fused"]["accuracy"] - figures["accuracy"]) * 100
        assert base["fused_minus_baseline_points"][head] == pytest.approx(gap, abs=0.01)
    assert json.loads((run_dir / "run.json").read_text())["metrics"]["test"]["baseline"] == base


def test_format_tables_puts_the_baseline_beside_the_model_with_one_verdict_per_head(evaluated):
    _, result = evaluated
    text = format_tables(result)
    header = next(line for line in text.splitlines() if line.startswith("head"))
    assert header.split()[1:] == ["image", "acc", "image", "F1", "text", "acc", "text", "F1", "layer", "acc",
                                  "layer", "F1", "fused", "acc", "fused", "F1", "base", "acc", "base", "F1"]
    assert sorted(VERDICT.findall(text)) == sorted(
        (h, verdict(h, result["classification"][h]["fused"], f).split()[2])
        for h, f in result["baseline"]["heads"].items())
    table = comparison_table(result)
    assert list(table.index) == list(result["baseline"]["heads"])
    assert table.loc[result["leaf"], "baseline acc"] == pytest.approx(
        result["baseline"]["heads"][result["leaf"]]["accuracy"] * 100)


def test_cli_no_baseline_leaves_the_baseline_out(evaluated, capsys):
    run_dir, _ = evaluated
    assert main(["evaluate", "--run", str(run_dir), "--quiet", "--no-baseline"]) == 0
    out = capsys.readouterr().out
    assert "title baseline" not in out and "base acc" not in out and "fused acc" in out
    assert "baseline" not in json.loads((run_dir / "run.json").read_text())["metrics"]["test"]
    assert main(["evaluate", "--run", str(run_dir), "--quiet"]) == 0
    assert VERDICT.search(capsys.readouterr().out)


def test_verdict_says_beats_trails_or_ties_in_points():
    base = {"accuracy": 0.970, "macro_f1": 0.80}
    assert "fused beats the title baseline by +0.60 accuracy points (macro-F1 +2.00)" in verdict(
        "articleType", {"accuracy": 0.976, "macro_f1": 0.82}, base)
    assert "trails the title baseline by -0.50 accuracy points" in verdict("x", {"accuracy": 0.965, "macro_f1": .8},
                                                                           base)
    assert " ties " in verdict("x", {"accuracy": 0.97, "macro_f1": 0.8}, base)


def test_fit_predict_handles_multi_label_missing_labels_and_a_single_class():
    words = ["red", "blue", "cotton", "wool"]
    rng = np.random.default_rng(0)
    hot = (rng.random((120, 4)) < 0.5).astype(np.float32)
    hot[:, 3] = 0  # "wool" never tagged in train: never predicted
    titles = [" ".join(w for w, on in zip(words, row) if on) + " shirt" for row in hot]
    colour = np.where(hot[:, 0] > 0, 0, 1).astype(np.int64)
    colour[::7] = -1  # missing labels are left out of the fit
    heads = [{"name": "tags", "kind": "multi", "classes": words}, {"name": "colour", "kind": "single",
                                                                   "classes": ["red", "other"]},
             {"name": "size", "kind": "single", "classes": ["s", "m"]}]
    labels = {"tags": hot, "colour": colour, "size": np.zeros(120, dtype=np.int64)}
    preds, seconds = fit_predict(titles, labels, ["red cotton wool shirt", "blue shirt"], heads)
    assert seconds >= 0
    assert preds["tags"].tolist() == [[1, 0, 1, 0], [0, 1, 0, 0]]
    assert preds["colour"].tolist() == [[1, 0], [0, 1]]
    assert preds["size"].tolist() == [[1, 0], [1, 0]]  # one class in train: always that class
