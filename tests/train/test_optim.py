"""Schedules and weight-decay groups."""

import math

import pytest
import torch

from moelab.config import TrainConfig
from moelab.train.optim import build_optimizer, lr_at, param_groups


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.norm = torch.nn.LayerNorm(4)  # weight and bias: 1-D, no decay
        self.experts = torch.nn.Parameter(torch.zeros(3, 4, 5))  # 3-D: decay
        self.proj = torch.nn.Linear(4, 4, bias=True)


def test_weight_decay_groups():
    groups = param_groups(Tiny(), 0.1)
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [n for n, _ in decay["params"]] == ["experts", "embed.weight", "proj.weight"]
    assert [n for n, _ in no_decay["params"]] == ["norm.weight", "norm.bias", "proj.bias"]


def test_build_optimizer_betas_and_names():
    cfg = TrainConfig(lr=1e-3, beta1=0.8, beta2=0.9, weight_decay=0.05)
    opt = build_optimizer(Tiny(), cfg)
    assert isinstance(opt, torch.optim.AdamW)
    g0, g1 = opt.param_groups
    assert g0["betas"] == (0.8, 0.9) and g0["weight_decay"] == 0.05 and g1["weight_decay"] == 0.0
    assert g0["param_names"] == ["experts", "embed.weight", "proj.weight"]
    assert opt.defaults.get("fused") or opt.defaults.get("foreach")


def test_cosine_schedule_shape():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1, schedule="cosine")
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))  # warmup rises
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # then never rises
    assert lrs[-1] == pytest.approx(0.1)  # reaches the floor on the last step
    mid = 10 + (99 - 10) / 2
    assert lr_at(int(mid), 100, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (int(mid) - 10) / 89)))


def test_wsd_schedule_shape():
    cfg = TrainConfig(lr=2.0, warmup_steps=5, min_lr_ratio=0.0, schedule="wsd", decay_fraction=0.2)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[4] == 2.0 and all(x == 2.0 for x in lrs[4:81])  # stable until the last 20%
    assert all(a > b for a, b in zip(lrs[80:], lrs[81:]))  # linear decay
    assert lrs[-1] == pytest.approx(0.0)
    steps = [lrs[i] - lrs[i + 1] for i in range(80, 99)]
    assert max(steps) == pytest.approx(min(steps))  # linear


def test_constant_and_degenerate_schedules():
    cfg = TrainConfig(lr=0.5, warmup_steps=4, schedule="constant")
    assert [lr_at(s, 10, cfg) for s in range(6)] == [0.125, 0.25, 0.375, 0.5, 0.5, 0.5]
    one = TrainConfig(lr=0.5, warmup_steps=0, schedule="cosine", min_lr_ratio=0.2)
    assert lr_at(0, 1, one) == pytest.approx(0.5 * 0.2)  # a single step is also the last
    long_warm = TrainConfig(lr=1.0, warmup_steps=50, schedule="wsd")
    assert lr_at(9, 10, long_warm) == pytest.approx(1.0)  # warmup clipped to the run length


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3, float("nan")])  # norm below, near, above the clip; NaN
def test_clip_grad_norm_is_torchs_bit_for_bit(scale):
    from moelab.train.optim import clip_grad_norm_

    gen = torch.Generator().manual_seed(3)
    shapes = [(7, 5), (11,), (3, 4, 2)]
    grads = [torch.randn(s, generator=gen) * scale for s in shapes]
    if scale == 1.0:  # put the norm within 1e-6 of the clip: the coefficient is then just below 1
        total = torch.nn.utils.get_total_norm(grads)
        grads = [g / total * (1.0 - 5e-7) for g in grads]
    ours, theirs = ([torch.nn.Parameter(torch.zeros(s)) for s in shapes] for _ in range(2))
    for a, b, g in zip(ours, theirs, grads):
        a.grad, b.grad = g.clone(), g.clone()
    ours.append(torch.nn.Parameter(torch.zeros(2)))  # a parameter without a gradient is skipped
    norm = clip_grad_norm_(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    torch.testing.assert_close(norm, expected, equal_nan=True, rtol=0, atol=0)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad, equal_nan=True, rtol=0, atol=0)
    if scale == 1e3:
        assert torch.nn.utils.get_total_norm([a.grad for a in ours[:3]]) <= 1.0 + 1e-5
