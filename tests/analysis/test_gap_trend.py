"""Claim 5's rows ("the generalization gap grows with the learning rate / init std"): the pooled
within-set slope on log10 of the axis, seeds as points of their set, checked by hand."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import stats as sps

from moelab.analysis.data import column
from moelab.analysis.summary import gap_trend
from moelab.stats import INCONCLUSIVE, NO, YES

GAP = column("task_loss_gap/knowledge", "a task-loss gap (bits/token)", higher_is_better=False)
LRS = (1e-3, 3e-3, 1e-2)


def _rows(slope_per_decade: float, noise: float, seed: int = 0) -> list[dict]:
    """Dense and E16 sets (different intercepts) × 3 learning rates × 5 seeds."""
    rng = random.Random(seed)
    rows = []
    for e, intercept in ((1, 0.5), (16, 0.9)):
        for lr in LRS:
            for s in range(5):
                rows.append({"budget": 8e6, "d_model": 64, "num_experts": e, "top_k": 1, "lr": lr,
                             "init_std": 0.02, "seed": s, "status": "done",
                             "task_loss_gap/knowledge": intercept + slope_per_decade * math.log10(lr) + rng.gauss(0, noise)})
    return rows


def _hand_slope(rows: list[dict]) -> tuple[float, float, int]:
    """OLS of gap on log10 lr with one intercept per set (demeaned within each set): slope, its se, df."""
    xs, ys = [], []
    for e in (1, 16):
        x = np.array([math.log10(r["lr"]) for r in rows if r["num_experts"] == e])
        y = np.array([r["task_loss_gap/knowledge"] for r in rows if r["num_experts"] == e])
        xs.append(x - x.mean()), ys.append(y - y.mean())
    x, y = np.concatenate(xs), np.concatenate(ys)
    slope = float(x @ y / (x @ x))
    df = len(x) - 2 - 1  # two intercepts, one slope
    resid = y - slope * x
    return slope, math.sqrt(float(resid @ resid) / df / float(x @ x)), df


def test_planted_gap_trend_reads_yes_with_the_hand_slope():
    rows = _rows(0.3, 0.02)
    stmt = gap_trend(rows, "lr", GAP, what="the gap", xname="the learning rate", level=0.95)
    assert stmt.answer == YES
    slope, se, df = _hand_slope(rows)
    assert f"slope {slope:+.3g} bits/token per 10× the learning rate" in stmt.detail
    lo = slope - sps.t.ppf(0.975, df) * se
    assert f"interval [{lo:+.3g}," in stmt.detail
    assert "over 30 models in 2 sets" in stmt.detail


def test_falling_gap_reads_no_and_pure_noise_rarely_yes():
    assert gap_trend(_rows(-0.3, 0.02), "lr", GAP, what="the gap", xname="the learning rate").answer == NO
    # Pure noise: "yes" is a one-sided false positive, 2.5 % at the 0.95 level; over 200 noise studies
    # more than 12 would be a miscalibrated test (binomial tail < 1e-3).
    answers = [gap_trend(_rows(0.0, 0.1, seed), "lr", GAP, what="the gap", xname="the learning rate",
                         level=0.95).answer for seed in range(200)]
    assert answers.count(YES) <= 12 and answers.count(INCONCLUSIVE) >= 170


@pytest.mark.parametrize("axis", ["lr", "init_std"])
def test_a_single_value_of_the_axis_has_no_trend(axis):
    rows = [r for r in _rows(0.3, 0.02) if r["lr"] == 3e-3]
    stmt = gap_trend(rows, axis, GAP, what="the gap", xname=axis)
    assert stmt.answer not in (YES, NO)
