"""The HUSE model: an image tower and a text tower into one space of unit vectors, read by a shared classifier."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's file names for ImageNet weights, as found in torch's hub cache (<hub>/checkpoints/).
WEIGHT_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet50": "resnet50-11ad3fa6.pth",
    "vgg16": "vgg16-397923af.pth",
}
BACKBONES = ("cnn", *WEIGHT_FILES)
SENTENCE_DIMS = {"minilm": 384}  # frozen sentence encoders (huse_core.sentence) and their embedding sizes
TEXT_BACKBONES = ("conv", *SENTENCE_DIMS)


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

    def __init__(self, width: int = 32):
        super().__init__()
        widths = [width, width * 2, width * 4, width * 8]
        # A stride-2 stem keeps CPU training affordable (a stride-1 stem costs ~12x the time).
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, c_in = [], widths[0]
        for i, c_out in enumerate(widths):
            stages.append(Block(c_in, c_out, 1 if i == 0 else 2))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.out_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1).flatten(1)


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


class MLP(nn.Module):
    """`layers` x (Linear, BatchNorm, ReLU, Dropout), residual where widths match; the last layer is
    Linear + ReLU to d_out, with no norm or dropout.

    A plain 5-layer ReLU stack over a from-scratch CNN learned far slower here (demo image accuracy after 4
    epochs: 53% plain, 29% with LayerNorm, 89% with BatchNorm); BatchNorm and skips keep the paper's depth and
    width but let gradients through. Dropout right before the L2 norm would randomly turn the unit vector,
    fighting the gap and graph losses.
    """

    def __init__(self, d_in: int, hidden: int, d_out: int, layers: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList()
        d = d_in
        for _ in range(layers - 1):
            block = nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout))
            self.blocks.append(block)
            d = hidden
        self.out = nn.Linear(d, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            y = block(x)
            x = x + y if y.shape == x.shape else y
        return F.relu(self.out(x))


class ImageTower(nn.Module):
    """Backbone -> MLP -> L2 norm. Input: uint8 photos (B, H, W, 3) as decoded by `images.decode_image`."""

    def __init__(self, cfg: ModelConfig, load_weights: bool = True):
        super().__init__()
        if cfg.backbone == "cnn":
            self.backbone, feat_dim = SmallCNN(cfg.cnn_width), cfg.cnn_width * 8
            mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
        elif cfg.backbone in WEIGHT_FILES:
            self.backbone, feat_dim = pretrained_backbone(cfg.backbone, cfg.image_weights, load_weights)
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            raise ValueError(f"unknown backbone {cfg.backbone!r}; choose one of {', '.join(BACKBONES)}")
        self.frozen = cfg.backbone != "cnn" and cfg.freeze_backbone
        if self.frozen:
            self.backbone.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.feat_dim = feat_dim
        self.head = MLP(feat_dim, cfg.hidden, cfg.dim, cfg.image_layers, cfg.dropout)
        self.autocast: torch.dtype | None = None  # set by training (TrainConfig.precision); inference is fp32

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, F) of uint8 NHWC photos."""
        x = pixels.permute(0, 3, 1, 2).float().div_(255).sub_(self.mean).div_(self.std)
        x = x.contiguous(memory_format=torch.channels_last)  # ~1.35x faster convs on CPU
        if self.frozen:
            self.backbone.eval()  # frozen: BatchNorm statistics stay ImageNet's
            with torch.no_grad():
                return self.backbone(x)
        with torch.autocast(x.device.type, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            return self.backbone(x).float()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.features(pixels)), dim=-1, eps=1e-6)


class TextTower(nn.Module):
    """Word embedding -> Dropout -> Conv1D -> global max-pool -> MLP -> L2 norm. Input: (B, L) token ids."""

    frozen = False  # trained end to end from token ids

    def __init__(self, cfg: ModelConfig, n_tokens: int):
        super().__init__()
        self.embed = nn.Embedding(n_tokens, cfg.word_dim, padding_idx=0)
        self.drop = nn.Dropout(cfg.text_dropout)
        self.conv = nn.Conv1d(cfg.word_dim, cfg.conv_channels, cfg.conv_kernel, padding=cfg.conv_kernel // 2)
        self.head = MLP(cfg.conv_channels, cfg.hidden, cfg.dim, cfg.text_layers, cfg.dropout)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Max-pooled Conv1D features (B, conv_channels) of token id rows, before the MLP."""
        x = self.drop(self.embed(tokens)).transpose(1, 2)  # (B, word_dim, L)
        x = F.relu(self.conv(x))
        x = x.masked_fill((tokens == 0).unsqueeze(1), 0.0)  # padding never wins the max-pool
        return x.amax(dim=2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.features(tokens)), dim=-1, eps=1e-6)


class SentenceTower(nn.Module):
    """Frozen sentence embeddings (B, 384) -> MLP -> L2 norm. The encoder itself runs outside the model
    (huse_core.sentence: cached for training, live at query time), so model.pt holds only this head."""

    frozen = True  # its input comes precomputed, like a frozen image backbone's features

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.head = MLP(SENTENCE_DIMS[cfg.text_backbone], cfg.hidden, cfg.dim, cfg.text_layers, cfg.dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(features.float()), dim=-1, eps=1e-6)


def text_tower(cfg: ModelConfig, n_tokens: int) -> nn.Module:
    """The text tower `cfg.text_backbone` names: the word Conv1D, or a head over frozen sentence embeddings."""
    if cfg.text_backbone == "conv":
        return TextTower(cfg, n_tokens)
    if cfg.text_backbone in SENTENCE_DIMS:
        return SentenceTower(cfg)
    raise ValueError(f"unknown text backbone {cfg.text_backbone!r}; choose one of {', '.join(TEXT_BACKBONES)}")


class HuseModel(nn.Module):
    """Two towers into one D-dim space of unit vectors and one linear classifier per head shared by both.

    `heads` is a list of dicts with at least `name`, `kind` ("single" | "multi") and `classes`.
    """

    def __init__(self, cfg: ModelConfig, heads: list[dict], n_tokens: int, load_weights: bool = True):
        super().__init__()
        self.cfg, self.heads = cfg, heads
        self.image = ImageTower(cfg, load_weights)
        self.text = text_tower(cfg, n_tokens)
        # HUSE Eq. 1, z = W^T phi(x) + b, one W per head, shared by both modalities.
        self.classifier = nn.ModuleList(nn.Linear(cfg.dim, len(h["classes"])) for h in heads)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit vectors (B, D) of uint8 photos (B, H, W, 3)."""
        return self.image(pixels)

    def encode_image_features(self, features: torch.Tensor) -> torch.Tensor:
        """Unit vectors (B, D) from precomputed backbone features (frozen backbones)."""
        return F.normalize(self.image.head(features), dim=-1, eps=1e-6)

    def encode_text(self, text_input: torch.Tensor) -> torch.Tensor:
        """Unit vectors (B, D) of token id rows (B, L) (conv), or of sentence embeddings (B, 384) (minilm)."""
        return self.text(text_input)

    def logits(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-head logits (B, C) of embeddings from either modality."""
        emb = emb * self.cfg.logit_scale  # = a linear layer with W scaled by s: same model, trains faster
        return {h["name"]: layer(emb) for h, layer in zip(self.heads, self.classifier)}

    def classify(
        self,
        image_emb: torch.Tensor | None = None,
        text_emb: torch.Tensor | None = None,
        weight: float | dict[str, float] | None = None,
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Per head, probabilities from "image", "text" and "fused" (whichever inputs are given).

        Fused = w * p_image + (1 - w) * p_text (HUSE's weighted average of the two modalities' outputs);
        `weight` is one w for every head, or a w per head (heads it doesn't name use the config's).
        """
        out: dict[str, dict[str, torch.Tensor]] = {h["name"]: {} for h in self.heads}
        for modality, emb in (("image", image_emb), ("text", text_emb)):
            if emb is None:
                continue
            for h, z in zip(self.heads, self.logits(emb).values()):
                out[h["name"]][modality] = torch.sigmoid(z) if h["kind"] == "multi" else z.softmax(-1)
        for head, probs in out.items():
            w = weight.get(head, self.cfg.fusion_weight) if isinstance(weight, dict) else weight
            w = self.cfg.fusion_weight if w is None else w
            if "image" in probs and "text" in probs:
                probs["fused"] = w * probs["image"] + (1 - w) * probs["text"]
        return out


def build_model(cfg: ModelConfig, heads: list[dict], n_tokens: int, load_weights: bool = True) -> HuseModel:
    """The one factory. `load_weights=False` skips ImageNet weights (a saved run's state dict replaces them)."""
    return HuseModel(cfg, heads, n_tokens, load_weights)
