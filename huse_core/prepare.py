"""A catalogue made ready for the model: decoded pixels, token ids, label arrays, cached backbone features."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.catalog import Catalog, load_catalog
from .data.heads import Head, as_heads
from .config import DataConfig, ModelConfig
from .data.images import decode_many
from .artifacts import texts_key
from .data.rowfile import RowView, write_rows
from .data.ngrams import settings_for
from .data.text import Tokenizer


@dataclass
class Prepared:
    """Everything a training or evaluation pass reads, aligned row by row with `catalog.df`.

    `pixels` and `features` stay on disk (the decode cache): indexing them (`prep.pixels[rows]`, `[a:b]`) reads
    just those rows into memory, so memory stays flat however large the catalogue."""

    catalog: Catalog
    pixels: RowView  # (N, S, S, 3) uint8: the cache file's rows whose photo decoded
    tokens: RowView  # (N, L) int64 rows of the cache file (encoded_titles)
    labels: dict[str, np.ndarray]  # head -> (N,) int64 (-1 = missing) or (N, C) multi-hot
    heads: list[Head]  # run.json stores them as dicts (Head.to_dict)
    levels: list[str]
    leaf: str  # the head the graph loss and early stopping use
    leaf_paths: list[list[str]]  # leaf class i -> its taxonomy path, for the graph loss's A matrix
    tokenizer: Tokenizer
    cache_dir: Path
    features: RowView | None = None  # (N, F) float16 frozen-backbone features (a cache file), when used
    text_features: np.ndarray | None = None  # (N, 384) float16 sentence embeddings (text_backbone minilm)
    ngram_ids: RowView | None = None  # (N, G) uint16/int32 hashed n-gram ids (ngram, conv+ngram), on disk
    ngram_counts: RowView | None = None  # (N, G) uint8 their counts per title (0 = padding), on disk

    def split(self, name: str) -> np.ndarray:
        return self.catalog.split_indices(name)

    def text_input(self, rows: np.ndarray):
        """The text tower's input for `rows`: sentence embeddings (minilm) when prepared, a TextInput of token and
        n-gram ids (ngram, conv+ngram), else token ids. Each has .to(device)."""
        if self.text_features is not None:
            return torch.from_numpy(self.text_features[rows]).float()
        if self.ngram_ids is not None:
            from .model.ngram import TextInput

            return TextInput.from_numpy(self.tokens[rows], self.ngram_ids[rows], self.ngram_counts[rows])
        return torch.from_numpy(self.tokens[rows])

    def compute_features(self, model, device: torch.device, progress: bool = True, batch_size: int = 128) -> None:
        """Run the frozen backbone over every photo once; cached on disk by backbone + photos, written batch by
        batch and read back memory-mapped (prep.features[rows] reads those rows)."""
        key = hashlib.sha1(model.image.cache_key.encode())  # backbone + weights (hub: their fingerprint)
        key.update(np.ascontiguousarray(self.pixels[:: max(1, len(self.pixels) // 64)]).tobytes())
        key.update(str(self.pixels.shape).encode())
        path = self.cache_dir / f"features-{model.image.cache_name}-{key.hexdigest()[:16]}.npy"
        n = len(self.pixels)
        try:
            cached = np.load(path, mmap_mode="r")
            if isinstance(cached, np.ndarray) and cached.ndim == 2 and len(cached) == n:
                self.features = RowView(cached)
                return
        except (OSError, ValueError):
            pass  # none yet, or damaged: compute again
        model.eval()

        @torch.inference_mode()
        def features(start: int) -> np.ndarray:
            px = torch.from_numpy(self.pixels[start : start + batch_size]).to(device)
            return model.image.features(px).float().cpu().numpy().astype(np.float16)

        first = features(0)  # its width sizes the file

        def fill(put) -> None:
            put(0, first)
            for start in tqdm(range(batch_size, n, batch_size), desc=f"{model.cfg.backbone} features",
                              disable=not progress, file=sys.stderr):
                put(start, features(start))

        write_rows(path, (n, first.shape[1]), np.float16, fill)
        self.features = RowView(np.load(path, mmap_mode="r"))


def cache_dir_for(data_cfg: DataConfig, run_dir: str | Path) -> Path:
    """Decoded photos are cached beside the catalogue (shared by its runs), else in the run directory."""
    beside = Path(data_cfg.catalog).resolve().parent / ".huse_cache"
    try:
        beside.mkdir(exist_ok=True)
        if os.access(beside, os.W_OK):
            return beside
    except OSError:
        pass
    fallback = Path(run_dir) / "cache"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def leaf_paths(catalog: Catalog, leaf: Head, levels: list[str]) -> list[list[str]]:
    """Each leaf class's path in the taxonomy (coarse -> fine); [] for classes with no known path ("other")."""
    if leaf.name not in levels:
        return [[c] for c in leaf.classes]
    paths = catalog.parent_paths()
    return [list(paths.get(c, [])) if c != "other" else [] for c in leaf.classes]


def drop_unreadable(catalog: Catalog, ok: np.ndarray, errors: list[str]) -> None:
    """Drop rows whose photo failed to decode and count them in the catalogue's load report."""
    catalog.df = catalog.df[ok].reset_index(drop=True)
    report = catalog.report
    report.bad_rows["unreadable image"] = report.bad_rows.get("unreadable image", 0) + int((~ok).sum())
    report.examples.extend(errors[: max(0, 10 - len(report.examples))])
    report.n_kept = len(catalog.df)


def prepare(
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    cache_dir: str | Path,
    progress: bool = True,
    tokenizer: dict | None = None,
    heads: list[Head] | list[dict] | None = None,
) -> Prepared:
    """Load the catalogue, decode its photos (cached), drop rows whose photo fails, tokenise titles (and hash
    their n-grams, when the tokenizer has n-gram settings); with text_backbone minilm also embed every title with
    the sentence encoder (once, cached beside the photos).

    A saved run passes its `tokenizer` and `heads` so ids and class indices match the model's; a new fit learns
    the n-gram IDF from the train split's titles (prep.tokenizer.idf, for build_model).
    """
    catalog = load_catalog(data_cfg, heads=as_heads(heads) if heads else None, progress=progress)
    cache_dir = Path(cache_dir)
    # The decoded photos stay in the cache file; rows whose photo failed are skipped by index, not copied out.
    pixels, ok, errors = decode_many(list(catalog.df["image"]), data_cfg.image_size, cache_dir, progress=progress)
    kept = None
    if not ok.all():
        drop_unreadable(catalog, ok, errors)
        kept = np.flatnonzero(ok)
    if len(catalog.split_indices("train")) == 0:
        raise ValueError(f"{data_cfg.catalog}: no usable training rows left ({catalog.report.summary()})")
    tok = Tokenizer.from_dict(tokenizer) if tokenizer else Tokenizer.fit(
        catalog.df["title"].iloc[catalog.split_indices("train")], model_cfg.vocab_size, model_cfg.max_len,
        settings_for(model_cfg))
    tokens, ngram_ids, ngram_counts = encoded_titles(tok, list(catalog.df["title"]), cache_dir)
    leaf = catalog.head(catalog.leaf)
    text_features = None
    if model_cfg.text_backbone == "minilm" or model_cfg.text_backbone.startswith(("openclip:", "st:")):
        from .model.titles import cached_title_features  # optional packages: imported only when asked for

        text_features = cached_title_features(model_cfg, list(catalog.df["title"]), cache_dir, progress)
    return Prepared(
        catalog=catalog, pixels=RowView(pixels, kept), tokens=tokens, labels=catalog.labels(),
        heads=list(catalog.heads), levels=list(catalog.levels), leaf=catalog.leaf,
        leaf_paths=leaf_paths(catalog, leaf, list(catalog.levels)), tokenizer=tok, cache_dir=cache_dir,
        text_features=text_features, ngram_ids=ngram_ids, ngram_counts=ngram_counts,
    )


TITLE_CHUNK = 65_536  # titles tokenised at a time when their rows are written to the cache


def encoded_titles(tok: Tokenizer, titles: list[str], cache_dir: Path
                   ) -> tuple[RowView, RowView | None, RowView | None]:
    """(tokens, ngram_ids, ngram_counts) of `titles` (the n-gram pair None without n-gram settings): rows of `.npy`
    files in the cache, keyed by the tokenizer's settings and the titles, read on demand (RowView). A miss
    tokenises a chunk at a time straight into the files: memory holds a chunk, never the catalogue's rows
    (~0.8 KB a product with n-grams stays on disk)."""
    stem = Path(cache_dir) / f"tokens-{len(titles)}-{texts_key(json.dumps(tok.to_dict(), sort_keys=True), titles)}"
    names = ("tokens", "ngram_ids", "ngram_counts") if tok.ngrams is not None else ("tokens",)
    paths = [Path(f"{stem}-{name}.npy") for name in names]
    if not all(p.is_file() for p in paths):
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        probe = (tok.encode(titles[:1]), *(tok.encode_ngrams(titles[:1]) if tok.ngrams is not None else ()))

        def fill(puts) -> None:
            for start in range(0, len(titles), TITLE_CHUNK):
                chunk = titles[start : start + TITLE_CHUNK]
                rows = (tok.encode(chunk), *(tok.encode_ngrams(chunk) if tok.ngrams is not None else ()))
                for put, block in zip(puts, rows):
                    put(start, block)

        def write(i: int, puts: tuple):  # one file per array, nested so that one pass fills them all
            if i == len(paths):
                return fill(puts)
            shape = (len(titles), *probe[i].shape[1:])
            write_rows(paths[i], shape, probe[i].dtype, lambda put: write(i + 1, (*puts, put)))

        write(0, ())
    # Read through RowView (preadv), not the memory map: random training batches touched every page of the
    # mapped files in turn, and mapped pages count in the process's RSS (0.9 GB of it at 1M products).
    arrays = [RowView(np.load(p, mmap_mode="r")) for p in paths]
    return arrays[0], *(arrays[1:] if len(arrays) == 3 else (None, None))


def augment(pixels: torch.Tensor, rng: np.random.Generator, shift: int = 4) -> torch.Tensor:
    """Random horizontal flips per photo and one random shift of up to `shift` px per batch (white fill)."""
    flip = torch.from_numpy(rng.random(len(pixels)) < 0.5).to(pixels.device).view(-1, 1, 1, 1)
    pixels = torch.where(flip, pixels.flip(2), pixels)
    dy, dx = (int(v) for v in rng.integers(-shift, shift + 1, size=2))
    padded = torch.nn.functional.pad(pixels.permute(0, 3, 1, 2), (shift, shift, shift, shift), value=255)
    h, w = pixels.shape[1:3]
    return padded[:, :, shift + dy : shift + dy + h, shift + dx : shift + dx + w].permute(0, 2, 3, 1)


@torch.inference_mode()
def embed(model, prep: Prepared, rows: np.ndarray, device: torch.device, batch_size: int = 512):
    """(image_emb, text_emb), each (len(rows), D) on `device`, in eval mode."""
    model.eval()
    image_out, text_out = [], []
    for i in range(0, len(rows), batch_size):
        r = rows[i : i + batch_size]
        if model.image.frozen and prep.features is not None:
            image_out.append(model.encode_image_features(torch.from_numpy(prep.features[r]).float().to(device)))
        else:
            image_out.append(model.encode_image(torch.from_numpy(prep.pixels[r]).to(device)))
        text_out.append(model.encode_text(prep.text_input(r).to(device)))
    return torch.cat(image_out), torch.cat(text_out)


@torch.inference_mode()
def title_logits(model, prep: Prepared, rows: np.ndarray, device: torch.device, batch_size: int = 2048):
    """The wide head's per-head logits {head: (len(rows), C)} on `device` for `rows`' titles, or None when the
    model has none (HuseModel.title_logits; passed to HuseModel.probabilities as `wide`)."""
    if getattr(model, "wide", None) is None:
        return None
    model.eval()
    parts = [model.title_logits(prep.text_input(rows[i : i + batch_size]).to(device))
             for i in range(0, len(rows), batch_size)]
    return {h: torch.cat([p[h] for p in parts]) for h in model.wide.names} if parts else None
