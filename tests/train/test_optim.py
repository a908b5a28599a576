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
