"""Hub encoders as HUSE towers (open_clip, timm): tiny randomly initialised models saved by the test and loaded
through the same path as real weights; training, evaluation, search, caches, zero-shot and refusal messages."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from huse_core.compat import import_torchvision

import_torchvision()  # open_clip and timm import torchvision themselves
open_clip = pytest.importorskip("open_clip", reason="optional: pip install -r requirements-pretrained.txt")
timm = pytest.importorskip("timm", reason="optional: pip install -r requirements-pretrained.txt")

from huse_core.cli import main  # noqa: E402
from huse_core.config import DataConfig, LossConfig, ModelConfig, TrainConfig  # noqa: E402
from huse_core.model import build_model, default_image_size, hub, titles  # noqa: E402
from huse_core.run import load_run  # noqa: E402
from huse_core.training.train import train  # noqa: E402

CLIP = "openclip:huse-test-clip"  # registered below: 32-px ViT and text transformer, 2 layers each, 32-d space
CLIP_CFG = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8,
                                            "head_width": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
HEADS = [{"name": "leaf", "kind": "single", "classes": ["Tshirts", "Watches", "other"]}]
TRAIN = TrainConfig(epochs=2, batch_size=32, threads=1)


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


def make_tiny_clip(folder):
    """A random tiny CLIP saved as a weights file in `folder`, its config registered with open_clip (also used by
    the app's test)."""
    (folder / "configs").mkdir()
    (folder / "configs" / "huse-test-clip.json").write_text(json.dumps(CLIP_CFG))
    open_clip.add_model_config(folder / "configs")
    torch.manual_seed(0)
    path = folder / "tiny-clip.bin"
    torch.save(open_clip.create_model("huse-test-clip").state_dict(), path)
    return path


def clip_config(weights, **kw) -> ModelConfig:
    return ModelConfig(backbone=CLIP, text_backbone=CLIP, image_weights=str(weights), text_weights=str(weights),
                       **{"hidden": 32, "dim": 16, **kw})


@pytest.fixture(scope="module")
def clip_run(clip_weights, tiny_demo_csv, tmp_path_factory):
    """A run with the tiny CLIP under both towers, trained 2 epochs, evaluated and indexed."""
    from huse_core.retrieval.build import build_index
    from huse_core.training.evaluate import evaluate

    run_dir = tmp_path_factory.mktemp("clip_run") / "run"
    data = DataConfig(catalog=str(tiny_demo_csv), image_size=default_image_size(CLIP))
    threads = torch.get_num_threads()
    try:
        meta = train(data, clip_config(clip_weights), LossConfig(), TRAIN, run_dir, progress=False)
    finally:
        torch.set_num_threads(threads)
    result = evaluate(run_dir, progress=False, baseline=False)
    build_index(run_dir, with_map=False, progress=False)
    return run_dir, meta, result


def test_clip_pair_trains_evaluates_indexes_and_searches(clip_run):
    from huse_core.retrieval.search import Searcher

    run_dir, meta, result = clip_run
    assert meta["status"] == "done" and meta["model"]["backbone"] == CLIP and len(meta["history"]) == 2
    assert 0.0 <= result["classification"][meta["leaf"]]["fused"]["accuracy"] <= 1.0
    state = torch.load(run_dir / "model.pt", weights_only=True)
    # Frozen encoders stay out of model.pt; their records (name, version, fingerprint) are in it.
    assert not [k for k in state if k.startswith("image.backbone.net.")]
    record = state["image.backbone.record._extra_state"]
    assert record["encoder"] == CLIP and record["library"].startswith("open_clip ") and len(record["sha256"]) == 16
    assert state["text.encoder._extra_state"]["sha256"] == record["sha256"]
    hits = Searcher.open(run_dir).search(text="Black Watch", k=5)
    assert len(hits) == 5 and all(np.isfinite(h.score) for h in hits)
    run = load_run(run_dir)
    assert run.model.encoders() == {"image": record, "text": state["text.encoder._extra_state"]}
    emb = run.encode_texts(["Black Watch", "Blue Jeans"])
    assert emb.shape == (2, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


def test_features_are_computed_once_then_read_from_the_cache(clip_run, monkeypatch):
    from huse_core.training.evaluate import prepare_run
    from huse_core.model.encoders import HubImage

    run = load_run(clip_run[0])
    cache = clip_run[0].parent.parent  # never mind where: find the cache files by name below
    assert run.model.image.frozen

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed instead of read from the cache")

    monkeypatch.setattr(titles.TitleEncoder, "encode", refuse)
    monkeypatch.setattr(HubImage, "forward", refuse)
    prep = prepare_run(run)  # title features: from the cache written in training
    prep.compute_features(run.model, torch.device("cpu"), progress=False)  # photo features: likewise
    assert prep.text_features.shape == (len(prep.catalog.df), 32) and prep.features.shape[1] == 32
    names = [p.name for p in prep.cache_dir.iterdir()]
    assert any(n.startswith("features-openclip_huse-test-clip-") for n in names), names
    assert any(n.startswith("titles-openclip_huse-test-clip-") for n in names), (names, cache)


def test_trimmed_title_encoding_equals_open_clip_encode_text(clip_weights):
    encoder = titles.title_encoder(clip_config(clip_weights))
    texts = ["Nordvik Women Black Heels", "a", "Puma Men Blue Running Shoes With A Long Name And More Words"]
    ours = encoder.encode(texts)
    full = encoder.model.encode_text(encoder.tokenizer(texts), normalize=True).detach().numpy()
    assert np.abs(ours - full).max() < 1e-5


def test_timm_backbone_trains_and_its_run_encodes_photos(clip_weights, tiny_demo_csv, tmp_path):
    folder = tmp_path / "timm-weights"
    folder.mkdir()
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(timm.create_model("test_convnext", pretrained=False).state_dict(), folder / "model.safetensors")
    backbone = "timm:test_convnext.r160_in1k"
    assert default_image_size(backbone) == 160
    model_cfg = ModelConfig(backbone=backbone, image_weights=str(folder), hidden=32, dim=16)
    data = DataConfig(catalog=str(tiny_demo_csv), image_size=64)  # the backbone resizes to its own 160 px
    threads = torch.get_num_threads()
    try:
        meta = train(data, model_cfg, LossConfig(), TRAIN, tmp_path / "run", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert meta["status"] == "done"
    run = load_run(tmp_path / "run")
    emb = run.encode_images(np.full((2, 64, 64, 3), 200, np.uint8))
    assert emb.shape == (2, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


def test_zero_shot_model_classifies_by_class_name_prompts(clip_weights):
    cfg = clip_config(clip_weights, zero_shot=True, dim=32)
    model = build_model(cfg, HEADS, n_tokens=10).eval()
    encoder = titles.title_encoder(cfg)
    prompts = torch.from_numpy(encoder.encode([titles.PROMPT.format(c) for c in HEADS[0]["classes"]]))
    weight = model.classifier[0].weight.detach()
    assert torch.allclose(weight[:2] * cfg.logit_scale / encoder.logit_scale, prompts[:2], atol=1e-5)
    assert not weight[2].any()  # "other" names nothing
    with torch.no_grad():
        text_emb = model.encode_text(prompts[:2])  # the encoder's own space, unchanged
        assert torch.allclose(text_emb, prompts[:2], atol=1e-5)
        pred = model.probabilities(text_emb=text_emb)["leaf"]["text"].argmax(1)
    assert pred.tolist() == [0, 1]
    with pytest.raises(ValueError, match="--dim 32"):
        build_model(clip_config(clip_weights, zero_shot=True, dim=16), HEADS, n_tokens=10)
    with pytest.raises(ValueError, match="same openclip"):
        build_model(ModelConfig(backbone=CLIP, image_weights=str(clip_weights), zero_shot=True), HEADS, 10)


def test_zero_shot_run_with_no_training_evaluates_indexes_and_searches_from_the_cli(clip_weights, tiny_demo_csv,
                                                                                    tmp_path, capsys):
    """`train --zero-shot --epochs 0`: the CLIP pair as downloaded becomes a run `evaluate`, `index` and `search`
    take like any other, to compare with one trained on the shop."""
    run_dir = tmp_path / "as-downloaded"
    flags = ["--catalog", str(tiny_demo_csv), "--out", str(run_dir), "--backbone", CLIP, "--text-backbone", CLIP,
             "--image-weights", str(clip_weights), "--text-weights", str(clip_weights), "--dim", "32",
             "--image-size", "32", "--quiet"]
    threads = torch.get_num_threads()
    try:
        assert main(["train", *flags, "--epochs", "0"]) == 2  # an untrained model without --zero-shot: refused
        assert "--epochs 0" in capsys.readouterr().err and not (run_dir / "run.json").exists()
        assert main(["train", *flags, "--zero-shot", "--epochs", "0"]) == 0
    finally:
        torch.set_num_threads(threads)
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "done" and meta["best_epoch"] == 0 and meta["history"] == []
    assert meta["model"]["zero_shot"] and not meta["model"]["fusion_layer"]
    run = load_run(run_dir)
    encoder = titles.title_encoder(clip_config(clip_weights))
    names = ["Black Watch", "Blue Jeans"]
    assert np.allclose(run.encode_texts(names), encoder.encode(names), atol=1e-5)  # CLIP's own space, untrained
    leaf = next(h for h in meta["heads"] if h["name"] == meta["leaf"])
    prompts = encoder.encode([titles.PROMPT.format(c) for c in leaf["classes"]])
    weight = run.model.classifier[[h["name"] for h in meta["heads"]].index(meta["leaf"])].weight.detach().numpy()
    real = [i for i, c in enumerate(leaf["classes"]) if c != "other"]
    assert np.allclose(weight[real] * meta["model"]["logit_scale"] / encoder.logit_scale, prompts[real], atol=1e-5)
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run_dir), "--json", "--no-baseline"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["classification"][meta["leaf"]]["fused"]["accuracy"] <= 1.0
    assert main(["index", "--run", str(run_dir), "--no-map", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", "--run", str(run_dir), "--text", "Black Watch", "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3 and all(np.isfinite(h["score"]) for h in hits)


def test_fine_tuning_the_last_block_keeps_only_it_in_the_state(clip_weights):
    cfg = clip_config(clip_weights, freeze_backbone=False)
    model = build_model(cfg, HEADS, n_tokens=10)
    assert not model.image.frozen
    state = model.state_dict()
    net_keys = {k for k in state if k.startswith("image.backbone.net.")}
    assert net_keys and all(k.startswith(("image.backbone.net.transformer.resblocks.1.", "image.backbone.net.ln_post",
                                          "image.backbone.net.proj")) for k in net_keys)
    trainable = {n for n, p in model.image.backbone.net.named_parameters() if p.requires_grad}
    assert {f"image.backbone.net.{n}" for n in trainable} == net_keys
    build_model(cfg, HEADS, n_tokens=10).load_state_dict(state)  # strict: the pretrained rest fills itself in
    net = model.train().image.backbone.net
    assert net.transformer.resblocks[1].training and net.ln_post.training  # the block that trains
    assert not net.transformer.resblocks[0].training and not net.conv1.training  # the frozen rest: as pretrained


def test_missing_weights_offline_give_one_line_naming_both_ways(monkeypatch, tmp_path, tiny_demo_csv, capsys):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    for backbone, fetch in (("openclip:ViT-B-32/laion2b_s34b_b79k", "hf download laion/CLIP-ViT-B-32-laion2B-s34B"),
                            ("timm:convnext_tiny.fb_in22k", "hf download timm/convnext_tiny.fb_in22k")):
        with pytest.raises(hub.EncoderMissing) as err:
            hub.weights_path(hub.parse(backbone))
        message = str(err.value)
        assert "\n" not in message and backbone in message and fetch in message and "--image-weights" in message
        assert "HF_HUB_OFFLINE" in message
    with pytest.raises(hub.EncoderMissing, match="no weights for openclip:ViT-B-32/laion2b_s34b_b79k"):
        hub.check_weights(ModelConfig(text_backbone="openclip:ViT-B-32/laion2b_s34b_b79k"))  # text tower: same
    run_dir = tmp_path / "run"
    args = ["train", "--catalog", str(tiny_demo_csv), "--out", str(run_dir), "--backbone",
            "openclip:ViT-B-32/laion2b_s34b_b79k", "--image-size", "32", "--epochs", "1", "--quiet"]
    assert main(args) == 2
    stderr = capsys.readouterr().err.strip()
    assert stderr.startswith("error: no weights for openclip:ViT-B-32/laion2b_s34b_b79k") and "\n" not in stderr
    assert not (run_dir / "run.json").exists()


def test_a_run_whose_encoder_is_missing_or_different_is_refused(clip_run, clip_weights, tmp_path):
    run_dir = clip_run[0]
    moved = tmp_path / "elsewhere.bin"
    shutil.move(clip_weights, moved)
    try:
        with pytest.raises(hub.EncoderMissing) as at_load:
            load_run(run_dir)
        with pytest.raises(hub.EncoderMissing) as at_train:
            hub.weights_path(hub.parse(CLIP, str(clip_weights)))
        assert str(at_load.value) == str(at_train.value) and "--image-weights" in str(at_load.value)
        torch.manual_seed(1)  # other weights at the run's path: refused by fingerprint
        torch.save(open_clip.create_model("huse-test-clip").state_dict(), clip_weights)
        with pytest.raises(hub.EncoderMissing, match="this run was trained on openclip:huse-test-clip weights"):
            load_run(run_dir)
    finally:
        shutil.move(moved, clip_weights)


def test_a_sentence_transformers_folder_encodes_titles_and_caches_them(tmp_path, monkeypatch):
    st = pytest.importorskip("sentence_transformers", reason="optional: pip install -r requirements-pretrained.txt")
    try:  # sentence-transformers 6 moved its modules; 3-5 keep them in .models
        from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    except ImportError:
        from sentence_transformers.models import StaticEmbedding
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]", "black", "watch", "blue", "jeans"])},
                                           unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    torch.manual_seed(0)
    st.SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_dim=8)]).save(str(tmp_path / "tiny-st"))
    cfg = ModelConfig(text_backbone="st:tiny-st", text_weights=str(tmp_path / "tiny-st"), hidden=32, dim=16)
    texts = ["black watch", "blue jeans", "black jeans"]
    first = titles.cached_title_features(cfg, texts, tmp_path, progress=False)
    assert first.shape == (3, 8) and np.allclose(np.linalg.norm(first.astype(np.float32), axis=1), 1, atol=2e-3)
    monkeypatch.setattr(titles.TitleEncoder, "encode", lambda *a, **k: pytest.fail("recomputed"))
    assert np.array_equal(titles.cached_title_features(cfg, texts, tmp_path, progress=False), first)
    model = build_model(cfg, HEADS, n_tokens=10).eval()
    assert model.state_dict()["text.encoder._extra_state"]["encoder"] == "st:tiny-st"
    assert model.encode_text(torch.from_numpy(first).float()).shape == (3, 16)


def test_missing_package_names_the_install_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(hub.EncoderMissing, match="pip install -r requirements-pretrained.txt"):
        default_image_size("timm:convnext_tiny")
    with pytest.raises(ValueError, match="openclip:MODEL"):
        hub.parse("st:all-mpnet-base-v2", role="image")
