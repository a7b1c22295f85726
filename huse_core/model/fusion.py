"""The seed's fully connected fusion layer: one unit vector per product from its photo and title embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DEFAULT_DROPOUT, ModelConfig


class FusionLayer(nn.Module):
    """product_emb = normalize(W2 relu(W1 [u, v, u * v] + b1) + b2 + (u + v) / 2) for u = image_emb, v = text_emb.

    The product vector lives in the shared space: the shared classifier reads it like a photo's or a title's, so
    it is trained by the class loss with no new head, and it can be searched against either modality. The
    residual (u + v) / 2 starts it at the plain average of the two embeddings; the MLP learns what to add.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dropout = DEFAULT_DROPOUT if cfg.dropout is None else cfg.dropout
        self.mlp = nn.Sequential(nn.Linear(3 * cfg.dim, cfg.hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(cfg.hidden, cfg.dim))
        nn.init.zeros_(self.mlp[-1].weight)  # starts as the average: no noise in the shared space at step 0
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        x = torch.cat([image_emb, text_emb, image_emb * text_emb], dim=-1)
        return F.normalize(self.mlp(x) + (image_emb + text_emb) / 2, dim=-1, eps=1e-6)
