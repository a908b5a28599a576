"""Power and equivalence for the summary's verdicts.

- :func:`detectable` — the minimum detectable effect (MDE): the smallest true effect that the
  verdict's own two-sided test, at the verdict's level, finds with 80 % power, from the effect's
  standard error and degrees of freedom (statsmodels' power solvers). Every *inconclusive* states it.
- :func:`tost` — two one-sided tests against a margin δ declared in the study file
  (``analysis.equivalence``): *equivalent within δ* when both "effect ≤ −δ" and "effect ≥ δ" are
  rejected at α = 1 − level; *not equivalent* when the effect is shown to lie beyond ±δ; else
  *inconclusive*, with the smallest margin the study could have shown.
- :func:`replicate_tost` — the same test where the effect is a difference of replicates (seeds, or
  matched sets of models): statsmodels' ``ttost_ind`` / ``ttost_paired`` on the per-seed values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

from moelab.stats import INCONCLUSIVE, LEVEL, NOT_ENOUGH, Effect

POWER = 0.80
EQUIVALENT, NOT_EQUIVALENT = "equivalent", "not equivalent"

__all__ = ["POWER", "EQUIVALENT", "NOT_EQUIVALENT", "Equivalence", "detectable", "power_note", "tost",
           "replicate_tost", "smallest_margin"]


def _q(p: float, df: int) -> float:
    from scipy.stats import norm, t

    return float(t.ppf(p, df)) if df > 0 else float(norm.ppf(p))


def detectable(se: float | None, df: float = 0, level: float = LEVEL, power: float = POWER) -> float | None:
    """The smallest |effect| a two-sided test at ``level`` detects with probability ``power``.

    A normal effect (``df`` 0) is a one-sample z test with one observation of sd ``se``; a t effect
    is the one-sample t test with ``df + 1`` observations, whose noncentrality d·√n is the MDE in
    units of ``se`` (exact noncentral t). statsmodels' solver can stop at its search bound for tiny
    α and one degree of freedom; then the classic approximation (t₁₋α/₂ + t_power)·se is used.
    """
    if se is None or not math.isfinite(se) or se <= 0:
        return None
    alpha = 1 - level
    from statsmodels.stats.power import NormalIndPower, TTestPower

    try:
        if df > 0:
            solver = TTestPower()
            d = float(solver.solve_power(effect_size=None, nobs=df + 1, alpha=alpha, power=power))
            ok = abs(float(solver.power(d, df + 1, alpha)) - power) < 1e-3
            mde = d * math.sqrt(df + 1) * se
        else:
            solver = NormalIndPower()
            d = float(solver.solve_power(effect_size=None, nobs1=1, ratio=0, alpha=alpha, power=power))
            ok = abs(float(solver.power(d, 1, alpha, ratio=0)) - power) < 1e-3
            mde = d * se
    except (ValueError, RuntimeError, ArithmeticError):
        ok = False
    if not ok or not math.isfinite(mde):
        mde = (_q(1 - alpha / 2, df) + _q(power, df)) * se
    return mde


def power_note(effect: Effect | None, level: float, unit: str, *, scale: float = 1.0) -> str:
    """"an effect above X unit would have been detected (…)" for an inconclusive verdict."""
    mde = detectable(effect.se, effect.df, level) if effect is not None else None
    if mde is None:
        return "no standard error, so no power figure"
    unit = f" {unit}" if unit else ""
    return (f"an effect above {mde * scale:.3g}{unit} would have been detected "
            f"({POWER:.0%} power at this verdict's level, {level:.4g} two-sided)")


def smallest_margin(se: float, df: int = 0, level: float = LEVEL, power: float = POWER) -> float:
    """The smallest δ for which TOST at α = 1 − level shows equivalence with probability ``power``
    when the true effect is 0: (q₁₋α + q₁₋β/₂)·se. Written out because statsmodels has no TOST
    power for an estimator given by its standard error (only for raw samples); it is the usual
    normal (or t) approximation, exact when one of the two one-sided tests dominates."""
    return (_q(level, df) + _q(1 - (1 - power) / 2, df)) * se


@dataclass(frozen=True)
class Equivalence:
    answer: str  # equivalent / not equivalent / inconclusive / not enough data
    margin: float
    effect: Effect | None = None
    p: float | None = None  # the TOST p-value: the larger of the two one-sided ones
    level: float = LEVEL

    def text(self, unit: str, *, scale: float = 1.0) -> str:
        if self.effect is None:
            return f"margin ±{self.margin * scale:.3g} {unit}"
        e, u = self.effect, f" {unit}" if unit else ""
        out = (f"effect {e.estimate * scale:+.3g}{u}, {self.level:.4g} interval [{e.lo * scale:+.3g}, "
               f"{e.hi * scale:+.3g}]; TOST against ±{self.margin * scale:.3g}{u}: p = {self.p:.3g}")
        if self.answer == INCONCLUSIVE and e.se:
            out += (f"; equivalence within ±{smallest_margin(e.se, e.df, self.level) * scale:.3g}{u} could have been "
                    f"shown ({POWER:.0%} power with no true effect), "
                    + power_note(e, self.level, unit, scale=scale))
        return out


def _verdict(estimate: float, se: float, df: int, margin: float, level: float) -> tuple[str, float]:
    from scipy.stats import norm, t

    dist = t(df) if df > 0 else norm
    p_lower = float(dist.sf((estimate + margin) / se))  # H0: effect ≤ −δ
    p_upper = float(dist.cdf((estimate - margin) / se))  # H0: effect ≥ +δ
    p = max(p_lower, p_upper)
    alpha = 1 - level
    if p < alpha:
        return EQUIVALENT, p
    # shown beyond the margin: the one-sided test of |effect| ≤ δ rejected on one side
    if float(dist.sf((estimate - margin) / se)) < alpha or float(dist.cdf((estimate + margin) / se)) < alpha:
        return NOT_EQUIVALENT, p
    return INCONCLUSIVE, p


def tost(estimate: float, se: float | None, margin: float, *, df: int = 0, n: int = 2,
         level: float = LEVEL) -> Equivalence:
    """TOST of an effect given by its estimate and standard error (normal, or t with ``df``).

    Written with scipy's t and normal distributions rather than ``statsmodels`` because the
    summary's effects are slopes and differences with a known standard error, not raw samples;
    :func:`replicate_tost` uses statsmodels where there are samples, and the tests check that both
    agree."""
    if se is None or not math.isfinite(se) or se <= 0:
        return Equivalence(NOT_ENOUGH, margin)
    half = _q(0.5 + level / 2, df) * se
    effect = Effect(estimate, estimate - half, estimate + half, n, df, se)
    answer, p = _verdict(estimate, se, df, margin, level)
    return Equivalence(answer, margin, effect, p, level)


def replicate_tost(a: Sequence[float], b: Sequence[float], margin: float, *, paired: bool,
                   level: float = LEVEL) -> Equivalence:
    """TOST of mean(a) − mean(b) from replicates: statsmodels' ``ttost_paired`` (matched sets) or
    ``ttost_ind`` (independent seeds, pooled variance). The standard error and df come from the
    same t statistics, so the interval and power figures match the p-value."""
    import numpy as np
    from statsmodels.stats.weightstats import ttost_ind, ttost_paired

    a, b = [float(v) for v in a], [float(v) for v in b]
    if paired:
        diffs = [x - y for x, y in zip(a, b)]
        if len(diffs) < 2 or max(diffs) == min(diffs):
            return Equivalence(NOT_ENOUGH, margin)
        p = float(ttost_paired(np.asarray(a), np.asarray(b), -margin, margin)[0])
        n, df = len(diffs), len(diffs) - 1
        se = math.sqrt(sum((d - sum(diffs) / n) ** 2 for d in diffs) / df / n)
    else:
        if len(a) < 2 or len(b) < 2 or (max(a) == min(a) and max(b) == min(b)):
            return Equivalence(NOT_ENOUGH, margin)
        p = float(ttost_ind(np.asarray(a), np.asarray(b), -margin, margin, usevar="pooled")[0])
        df = len(a) + len(b) - 2
        ma, mb = sum(a) / len(a), sum(b) / len(b)
        pooled = (sum((x - ma) ** 2 for x in a) + sum((y - mb) ** 2 for y in b)) / df
        se, n = math.sqrt(pooled * (1 / len(a) + 1 / len(b))), len(a) + len(b)
    estimate = sum(a) / len(a) - sum(b) / len(b)
    # the verdict from the same t statistics; the reported p is statsmodels' (the tests check they agree)
    return replace(tost(estimate, se, margin, df=df, n=n, level=level), p=p)
