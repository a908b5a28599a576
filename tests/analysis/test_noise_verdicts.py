"""Studies of pure noise must never read *yes*; the interval arithmetic matches hand computations.

A noise study is a full grid (two budgets, two active sizes, E from dense to 32, two learning
rates, GRPO pairs) in which every model is the *same* model: its accuracy on each split is a fresh
binomial draw over the items and its task loss a fresh bootstrap resample of one fixed list of
per-item losses — exactly the sampling error a real evaluation has. Whatever the summary says
about total parameters, TPP, active parameters, learning rate or GRPO is then an artefact.
"""

import math

import numpy as np
import pytest

from moelab import stats
from moelab.analysis.data import families, normalise
from moelab.analysis.optimum import optimal_sparsity
from moelab.analysis.summary import summarize

from analysis_synth import ITEMS, noise_study as _noise_study

def _verdicts(rows: list[dict]) -> dict[str, str]:
    from moelab.analysis.extras import grpo_pairs

    rows = normalise(rows)
    fams = families(rows)
    optima = {f: [g for m in ("accuracy", "task_loss") for g in optimal_sparsity(rows, f, metric=m, n_boot=200)]
              for f in fams}
    return {s.claim: s.answer for s in summarize(rows, fams, optima, prepost=grpo_pairs(rows))}


@pytest.mark.parametrize("seed", range(4))
def test_a_study_of_pure_noise_never_reads_yes(seed):
    answers = _verdicts(_noise_study(seed))
    tested = {c: a for c, a in answers.items() if c != "every feasible planned run finished"}
    assert len(tested) >= 15  # the summary really spoke to the grid
    assert set(tested.values()) <= {stats.NO, stats.INCONCLUSIVE, stats.NOT_ENOUGH}, \
        {c: a for c, a in tested.items() if a == stats.YES}
    # most claims are decided as "the data cannot tell", not dodged as "not enough data"
    assert sum(a == stats.INCONCLUSIVE for a in tested.values()) >= len(tested) // 2


def test_seed_replicates_of_noise_never_read_yes():
    answers = _verdicts(_noise_study(7, with_seeds=True))
    seed_claims = {c: a for c, a in answers.items() if "between seeds" in c}
    assert seed_claims  # the ANOVA statements are there
    assert all(a != stats.YES for c, a in answers.items() if c != "every feasible planned run finished"), answers


def test_a_real_effect_is_still_found():
    """The same grid with knowledge accuracy rising 0.2 per 10× total parameters reads yes."""
    rows = _noise_study(3)
    for r in rows:
        for split in ("train", "heldout"):
            acc = min(0.99, 0.1 + 0.2 * (math.log10(r["total_params"]) - 5))
            r[f"accuracy/knowledge/{split}"] = acc
            r[f"accuracy_lo/knowledge/{split}"], r[f"accuracy_hi/knowledge/{split}"] = stats.wilson_interval(acc, ITEMS)
    answers = _verdicts(rows)
    assert answers["knowledge accuracy rises with total parameters at every active size"] == stats.YES


# ---------------------------------------------------------------- interval arithmetic by hand


def test_wilson_interval_matches_the_formula():
    k, n = 36, 100
    p, z = k / n, stats.Z
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = stats.wilson_interval(0.36, 100)
    assert lo == pytest.approx(centre - half, abs=1e-9) and hi == pytest.approx(centre + half, abs=1e-9)
    assert stats.wilson_interval(0.0, 50)[0] == pytest.approx(0.0, abs=1e-12)  # never below zero
    assert stats.wilson_interval(None, 10) is None and stats.wilson_interval(0.5, 0) is None


def test_bootstrap_ratio_interval_covers_the_pooled_ratio_and_shrinks_with_items():
    rng = np.random.default_rng(0)
    bits, tokens = rng.gamma(2, 1, 400), rng.integers(2, 9, 400)
    lo, hi = stats.bootstrap_ratio_interval(bits, tokens, n_boot=2000)
    ratio = bits.sum() / tokens.sum()
    assert lo < ratio < hi
    # the normal approximation of a ratio estimator (delta method) gives about the same width
    resid = bits - ratio * tokens
    se = math.sqrt((resid**2).sum() / (len(bits) - 1) / len(bits)) / tokens.mean()
    assert (hi - lo) == pytest.approx(2 * stats.Z * se, rel=0.15)
    lo4, hi4 = stats.bootstrap_ratio_interval(np.tile(bits, 4), np.tile(tokens, 4), n_boot=2000)
    assert (hi4 - lo4) == pytest.approx((hi - lo) / 2, rel=0.2)


def test_slope_and_difference_tests_by_hand():
    x, y = [0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 2.0, 5.0]
    e = stats.slope_test(x, y)
    # by hand: slope = Sxy / Sxx = 5.5 / 5 = 1.1; residual SS = 2.7, df = 2; se = sqrt(2.7/2/5)
    assert e.estimate == pytest.approx(1.1)
    half = 4.302652729911275 * math.sqrt(2.7 / 2 / 5)  # t(0.975, 2)
    assert (e.lo, e.hi) == pytest.approx((1.1 - half, 1.1 + half))
    assert e.verdict() == stats.INCONCLUSIVE
    # the points' own errors floor the standard error: three aligned points are not certain
    tight = stats.slope_test([0, 1, 2], [0.0, 0.1, 0.2], se=[0.5, 0.5, 0.5])
    assert tight.lo < 0 < tight.hi
    d = stats.difference_test(0.6, 0.03, 0.5, 0.04)
    assert (d.lo, d.hi) == pytest.approx((0.1 - stats.Z * 0.05, 0.1 + stats.Z * 0.05))
    assert d.verdict() == stats.YES and d.verdict(positive=False) == stats.NO


def test_combine_and_bonferroni():
    assert stats.combine([stats.YES, stats.YES]) == stats.YES
    assert stats.combine([stats.YES, stats.INCONCLUSIVE]) == stats.INCONCLUSIVE
    assert stats.combine([stats.YES, stats.NO]) == stats.NO
    assert stats.combine([stats.NOT_ENOUGH]) == stats.NOT_ENOUGH
    assert stats.bonferroni(5) == pytest.approx(0.99)


def test_rank_test_is_exact_for_few_models():
    # six models in the same order: exact one-sided p = 1/720, significant at 95 % but not at 99.9 %
    x, y = [1, 2, 3, 4, 5, 6], [0.1, 0.2, 0.25, 0.3, 0.5, 0.9]
    assert stats.rank_correlation_test(x, y).verdict() == stats.YES
    assert stats.rank_correlation_test(x, y, level=0.999).verdict() == stats.INCONCLUSIVE
    # four models in the same order: p = 1/24 > 0.025, so never significant, whatever Fisher's z says
    assert stats.rank_correlation_test([1, 2, 3, 4], [1, 2, 3, 4]).verdict() == stats.INCONCLUSIVE
    e = stats.rank_correlation_test(list(range(20)), list(range(20)))  # Fisher's z beyond 8 points
    assert e.lo > 0.9
