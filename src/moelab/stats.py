"""Uncertainty for every number a study reports, and the rule that turns it into a verdict.

Pure numerics (numpy, scipy; no torch), shared by evaluation (intervals on each model's numbers)
and analysis (verdicts across models):

- :func:`wilson_interval` — 95 % Wilson score interval of an accuracy over n items (scipy's).
- :func:`bootstrap_ratio_interval` — percentile bootstrap over items of a pooled ratio such as
  bits per token = Σ bits / Σ tokens (items resampled with their token counts).
- :func:`se_from_interval` — the standard error a 95 % interval implies (half-width / 1.96).
- :func:`slope_test` — a trend: least-squares slope of y on x within groups (group fixed
  effects), with a t interval whose standard error is the larger of the residual one (it holds
  run-to-run and item noise as scattered in the data) and the one the points' own standard
  errors imply (so three points that happen to line up cannot look certain).
- :func:`difference_test` — a − b with the interval from both standard errors.
- :func:`welch_test` — mean(a) − mean(b) from replicates (seeds): Welch's t interval (scipy),
  its standard error floored by the one the replicates' own intervals over items imply.
- :func:`rank_correlation_test` — Spearman ρ with the Fisher-z interval (Bonett & Wright's SE).
- :func:`verdict` — *yes* when the interval excludes "no effect" on the claimed side, *no* when
  it excludes it on the other side, *inconclusive* when it contains no effect.

Every interval is two-sided at ``LEVEL`` = 95 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

LEVEL = 0.95
Z = 1.959963984540054  # the standard normal's 97.5 % quantile
YES, NO, INCONCLUSIVE, NOT_ENOUGH = "yes", "no", "inconclusive", "not enough data"

DECISION_RULE = (
    "Each verdict tests one effect with an interval, and the summary's m verdicts together hold a 95 % "
    "family-wise level (Bonferroni: each interval at 1 − 0.05/m, split further over the lines of models a "
    "verdict tests one by one), so a study of pure noise reads yes less than one time in twenty. The effect is "
    "a slope (least squares within lines of "
    "models, standard error the larger of the residual one and the one implied by the models' own "
    "intervals over items), a difference (with seeds, Welch's t interval on the seed replicates "
    "of the two configurations; with one seed, both models' standard errors over items, plus the study's "
    "median seed spread where it has one) or a rank correlation (Fisher z). Yes: the interval excludes no effect on "
    "the claimed side. No: it excludes no effect on the other side. Inconclusive: it contains no "
    "effect — the data cannot tell, and it states the minimum detectable effect: the smallest effect the "
    "same test finds with 80 % power at its level, from the study's own standard error. "
    "Little-effect claims (top-k at fixed active parameters; GRPO and majority voting keeping the trend in "
    "total parameters, i.e. the gain not changing from the smallest to the largest model) are tested for "
    "equivalence by two one-sided tests against margins declared in the study file before it ran "
    "(analysis.equivalence): equivalent within δ, not equivalent (shown beyond ±δ) or inconclusive, "
    "with the smallest margin the study could have shown. Seeds are replicates: equivalence uses "
    "per-seed aggregates (each configuration's seed mean, paired over matched sets, or the seeds of one "
    "set), and never a smaller standard error than the items' own. "
    "Not enough data: too few models to estimate the effect, or no margin declared."
)


def wilson_interval(accuracy: float | None, n: int | None, level: float = LEVEL) -> tuple[float, float] | None:
    """The Wilson score interval of ``accuracy`` over ``n`` items (None without items).

    ``accuracy`` may be a mean of fractional scores; it is rounded to a count of successes.
    """
    if accuracy is None or not n or not math.isfinite(accuracy):
        return None
    from scipy.stats import binomtest

    k = min(max(int(round(accuracy * n)), 0), int(n))
    ci = binomtest(k, int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_ratio_interval(numerators: Sequence[float], denominators: Sequence[float], *, n_boot: int = 1000,
                             level: float = LEVEL, seed: int = 0) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of Σ numerators / Σ denominators, resampling items.

    Written with numpy rather than ``scipy.stats.bootstrap``: the ratio of sums needs the two
    arrays resampled together, and one vectorised index draw does that in a millisecond.
    """
    num = np.asarray(numerators, dtype=float)
    den = np.asarray(denominators, dtype=float)
    if num.size < 2 or not np.isfinite(num).all() or den.sum() <= 0:
        return None
    rng = np.random.default_rng(seed)
    idx_BN = rng.integers(0, num.size, size=(n_boot, num.size))
    ratios = num[idx_BN].sum(axis=1) / np.maximum(den[idx_BN].sum(axis=1), 1e-300)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(ratios, [alpha, 1 - alpha])
    return float(lo), float(hi)


def se_from_interval(lo: float | None, hi: float | None) -> float | None:
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return (hi - lo) / (2 * Z)


@dataclass(frozen=True)
class Effect:
    """An estimated effect with its 95 % interval; ``n`` points, ``df`` degrees of freedom."""

    estimate: float
    lo: float
    hi: float
    n: int
    df: float = 0  # 0: a normal interval; Welch's df is fractional
    se: float | None = None  # the standard error the interval was built from (power, equivalence)

    def verdict(self, *, positive: bool = True) -> str:
        return verdict(self.lo, self.hi, positive=positive)

    def text(self, fmt: str = "+.3g") -> str:
        return f"{self.estimate:{fmt}} [{self.lo:{fmt}}, {self.hi:{fmt}}]"


def verdict(lo: float, hi: float, *, positive: bool = True) -> str:
    """yes / no / inconclusive for a claim that the effect is > 0 (``positive``) or < 0."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return INCONCLUSIVE
    if lo > 0:
        return YES if positive else NO
    if hi < 0:
        return NO if positive else YES
    return INCONCLUSIVE


def _t_quantile(df: int, level: float = LEVEL) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def slope_test(x: Sequence[float], y: Sequence[float], groups: Sequence[object] | None = None,
               se: Sequence[float | None] | None = None, *, level: float = LEVEL) -> Effect | None:
    """Slope of ``y`` on ``x`` within ``groups`` (fixed effects) with its interval (95 % by default;
    pass ``level=bonferroni(m)`` when it is one of m tests).

    Needs at least one residual degree of freedom (n − groups − 1 ≥ 1) and some spread of x
    within a group; otherwise None. ``se`` are the points' own standard errors (None: unknown).
    """
    x_arr, y_arr = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    g = list(groups) if groups is not None else [0] * len(x_arr)
    labels = {key: i for i, key in enumerate(dict.fromkeys(g))}
    gid = np.array([labels[key] for key in g])
    xc, yc = x_arr.copy(), y_arr.copy()
    for i in range(len(labels)):  # demean within each group: the fixed-effects slope
        m = gid == i
        xc[m] -= x_arr[m].mean()
        yc[m] -= y_arr[m].mean()
    sxx = float((xc**2).sum())
    df = len(x_arr) - len(labels) - 1
    if df < 1 or sxx <= 1e-12 * max(1.0, float((x_arr**2).sum())):
        return None
    slope = float((xc * yc).sum() / sxx)
    resid = yc - slope * xc
    se_resid = math.sqrt(float((resid**2).sum()) / df / sxx)
    se_meas = 0.0
    if se is not None:
        # Var(slope) from the points' own errors: the slope is Σ w_i y_i with w_i = xc_i / Sxx
        # (demeaning moves weight within a group, but the weights of one group sum to zero).
        known = np.array([s if s is not None and math.isfinite(s) else 0.0 for s in se], dtype=float)
        se_meas = math.sqrt(float(((xc / sxx) ** 2 * known**2).sum()))
    half = _t_quantile(df, level) * max(se_resid, se_meas)
    return Effect(slope, slope - half, slope + half, len(x_arr), df, max(se_resid, se_meas))


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2)


def difference_test(a: float, se_a: float | None, b: float, se_b: float | None, *, n: int = 2,
                    level: float = LEVEL) -> Effect | None:
    """``a − b`` with a normal interval; None when either standard error is unknown."""
    if se_a is None or se_b is None:
        return None
    se = math.sqrt(se_a**2 + se_b**2)
    half = _z(level) * se
    return Effect(a - b, a - b - half, a - b + half, n, 0, se)


def welch_test(a: Sequence[float], b: Sequence[float], *, item_se: float | None = None,
               level: float = LEVEL) -> Effect | None:
    """mean(a) − mean(b) from independent replicates (≥ 2 each): Welch's t interval (scipy's
    ``ttest_ind(equal_var=False)`` and its ``confidence_interval``), Welch–Satterthwaite df.

    ``item_se``: the standard error of the difference that the replicates' own intervals over items
    imply; when it is larger than Welch's (seeds that agree more closely than their evaluation can
    resolve, or agree exactly), it replaces it under the same df, so identical seeds never look
    certain. None with fewer than two replicates a side, or with no spread and no ``item_se``.
    """
    from scipy.stats import ttest_ind

    a_R, b_R = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_R.size < 2 or b_R.size < 2:
        return None
    va, vb = float(a_R.var(ddof=1)) / a_R.size, float(b_R.var(ddof=1)) / b_R.size
    se_welch = math.sqrt(va + vb)
    if se_welch <= 1e-12 * max(1.0, float(np.abs(np.concatenate([a_R, b_R])).max())):
        se_welch = 0.0  # seeds equal but for rounding: no spread (scipy would warn of cancellation)
    estimate = float(a_R.mean() - b_R.mean())
    floor = item_se if item_se is not None and math.isfinite(item_se) else 0.0
    if se_welch > 0:
        result = ttest_ind(a_R, b_R, equal_var=False)
        df = float(result.df)
    else:  # no spread at all: Welch's df is undefined; the pooled test's is the natural stand-in
        df = float(a_R.size + b_R.size - 2)
    if max(se_welch, floor) <= 0:
        return None
    if se_welch >= floor:
        ci = result.confidence_interval(confidence_level=level)
        return Effect(estimate, float(ci.low), float(ci.high), int(a_R.size + b_R.size), df, se_welch)
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, df)) * floor
    return Effect(estimate, estimate - half, estimate + half, int(a_R.size + b_R.size), df, floor)


def rank_correlation_test(x: Sequence[float], y: Sequence[float], *, level: float = LEVEL) -> Effect | None:
    """Spearman's ρ with the Fisher-z 95 % interval (SE √((1 + ρ²/2) / (n − 3)), Bonett & Wright 2000).

    None with fewer than 4 points or when either variable is constant.
    """
    from scipy.stats import spearmanr

    n = len(x)
    if n < 4 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    rho = float(spearmanr(x, y).statistic)
    if not math.isfinite(rho):
        return None
    r = min(max(rho, -0.999999), 0.999999)
    half = _z(level) * math.sqrt((1 + r * r / 2) / (n - 3))
    z = math.atanh(r)
    lo, hi = math.tanh(z - half), math.tanh(z + half)
    if n <= EXACT_RANK_N:
        # Fisher's z is poor for a handful of points near |ρ| = 1: the exact permutation test decides
        # whether each end of the interval may exclude zero.
        p_pos, p_neg = _exact_spearman_tails(x, y, rho)
        alpha = (1 - level) / 2
        lo = lo if p_pos <= alpha else min(lo, 0.0)
        hi = hi if p_neg <= alpha else max(hi, 0.0)
    return Effect(rho, lo, hi, n, n - 3)


EXACT_RANK_N = 8  # 8! = 40,320 permutations: milliseconds


def _exact_spearman_tails(x: Sequence[float], y: Sequence[float], rho: float) -> tuple[float, float]:
    """P(ρ ≥ observed), P(ρ ≤ observed) over all permutations of y (ties kept as average ranks)."""
    import itertools

    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    rx, ry = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean()), ry - ry.mean()
    ry = ry / np.linalg.norm(ry)
    perms_PN = np.array(list(itertools.permutations(range(len(ry)))))
    rhos = ry[perms_PN] @ rx
    eps = 1e-9
    return float((rhos >= rho - eps).mean()), float((rhos <= rho + eps).mean())


def bonferroni(m: int, level: float = LEVEL) -> float:
    """The per-test level that keeps m tests at ``level`` together."""
    return 1 - (1 - level) / max(m, 1)


def combine(verdicts: Sequence[str]) -> str:
    """One verdict for "at every line": no if any line says no, yes only if all say yes."""
    decided = [v for v in verdicts if v != NOT_ENOUGH]
    if not decided:
        return NOT_ENOUGH
    if NO in decided:
        return NO
    if all(v == YES for v in decided):
        return YES
    return INCONCLUSIVE


def regression_test(columns: Sequence[Sequence[float]], y: Sequence[float], index: int,
                    se: Sequence[float | None] | None = None, *, level: float = LEVEL) -> Effect | None:
    """Least squares of ``y`` on ``columns`` plus an intercept; the coefficient of ``columns[index]``
    with its 95 % t interval (standard error: the larger of the residual one and the one the
    points' own ``se`` imply). None when the design is singular or leaves no degree of freedom."""
    y_arr = np.asarray(y, dtype=float)
    x_NP = np.column_stack([np.asarray(c, dtype=float) for c in columns] + [np.ones(len(y_arr))])
    n, p = x_NP.shape
    df = n - p
    if df < 1:
        return None
    xtx = x_NP.T @ x_NP
    if np.linalg.cond(xtx) > 1e12:
        return None
    inv = np.linalg.inv(xtx)
    coef = inv @ x_NP.T @ y_arr
    resid = y_arr - x_NP @ coef
    se_resid = math.sqrt(float(resid @ resid) / df * inv[index, index])
    se_meas = 0.0
    if se is not None:
        known = np.array([s if s is not None and math.isfinite(s) else 0.0 for s in se], dtype=float)
        weights = (inv @ x_NP.T)[index]  # coefficient = weights · y
        se_meas = math.sqrt(float((weights**2 * known**2).sum()))
    half = _t_quantile(df, level) * max(se_resid, se_meas)
    b = float(coef[index])
    return Effect(b, b - half, b + half, n, df, max(se_resid, se_meas))


def anova_test(groups: Sequence[Sequence[float]]) -> tuple[float, float] | None:
    """One-way ANOVA across ``groups`` of replicates: (F, p); None with < 2 groups of ≥ 2 values."""
    from scipy.stats import f_oneway

    usable = [list(g) for g in groups if len(g) >= 2]
    if len(usable) < 2 or all(np.ptp(g) == 0 for g in usable):
        return None
    result = f_oneway(*usable)
    return float(result.statistic), float(result.pvalue)
