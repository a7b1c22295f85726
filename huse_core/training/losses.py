"""The HUSE losses (class, graph, gap) and an instance alignment loss, each a module on plain tensors; the combiner.

Notation: d(u, v) = 1 - cos(u, v); embeddings are unit vectors, so d = 1 - u.v.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import LossConfig


def taxonomy_distance(paths: list[list[str]]) -> np.ndarray:
    """A_ij = distance between classes i and j in the label tree, in [0, 1].

    `paths[i]` is class i's path of names, coarse -> fine (e.g. ["Apparel", "Topwear", "Tshirts"]).
    A_ij = (depth - length of the common prefix) / depth: 0 for the same class, 1/3 for sibling leaves of a
    3-level tree, 2/3 for cousins, 1 for different roots. Classes without a path (e.g. "other") are at
    distance 1 from everything but themselves.
    """
    n = len(paths)
    depth = max((len(p) for p in paths), default=1) or 1
    a = np.ones((n, n), dtype=np.float32)
    for i in range(n):
        for j in range(n):
            if i == j:
                a[i, j] = 0.0
            elif paths[i] and paths[j]:
                common = 0
                for x, y in zip(paths[i], paths[j]):
                    if x != y:
                        break
                    common += 1
                a[i, j] = (depth - common) / depth
    return a


class ClassLoss(nn.Module):
    """L_cls = mean over heads and modalities of CE(z, y) (BCE with logits for multi-label heads).

    `logits`: {modality: {head: (B, C)}}; `labels`: {head: (B,) int64 with -1 = missing, or (B, C) multi-hot}.
    """

    def __init__(self, kinds: dict[str, str], label_smoothing: float = 0.0):
        super().__init__()
        self.kinds, self.label_smoothing = kinds, label_smoothing

    def forward(self, logits: dict[str, dict[str, torch.Tensor]], labels: dict[str, torch.Tensor]) -> torch.Tensor:
        terms = []
        for per_head in logits.values():
            for head, z in per_head.items():
                y = labels[head]
                if self.kinds[head] == "multi":
                    terms.append(F.binary_cross_entropy_with_logits(z, y.float()))
                elif (y >= 0).any():  # a batch where every label is missing adds nothing
                    terms.append(F.cross_entropy(z, y, ignore_index=-1, label_smoothing=self.label_smoothing))
        return torch.stack(terms).mean() if terms else next(iter(labels.values())).new_zeros((), dtype=torch.float)


class GraphLoss(nn.Module):
    """L_graph = mean over pairs m != n of sigma_mn * (d(phi_m, phi_n) - A[y_m, y_n])^2  (HUSE Eqs. 9-11).

    The pairs are all image-image, text-text and image-text pairs of the batch (the 2B x 2B matrix without
    its diagonal). sigma_mn = 1 if A[y_m, y_n] < zeta and d(phi_m, phi_n) < zeta, else 0: only pairs that are
    semantically close *and* already close in the space are pulled to the class distance.
    """

    def __init__(self, distance: np.ndarray | torch.Tensor, zeta: float):
        super().__init__()
        self.register_buffer("A", torch.as_tensor(np.asarray(distance), dtype=torch.float32))
        self.zeta = zeta

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        emb = torch.cat([image_emb, text_emb])  # (2B, D)
        y = torch.cat([labels, labels])
        keep = y >= 0  # products with no label for this head have no place in the graph
        emb, y = emb[keep], y[keep]
        n = len(y)
        if n < 2:
            return emb.sum() * 0.0
        d = 1.0 - emb @ emb.T  # (2B, 2B)
        a = self.A[y][:, y]
        sigma = ((a < self.zeta) & (d < self.zeta)).float()
        off_diag = 1.0 - torch.eye(n, device=emb.device)
        return (sigma * off_diag * (d - a) ** 2).sum() / (n * (n - 1))


class GapLoss(nn.Module):
    """L_gap = mean over products n of d(phi_I(image_n), phi_T(title_n))  (HUSE Eq. 12)."""

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        return (1.0 - (image_emb * text_emb).sum(-1)).mean()


class AlignLoss(nn.Module):
    """L_nce = 1/2 * [CE(s * U V^T, I) + CE(s * V U^T, I)]: CLIP's symmetric InfoNCE over the batch.

    U = image_emb, V = text_emb (B, D) unit rows; row n's positive is column n (its own title / photo), every other
    column a negative, except products of the batch whose normalised title equals n's (`groups` equal): those are
    masked out of the softmax (logit -inf), not pushed apart. s = exp(log_scale) is learnable (the inverse
    temperature), clamped to [1, max_scale] as open_clip clamps it at 100.
    """

    def __init__(self, init_scale: float = 20.0, max_scale: float = 100.0, learn_scale: bool = True):
        super().__init__()
        if not 1.0 <= init_scale <= max_scale:
            raise ValueError(f"the alignment scale must start within [1, {max_scale}], got {init_scale}")
        self.max_log = math.log(max_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)), requires_grad=learn_scale)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(0.0, self.max_log).exp()

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, groups: torch.Tensor | None = None
                ) -> torch.Tensor:
        logits = self.scale * image_emb @ text_emb.T  # (B, B): photo n against every title of the batch
        if groups is not None:
            same = groups[:, None] == groups[None, :]
            same.fill_diagonal_(False)
            logits = logits.masked_fill(same, float("-inf"))
        target = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


TERMS = ("cls", "graph", "gap", "nce")


class HuseLoss(nn.Module):
    """L = alpha * L_cls + beta * L_graph + gamma * L_gap + delta * L_nce over the selected terms (cfg.losses).

    The returned dict has "cls", "graph", "gap" (each computed, for logging, even when not trained), "nce" (when
    selected: it needs `groups`), "fusion" (the class loss of the fusion layer's product vectors, when `logits`
    has a "product" entry; weighted by alpha with cls) and "total" (only the selected terms, weighted). With
    cfg.gap_anchor "text" the gap term's gradient reaches only the image embeddings (the titles are held fixed,
    as a teacher's targets); cfg.nce_anchor does the same for the alignment term. The alignment's learnable
    scale is this module's only parameter: train it with the model's (`parameters()`).
    """

    def __init__(self, cfg: LossConfig, kinds: dict[str, str], leaf: str, distance: np.ndarray):
        super().__init__()
        if cfg.gap_anchor not in ("none", "text"):
            raise ValueError(f"unknown gap anchor {cfg.gap_anchor!r}; choose none or text")
        if cfg.nce_anchor not in (None, "none", "text"):  # None = auto, resolved by the schedule; here: none
            raise ValueError(f"unknown alignment anchor {cfg.nce_anchor!r}; choose none or text")
        unknown = set(cfg.losses) - set(TERMS)
        if unknown or not cfg.losses:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; choose from {', '.join(TERMS)}")
        self.cfg, self.leaf = cfg, leaf
        self.cls = ClassLoss(kinds, cfg.label_smoothing)
        self.graph = GraphLoss(distance, cfg.zeta)
        self.gap = GapLoss()
        self.nce = AlignLoss(cfg.nce_scale, learn_scale=cfg.nce_learn_scale) if "nce" in cfg.losses else None

    def forward(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        logits: dict[str, dict[str, torch.Tensor]],
        labels: dict[str, torch.Tensor],
        groups: torch.Tensor | None = None,
        gather=None,
    ) -> dict[str, torch.Tensor]:
        """`groups` (B,) int64: the products' normalised-title ids (same id = same title), for the alignment.

        `gather` (training under torchrun: training.distributed.World.gather) maps this process's rows to every
        process's: the graph and alignment terms then see the whole global batch, as open_clip's gather_features;
        the class and gap terms stay per product and DDP averages them."""
        g = gather or (lambda t: t)
        all_image, all_text = g(image_emb), g(text_emb)
        product = {k: v for k, v in logits.items() if k == "product"}
        terms = {
            "cls": self.cls({k: v for k, v in logits.items() if k != "product"}, labels),
            "graph": self.graph(all_image, all_text, g(labels[self.leaf])),
            # gap_anchor "text": the title is a fixed target, so the gap loss never pulls the (stronger) text
            # tower toward a photo's embedding; only the image tower moves.
            "gap": self.gap(image_emb, text_emb.detach() if self.cfg.gap_anchor == "text" else text_emb),
        }
        if self.nce is not None:
            terms["nce"] = self.nce(all_image, all_text.detach() if self.cfg.nce_anchor == "text" else all_text,
                                    None if groups is None else g(groups))
        weights = {"cls": self.cfg.alpha, "graph": self.cfg.beta, "gap": self.cfg.gamma, "nce": self.cfg.delta}
        terms["total"] = sum(weights[k] * terms[k] for k in self.cfg.losses)
        if product and "cls" in self.cfg.losses:
            terms["fusion"] = self.cls(product, labels)
            terms["total"] = terms["total"] + self.cfg.alpha * terms["fusion"]
        return terms
