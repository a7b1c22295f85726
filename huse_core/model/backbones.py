"""Image backbones: the small from-scratch CNN and torchvision ImageNet CNNs loaded from local weight files."""

from __future__ import annotations

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
BACKBONES = ("cnn", *WEIGHT_FILES)
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


def find_weights(backbone: str, path: str = "") -> Path:
    """The ImageNet weights file for `backbone`: `path` if given, else torch's hub cache. Never downloads."""
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"image weights file not found: {path}")
        return Path(path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHT_FILES[backbone]
    if cached.is_file():
        return cached
    raise FileNotFoundError(
        f"no ImageNet weights for {backbone}: {cached} does not exist. Download {WEIGHT_FILES[backbone]} "
        f"(torchvision's {backbone} IMAGENET1K_V1 weights) on a machine with internet and pass "
        f"--image-weights FILE, or use --backbone cnn, which trains from scratch offline."
    )


def backbone_choices() -> dict[str, str | None]:
    """Every photo backbone -> None when it can train on this machine, else the ImageNet weights file missing
    from torch's cache (the app's backbone picker)."""
    missing: dict[str, str | None] = {}
    for name in BACKBONES:
        missing[name] = None
        if name != "cnn":
            try:
                find_weights(name)
            except FileNotFoundError:
                missing[name] = WEIGHT_FILES[name]
    return missing


def default_image_size(backbone: str) -> int:
    """The photo size a backbone trains at unless one is given: DataConfig's for the from-scratch cnn,
    PRETRAINED_IMAGE_SIZE for ImageNet backbones, the library's own input size for hub encoders (openclip:, timm:;
    a missing package fails here, before any work)."""
    if ":" in backbone:
        from .encoders import image_size

        return image_size(backbone)
    return DataConfig.image_size if backbone == "cnn" else PRETRAINED_IMAGE_SIZE


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


