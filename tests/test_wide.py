"""The wide head: title logits = shared classifier + t * linear SVM margins over TF-IDF n-grams, fitted last."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from huse_core.config import DataConfig, LossConfig, ModelConfig, TrainConfig, from_dict
from huse_core.data.ngrams import NgramSettings
from huse_core.data.text import Tokenizer
from huse_core.model import build_model
from huse_core.model.ngram import TextInput

HEADS = [{"name": "leaf", "kind": "single", "classes": ["a", "b", "c"]},
         {"name": "tags", "kind": "multi", "classes": ["x", "y"]}]
TITLES = ["Nike Men Blue Running Shoes", "Puma Men Black Running Shoe", "Nike Women Blue Tshirt",
          "Fabindia Women Blue Kurta"]
SETTINGS = NgramSettings(n_buckets=1 << 12)
CFG = ModelConfig(cnn_width=8, hidden=32, dim=16, conv_channels=16, word_dim=8, text_backbone="ngram",
                  ngram_buckets=SETTINGS.n_buckets, ngram_dim=8)


def tiny_model(cfg: ModelConfig = CFG):
    torch.manual_seed(0)
    tok = Tokenizer.fit(TITLES, 50, 6, SETTINGS)
    model = build_model(cfg, HEADS, tok.n_tokens, idf=tok.idf).eval()
    return model, TextInput.from_numpy(tok.encode(TITLES), *tok.encode_ngrams(TITLES))


def test_wide_logits_are_the_tfidf_vector_times_a_table_and_only_the_title_reads_them():
    model, x = tiny_model()
    assert model.wide is not None
    assert all(torch.count_nonzero(z) == 0 for z in model.title_logits(x).values())  # a linear model's zero start
    with torch.no_grad():
        model.wide.bag.weight.normal_()
        model.wide.bag.weight[0] = 0  # the padding row
    wide = model.title_logits(x)
    assert wide["leaf"].shape == (4, 3) and wide["tags"].shape == (4, 2)
    # By hand: the dense TF-IDF row (sublinear tf x IDF, unit L2) times the table, split per head
    w = model.text.ngrams.weights(x.ngram_ids, x.ngram_counts)
    dense = torch.zeros(4, SETTINGS.n_buckets).index_put_((torch.arange(4)[:, None].expand_as(x.ngram_ids),
                                                           x.ngram_ids.long()), w, accumulate=True)
    assert torch.allclose(dense.norm(dim=1), torch.ones(4), atol=1e-5)
    with torch.no_grad():
        model.wide.bias.normal_()
    wide = model.title_logits(x)
    expected = dense @ model.wide.bag.weight + model.wide.bias
    assert torch.allclose(torch.cat([wide["leaf"], wide["tags"]], 1), expected, atol=1e-5)

    image_emb = model.encode_image(torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8))
    text_emb = model.encode_text(x)
    plain = model.probabilities(image_emb, text_emb)
    with_wide = model.probabilities(image_emb, text_emb, wide=wide)
    deep = model.logits(text_emb)
    assert torch.allclose(with_wide["leaf"]["text"], (deep["leaf"] + wide["leaf"]).softmax(-1), atol=1e-6)
    assert torch.allclose(with_wide["tags"]["text"], torch.sigmoid(deep["tags"] + wide["tags"]), atol=1e-6)
    assert not torch.allclose(with_wide["leaf"]["text"], plain["leaf"]["text"])
    product = model.logits(model.encode_product(image_emb, text_emb))["leaf"]
    assert torch.allclose(with_wide["leaf"]["product"], (product + wide["leaf"]).softmax(-1), atol=1e-6)
    assert torch.equal(with_wide["leaf"]["image"], plain["leaf"]["image"])  # a photo never reads the title's n-grams


def test_the_optimiser_never_moves_the_wide_head():
    from huse_core.training.train import make_optimizer

    model, _ = tiny_model()
    assert not any(p.requires_grad for p in model.wide.parameters())
    opt, _ = make_optimizer(model, TrainConfig(lr=1e-3, batch_size=4), steps=10)
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not trained & {id(p) for p in model.wide.parameters()}


def test_fit_wide_head_stores_t_times_the_svms_and_keeps_zero_where_they_mislead():
    """t is chosen on held-out titles by the fusion layer's log-loss. Where a title's class is one word, the SVM is
    right where the untrained towers are not: t > 0 and the stored table gives t * the SVM's decision values. A head
    whose validation labels contradict what the train titles taught (the SVM's margins point the wrong way there)
    keeps t = 0: an all-zero table, the deep prediction alone."""
    from sklearn.svm import LinearSVC

    from huse_core.training import wide_fit

    colours = ["red", "blue", "green"]
    words = ("cotton", "linen", "silk", "slim", "plain", "soft")
    titles = [f"{c} {w} shirt" for c in colours for w in words]
    y = np.array([i for i in range(3) for _ in words])
    train = np.array([i for i in range(len(titles)) if i % len(words) < 4])  # 4 titles a colour; 2 held out
    val = np.setdiff1d(np.arange(len(titles)), train)
    red = (y == 0).astype(np.int64)
    flipped = np.where(np.isin(np.arange(len(titles)), val), 1 - red, red)  # "red" on train, "not red" on val
    heads = [{"name": "colour", "kind": "single", "classes": colours},
             {"name": "flip", "kind": "single", "classes": ["no", "yes"]}]
    tok = Tokenizer.fit(titles, 50, 6, SETTINGS)
    torch.manual_seed(0)
    model = build_model(CFG, heads, tok.n_tokens, idf=tok.idf).eval()
    assert model.fusion is not None  # t is weighed on the layer's prediction, which reads the photo too
    ids, counts = tok.encode_ngrams(titles)
    pixels = np.random.default_rng(0).integers(0, 256, (len(titles), 32, 32, 3), np.uint8)

    class Prep:  # what fit_wide_head reads of a Prepared
        ngram_ids, ngram_counts = ids, counts
        labels = {"colour": y, "flip": flipped}
        features = None

        def __init__(self):
            self.pixels = pixels

        def text_input(self, rows):
            return TextInput.from_numpy(tok.encode([titles[i] for i in rows]), ids[rows], counts[rows])

    chosen = wide_fit.fit_wide_head(model, Prep(), train, val, torch.device("cpu"))
    assert chosen["colour"] > 0 and chosen["flip"] == 0.0
    x_train, x = wide_fit.tfidf_rows(model, Prep(), train), wide_fit.tfidf_rows(model, Prep(), val)
    svm = LinearSVC().fit(x_train, y[train])
    z = model.title_logits(Prep().text_input(val))
    assert torch.allclose(z["colour"], chosen["colour"] * torch.from_numpy(svm.decision_function(x)).float(), atol=1e-3)
    assert (z["colour"].argmax(1).numpy() == y[val]).all()
    assert torch.count_nonzero(z["flip"]) == 0


def test_t_is_chosen_by_log_loss_not_by_accuracy():
    """Margins that agree with a right but unsure deep prediction change no accuracy, yet make it surer: log-loss
    falls with t and a t > 0 wins (an accuracy rule would keep 0); margins that disagree keep t = 0; a head
    with no labelled validation row keeps 0; a multi-label head is weighed by its binary log-loss."""
    from huse_core.training.wide_fit import choose_scale

    deep = torch.tensor([[0.2, 0.0, -0.1], [0.0, 0.3, 0.1]])
    y = np.array([0, 1])
    agree = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0]])
    t, loss = choose_scale(deep, agree, y, "single")
    assert t >= 4 and loss[t] < loss[0.0] / 100 and loss[t] == pytest.approx(min(loss.values()), abs=1e-6)
    assert loss[0.0] == pytest.approx(float(torch.nn.functional.cross_entropy(deep, torch.from_numpy(y))))
    assert choose_scale(deep, -agree, y, "single")[0] == 0.0
    assert choose_scale(deep, agree, np.array([-1, -1]), "single")[0] == 0.0
    tags = np.array([[1, 0], [0, 1]])
    t, loss = choose_scale(torch.zeros(2, 2), torch.tensor([[2.0, -2.0], [-2.0, 2.0]]), tags, "multi")
    assert t >= 4 and loss[0.0] == pytest.approx(np.log(2)) and loss[t] < 0.01


def test_a_wide_head_too_large_for_its_classes_is_left_out(monkeypatch, capsys):
    from huse_core.model import wide
    from huse_core.training.wide_fit import fit_wide_head

    monkeypatch.setattr(wide, "MAX_CELLS", SETTINGS.n_buckets * 4)  # under the 5 classes of HEADS
    model, _ = tiny_model()
    assert model.wide is None and model.title_logits(None) is None
    assert fit_wide_head(model, None, np.arange(3), np.arange(3), torch.device("cpu"), progress=True) == {}
    assert "wide head: left out" in capsys.readouterr().err


def test_non_ngram_towers_and_runs_from_before_have_no_wide_head():
    assert build_model(dataclasses.replace(CFG, text_backbone="conv"), HEADS, 30).wide is None
    assert tiny_model(dataclasses.replace(CFG, wide_head=False))[0].wide is None
    assert from_dict(ModelConfig, {"text_backbone": "ngram"}).wide_head is False  # run.json from before it


@pytest.fixture(scope="module")
def wide_run(tiny_demo_csv, tmp_path_factory):
    from huse_core.training.train import train

    run_dir = tmp_path_factory.mktemp("wide_run") / "run"
    cfg = ModelConfig(cnn_width=8, hidden=64, dim=32, ngram_buckets=1 << 14, ngram_dim=16)
    meta = train(DataConfig(catalog=str(tiny_demo_csv)), cfg, LossConfig(),
                 TrainConfig(epochs=1, batch_size=32, threads=1), run_dir, progress=False)
    assert set(meta["wide_head"]) == {h["name"] for h in meta["heads"]}
    return run_dir


def test_a_trained_run_classifies_and_evaluates_titles_with_its_wide_head(wide_run):
    from huse_core.run import load_run
    from huse_core.training.evaluate import split_predictions

    run = load_run(wide_run)
    assert run.model_cfg.wide_head and run.model.wide is not None
    fitted = [h for h, t in run.meta["wide_head"].items() if t > 0]
    assert fitted, run.meta["wide_head"]  # the tiny demo's titles name their class: the SVM helps one epoch's towers
    assert run.model.wide.bag.weight.abs().sum() > 0  # fitted and saved in model.pt
    title = "Blue Striped Shirt"
    text_emb = run.encode_texts([title])
    wide = run.title_logits([title])
    leaf = next(h for h in run.heads if h["name"] == fitted[0])
    with torch.no_grad():
        expected = (run.model.logits(torch.from_numpy(text_emb))[leaf["name"]] + wide[leaf["name"]]).softmax(-1)[0]
    top = run.classify(text=title, top=1)[leaf["name"]]["text"][0]
    assert top["label"] == leaf["classes"][int(expected.argmax())]
    assert top["prob"] == pytest.approx(float(expected.max()), abs=1e-4)
    pred = split_predictions(run, "test")
    with_titles = run.probabilities(pred["image_emb"], pred["text_emb"], pred["titles"])
    assert np.allclose(pred["probs"][leaf["name"]]["text"], with_titles[leaf["name"]]["text"])
    assert not np.allclose(pred["probs"][leaf["name"]]["text"],
                           run.probabilities(text_emb=pred["text_emb"])[leaf["name"]]["text"])


def test_evaluate_says_which_heads_read_the_wide_head(wide_run):
    from huse_core.training.evaluate import evaluate, format_tables, wide_line

    result = evaluate(wide_run, progress=False, baseline=False)
    fitted = {h: t for h, t in result["wide_head"].items() if t > 0}
    assert fitted and wide_line(result) in format_tables(result)
    assert all(f"{h} {t:g}" in wide_line(result) for h, t in fitted.items())
    assert wide_line({"wide_head": {h: 0.0 for h in fitted}}) is None


def test_a_run_from_before_the_wide_head_loads_and_evaluates(wide_run, tmp_path):
    from huse_core.artifacts import load_torch, save_torch
    from huse_core.run import load_run
    from huse_core.training.evaluate import evaluate, format_tables

    old = tmp_path / "old"
    shutil.copytree(wide_run, old)
    meta = json.loads((old / "run.json").read_text())
    meta["model"].pop("wide_head")
    meta.pop("wide_head")
    (old / "run.json").write_text(json.dumps(meta))
    state = {k: v for k, v in load_torch(old / "model.pt").items() if not k.startswith("wide.")}
    save_torch(old / "model.pt", state)
    run = load_run(old)
    assert run.model.wide is None and run.title_logits(["red shirt"]) is None
    assert run.classify(text="red shirt")[run.leaf]["text"]
    result = evaluate(old, progress=False, baseline=False)
    assert 0 <= result["classification"][run.leaf]["text"]["accuracy"] <= 1
    assert result["wide_head"] == {} and "wide head" not in format_tables(result)


def test_the_svms_read_a_seeded_sample_of_a_huge_catalogue(monkeypatch):
    from huse_core.training import wide_fit

    class Prep:
        ngram_counts = np.zeros((5000, 300), np.uint8)

    Prep.ngram_counts[:, :100] = 1  # 100 n-grams a title
    rows = np.arange(5000)
    assert np.array_equal(wide_fit.train_sample(Prep(), rows), rows)  # under both caps: every title
    monkeypatch.setattr(wide_fit, "MAX_NGRAMS", 100 * 1000)
    sample = wide_fit.train_sample(Prep(), rows, seed=3)
    assert len(sample) == 1000 and (np.diff(sample) > 0).all()
    assert np.array_equal(sample, wide_fit.train_sample(Prep(), rows, seed=3))
    monkeypatch.setattr(wide_fit, "MAX_TRAIN", 400)
    assert len(wide_fit.train_sample(Prep(), rows)) == 400
