"""The wide part of the title prediction: per-head linear models on the title's TF-IDF n-gram vector."""

from __future__ import annotations

import torch
from torch import nn

from ..data.heads import Head


# The table is n_buckets x (all heads' classes) float32, in model.pt and in memory wherever the run loads: 2^16
# buckets x 225 classes (the 44k catalogue) = 59 MB. Past this many cells (128 MB) a run is built without it.
MAX_CELLS = 1 << 25


def fits(n_buckets: int, heads: list[Head]) -> bool:
    """Whether a wide head for these heads stays within MAX_CELLS (else the model is built without one)."""
    return n_buckets * sum(len(h.classes) for h in heads) <= MAX_CELLS


class WideHead(nn.Module):
    """z_wide[h] = W_h^T x + b_h, x = the title's TF-IDF vector (model.ngram.NgramBag.weights), one W_h per head.

    The title's prediction reads z_text[h] = s * C_h(text_emb) + z_wide[h] (Wide & Deep, Cheng et al. 2016): the
    shared classifier C_h over the deep tower's unit vector, plus a linear model over exactly the features a
    TF-IDF + linear-model baseline reads, which the 64-d n-gram bag and the unit-vector bottleneck do not copy for
    rare classes and one-word cues (a colour, a brand). Its weights are not trained by gradient: after the towers
    train, training.wide_fit fits a linear SVM per head on the train split's titles and stores t_h * (its weights),
    t_h chosen on validation (0 = the deep prediction alone). The fusion layer's prediction, which reads the title
    too, adds the same logits; a photo alone never reads them.

    One EmbeddingBag(mode="sum") of n_buckets x (sum of the heads' classes) and a bias, all zero until fitted.
    """

    def __init__(self, n_buckets: int, heads: list[Head]):
        super().__init__()
        self.names = [h.name for h in heads]
        self.sizes = [len(h.classes) for h in heads]
        # Zeros given, not drawn and then zeroed: building it takes nothing from the random stream, so the rest of
        # the model starts and trains exactly as without it.
        n = sum(self.sizes)
        self.bag = nn.EmbeddingBag(n_buckets, n, mode="sum", padding_idx=0, _weight=torch.zeros(n_buckets, n))
        self.bias = nn.Parameter(torch.zeros(n))
        self.requires_grad_(False)  # fitted by a convex solver (training.wide_fit), never by the optimiser

    def offsets(self) -> dict[str, slice]:
        """Each head's columns in the table."""
        out, start = {}, 0
        for name, size in zip(self.names, self.sizes):
            out[name] = slice(start, start + size)
            start += size
        return out

    def forward(self, ngram_ids: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-head logits (B, C_h) from (B, G) n-gram ids and their TF-IDF weights (0 = padding)."""
        z = self.bag(ngram_ids.long(), per_sample_weights=weights) + self.bias
        return dict(zip(self.names, z.split(self.sizes, dim=1)))
