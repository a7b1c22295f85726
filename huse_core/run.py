"""A trained run on disk (model.pt + run.json) and the compact encode / classify API over it."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from .artifacts import file_sha, load_torch, read_json
from .config import DataConfig, LossConfig, ModelConfig, TrainConfig, from_dict
from .model import HuseModel, build_model
from .data.text import Tokenizer

RUN_FORMAT = 1  # bump when run.json or model.pt change incompatibly


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
        self.heads: list[dict] = meta["heads"]
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

        With text_backbone minilm the titles go through the sentence encoder live (huse_core.sentence).
        """
        if isinstance(titles, str):
            titles = [titles]
        if self.model_cfg.text_backbone == "minilm":
            from .sentence import encode_sentences  # optional package: a clear error names the install command

            text_input = torch.from_numpy(encode_sentences(list(titles)))
        else:
            text_input = torch.from_numpy(self.tokenizer.encode(titles))
        out = [self.model.encode_text(text_input[i : i + batch_size]) for i in range(0, len(text_input), batch_size)]
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, self.dim), np.float32)

    @torch.inference_mode()
    def classify(self, image_emb: np.ndarray | None = None, text_emb: np.ndarray | None = None) -> dict:
        """{head: {"image"|"text"|"fused": probs (N, C) float32}} for whichever embeddings are given."""
        def as_t(a):
            return None if a is None else torch.from_numpy(np.atleast_2d(np.asarray(a, np.float32)))

        probs = self.model.classify(as_t(image_emb), as_t(text_emb), weight=self.meta.get("fusion_weights"))
        return {h: {m: p.numpy() for m, p in per.items()} for h, per in probs.items()}

    def load_catalog(self, progress: bool = False):
        """The run's catalogue, read with the run's settings and class lists (same split, same labels)."""
        from .data.catalog import Head, load_catalog

        heads = [Head(h["name"], h["kind"], h["classes"], h.get("level")) for h in self.heads]
        return load_catalog(self.data_cfg, heads=heads, progress=progress)


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
        raise RunError(f"{meta_path} is not valid JSON ({err}); retrain the run.") from err
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
    try:
        tokenizer = Tokenizer.from_dict(meta["tokenizer"])
        model = build_model(from_dict(ModelConfig, meta["model"]), meta["heads"], tokenizer.n_tokens,
                            load_weights=False)
        model.load_state_dict(load_torch(run_dir / "model.pt"))
    except (KeyError, RuntimeError, ValueError) as err:
        raise RunError(f"{run_dir}: model.pt does not match run.json ({str(err).splitlines()[0][:300]}); "
                       f"the run is damaged or from another version: retrain it.") from err
    model.eval()
    return Run(run_dir, meta, model, tokenizer)
