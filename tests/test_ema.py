"""The weights' moving average: the warm-up, hand-computed updates, BatchNorm buffers, off and bad decays."""

import pytest
import torch
from torch import nn

from huse_core.training.ema import make_ema, warmed_decay


def test_the_first_updates_follow_the_warm_up_then_the_decay():
    assert warmed_decay(0.999, 0) == pytest.approx(0.1) and warmed_decay(0.999, 1) == pytest.approx(2 / 11)
    assert warmed_decay(0.9, 10_000) == 0.9


def test_updates_match_the_formula_by_hand():
    lin = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema = make_ema(lin, 0.5)
    ema.update_parameters(lin)  # the first call copies: W_ema = 1
    expected = 1.0
    for n, w in enumerate([3.0, 5.0, -1.0], start=1):
        with torch.no_grad():
            lin.weight.fill_(w)
        ema.update_parameters(lin)
        d = min(0.5, (1 + n) / (10 + n))  # n = updates averaged so far
        expected = d * expected + (1 - d) * w
        assert ema.module.weight.item() == pytest.approx(expected)
    assert lin.weight.item() == -1.0  # the model itself is untouched


def test_batchnorm_statistics_are_averaged_and_counts_copied():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = make_ema(net, 0.9)
    ema.update_parameters(net)
    before = ema.module[1].running_mean.clone()
    net.train()
    net(torch.randn(16, 3) + 5)  # moves the running mean and the batch count
    ema.update_parameters(net)
    moved = ema.module[1].running_mean
    assert not torch.equal(moved, before) and not torch.equal(moved, net[1].running_mean)
    assert int(ema.module[1].num_batches_tracked) == int(net[1].num_batches_tracked) == 1
    assert not ema.module.training  # validated as inference runs


def test_off_and_impossible_decays():
    assert make_ema(nn.Linear(1, 1), 0.0) is None
    with pytest.raises(ValueError, match="--ema"):
        make_ema(nn.Linear(1, 1), 1.5)
