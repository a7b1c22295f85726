"""Frozen title encoders (MiniLM, open_clip's text tower, sentence-transformers): live, cached, zero-shot prompts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..artifacts import save_npy, texts_key
from ..config import ModelConfig
from ..data.heads import Head
from . import hub

PROMPT = "a photo of {}."  # CLIP's own zero-shot prompt around a class name


def is_title_encoder(text_backbone: str) -> bool:
    """A frozen encoder reads the titles (its features cached like a frozen image backbone's)."""
    return text_backbone == "minilm" or hub.is_hub(text_backbone)


class _ClipText(nn.Module):
    """open_clip's CLIP text tower on its own, sharing the loaded weights, so it can move to a GPU without its
    image tower. Titles are cut after their end token: with CLIP's causal mask and end-token pooling the result
    equals encode_text over the full 77-token context, at a fraction of the cost for short titles."""

    def __init__(self, clip):
        super().__init__()
        self.clip_text = getattr(clip, "text", None)  # CustomTextCLIP: a self-contained text module
        if self.clip_text is None:
            self.token_embedding, self.transformer = clip.token_embedding, clip.transformer
            self.ln_final = clip.ln_final
            self.positional_embedding, self.text_projection = clip.positional_embedding, clip.text_projection
            self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
            self.trim = clip.text_pool_type == "argmax" and clip.attn_mask is not None
            self.pool_type, self.eos_id = clip.text_pool_type, getattr(clip, "text_eos_id", None)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.clip_text is not None:
            return self.clip_text(tokens)
        from open_clip.transformer import text_global_pool

        if self.trim:
            tokens = tokens[:, : int(tokens.argmax(dim=1).max()) + 1]  # the end token has the largest id
        n = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:n]
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask[:n, :n] if self.trim else self.attn_mask))
        x = text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_id)
        proj = self.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x if proj is None else x @ proj


class TitleEncoder:
    """A frozen hub text encoder: encode(texts) -> float32 unit rows (N, dim), one row per text, in order."""

    def __init__(self, spec: hub.EncoderSpec):
        self.spec = spec
        self.model, self.record = hub.load(spec)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.logit_scale = 100.0  # CLIP's learned inverse temperature, read below for open_clip
        if spec.library == "openclip":
            self.tokenizer = hub.library("openclip").get_tokenizer(spec.model)
            self.text = _ClipText(self.model).to(self.device).eval()
            self.dim = int(self.text(self.tokenizer(["a"]).to(self.device)).shape[1])
            self.logit_scale = float(self.model.logit_scale.detach().exp().clamp(max=100))
        else:
            self.model.to(self.device)
            dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
            self.dim = int(dim())  # the method's name before sentence-transformers 6: get_sentence_...

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 256, progress: bool = False) -> np.ndarray:
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self.spec.library == "st":
            rows = self.model.encode(texts, batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True,
                                     normalize_embeddings=True)
            return np.asarray(rows, dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths batch together: less padding
        out = np.zeros((len(texts), self.dim), np.float32)
        for start in tqdm(range(0, len(texts), batch_size), desc=f"{self.spec.name} titles", disable=not progress,
                          file=sys.stderr):
            rows = order[start : start + batch_size]
            feats = self.text(self.tokenizer([texts[i] for i in rows]).to(self.device)).float()
            out[rows] = torch.nn.functional.normalize(feats, dim=-1).cpu().numpy()
        return out


_ENCODERS: dict[tuple, TitleEncoder] = {}


def title_encoder(cfg: ModelConfig) -> TitleEncoder:
    """The hub title encoder `cfg.text_backbone` names (weights: cfg.text_weights, else the hub cache), once per
    process. Raises EncoderMissing with the one-line message when its package or weights are not here."""
    spec = hub.parse(cfg.text_backbone, cfg.text_weights, "text")
    path = hub.weights_path(spec)
    key = (spec, str(path), hub.fingerprint(path))  # new weights at the same path load anew
    with hub._LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = TitleEncoder(spec)
        return _ENCODERS[key]


def text_dim(cfg: ModelConfig) -> int:
    """The title features' width: 384 for MiniLM, else the hub encoder's."""
    from .sentence import DIM

    return DIM if cfg.text_backbone == "minilm" else title_encoder(cfg).dim


def title_features(cfg: ModelConfig, titles: list[str], progress: bool = False) -> np.ndarray:
    """float32 unit rows (N, dim) of titles from the run's frozen title encoder, live (query time)."""
    if cfg.text_backbone == "minilm":
        from .sentence import encode_sentences

        return encode_sentences(titles, progress=progress)
    return title_encoder(cfg).encode(titles, progress=progress)


def cached_title_features(cfg: ModelConfig, titles: list[str], cache_dir: str | Path,
                          progress: bool = True) -> np.ndarray:
    """(N, dim) float16 title features, computed once and cached on disk by encoder + weights fingerprint + titles
    (MiniLM keeps its own cache files, huse_core.model.sentence)."""
    if cfg.text_backbone == "minilm":
        from .sentence import cached_sentence_embeddings

        return cached_sentence_embeddings(titles, cache_dir, progress)
    encoder = title_encoder(cfg)
    key = texts_key(f"{encoder.spec.name}|{encoder.record['sha256']}|{len(titles)}", titles)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in encoder.spec.name)
    path = Path(cache_dir) / f"titles-{safe}-{key}.npy"
    if path.is_file():
        cached = np.load(path)
        if cached.shape == (len(titles), encoder.dim):
            return cached
    features = encoder.encode(titles, progress=progress).astype(np.float16)
    save_npy(path, features)
    return features


def zero_shot_classifier(cfg: ModelConfig, heads: list[Head], classifier: nn.ModuleList) -> None:
    """Set each head's weights to its class names' prompt embeddings ("a photo of Tshirts."), scaled so that
    logit_scale * cos reaches CLIP's own logit scale: classification as downloaded, before any training.
    The merged class "other" names nothing: its row stays zero (logit 0, below any real match)."""
    encoder = title_encoder(cfg)
    for head, layer in zip(heads, classifier):
        names = [str(c) for c in head.classes]
        weight = torch.from_numpy(encoder.encode([PROMPT.format(n) for n in names])) * (encoder.logit_scale /
                                                                                      cfg.logit_scale)
        weight[[i for i, n in enumerate(names) if n == "other"]] = 0.0
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.zero_()
