"""The HUSE model: an image tower and a text tower into one space of unit vectors, read by a shared classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..data.heads import as_heads
from .backbones import SENTENCE_DIMS, TEXT_BACKBONES
from .fusion import FusionLayer
from .fusion_rule import READS_TITLE, FusionRule
from .hub import is_hub
from .ngram import ConvNgramTower, NgramTower
from .towers import ImageTower, SentenceTower, TextTower
from .wide import WideHead, fits as wide_fits


def text_tower(cfg: ModelConfig, n_tokens: int, idf=None) -> nn.Module:
    """The text tower `cfg.text_backbone` names: the word Conv1D, TF-IDF n-grams (alone or beside the Conv1D;
    `idf` = the training titles' IDF, else ones until a saved state replaces them), or a sentence-embedding head."""
    if cfg.text_backbone == "conv":
        return TextTower(cfg, n_tokens)
    if cfg.text_backbone in SENTENCE_DIMS:
        return SentenceTower(cfg)
    if is_hub(cfg.text_backbone):  # open_clip's text tower or sentence-transformers (model.titles), frozen
        from .titles import title_encoder

        encoder = title_encoder(cfg)
        return SentenceTower(cfg, encoder.dim, encoder.record)
    if cfg.text_backbone in ("ngram", "conv+ngram"):

        return NgramTower(cfg, idf) if cfg.text_backbone == "ngram" else ConvNgramTower(cfg, n_tokens, idf)
    raise ValueError(f"unknown text backbone {cfg.text_backbone!r}; choose one of {', '.join(TEXT_BACKBONES)}, "
                     f"openclip:MODEL/TAG or st:NAME")


class HuseModel(nn.Module):
    """Two towers into one D-dim space of unit vectors and one linear classifier per head shared by both.

    `heads` is a list of dicts with at least `name`, `kind` ("single" | "multi") and `classes`.
    """

    def __init__(self, cfg: ModelConfig, heads: list[dict], n_tokens: int, load_weights: bool = True, idf=None):
        super().__init__()
        heads = as_heads(heads)  # Head objects, or run.json's dicts
        self.cfg, self.heads = cfg, heads
        if cfg.zero_shot and not (cfg.backbone == cfg.text_backbone and cfg.backbone.startswith("openclip:")):
            raise ValueError("zero-shot needs the same openclip:MODEL/TAG encoder under both towers "
                             "(--backbone and --text-backbone)")
        self.image = ImageTower(cfg, load_weights)
        self.text = text_tower(cfg, n_tokens, idf)
        # HUSE Eq. 1, z = W^T phi(x) + b, one W per head, shared by both modalities.
        self.classifier = nn.ModuleList(nn.Linear(cfg.dim, len(h["classes"])) for h in heads)
        if cfg.zero_shot and load_weights:  # as downloaded: each class is its name's prompt embedding
            from .titles import zero_shot_classifier

            zero_shot_classifier(cfg, heads, self.classifier)
        self.fusion = FusionLayer(cfg) if cfg.fusion_layer else None  # runs from before it have none
        # Only the n-gram towers have a title's TF-IDF vector to read; runs from before it have none.
        has_ngrams = isinstance(self.text, (NgramTower, ConvNgramTower))
        self.wide = (WideHead(cfg.ngram_buckets, heads) if cfg.wide_head and has_ngrams
                     and wide_fits(cfg.ngram_buckets, heads) else None)
        self.flip_tta = False  # set from run.json "flip_tta" (chosen on validation at the end of training)

    def encoders(self) -> dict[str, dict]:
        """The hub encoders under the towers: {"image"|"text": name, library version, weights file, fingerprint}
        (for run.json; model.pt keeps the same records and checks them on load)."""
        found = {"image": getattr(getattr(self.image.backbone, "record", None), "record", None),
                 "text": getattr(getattr(self.text, "encoder", None), "record", None)}
        return {tower: dict(record) for tower, record in found.items() if record is not None}

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit vectors (B, D) of uint8 photos (B, H, W, 3). With `flip_tta` set (a run whose validation it
        helped), inference averages the photo and its mirror image: normalize(f(x) + f(flip(x)))."""
        if self.flip_tta and not self.training:
            return F.normalize(self.image(pixels) + self.image(pixels.flip(2)), dim=-1, eps=1e-6)
        return self.image(pixels)

    def encode_image_features(self, features: torch.Tensor) -> torch.Tensor:
        """Unit vectors (B, D) from precomputed backbone features (frozen backbones; cached as float16)."""
        return F.normalize(self.image.head(features.float()), dim=-1, eps=1e-6)

    def encode_text(self, text_input: torch.Tensor) -> torch.Tensor:
        """Unit vectors (B, D) of token id rows (B, L) (conv), of title features (B, F) (minilm, openclip:, st:),
        or of a model.ngram.TextInput (ngram, conv+ngram)."""
        return self.text(text_input)

    def title_logits(self, text_input) -> dict[str, torch.Tensor] | None:
        """The wide head's per-head logits (B, C) of a batch of titles (a model.ngram.TextInput), which the title's
        prediction adds to the shared classifier's (model.wide); None for a run without a wide head."""
        if self.wide is None:
            return None
        weights = self.text.ngrams.weights(text_input.ngram_ids, text_input.ngram_counts.float())
        return self.wide(text_input.ngram_ids, weights)

    def encode_product(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Unit vectors (B, D) of whole products from their photo and title embeddings (the fusion layer)."""
        if self.fusion is None:
            raise ValueError("this run has no fusion layer (trained before it existed, or with --no-fusion-layer); "
                             "retrain it for whole-product vectors")
        return self.fusion(image_emb, text_emb)

    def logits(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-head logits (B, C) of embeddings from either modality."""
        emb = emb * self.cfg.logit_scale  # = a linear layer with W scaled by s: same model, trains faster
        return {h["name"]: layer(emb) for h, layer in zip(self.heads, self.classifier)}

    def probabilities(
        self,
        image_emb: torch.Tensor | None = None,
        text_emb: torch.Tensor | None = None,
        weight: float | dict[str, float] | None = None,
        layer_heads: list[str] | tuple = (),
        wide: dict[str, torch.Tensor] | None = None,
        rule: FusionRule | None = None,
    ) -> dict[str, dict[str, torch.Tensor]]:
        """Per head, probabilities from "image", "text", "product" (the fusion layer's vector) and "fused"
        (whichever inputs are given; "product" needs both and a fusion layer).

        `wide`: the same titles' `title_logits`, added to the logits of the predictions that read the title
        (fusion_rule.READS_TITLE; without them those are the shared classifier's alone).

        "fused" follows `rule` (model.fusion_rule), or one built from `weight` (one w for every head, or a w per
        head; heads it doesn't name use the config's) and `layer_heads` (heads fused by the fusion layer).
        """
        rule = rule or FusionRule(weight, tuple(layer_heads), self.cfg.fusion_weight)
        out: dict[str, dict[str, torch.Tensor]] = {h["name"]: {} for h in self.heads}
        product_emb = (self.encode_product(image_emb, text_emb)
                       if self.fusion is not None and image_emb is not None and text_emb is not None else None)
        for modality, emb in (("image", image_emb), ("text", text_emb), ("product", product_emb)):
            if emb is None:
                continue
            for h, z in zip(self.heads, self.logits(emb).values()):
                if modality in READS_TITLE and wide is not None:
                    z = z + wide[h["name"]]
                out[h["name"]][modality] = torch.sigmoid(z) if h["kind"] == "multi" else z.softmax(-1)
        return rule.fuse(out)


def build_model(cfg: ModelConfig, heads: list[dict], n_tokens: int, load_weights: bool = True,
                idf=None) -> HuseModel:
    """The one factory. `load_weights=False` skips ImageNet weights (a saved run's state dict replaces them; hub
    encoders always load theirs, which model.pt does not hold) and zero-shot prompts;
    `idf` is the n-gram towers' IDF (Tokenizer.idf when training; a saved run's model.pt holds its own)."""
    return HuseModel(cfg, heads, n_tokens, load_weights, idf)
