"""The HUSE model: an image tower and a text tower into one space of unit vectors, read by a shared classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .backbones import SENTENCE_DIMS, TEXT_BACKBONES
from .ngram import ConvNgramTower, NgramTower
from .towers import ImageTower, SentenceTower, TextTower


def text_tower(cfg: ModelConfig, n_tokens: int, idf=None) -> nn.Module:
    """The text tower `cfg.text_backbone` names: the word Conv1D, TF-IDF n-grams (alone or beside the Conv1D;
    `idf` = the training titles' IDF, else ones until a saved state replaces them), or a sentence-embedding head."""
    if cfg.text_backbone == "conv":
        return TextTower(cfg, n_tokens)
    if cfg.text_backbone in SENTENCE_DIMS:
        return SentenceTower(cfg)
    if cfg.text_backbone in ("ngram", "conv+ngram"):

        return NgramTower(cfg, idf) if cfg.text_backbone == "ngram" else ConvNgramTower(cfg, n_tokens, idf)
    raise ValueError(f"unknown text backbone {cfg.text_backbone!r}; choose one of {', '.join(TEXT_BACKBONES)}")


class HuseModel(nn.Module):
    """Two towers into one D-dim space of unit vectors and one linear classifier per head shared by both.

    `heads` is a list of dicts with at least `name`, `kind` ("single" | "multi") and `classes`.
    """

    def __init__(self, cfg: ModelConfig, heads: list[dict], n_tokens: int, load_weights: bool = True, idf=None):
        super().__init__()
        self.cfg, self.heads = cfg, heads
        self.image = ImageTower(cfg, load_weights)
        self.text = text_tower(cfg, n_tokens, idf)
        # HUSE Eq. 1, z = W^T phi(x) + b, one W per head, shared by both modalities.
        self.classifier = nn.ModuleList(nn.Linear(cfg.dim, len(h["classes"])) for h in heads)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit vectors (B, D) of uint8 photos (B, H, W, 3)."""
        return self.image(pixels)

    def encode_image_features(self, features: torch.Tensor) -> torch.Tensor:
        """Unit vectors (B, D) from precomputed backbone features (frozen backbones)."""
        return F.normalize(self.image.head(features), dim=-1, eps=1e-6)

    def encode_text(self, text_input: torch.Tensor) -> torch.Tensor:
        """Unit vectors (B, D) of token id rows (B, L) (conv), of sentence embeddings (B, 384) (minilm), or of a
        model.ngram.TextInput (ngram, conv+ngram)."""
        return self.text(text_input)

    def logits(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-head logits (B, C) of embeddings from either modality."""
        emb = emb * self.cfg.logit_scale  # = a linear layer with W scaled by s: same model, trains faster
        return {h["name"]: layer(emb) for h, layer in zip(self.heads, self.classifier)}

    def probabilities(
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


def build_model(cfg: ModelConfig, heads: list[dict], n_tokens: int, load_weights: bool = True,
                idf=None) -> HuseModel:
    """The one factory. `load_weights=False` skips ImageNet weights (a saved run's state dict replaces them);
    `idf` is the n-gram towers' IDF (Tokenizer.idf when training; a saved run's model.pt holds its own)."""
    return HuseModel(cfg, heads, n_tokens, load_weights, idf)
