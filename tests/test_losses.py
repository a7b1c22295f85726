"""The HUSE losses and the alignment loss on hand-computed tiny tensors, the margin mask, the combiner, gradients."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from huse_core.config import LossConfig, ModelConfig
from huse_core.training.losses import AlignLoss, ClassLoss, GapLoss, GraphLoss, HuseLoss, taxonomy_distance
from huse_core.model import build_model


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_taxonomy_distance_orders_siblings_before_cousins_before_strangers():
    paths = [["A", "T", "shirt"], ["A", "T", "tee"], ["A", "B", "jeans"], ["F", "S", "boot"], []]
    a = taxonomy_distance(paths)
    assert a[0, 0] == 0
    assert a[0, 1] == pytest.approx(1 / 3)  # siblings
    assert a[0, 2] == pytest.approx(2 / 3)  # cousins
    assert a[0, 3] == pytest.approx(1.0)  # different roots
    assert a[4, 0] == 1.0 and a[4, 4] == 0.0  # a class without a path ("other")
    assert np.allclose(a, a.T)


def test_gap_loss_is_mean_one_minus_cosine():
    image_emb = unit([1, 0], [0, 1])
    text_emb = unit([1, 0], [1, 1])
    # pair 1: cos 1 -> 0; pair 2: cos 1/sqrt2 -> 1 - 0.7071
    assert GapLoss()(image_emb, text_emb).item() == pytest.approx((0 + 1 - 1 / math.sqrt(2)) / 2, abs=1e-6)
    assert GapLoss()(image_emb, image_emb).item() == pytest.approx(0.0, abs=1e-7)


def test_graph_loss_hand_computed_with_margin_mask():
    # Two products of classes 0 and 1, A[0,1] = 0.2. Embeddings in 2-D:
    image_emb = unit([1, 0], [0.8, 0.6])  # image0 . image1 = 0.8 -> d = 0.2
    text_emb = unit([1, 0], [0, 1])  # text1 is far from everything but image1 (cos 0.6)
    a = torch.tensor([[0.0, 0.2], [0.2, 0.0]])
    labels = torch.tensor([0, 1])
    # Order of the 4 points: i0, i1, t0, t1. Off-diagonal pairs (ordered) = 12.
    # d: i0-i1 0.2 (A .2) | i0-t0 0 (A 0) | i0-t1 1 (A .2) | i1-t0 0.2 (A .2) | i1-t1 0.4 (A 0) | t0-t1 1 (A .2)
    # zeta = 0.5 keeps pairs with d < .5 and A < .5: i0-i1 (0), i0-t0 (0), i1-t0 (0), i1-t1 ((0.4-0)^2=.16)
    expected = 2 * 0.16 / 12  # each unordered pair counts twice
    assert GraphLoss(a, zeta=0.5)(image_emb, text_emb, labels).item() == pytest.approx(expected, abs=1e-6)
    # zeta = 0.3 masks i1-t1 out too: nothing left
    assert GraphLoss(a, zeta=0.3)(image_emb, text_emb, labels).item() == pytest.approx(0.0, abs=1e-7)
    # zeta = 1.01 lets every pair in: i0-t1 (1-.2)^2=.64, t0-t1 .64, i1-t1 .16, the rest 0
    assert GraphLoss(a, zeta=1.01)(image_emb, text_emb, labels).item() == pytest.approx(
        2 * (0.64 + 0.64 + 0.16) / 12, abs=1e-5)


def test_graph_loss_is_zero_when_distances_match_classes():
    a = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    e = unit([1, 0], [0, 1])  # same-class items identical (d 0 = A 0), other class orthogonal (d 1 = A 1)
    assert GraphLoss(a, zeta=2.0)(e, e, torch.tensor([0, 1])).item() == pytest.approx(0.0, abs=1e-7)


def test_graph_loss_ignores_missing_labels():
    a = torch.zeros(2, 2)
    e = unit([1, 0], [0, 1])
    loss = GraphLoss(a, zeta=2.0)(e, e, torch.tensor([0, -1]))  # only i0, t0 remain: identical, d = 0
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_class_loss_averages_heads_and_modalities_and_uses_bce_for_multi_label():
    z_single = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y_single = torch.tensor([0, -1])  # second label missing: ignored
    z_multi = torch.tensor([[1.0, -1.0]])
    y_multi = torch.tensor([[1.0, 0.0]])
    loss = ClassLoss({"s": "single", "m": "multi"})
    per_head = {"s": z_single, "m": z_multi.repeat(2, 1)}
    got = loss({"image": per_head, "text": per_head}, {"s": y_single, "m": y_multi.repeat(2, 1)})
    ce = -math.log(math.exp(2) / (math.exp(2) + 1))
    bce = -math.log(1 / (1 + math.exp(-1)))  # both multi-label terms equal log(1 + e^-1)
    assert got.item() == pytest.approx((ce + ce + bce + bce) / 4, abs=1e-5)


def test_huse_loss_returns_named_terms_and_selects_weighted_total():
    kinds, a = {"leaf": "single"}, np.array([[0.0, 0.5], [0.5, 0.0]], dtype=np.float32)
    image_emb, text_emb = unit([1, 0], [0, 1]), unit([1, 1], [0, 1])
    logits = {"image": {"leaf": torch.tensor([[1.0, 0.0], [0.0, 1.0]])},
              "text": {"leaf": torch.tensor([[0.0, 0.0], [0.0, 2.0]])}}
    labels = {"leaf": torch.tensor([0, 1])}
    full = HuseLoss(LossConfig(alpha=1, beta=2, gamma=3, delta=0.5, label_smoothing=0), kinds, "leaf", a)
    terms = full(image_emb, text_emb, logits, labels)
    assert set(terms) == {"cls", "graph", "gap", "nce", "total"}  # the default terms: the paper's three + nce
    assert terms["total"].item() == pytest.approx(
        terms["cls"].item() + 2 * terms["graph"].item() + 3 * terms["gap"].item() + 0.5 * terms["nce"].item(),
        abs=1e-6)
    only_gap = HuseLoss(LossConfig(losses=["gap"], gamma=3), kinds, "leaf", a)(image_emb, text_emb, logits, labels)
    assert only_gap["total"].item() == pytest.approx(3 * terms["gap"].item(), abs=1e-6)
    with pytest.raises(ValueError, match="unknown loss"):
        HuseLoss(LossConfig(losses=["cls", "triplet"]), kinds, "leaf", a)


def test_every_term_sends_gradients_to_both_towers():
    torch.manual_seed(0)
    heads = [{"name": "leaf", "kind": "single", "classes": ["a", "b", "c"]}]
    cfg = ModelConfig(cnn_width=8, hidden=32, dim=16, conv_channels=16, word_dim=8, text_backbone="conv")
    model = build_model(cfg, heads, n_tokens=20)
    pixels = torch.randint(0, 256, (6, 32, 32, 3), dtype=torch.uint8)
    tokens = torch.randint(2, 20, (6, 7))
    labels = {"leaf": torch.tensor([0, 0, 1, 1, 2, 2])}
    a = taxonomy_distance([["x", "a"], ["x", "b"], ["y", "c"]])
    for term in ("cls", "graph", "gap"):
        model.zero_grad()
        image_emb, text_emb = model.encode_image(pixels), model.encode_text(tokens)
        logits = {"image": model.logits(image_emb), "text": model.logits(text_emb)}
        # the paper's symmetric gap loss; the default anchored one is tested to move only photos, below
        loss = HuseLoss(LossConfig(losses=[term], zeta=2.0, gap_anchor="none"), {"leaf": "single"}, "leaf", a)
        loss(image_emb, text_emb, logits, labels)["total"].backward()
        image_grad = sum(p.grad.abs().sum() for p in model.image.parameters() if p.grad is not None)
        text_grad = sum(p.grad.abs().sum() for p in model.text.parameters() if p.grad is not None)
        assert image_grad > 0 and text_grad > 0, term


def test_gap_anchored_on_text_moves_only_the_image_tower():
    image_emb = unit([1, 0], [0, 1]).requires_grad_()
    text_emb = unit([1, 1], [0, 1]).requires_grad_()
    logits = {"image": {"leaf": torch.zeros(2, 2)}, "text": {"leaf": torch.zeros(2, 2)}}
    labels, a = {"leaf": torch.tensor([0, 1])}, np.zeros((2, 2), dtype=np.float32)
    cfg = LossConfig(losses=["gap"], gap_anchor="text")
    terms = HuseLoss(cfg, {"leaf": "single"}, "leaf", a)(image_emb, text_emb, logits, labels)
    assert terms["gap"].item() == pytest.approx((1 - 2 ** -0.5) / 2, abs=1e-6)  # same value as unanchored
    terms["total"].backward()
    assert text_emb.grad is None or text_emb.grad.abs().sum() == 0
    assert image_emb.grad[0].abs().sum() > 0  # the unmatched pair pulls its photo
    with pytest.raises(ValueError, match="gap anchor"):
        HuseLoss(LossConfig(gap_anchor="image"), {"leaf": "single"}, "leaf", a)


def test_align_loss_hand_computed():
    # s = 2; U = [[1,0],[0,1]], V = [[1,0],[0.6,0.8]]: logits = 2 * U V^T = [[2, 1.2], [0, 1.6]]
    loss = AlignLoss(init_scale=2.0)
    u, v = unit([1, 0], [0, 1]), unit([1, 0], [0.6, 0.8])
    rows = -(2 - math.log(math.exp(2) + math.exp(1.2))) - (1.6 - math.log(math.exp(0) + math.exp(1.6)))
    cols = -(2 - math.log(math.exp(2) + math.exp(0))) - (1.6 - math.log(math.exp(1.2) + math.exp(1.6)))
    assert loss(u, v).item() == pytest.approx((rows / 2 + cols / 2) / 2, abs=1e-5)


def test_align_loss_masks_products_with_the_same_title():
    loss = AlignLoss(init_scale=10.0)
    u, v = unit([1, 0], [0.99, 0.1], [0, 1]), unit([1, 0], [0.99, 0.1], [0, 1])
    masked = loss(u, v, torch.tensor([7, 7, 3])).item()  # rows 0 and 1 share a title: not each other's negatives
    unmasked = loss(u, v, torch.tensor([7, 8, 3])).item()
    assert masked < 0.01 < unmasked  # near-identical twins only cost something when they must be told apart
    # By hand: each row's (and column's) softmax runs over its own pair and the other-title products only
    z = 10.0 * (u @ v.T).numpy()
    keep = [[0, 2], [1, 2], [0, 1, 2]]  # row 2's title is unique: every column is its negative
    rows = [-(z[i, i] - np.log(np.exp(z[i, keep[i]]).sum())) for i in range(3)]
    cols = [-(z[j, j] - np.log(np.exp(z[keep[j], j]).sum())) for j in range(3)]
    assert masked == pytest.approx((np.mean(rows) + np.mean(cols)) / 2, abs=1e-6)


def test_align_loss_scale_is_learnable_and_clamped():
    loss = AlignLoss(init_scale=20.0, max_scale=100.0)
    assert loss.scale.item() == pytest.approx(20.0, rel=1e-5)
    u, v = unit([1, 0], [0, 1]), unit([0.8, 0.6], [0.6, 0.8])
    loss(u, v).backward()
    assert loss.log_scale.grad is not None and loss.log_scale.grad.item() != 0
    with torch.no_grad():
        loss.log_scale.fill_(10.0)  # e^10 is past the bound
    assert loss.scale.item() == pytest.approx(100.0, rel=1e-5)
    with torch.no_grad():
        loss.log_scale.fill_(-3.0)
    assert loss.scale.item() == pytest.approx(1.0)
    assert not AlignLoss(learn_scale=False).log_scale.requires_grad
    with pytest.raises(ValueError, match="scale"):
        AlignLoss(init_scale=500.0)


@pytest.mark.parametrize("anchor, text_moves", [("none", True), ("text", False)])
def test_align_term_in_the_combiner_reaches_the_towers(anchor, text_moves):
    a = taxonomy_distance([["x"], ["y"]])
    cfg = LossConfig(losses=["nce"], delta=2.0, nce_anchor=anchor)
    loss = HuseLoss(cfg, {"leaf": "single"}, "leaf", a)
    image_emb = unit([1, 0], [0, 1]).requires_grad_()
    text_emb = unit([0.8, 0.6], [0.6, 0.8]).requires_grad_()
    terms = loss(image_emb, text_emb, {}, {"leaf": torch.tensor([0, 1])}, torch.tensor([0, 1]))
    assert terms["total"].item() == pytest.approx(2.0 * terms["nce"].item())
    terms["total"].backward()
    assert image_emb.grad.abs().sum() > 0
    assert (text_emb.grad is not None and text_emb.grad.abs().sum() > 0) == text_moves
    assert len(list(loss.parameters())) == 1  # the scale: the optimiser trains it with the model
    with pytest.raises(ValueError, match="anchor"):
        HuseLoss(LossConfig(nce_anchor="image"), {"leaf": "single"}, "leaf", a)
