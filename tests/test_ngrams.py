"""Hashed n-grams: deterministic ids, TF-IDF weights as scikit-learn's, stored with the run, old runs unchanged."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch

from huse_core.config import DataConfig, LossConfig, ModelConfig, TrainConfig, from_dict
from huse_core.data import ngrams
from huse_core.data.ngrams import NgramSettings, bucket, char_grams, inverse_document_frequency, word_grams
from huse_core.data.text import Tokenizer, words
from huse_core.model.ngram import NgramBag

SMALL = NgramSettings(n_buckets=1 << 20, max_features=256)  # few collisions: grams and buckets match one to one
TITLES = ["Nike Men Blue Running Shoes", "Puma Men Black Running Shoe", "Nike Women Blue Tshirt",
          "Fabindia Women Blue Kurta", "Titan Men Black Watch", "Titan Women Gold Watch"]


def grams(title: str, s: NgramSettings = SMALL) -> list[str]:
    ws = words(title)
    return ["w|" + g for g in word_grams(ws, *s.word)] + ["c|" + g for w in ws for g in char_grams(w, *s.char)]


def test_bucket_is_crc32_of_the_utf8_gram_never_python_hash():
    for gram in ("w|shirt", "c| sh", "c|日本 ", "w|men s"):
        assert bucket(gram, 1 << 18) == 1 + zlib.crc32(gram.encode("utf-8")) % ((1 << 18) - 1)
    code = ("import sys; from huse_core.data.ngrams import NgramSettings; "
            "ids, counts = NgramSettings(n_buckets=4096).encode(sys.argv[1:]); print(ids.tolist(), counts.tolist())")
    here = NgramSettings(n_buckets=4096).encode(TITLES)
    for seed in ("1", "2"):  # Python's own hash() would differ between these two processes
        out = subprocess.run([sys.executable, "-c", code, *TITLES], capture_output=True, text=True, check=True,
                             env=os.environ | {"PYTHONHASHSEED": seed}).stdout
        assert out.strip() == f"{here[0].tolist()} {here[1].tolist()}"


def test_char_grams_are_scikit_learns_char_wb_and_word_grams_its_word_ngrams():
    from sklearn.feature_extraction.text import CountVectorizer

    title = "nike men blue running shoes"
    char_wb = CountVectorizer(analyzer="char_wb", ngram_range=(3, 5)).build_analyzer()
    assert sorted(g for w in words(title) for g in char_grams(w, 3, 5)) == sorted(char_wb(title))
    word = CountVectorizer(ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b").build_analyzer()
    assert sorted(word_grams(words(title), 1, 2)) == sorted(word(title))


def test_weights_equal_tfidf_vectorizers_sublinear_l2_rows():
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = [*TITLES, "Blue blue blue shoes shoes"]  # repeats: sublinear tf
    ids, counts = SMALL.encode(docs)
    bag = NgramBag(SMALL.n_buckets, 4, inverse_document_frequency(ids, SMALL.n_buckets)).eval()
    ours = bag.weights(torch.from_numpy(ids), torch.from_numpy(counts)).numpy()
    vec = TfidfVectorizer(analyzer=grams, sublinear_tf=True, lowercase=False)
    ref = vec.fit_transform(docs).toarray()
    gram_bucket = {g: bucket(g, SMALL.n_buckets) for g in vec.get_feature_names_out()}
    assert len(set(gram_bucket.values())) == len(gram_bucket)  # no collision, so a bucket is a gram
    for row in range(len(docs)):
        expected = {gram_bucket[g]: ref[row, j] for j, g in enumerate(vec.get_feature_names_out()) if ref[row, j]}
        got = {int(b): float(w) for b, w in zip(ids[row], ours[row]) if b}
        assert got.keys() == expected.keys()
        assert np.allclose([got[b] for b in expected], list(expected.values()), atol=1e-6)


def test_typos_and_plurals_share_most_of_their_ngrams():
    def overlap(a: str, b: str) -> float:
        x, y = set(SMALL.title_buckets(a)), set(SMALL.title_buckets(b))
        return len(x & y) / len(x | y)

    assert overlap("running shoe", "running shoes") > 0.6  # plural
    assert overlap("sunglasses", "sunglases") > 0.4  # a typo
    assert overlap("Fastrack", "fastrack") == 1.0  # case
    assert overlap("running shoe", "gold watch") == 0.0
    tok = Tokenizer.fit(TITLES, 100, 8)
    assert not (tok.encode(["sunglases"]) > 1).any()  # the word vocabulary has nothing for an unseen spelling


def test_encode_pads_truncates_and_keeps_word_grams_first():
    s = NgramSettings(n_buckets=1 << 16, max_features=6)
    ids, counts = s.encode(["blue blue shirt", ""])
    assert ids.shape == counts.shape == (2, 6) and ids.dtype == np.uint16 and counts.dtype == np.uint8
    assert ids[0].tolist()[:3] == [bucket("w|blue", s.n_buckets), bucket("w|shirt", s.n_buckets),
                                   bucket("w|blue blue", s.n_buckets)]
    assert counts[0, 0] == 2 and (ids[0] > 0).all() and not ids[1].any() and not counts[1].any()
    wide, _ = NgramSettings(n_buckets=1 << 18, max_features=6).encode(["blue blue shirt"])
    assert wide.dtype == np.int32 and wide[0, 0] == bucket("w|blue", 1 << 18)  # past uint16: int32
    fitted = NgramSettings(max_features=512).fitted(TITLES)
    assert fitted.max_features == max(len(SMALL.title_buckets(t)) for t in TITLES)
    assert NgramSettings.from_dict(json.loads(json.dumps(fitted.to_dict()))) == fitted
    with pytest.raises(ValueError, match="version"):
        NgramSettings.from_dict(fitted.to_dict() | {"version": 99})


def test_idf_is_learned_from_the_titles_it_is_fitted_on():
    tok = Tokenizer.fit(TITLES, 100, 8, NgramSettings(n_buckets=1 << 16))
    idf = tok.idf
    common, rare = bucket("w|men", 1 << 16), bucket("w|fabindia", 1 << 16)
    assert idf[common] < idf[rare]
    assert np.isclose(idf[rare], np.log(7 / 2) + 1) and np.isclose(idf[common], np.log(7 / 4) + 1)
    assert Tokenizer.from_dict(tok.to_dict()).idf is None  # a saved run's IDF lives in its model.pt


NGRAM_MODEL = ModelConfig(cnn_width=8, hidden=64, dim=32, conv_channels=32, word_dim=16, text_backbone="conv+ngram",
                          ngram_buckets=1 << 14, ngram_dim=16)


@pytest.fixture(scope="module")
def ngram_run(tiny_demo_csv, tmp_path_factory):
    from huse_core.training.train import train

    run_dir = tmp_path_factory.mktemp("ngram_run")
    train(DataConfig(catalog=str(tiny_demo_csv)), NGRAM_MODEL, LossConfig(), TrainConfig(epochs=1, batch_size=32,
          threads=1), run_dir, progress=False)
    return run_dir


def test_settings_in_run_json_idf_in_model_pt_and_the_same_inputs_at_inference(ngram_run):
    from huse_core.artifacts import load_torch
    from huse_core.prepare import embed
    from huse_core.run import load_run
    from huse_core.training.evaluate import prepare_run

    meta = json.loads((ngram_run / "run.json").read_text())
    settings = meta["tokenizer"]["ngrams"]
    assert settings["n_buckets"] == NGRAM_MODEL.ngram_buckets and settings["version"] == 1
    assert tuple(settings["word"]) == (1, 2) and tuple(settings["char"]) == (3, 5)
    state = load_torch(ngram_run / "model.pt")
    run = load_run(ngram_run)
    prep = prepare_run(run)
    train_titles = prep.catalog.df["title"].iloc[prep.split("train")]
    expected_idf = Tokenizer.fit(train_titles, 10, 5, NgramSettings.from_dict(settings)).idf
    assert np.allclose(state["text.ngrams.idf"].numpy(), expected_idf)  # train split only, not val/test
    assert "idf" not in json.dumps(meta["tokenizer"])
    rows = prep.split("test")
    _, trained_path = embed(run.model, prep, rows, torch.device("cpu"))
    titles = prep.catalog.df["title"].iloc[rows].tolist()
    assert np.allclose(run.encode_texts(titles), trained_path.numpy(), atol=1e-6)
    again = load_run(ngram_run).encode_texts(titles + ["sunglases", ""])
    assert np.array_equal(again[: len(titles)], run.encode_texts(titles))


@pytest.fixture(scope="module")
def conv_run(tiny_demo_csv, tmp_path_factory):
    from huse_core.training.train import train

    run_dir = tmp_path_factory.mktemp("conv_run") / "run"
    train(DataConfig(catalog=str(tiny_demo_csv)), dataclasses.replace(NGRAM_MODEL, text_backbone="conv"),
          LossConfig(), TrainConfig(epochs=1, batch_size=32, threads=1), run_dir, progress=False)
    return run_dir


def test_a_run_from_before_ngrams_loads_evaluates_and_searches_as_before(conv_run, tmp_path):
    """run.json without text_backbone or any n-gram setting (as older runs were saved) means the word Conv1D."""
    from huse_core.model.towers import TextTower
    from huse_core.retrieval.build import build_index
    from huse_core.retrieval.search import Searcher
    from huse_core.run import load_run
    from huse_core.training.evaluate import evaluate

    old = tmp_path / "old"
    shutil.copytree(conv_run, old)
    meta = json.loads((old / "run.json").read_text())
    assert "ngrams" not in meta["tokenizer"]  # a conv run's tokenizer is saved as before this change
    meta["model"] = {k: v for k, v in meta["model"].items() if not k.startswith("ngram") and k != "text_backbone"}
    (old / "run.json").write_text(json.dumps(meta))
    run, current = load_run(old), load_run(conv_run)
    assert type(run.model.text) is TextTower and run.tokenizer.ngrams is None and run.model_cfg.text_backbone == "conv"
    assert from_dict(ModelConfig, {"dim": 64}).text_backbone == "conv"  # whatever today's default is
    titles = ["Red Striped Shirt", "unknownword", ""]
    assert np.array_equal(run.encode_texts(titles), current.encode_texts(titles))
    result = evaluate(old, progress=False, baseline=False)
    assert result["classification"] == evaluate(conv_run, progress=False, baseline=False)["classification"]
    build_index(old, progress=False)
    hits = Searcher.open(old).search(text="red shirt", k=5)
    assert len(hits) == 5


def test_mismatched_text_backbone_and_tokenizer_is_refused(ngram_run, tmp_path):
    from huse_core.run import RunError, load_run

    bad = tmp_path / "bad"
    shutil.copytree(ngram_run, bad)
    meta = json.loads((bad / "run.json").read_text())
    meta["tokenizer"].pop("ngrams")
    (bad / "run.json").write_text(json.dumps(meta))
    with pytest.raises(RunError, match="retrain"):
        load_run(bad)


def test_ngram_towers_give_unit_vectors_ignore_padding_and_keep_the_idf_in_their_state():
    from huse_core.model import build_model
    from huse_core.model.ngram import TextInput

    heads = [{"name": "leaf", "kind": "single", "classes": ["a", "b", "c"]}]
    s = NgramSettings(n_buckets=1 << 12)
    tok = Tokenizer.fit(TITLES, 50, 6, s)
    for backbone in ("ngram", "conv+ngram"):
        cfg = ModelConfig(cnn_width=8, hidden=32, dim=16, conv_channels=16, word_dim=8, text_backbone=backbone,
                          ngram_buckets=s.n_buckets, ngram_dim=8)
        model = build_model(cfg, heads, tok.n_tokens, idf=tok.idf).eval()
        assert torch.equal(model.state_dict()["text.ngrams.idf"], torch.from_numpy(tok.idf))
        ids, counts = tok.encode_ngrams(TITLES)
        emb = model.encode_text(TextInput.from_numpy(tok.encode(TITLES), ids, counts))
        assert emb.shape == (len(TITLES), 16) and torch.allclose(emb.norm(dim=1), torch.ones(len(TITLES)), atol=1e-5)
        pad = ((0, 0), (0, 7))  # more padding columns
        wider = TextInput.from_numpy(tok.encode(TITLES), np.pad(ids, pad), np.pad(counts, pad))
        assert torch.allclose(model.encode_text(wider), emb, atol=1e-6)
    with pytest.raises(ValueError, match="buckets"):
        build_model(cfg, heads, tok.n_tokens, idf=tok.idf[:-1])


def test_idf_learned_in_chunks_equals_the_idf_of_all_rows_at_once(monkeypatch):
    titles = [*TITLES, "Blue blue blue shoes shoes", "red shoes", "", "nike nike"] * 3
    whole = inverse_document_frequency(SMALL.encode(titles)[0], SMALL.n_buckets)
    monkeypatch.setattr(ngrams, "IDF_CHUNK", 4)  # 4 chunks and a short last one
    chunked = ngrams.titles_idf(SMALL, titles)
    assert chunked.dtype == np.float32 and np.array_equal(chunked, whole)
    assert chunked.min() >= 1.0 and chunked.max() > chunked.min()  # seen buckets weigh less than unseen ones
