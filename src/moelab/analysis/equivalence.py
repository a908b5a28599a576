"""The paper's two "little effect" claims, judged by equivalence (two one-sided tests).

- **Top-k at fixed active parameters** (claim 4): models that differ only in top-k (same budget,
  active size, E, learning rate, init std). The effect is the mean, over such sets, of the
  difference between the largest and the smallest top-k measured, each configuration averaged over
  its seeds; with seeds in every configuration its standard error comes from each configuration's
  own seed spread (the seeds are the replicates), floored by the items' standard error.
- **GRPO and test-time compute keep the trend** (claims 5, 6): the paper's trends are read across
  total parameters, so "the ranking is kept" is tested as "the gain (after − before) does not
  depend on total parameters": the within-line slope of the gain on log10 total parameters (seeds
  are extra points on their line), times the measured span of total parameters — the most that
  post-training or voting changes a difference between the smallest and the largest model.

Each reads *equivalent* (within the margin the study file declared before it ran), *not
equivalent* or *inconclusive*; without a declared margin, *not enough data*.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

from moelab.analysis.data import TOTAL, Quantity, num
from moelab.analysis.summary import Statement
from moelab.analysis.table import se_column, table
from moelab.analysis.verdicts import Equivalence, replicate_tost, tost
from moelab.stats import LEVEL, NOT_ENOUGH, slope_test

__all__ = ["topk_little_effect", "gain_trend_kept", "unit_of"]

_SET_AXES = ("budget", "active_size", "num_experts", "lr", "init_std")
_LINE_AXES = ("budget", "active_size", "lr", "init_std")


def unit_of(quantity_key: str) -> tuple[str, float, str]:
    """(unit, scale, margin key of ``analysis.equivalence``) for a quantity's key."""
    if quantity_key.startswith("accuracy"):
        return "points", 100.0, "accuracy"
    return "bits/token", 1.0, "task_loss_bits"


def _no_margin(claim: str, key: str) -> Statement:
    return Statement(claim, NOT_ENOUGH, f"no equivalence margin declared: set analysis.equivalence.{key} in the "
                                        "study file before it runs")


def topk_little_effect(rows: list[dict], y: Quantity, margin: float | None, *, what: str,
                       level: float = LEVEL) -> Statement:
    unit, scale, key = unit_of(y.key)
    claim = f"{what}: top-k has little effect at fixed active parameters (equivalence)"
    if margin is None:
        return _no_margin(claim, key)
    se = se_column(y)
    frame = table(rows, columns=["top_k", *_SET_AXES], numeric=["top_k", *_SET_AXES], quantities=[y])
    frame = frame.dropna(subset=["top_k", y.key])
    usable = [s for _, s in frame.groupby(list(_SET_AXES), dropna=False, sort=False) if s["top_k"].nunique() >= 2]
    if not usable:
        return Statement(claim, NOT_ENOUGH, "no two models differ only in top-k (same budget, active size, E, "
                                            "learning rate, init std)")
    # Per set: the seeds of its largest and of its smallest top-k (each seed a replicate).
    pairs = [(s[s["top_k"] == s["top_k"].max()], s[s["top_k"] == s["top_k"].min()]) for s in usable]
    k_pairs = {f"{lo['top_k'].iat[0]:g}→{hi['top_k'].iat[0]:g}" for hi, lo in pairs}
    hi_means = [float(hi[y.key].mean()) for hi, _ in pairs]
    lo_means = [float(lo[y.key].mean()) for _, lo in pairs]
    # the variance of the difference of means that the items' intervals alone imply (None: unknown)
    item_vars = [None if hi[se].isna().any() or lo[se].isna().any() else
                 float((hi[se] ** 2).sum() / len(hi) ** 2 + (lo[se] ** 2).sum() / len(lo) ** 2) for hi, lo in pairs]
    # each configuration's own seed spread (it holds the item noise too); pandas var is the sample variance
    seeded = [(hi, lo) for hi, lo in pairs if len(hi) >= 2 and len(lo) >= 2]
    seed_vars = [float(hi[y.key].var() / len(hi) + lo[y.key].var() / len(lo)) for hi, lo in seeded]
    seed_dfs = [len(hi) + len(lo) - 2 for hi, lo in seeded]
    diff = statistics.fmean(hi_means) - statistics.fmean(lo_means)
    candidates: list[tuple[str, Equivalence]] = []
    if len(seed_vars) == len(usable):
        # Seeds in every configuration: the difference of seed means, set by set, with each set's
        # variance from its own seeds (a Welch-type standard error; df pooled over the sets). The
        # items' standard error is its floor: seeds that agree by chance must not look exact.
        # (Until 2026-12-07 11:00 this case also weighed the items' standard error alone, which
        # ignores the seed spread: on paper-cpu's first seeded run it called reasoning accuracy
        # "not equivalent" on a 19-point difference inside a 38-point seed sd.)
        se_seeds = math.sqrt(sum(seed_vars)) / len(usable)
        se_items = math.sqrt(sum(item_vars)) / len(usable) if None not in item_vars else 0.0
        se = max(se_seeds, se_items)
        how = (f"{min(seed_dfs) // 2 + 1}–{max(seed_dfs) // 2 + 1} seeds per configuration as replicates within "
               f"each of {len(usable)} set(s)" + (" (the items' standard error, larger, as floor)"
                                                    if se_items > se_seeds else ""))
        eq = tost(diff, se, margin, df=sum(seed_dfs), n=sum(seed_dfs) + 2 * len(usable), level=level)
        detail = (f"largest − smallest top-k ({', '.join(sorted(k_pairs))}) over {len(usable)} set(s); standard "
                  f"error from {how}; " + eq.text(unit, scale=scale))
        return Statement(claim, eq.answer, detail)
    # One seed somewhere: equivalence must hold against the replicates' spread (sets as replicates)
    # and against the items' own noise: the verdict with the larger TOST p-value (the weaker
    # evidence) is the one reported.
    if len(usable) >= 2:
        candidates.append((f"paired over {len(usable)} sets of seed means (statsmodels ttost_paired)",
                           replicate_tost(hi_means, lo_means, margin, paired=True, level=level)))
    else:
        hi, lo = pairs[0]
        a, b = hi[y.key].tolist(), lo[y.key].tolist()
        candidates.append((f"{len(a)} + {len(b)} seeds as replicates (statsmodels ttost_ind)",
                           replicate_tost(a, b, margin, paired=False, level=level)))
    if None not in item_vars:
        se_items = math.sqrt(sum(item_vars)) / len(usable)
        candidates.append(("the items' standard errors", tost(diff, se_items, margin, n=len(usable), level=level)))
    candidates = [c for c in candidates if c[1].answer != NOT_ENOUGH]
    if not candidates:
        return Statement(claim, NOT_ENOUGH, "no standard error for the top-k difference (one seed per "
                                            "configuration and no item intervals)")
    how, eq = max(candidates, key=lambda c: c[1].p)
    detail = (f"largest − smallest top-k ({', '.join(sorted(k_pairs))}) over {len(usable)} set(s); standard error "
              f"from {how}; " + eq.text(unit, scale=scale))
    return Statement(claim, eq.answer, detail)


def gain_trend_kept(points: list[tuple[dict, float, float | None]], margin: float | None, *, claim: str,
                    quantity_key: str, level: float = LEVEL) -> Statement:
    """``points``: (pretrained row, gain = after − before, the gain's standard error or None)."""
    unit, scale, key = unit_of(quantity_key)
    if margin is None:
        return _no_margin(claim, key)
    xs, gains, groups, ses = [], [], [], []
    for r, gain, se in points:
        if (t := TOTAL.get(r)) and t > 0 and gain is not None and math.isfinite(gain):
            xs.append(math.log10(t)), gains.append(gain), ses.append(se)
            groups.append(tuple(num(r.get(c)) for c in _LINE_AXES))
    effect = slope_test(xs, gains, groups, ses, level=level)
    if effect is None or not effect.se:
        return Statement(claim, NOT_ENOUGH, "needs lines of models that differ in total parameters, with more "
                                            "models than lines plus one")
    by_line: dict[tuple, list[float]] = defaultdict(list)
    for g, x in zip(groups, xs):
        by_line[g].append(x)
    span = max(max(v) - min(v) for v in by_line.values())
    eq = tost(effect.estimate * span, effect.se * span, margin, df=effect.df, n=effect.n, level=level)
    detail = (f"gain vs log10 total parameters within {len(by_line)} line(s), {effect.n} models (seeds are points "
              f"on their line); slope × the measured span of {span:.2g} decades = the change of the gain from the "
              f"smallest to the largest model; " + eq.text(unit, scale=scale))
    return Statement(claim, eq.answer, detail)
