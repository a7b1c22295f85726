"""A trained run on disk (model.pt + run.json) and the compact encode / classify API over it."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from .artifacts import file_sha, load_torch, read_json
from .config import DataConfig, LossConfig, ModelConfig, TrainConfig, from_dict
from .model import HuseModel, build_model
from .model.fusion_rule import FusionRule
from .data.heads import Head, as_heads
from .data.images import as_image, decode_image
from .data.ngrams import NGRAM_BACKBONES
from .data.text import Tokenizer

RUN_FORMAT = 1  # bump when run.json or model.pt change incompatibly


def check_weight(image_weight: float) -> None:
    if not 0.0 <= image_weight <= 1.0:
        raise ValueError(f"image_weight must be between 0 and 1, got {image_weight}")


def mix(image_emb: np.ndarray, text_emb: np.ndarray, image_weight: float) -> np.ndarray:
    """normalise(w * image + (1 - w) * text) as float32: one query from a photo and a title embedding."""
    mixed = image_weight * image_emb + (1 - image_weight) * text_emb
    return (mixed / max(float(np.linalg.norm(mixed)), 1e-12)).astype(np.float32)


class RunError(RuntimeError):
    """A run directory that is missing, unfinished or incompatible; the message says what to do."""


class Run:
    """A loaded run: the model in eval mode, its tokenizer, heads and configs.

    Inference is thread-safe: the model is only read, under `torch.inference_mode`.
    """

    def __init__(self, run_dir: str | Path, meta: dict, model: HuseModel, tokenizer: Tokenizer):
        self.run_dir, self.meta, self.model, self.tokenizer = Path(run_dir), meta, model, tokenizer
        self.data_cfg = from_dict(DataConfig, meta["data"])
        self.model_cfg = from_dict(ModelConfig, meta["model"])
        self.loss_cfg = from_dict(LossConfig, meta["loss"])
        self.train_cfg = from_dict(TrainConfig, meta["train"])
        self.heads: list[Head] = as_heads(meta["heads"])
        self.levels: list[str] = meta["levels"]
        self.leaf: str = meta["leaf"]
        self.fingerprint = file_sha(self.run_dir / "model.pt")
        self._lock = threading.Lock()  # guards lazy loads only; inference itself needs no lock

    @property
    def image_size(self) -> int:
        return self.data_cfg.image_size

    @property
    def dim(self) -> int:
        return self.model_cfg.dim

    @torch.inference_mode()
    def encode_images(self, pixels: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """float32 unit rows (N, D) of uint8 photos (N, S, S, 3), S = the run's image size."""
        pixels = np.asarray(pixels)
        if pixels.ndim == 3:
            pixels = pixels[None]
        out = [self.model.encode_image(torch.from_numpy(np.ascontiguousarray(pixels[i : i + batch_size])))
               for i in range(0, len(pixels), batch_size)]
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    @torch.inference_mode()
    def encode_texts(self, titles: list[str] | str, batch_size: int = 1024) -> np.ndarray:
        """float32 unit rows (N, D) of titles; one title gives one row.

        With a frozen title encoder (minilm, openclip:, st:) the titles go through it live (huse_core.model.titles);
        with ngram or conv+ngram they are hashed as in training (the run's n-gram settings, IDF in model.pt).
        """
        titles = [titles] if isinstance(titles, str) else [str(t) for t in titles]
        out = [self.model.encode_text(self._text_input(titles[i : i + batch_size]))
               for i in range(0, len(titles), batch_size)]
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    def _text_input(self, titles: list[str]):
        """The text tower's input for a batch of titles, made as in training."""
        if self.model.text.frozen:  # a frozen title encoder (minilm, openclip:, st:) reads the titles live
            from .model.titles import title_features  # optional packages: a clear error names the install

            return torch.from_numpy(title_features(self.model_cfg, titles))
        if self.tokenizer.ngrams is not None:
            from .model.ngram import TextInput

            return TextInput.from_numpy(self.tokenizer.encode(titles), *self.tokenizer.encode_ngrams(titles))
        return torch.from_numpy(self.tokenizer.encode(titles))

    @torch.inference_mode()
    def title_logits(self, titles: list[str], batch_size: int = 1024) -> dict[str, torch.Tensor] | None:
        """The wide head's per-head logits of titles (model.wide), or None for a run without one."""
        if self.model.wide is None:
            return None
        parts = [self.model.title_logits(self._text_input([str(t) for t in titles[i : i + batch_size]]))
                 for i in range(0, len(titles), batch_size)]
        return {h: torch.cat([p[h] for p in parts]) for h in self.model.wide.names} if parts else None

    @torch.inference_mode()
    def probabilities(self, image_emb: np.ndarray | None = None, text_emb: np.ndarray | None = None,
                      titles: list[str] | None = None, wide: dict[str, torch.Tensor] | None = None) -> dict:
        """{head: {"image"|"text"|"product"|"fused": probs (N, C) float32}} for whichever embeddings are given.

        `titles` (row-aligned with text_emb): a run with a wide head (model.wide) adds their n-gram logits to the
        title's and the fusion layer's predictions, as validated in training; without them both read the
        embeddings alone. `wide`: those logits already computed (prepare.title_logits on a prepared catalogue).
        "fused" follows the run's own rule (`fusion_rule`)."""
        def as_t(a):
            return None if a is None else torch.from_numpy(np.atleast_2d(np.asarray(a, np.float32)))

        if wide is None and titles is not None and text_emb is not None:
            wide = self.title_logits(titles)
        probs = self.model.probabilities(as_t(image_emb), as_t(text_emb), wide=wide, rule=self.fusion_rule)
        return {h: {m: p.numpy() for m, p in per.items()} for h, per in probs.items()}

    @torch.inference_mode()
    def encode_products(self, image_emb: np.ndarray, text_emb: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """(N, D) float32 unit whole-product vectors (the fusion layer) of row-aligned photo and title embeddings;
        a run trained without the layer raises ValueError saying to retrain."""
        image_emb, text_emb = np.atleast_2d(image_emb), np.atleast_2d(text_emb)
        out = np.empty((len(image_emb), self.dim), dtype=np.float32)
        for i in range(0, len(image_emb), batch_size):
            u, v = (torch.from_numpy(np.array(e[i : i + batch_size], np.float32)) for e in (image_emb, text_emb))
            out[i : i + batch_size] = self.model.encode_product(u, v).numpy()
        return out

    def encode_image(self, image) -> np.ndarray:
        """(D,) unit embedding of one photo: a path, bytes, PIL image or uint8 array; ImageError if unreadable."""
        return self.encode_images(decode_image(as_image(image), self.image_size))[0]

    def query_vector(self, text: str | None = None, image=None, image_weight: float = 0.5) -> np.ndarray:
        """Unit query: the image's or the text's embedding, or with both, normalise(w * image + (1 - w) * text)."""
        check_weight(image_weight)
        has_text = text is not None and bool(str(text).strip())
        if not has_text and image is None:
            raise ValueError("empty query: give a text with words in it, an image, or a product id")
        if image is None:
            return self.encode_texts(str(text))[0]
        image_emb = self.encode_image(image)
        if not has_text:
            return image_emb
        return mix(image_emb, self.encode_texts(str(text))[0], image_weight)

    @property
    def fusion_rule(self) -> FusionRule:
        """How this run fuses photo and title per head, as training chose it on validation (model.fusion_rule)."""
        return FusionRule.from_meta(self.meta, self.model_cfg.fusion_weight)

    @property
    def leaf_head(self) -> Head:
        """The head the model treats as its leaf (the deepest hierarchy level, else the first head)."""
        return next((h for h in self.heads if h.name == self.leaf), self.heads[0])

    @property
    def taxonomy_paths(self) -> dict[str, dict[str, str]]:
        """head -> class -> "Apparel › Topwear › Tshirts" for hierarchy levels (other heads: absent)."""
        paths: dict[str, dict[str, str]] = {}
        for path in self.meta.get("leaf_paths", []):
            for depth, name in enumerate(path[: len(self.levels)]):
                paths.setdefault(self.levels[depth], {}).setdefault(name, " › ".join(path[: depth + 1]))
        return paths

    def classify(self, image=None, text: str | None = None, top: int = 3) -> dict:
        """Labels of one product: {head: {"image" | "text" | "fused": [{"label", "prob", "path"}, ...]}}, best
        first, `top` per list, from whichever of photo and title are given. Needs only the model, no index.

        "path" is the class's taxonomy path for hierarchy levels ("Apparel › Topwear › Tshirts"), else the label.
        """
        has_text = text is not None and bool(str(text).strip())
        if image is None and not has_text:
            raise ValueError("nothing to classify: give an image, a text with words in it, or both")
        image_emb = self.encode_image(image)[None] if image is not None else None
        text_emb = self.encode_texts(str(text)) if has_text else None
        probs = self.probabilities(image_emb, text_emb, [str(text)] if has_text else None)
        out, all_paths = {}, self.taxonomy_paths
        for h in self.heads:
            per, paths = probs[h.name], all_paths.get(h.name, {})
            out[h.name] = {m: [{"label": h.classes[i], "prob": round(float(p[0, i]), 4),
                                "path": paths.get(h.classes[i], h.classes[i])}
                               for i in np.argsort(-p[0], kind="stable")[: max(1, top)]]
                           for m, p in per.items() if m != "product"}  # fused holds the layer's where chosen
        return out

    def zero_shot(self, labels: list[str], image=None, text: str | None = None) -> list[tuple[str, float]]:
        """`labels` ranked by the cosine of their text embedding to the query (image, text, or both mixed 50/50)."""
        labels = [str(label).strip() for label in labels if str(label).strip()]
        if not labels:
            raise ValueError("zero-shot needs at least one non-empty label, e.g. 'dress, jeans, watch'")
        query = self.query_vector(text, image, 0.5)
        scores = self.encode_texts(labels) @ query
        return [(labels[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")]

    def load_catalog(self, progress: bool = False):
        """The run's catalogue, read with the run's settings and class lists (same split, same labels)."""
        from .data.catalog import load_catalog

        return load_catalog(self.data_cfg, heads=self.heads, progress=progress)


def read_meta(run_dir: str | Path) -> dict:
    """run.json of a run, checked for format; raises RunError with what to do."""
    run_dir = Path(run_dir)
    meta_path = run_dir / "run.json"
    if not meta_path.is_file():
        raise RunError(f"{run_dir} is not a run: no run.json. Train one with "
                       f"`python -m huse_core train --catalog CSV --out {run_dir}`.")
    try:
        meta = read_json(meta_path)
    except ValueError as err:
        raise RunError(f"{err}: the run is damaged; retrain it (or restore run.json from a copy).") from err
    if meta.get("format") != RUN_FORMAT:
        raise RunError(f"{run_dir} was written in run format {meta.get('format')!r}, this version reads "
                       f"{RUN_FORMAT}; retrain it with `python -m huse_core train`.")
    return meta


def load_run(run_dir: str | Path) -> Run:
    """Rebuild a trained run's model from run.json and load model.pt (weights only)."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    if not (run_dir / "model.pt").is_file():
        raise RunError(f"{run_dir} has no model.pt yet: training has not finished an epoch. "
                       f"Resume it with `python -m huse_core train --out {run_dir} --resume`.")
    missing = [k for k in ("tokenizer", "model", "heads", "data", "loss", "train", "levels", "leaf") if k not in meta]
    if missing:
        raise RunError(f"{run_dir / 'run.json'} has no {', '.join(missing)} section: the run is damaged or "
                       "unfinished; retrain it (or restore run.json from a copy).")
    try:
        tokenizer, model_cfg = Tokenizer.from_dict(meta["tokenizer"]), from_dict(ModelConfig, meta["model"])
        if (model_cfg.text_backbone in NGRAM_BACKBONES) != (tokenizer.ngrams is not None):
            raise ValueError(f"text backbone {model_cfg.text_backbone} with tokenizer n-gram settings "
                             f"{meta['tokenizer'].get('ngrams')}")
        model = build_model(model_cfg, meta["heads"], tokenizer.n_tokens, load_weights=False)
        model.load_state_dict(load_torch(run_dir / "model.pt"))
        model.eval()
        model.flip_tta = bool(meta.get("flip_tta", False))
        return Run(run_dir, meta, model, tokenizer)
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as err:
        raise RunError(f"{run_dir}: model.pt does not match run.json ({type(err).__name__}: "
                       f"{(str(err).splitlines() or [''])[0][:300]}); the run is damaged or from another version: "
                       "retrain it.") from err
