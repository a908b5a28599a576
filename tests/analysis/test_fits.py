"""Fits on synthetic data with known answers: isotonic regression, the quadratic optimum, the bootstrap."""

import numpy as np
import pytest

from moelab.analysis.fits import bootstrap_optimum, fit_quadratic, interp_clamped, is_monotone, isotonic, optimum_location, pava
from moelab.stats import rank_correlation_test, regression_test


def test_pava_hand_computed():
    # 1, 3, 2, 4 → the violating pair (3, 2) pools to 2.5
    assert np.allclose(pava(np.array([1, 3, 2, 4.0]), np.ones(4)), [1, 2.5, 2.5, 4])
    # a decreasing run pools to its (weighted) mean
    assert np.allclose(pava(np.array([3, 2, 1.0]), np.array([1, 1, 2.0])), [1.75] * 3)
    assert np.allclose(pava(np.array([1, 2, 3.0]), np.ones(3)), [1, 2, 3])  # already monotone


def test_isotonic_pools_ties_and_fits_decreasing():
    fit = isotonic([1, 1, 2, 3], [0.2, 0.4, 0.1, 0.5], increasing=True)
    assert np.allclose(fit.x, [1, 2, 3])
    assert np.allclose(fit.y, [0.7 / 3, 0.7 / 3, 0.5])  # tie → 0.3 (weight 2), then pooled with 0.1
    dec = isotonic([1, 2, 3, 4], [0.9, 0.5, 0.6, 0.1], increasing=False)
    assert is_monotone(dec.y, increasing=False)
    assert np.allclose(dec.y, [0.9, 0.55, 0.55, 0.1])
    assert np.allclose(dec.predict([0, 2.5, 9]), [0.9, 0.55, 0.1])  # constant beyond the ends


def test_isotonic_matches_sklearn():
    sk = pytest.importorskip("sklearn.isotonic")
    rng = np.random.default_rng(1)
    for increasing in (True, False):
        x = rng.integers(0, 15, 40).astype(float)  # with ties
        y = (1 if increasing else -1) * 0.1 * x + rng.normal(0, 0.4, 40)
        w = rng.uniform(0.5, 2, 40)
        ours = isotonic(x, y, increasing=increasing, weights=w).predict(x)
        ref = sk.IsotonicRegression(increasing=increasing).fit(x, y, sample_weight=w).predict(x)
        assert np.allclose(ours, ref, atol=1e-10)


def test_quadratic_optimum_location():
    x = np.linspace(-1, 2, 7)
    y = -(x - 0.4) ** 2 + 3
    fit = fit_quadratic(x, y)
    loc, interior = fit.optimum(maximize=True)
    assert interior and loc == pytest.approx(0.4)
    # minimising a concave curve → the better edge; a vertex outside the range → the edge
    assert optimum_location(fit.coef, -1, 2, maximize=False) == (2.0, False)
    assert optimum_location((-1.0, 0.0, 0.0), 1.0, 2.0, maximize=True) == (1.0, False)
    assert optimum_location((0.0, 1.0, 0.0), 1.0, 2.0, maximize=True) == (2.0, False)  # linear
    assert fit_quadratic([1, 1, 2, 2], [1, 2, 3, 4]) is None  # two distinct x cannot fix a parabola


def test_bootstrap_interval_covers_the_known_optimum():
    rng = np.random.default_rng(0)
    x = np.repeat(np.linspace(-1, 1.5, 6), 2)
    y = 0.5 - 0.3 * (x - 0.2) ** 2 + rng.normal(0, 0.01, x.size)
    opt = bootstrap_optimum(x, y, maximize=True, n_boot=400, seed=0)
    assert opt.interior and abs(opt.x - 0.2) < 0.1
    assert opt.lo <= 0.2 <= opt.hi and opt.hi - opt.lo < 0.5
    assert opt.interior_share > 0.9 and opt.n_boot > 300
    again = bootstrap_optimum(x, y, maximize=True, n_boot=400, seed=0)
    assert (again.lo, again.hi) == (opt.lo, opt.hi)  # deterministic in the seed
    # the loss view of the same data: minimise −y, same place
    loss = bootstrap_optimum(x, -y, maximize=False, n_boot=400, seed=0)
    assert loss.x == pytest.approx(opt.x)


def test_bootstrap_on_monotone_data_reports_the_edge():
    x = np.linspace(0, 1, 6)
    opt = bootstrap_optimum(x, 2 * x + 0.01 * np.sin(7 * x), maximize=True, n_boot=200, seed=0)
    assert not opt.interior and opt.x == pytest.approx(1.0)
    assert opt.hi == pytest.approx(1.0)
    assert bootstrap_optimum([0, 1], [0, 1], maximize=True) is None


def test_small_statistics():
    # the statistics the summary uses (moelab.stats), on the cases the old helpers were checked on
    assert rank_correlation_test([1, 2, 3, 4], [10, 20, 30, 25]).estimate == pytest.approx(0.8)
    assert rank_correlation_test([1, 2, 3, 4], [3, 3, 3, 3]) is None
    columns = [[0, 1, 2, 3, 4], [1, 0, 1, 0, 2]]
    y = [1 + 2 * a - 3 * b for a, b in zip(*columns)]
    assert regression_test(columns, y, 0).estimate == pytest.approx(2)
    assert regression_test(columns, y, 1).estimate == pytest.approx(-3)
    assert regression_test([[1, 2]], [1, 2], 0) is None  # no spare degree of freedom
    assert interp_clamped(1.5, [1, 2], [10, 20]) == (15.0, False)
    assert interp_clamped(3.0, [1, 2], [10, 20]) == (20.0, True)
