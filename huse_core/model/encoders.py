"""Hub image encoders (open_clip, timm) as HUSE image backbones; the encoder record a run keeps in model.pt."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from . import hub


class EncoderRecord(nn.Module):
    """A hub encoder's name, library version, weights file and fingerprint, saved in model.pt (as extra state).

    Loading a run's state onto an encoder whose fingerprint differs refuses with a message: the tower heads were
    trained on other features."""

    def __init__(self, record: dict):
        super().__init__()
        self.record = dict(record)

    def get_extra_state(self) -> dict:
        return dict(self.record)

    def set_extra_state(self, state: dict) -> None:
        if state.get("sha256") != self.record["sha256"]:
            raise hub.EncoderMissing(
                f"this run was trained on {state.get('encoder')} weights {state.get('sha256')} "
                f"({state.get('weights')}), but this machine has {self.record['sha256']} ({self.record['weights']}): "
                f"put the run's weights there (or in the hub cache), or retrain the run")


def last_block_start(net: nn.Module) -> str:
    """The name of the first parameter of the network's last repeated block (ViT resblocks, ConvNeXt or ResNet
    stage blocks): it and every parameter after it are what "fine-tune the last block" trains."""
    repeated = [name for name, m in net.named_modules()
                if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) >= 2
                and len({type(c) for c in m}) == 1 and any(True for _ in m[-1].parameters())]
    if not repeated:
        raise ValueError(f"no repeated blocks found in {type(net).__name__} to fine-tune; keep --freeze-backbone")
    last = dict(net.named_modules())[repeated[-1]]
    prefix = f"{repeated[-1]}.{len(last) - 1}." if repeated[-1] else f"{len(last) - 1}."
    return next(n for n, _ in net.named_parameters() if n.startswith(prefix))


class HubImage(nn.Module):
    """A hub image encoder as a backbone: normalised NCHW photos -> features (B, out_dim), resized first to the
    encoder's own input size. model.pt keeps only its trained part (none when frozen) and its record: the
    pretrained weights come from the hub cache or the weights file each time, checked by fingerprint."""

    def __init__(self, net: nn.Module, record: dict, size: tuple[int, int], out_dim: int, interpolation: str):
        super().__init__()
        self.net, self.record = net, EncoderRecord(record)
        self.size, self.out_dim, self.interpolation = tuple(size), out_dim, interpolation
        self.trained_from: str | None = None  # first parameter name of the fine-tuned last block; None = frozen
        self.register_state_dict_post_hook(HubImage._drop_pretrained)
        self.register_load_state_dict_pre_hook(HubImage._fill_pretrained)

    def train_last_block(self) -> None:
        """Freeze all but the last block (and what follows it: final norm, projection)."""
        self.trained_from = last_block_start(self.net)
        names = [n for n, _ in self.net.named_parameters()]
        start = names.index(self.trained_from)
        for i, (_, p) in enumerate(self.net.named_parameters()):
            p.requires_grad_(i >= start)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()  # frozen parts keep their pretrained behaviour (BatchNorm statistics, no dropout)
        if mode and self.trained_from is not None:  # the trained block (every module whose weights all train)
            for module in self.net.modules():
                params = list(module.parameters())
                if params and all(p.requires_grad for p in params):
                    module.train()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode=self.interpolation, antialias=True, align_corners=False)
        return self.net(x)

    def _kept(self) -> set[str]:
        """The net's state keys model.pt holds: trained parameters and the buffers of modules that own them."""
        trained = {n for n, p in self.net.named_parameters() if p.requires_grad}
        owners = {n.rpartition(".")[0] for n in trained}
        return trained | {n for n, _ in self.net.named_buffers() if n.rpartition(".")[0] in owners}

    def _drop_pretrained(self, state_dict, prefix, local_metadata) -> None:
        kept = self._kept() if self.trained_from else set()
        for name in list(state_dict):
            if name.startswith(prefix + "net.") and name[len(prefix) + 4:] not in kept:
                del state_dict[name]

    def _fill_pretrained(self, state_dict, prefix, *args) -> None:
        for name, value in self.net.state_dict(keep_vars=True).items():
            state_dict.setdefault(prefix + "net." + name, value)  # itself: the hub weights stay as loaded


def hub_image_backbone(cfg: ModelConfig) -> tuple[HubImage, int, tuple, tuple]:
    """(backbone, feature size, mean, std) of an `openclip:` or `timm:` image backbone, with the library's own
    input size, normalisation and resize filter. Raises EncoderMissing when its weights are not here."""
    spec = hub.parse(cfg.backbone, cfg.image_weights, "image")
    net, record = hub.load(spec)
    if spec.library == "openclip":
        visual = net.visual  # its forward = encode_image: the joint image-text space (embed_dim)
        pre = visual.preprocess_cfg
        size, mean, std, interp = pre["size"], pre["mean"], pre["std"], pre.get("interpolation", "bicubic")
        dim = int(getattr(visual, "output_dim", 0) or visual(torch.zeros(1, 3, *_pair(size))).shape[1])
        return HubImage(visual, record, _pair(size), dim, _mode(interp)), dim, tuple(mean), tuple(std)
    timm = hub.library("timm")
    data = timm.data.resolve_model_data_config(net)
    size = data["input_size"][1:]
    return (HubImage(net, record, size, int(net.num_features), _mode(data.get("interpolation", "bicubic"))),
            int(net.num_features), tuple(data["mean"]), tuple(data["std"]))


def _pair(size) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _mode(interpolation: str) -> str:
    return "bicubic" if str(interpolation) in ("bicubic", "random") else "bilinear"


def image_size(backbone: str) -> int:
    """The photo size (px a side) a hub image backbone's library feeds it, read from its config (no weights)."""
    spec = hub.parse(backbone)
    lib = hub.library(spec.library)
    if spec.library == "openclip":
        model_cfg = lib.get_model_config(spec.model)
        if model_cfg is None:
            raise ValueError(f"open_clip has no model {spec.model!r} (open_clip.list_models() names them)")
        return max(_pair(model_cfg["vision_cfg"].get("image_size", 224)))
    cfg = lib.models.get_pretrained_cfg(spec.model) if lib.models.is_model(re.split(r"\.", spec.model)[0]) else None
    if cfg is None:
        raise ValueError(f"timm has no model {spec.model!r} (timm.list_models() names them)")
    return max(cfg.input_size[1:])
