"""The report's plain-language summary: verdicts computed from the study's numbers and their noise.

Nothing here is a hand-written claim: each :class:`Statement` is a question the seed paper
answers (does knowledge accuracy rise with total parameters? is reasoning task loss U-shaped in
TPP? …), answered from this study's rows with the evidence in ``detail``. Every answer is *yes*,
*no*, *inconclusive* or *not enough data*, by the rule :data:`moelab.stats.DECISION_RULE`: an
effect counts only when its 95 % interval — built from the models' intervals over items, the
scatter of the models about the fit and, with seeds, the run-to-run spread — excludes no effect.

Seeds are replicates (the CPU presets train every configuration with five): a line of models is
(budget, active size, lr, init std), a configuration's seeds are repeated points on it, and the
comparisons of configurations use their seeds' spread (Welch's t). ``monotone_in_total`` and
``best_at_largest`` read the typed table of :mod:`moelab.analysis.table`; the other statements
still read dict rows.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from moelab.accounting import human_count
from moelab.analysis.data import (MEMO_LOSS, STATUSES, TOTAL, TRAIN_LOSS, VAL_LOSS, Quantity, accuracy_of, budget_symbol,
                                  completed, num, present, task_gap_of, task_loss_of)
from moelab.analysis.figures import fmt_si
from moelab.analysis.seeds import CONFIG_AXES, config_ids
from moelab.analysis.table import se_column, table
from moelab.analysis.verdicts import EQUIVALENT, NOT_EQUIVALENT, power_note
from moelab.stats import (INCONCLUSIVE, LEVEL, NO, NOT_ENOUGH, YES, Effect, anova_test, bonferroni, combine,
                          difference_test, rank_correlation_test, regression_test, slope_test, welch_test)

NA = NOT_ENOUGH
__all__ = ["Statement", "summarize", "YES", "NO", "INCONCLUSIVE", "NA", "EQUIVALENT", "NOT_EQUIVALENT"]


def _unit(y: Quantity) -> tuple[str, float]:
    """The effect's own unit and the factor from the stored value: accuracy in points, losses as stored."""
    if y.key.startswith("accuracy"):
        return "points", 100.0
    return ("bits/token" if "task_loss" in y.key else "nats/token"), 1.0


@dataclass
class Statement:
    claim: str
    answer: str  # yes / no / inconclusive / not enough data
    detail: str = ""

    def as_dict(self) -> dict:
        return {"claim": self.claim, "answer": self.answer, "detail": self.detail}


# A line of the figures and verdicts: models that differ only in total parameters (E, and d_model /
# top-k within one active size). Seeds are not an axis: a configuration's seeds are replicate points
# on its line (DESIGN: "seeds are replicates").
LINE_AXES = ("budget", "active_size", "lr", "init_std")
_NAME_AXES = (("lr", "lr"), ("init_std", "std"), ("seed", "seed"))  # after budget and active size


def _key(key) -> tuple:
    """A groupby key with NaN (a missing axis) as None, as ``num`` gives."""
    key = key if isinstance(key, tuple) else (key,)
    return tuple(None if pd.isna(v) else float(v) for v in key)


def _group_name(key: tuple, members: list[dict], rows: list[dict] = ()) -> str:
    """``D3M/A150K``, plus ``/lr0.001``, ``/std0.02`` (and ``/seed1`` for a key that holds the seed)
    for the axes that vary across ``rows``."""
    budget, active = key[0], key[1]
    sym = budget_symbol(members)  # D for a token budget, C for FLOPs
    name = f"{sym}{fmt_si(budget)}/A{human_count(active)}" if active else f"{sym}{fmt_si(budget)}"
    for (axis, prefix), value in zip(_NAME_AXES, key[2:]):
        if value is not None and len({num(r.get(axis)) for r in rows}) > 1:
            name += f"/{prefix}{value:g}"
    return name


def _frame(rows: list[dict], y: Quantity) -> pd.DataFrame:
    """The models with y and a positive total: typed table with ``log_total`` and a ``config`` id
    (:func:`moelab.analysis.seeds.config_ids`: a configuration's seeds share one)."""
    axes = [*dict.fromkeys((*LINE_AXES, *CONFIG_AXES, "seed"))]
    frame = table(rows, columns=[*axes, "label", "budget_kind"], numeric=axes, quantities=[y, TOTAL])
    frame["log_total"] = np.log10(frame[TOTAL.key].where(frame[TOTAL.key] > 0))
    frame = frame.dropna(subset=["log_total", y.key])
    return frame.assign(config=config_ids(frame))


def _seeds_used(frame: pd.DataFrame) -> str:
    """"5 seeds per configuration as replicates", "2–5 seeds …" or "one seed per configuration"."""
    counts = frame.groupby("config").size()
    if counts.empty or counts.max() < 2:
        return "one seed per configuration"
    lo, hi = int(counts.min()), int(counts.max())
    return f"{lo if lo == hi else f'{lo}–{hi}'} seeds per configuration as replicates"


def _constant(rows: list[dict], y: Quantity) -> Statement | None:
    values = {round(v, 12) for r in rows if (v := y.get(r)) is not None}
    if len(values) == 1:
        return Statement("", NA, f"every model has the same value ({values.pop():.4g}): no trend to read")
    return None


def _seed_sd(frame: pd.DataFrame, y: Quantity) -> float | None:
    """The median run-to-run standard deviation of ``y`` over the configurations with ≥ 2 seeds."""
    sds = frame.groupby("config")[y.key].std().dropna()
    return float(sds.median()) if len(sds) else None


def _log10(v: float | None) -> float | None:
    return math.log10(v) if v is not None and v > 0 else None


def _fmt_effect(effect, unit: str, scale: float = 1.0) -> str:
    unit = f" {unit}" if unit else ""
    lo, hi = sorted((effect.lo * scale, effect.hi * scale))  # a negative scale (a loss's sign) swaps the ends
    return f"{effect.estimate * scale:+.3g}{unit}, interval [{lo:+.3g}, {hi:+.3g}]"


def monotone_in_total(rows: list[dict], y: Quantity, *, increasing: bool, what: str,
                      level: float = LEVEL) -> Statement:
    """Within each line (budget, active size, lr, init std), does y move one way as total parameters grow?

    The effect is the pooled within-line slope of y on log10(total parameters), every seed a point
    on its line (one intercept per line). *Yes* needs that slope's interval on the claimed side and
    every line's own slope — fitted to all its seeds' points, so their scatter is its noise —
    pointing the same way; *no* when the pooled slope, or one line's slope (Bonferroni over the
    lines), is significantly the other way; else *inconclusive*.
    """
    claim = f"{what} {'rises' if increasing else 'falls'} with total parameters at every active size"
    if (const := _constant(rows, y)) is not None:
        return Statement(claim, const.answer, const.detail)
    frame, se = _frame(rows, y), se_column(y)
    lines = [(_group_name(_key(key), [rows[i] for i in line.index], rows), line)
             for key, line in frame.groupby(list(LINE_AXES), dropna=False, sort=False)
             if line["log_total"].nunique() >= 2]
    used = pd.concat([line.assign(line=i) for i, (_, line) in enumerate(lines)]) if lines else frame.iloc[:0]
    pooled = slope_test(used["log_total"].tolist(), used[y.key].tolist(), used["line"].tolist(),
                        used[se].tolist(), level=level) if lines else None
    if pooled is None:
        return Statement(claim, NA, "needs lines of models that differ in total parameters, with more models than "
                                    "lines plus one")
    per_line = bonferroni(len(lines), level)
    sign = 1 if increasing else -1
    parts, against, same_way = [], False, True
    unit, scale = _unit(y)  # each line's slope in the pooled slope's unit (points, not fractions)
    for name, line in lines:
        x_N, y_N = line["log_total"].to_numpy(), line[y.key].to_numpy()
        effect = slope_test(x_N, y_N, None, line[se].tolist(), level=per_line)
        if effect is None:  # two models: the sign alone
            lo, hi = np.argmin(x_N), np.argmax(x_N)
            slope = (y_N[hi] - y_N[lo]) / (x_N[hi] - x_N[lo])
            same_way &= sign * slope > 0
            parts.append(f"{name}: {slope * scale:+.3g}")
            continue
        same_way &= sign * effect.estimate > 0
        against |= effect.verdict(positive=increasing) == NO
        parts.append(f"{name}: {effect.estimate * scale:+.3g} [{effect.lo * scale:+.3g}, {effect.hi * scale:+.3g}]")
    verdict = pooled.verdict(positive=increasing)
    if against:
        verdict = NO
    elif verdict == YES and not same_way:
        verdict = INCONCLUSIVE
    seeds = _seeds_used(used)
    how = "" if seeds.startswith("one") else f"; {seeds} (each seed a point on its line, one intercept per line)"
    detail = (f"pooled within-line slope {_fmt_effect(pooled, f'{unit} per 10× total parameters', scale)} over "
              f"{pooled.n} models in {len(lines)} lines{how}; per line: " + "; ".join(parts[:6])
              + (" …" if len(parts) > 6 else ""))
    if verdict == INCONCLUSIVE:
        detail += "; " + power_note(pooled, level, f"{unit} per 10× total parameters", scale=scale)
    return Statement(claim, verdict, detail)


def _config_table(line: pd.DataFrame, y: Quantity, sign: int) -> pd.DataFrame:
    """Per configuration of one line: total parameters, mean / sd / count of sign·y over its seeds,
    and the mean squared standard error over items (NaN when a seed has no interval)."""
    line = line.assign(signed=sign * line[y.key], item_var=line[se_column(y)] ** 2)
    return line.groupby("config").agg(total=(TOTAL.key, "mean"), mean=("signed", "mean"), sd=("signed", "std"),
                                      n=("signed", "count"), label=("label", "first"),
                                      item_var=("item_var", lambda v: v.mean(skipna=False)))


def _mean_se(c: pd.Series, seed_sd: float) -> float | None:
    """A configuration mean's standard error where Welch cannot be used: one seed, today's rule —
    its interval over items plus the study's median seed sd; several, their own sd (floored by the
    items') over √n."""
    item = None if pd.isna(c["item_var"]) else math.sqrt(c["item_var"])
    if c["n"] < 2:
        return None if item is None else math.hypot(item, seed_sd)
    return max(c["sd"], item or 0.0) / math.sqrt(c["n"])


def largest_vs_best_other(line: pd.DataFrame, y: Quantity, *, seed_sd: float = 0.0,
                          level: float = LEVEL) -> tuple[pd.Series, pd.Series, Effect | None, str]:
    """One line's comparison: (largest configuration, best other, effect of sign·y, how).

    ``line``: rows of :func:`_frame` on one line. Each configuration is its seed replicates; with
    ≥ 2 seeds on both sides the effect is Welch's t interval on the seeds (df fractional, its se
    floored by the items'), else the difference of means with the items' standard errors.
    """
    sign = 1 if y.higher_is_better else -1
    configs = _config_table(line, y, sign)
    largest = configs.sort_values(["total", "mean"]).iloc[-1]
    others = configs[configs["total"] < largest["total"]]
    rival = others.loc[others["mean"].idxmax()]
    if largest["n"] >= 2 and rival["n"] >= 2:
        values = line.assign(signed=sign * line[y.key]).groupby("config")["signed"]
        item_var = largest["item_var"] / largest["n"] + rival["item_var"] / rival["n"]
        effect = welch_test(values.get_group(largest.name), values.get_group(rival.name),
                            item_se=None if pd.isna(item_var) else math.sqrt(item_var), level=level)
        return largest, rival, effect, "Welch"
    se_l, se_r = _mean_se(largest, seed_sd), _mean_se(rival, seed_sd)
    effect = difference_test(largest["mean"], se_l, rival["mean"], se_r, level=level)
    return largest, rival, effect, "items"


def best_at_largest(rows: list[dict], y: Quantity, *, what: str, level: float = LEVEL) -> Statement:
    """Per line: is the configuration with the most total parameters better than the best of the
    others, beyond the noise? Seeds are replicates: with ≥ 2 seeds on both sides, Welch's t interval
    on the seeds; with one seed, both models' standard errors over items plus the study's median
    seed sd. Bonferroni over the lines.
    """
    claim = f"the best {what} of each active size is its model with the most total parameters"
    if (const := _constant(rows, y)) is not None:
        return Statement(claim, const.answer, const.detail)
    frame = _frame(rows, y)
    seed_sd = _seed_sd(frame, y) or 0.0
    lines = [(key, line) for key, line in frame.groupby(list(LINE_AXES), dropna=False, sort=False)
             if line[TOTAL.key].nunique() >= 2]
    if not lines:
        return Statement(claim, NA, "no active size has two models with different total parameters")
    sign = 1 if y.higher_is_better else -1
    level = bonferroni(len(lines), level)
    unit, scale = _unit(y)
    verdicts, parts, effects, hows = [], [], [], set()
    for key, line in lines:
        largest, rival, effect, how = largest_vs_best_other(line, y, seed_sd=seed_sd, level=level)
        name = _group_name(_key(key), [rows[i] for i in line.index], rows)
        if effect is None:
            verdicts.append(NA)
            parts.append(f"{name}: no interval")
            continue
        hows.add(how)
        v = effect.verdict(positive=True)
        verdicts.append(v)
        effects.append(effect)
        seeds = "" if largest["n"] < 2 and rival["n"] < 2 else f" ({largest['n']} vs {rival['n']} seeds)"
        parts.append(f"{name}: largest {largest['label']} − best other {rival['label']}{seeds} = "
                     f"{_fmt_effect(effect, unit, sign * scale)} → {v}")
    answer = combine(verdicts)
    used = pd.concat([line for _, line in lines])
    seeds = _seeds_used(used)
    if hows == {"Welch"}:
        how = f"{seeds} (Welch t interval on the seeds)"
    elif seeds.startswith("one"):
        how = seeds + ": the models' intervals over items" + (", plus the median seed sd" if seed_sd else "")
    else:
        how = (f"{seeds} (Welch t interval where both sides have ≥ 2 seeds; against a single seed, the items' "
               "intervals plus the median seed sd)")
    detail = f"{how}; " + "; ".join(parts[:6]) + (" …" if len(parts) > 6 else "")
    if answer == INCONCLUSIVE and effects:  # the least precise line bounds what the study could see
        detail += "; " + power_note(max(effects, key=lambda e: e.se or 0), level, unit, scale=scale)
    return Statement(claim, answer, detail)


def u_shape(optima, *, what: str, level: float = LEVEL) -> Statement:
    """Per group: curvature of the quadratic in log10 TPP significantly U-shaped (a minimum for a
    loss, a maximum for an accuracy) and the bootstrap interval of its optimum inside the range."""
    claim = f"{what} has an optimum inside the measured TPP range (U-shape) at each budget and active size"
    fitted = [g for g in optima if g.opt is not None and g.active is not None]
    if not fitted:
        return Statement(claim, NA, "no budget/active size has 3 distinct TPP values with a varying metric")
    level = bonferroni(len(fitted), level)
    verdicts, parts = [], []
    for g in fitted:
        pts = [(x, v, g.quantity.se(r)) for r in g.rows if (x := _log10(num(r.get("tpp")))) is not None
               and (v := g.quantity.get(r)) is not None]
        curvature = regression_test([[p[0] ** 2 for p in pts], [p[0] for p in pts]], [p[1] for p in pts], 0,
                                    [p[2] for p in pts], level=level) if len(pts) >= 4 else None
        opt = g.opt
        inside = opt.interior and opt.lo is not None and opt.lo > opt.fit.lo and opt.hi < opt.fit.hi
        at_edge = opt.lo is not None and (opt.hi <= opt.fit.lo or opt.lo >= opt.fit.hi)
        cv = NA if curvature is None else curvature.verdict(positive=not g.maximize)
        v = YES if cv == YES and inside else (NO if cv == NO or at_edge else (NA if cv == NA else INCONCLUSIVE))
        verdicts.append(v)
        where = (f"TPP {10 ** opt.x:.3g} [{10 ** opt.lo:.3g}, {10 ** opt.hi:.3g}]" if opt.lo is not None
                 else f"TPP {10 ** opt.x:.3g}")
        curv = "" if curvature is None else f", curvature {curvature.estimate:+.3g} [{curvature.lo:+.3g}, {curvature.hi:+.3g}]"
        if v == INCONCLUSIVE and curvature is not None:
            curv += "; " + power_note(curvature, level, "curvature per (decade of TPP)²")
        parts.append(f"{g.key}: optimum {where}{curv} → {v}")
    return Statement(claim, combine(verdicts), "; ".join(parts))


def active_at_equal_loss(rows: list[dict], y: Quantity, *, what: str, level: float = LEVEL) -> Statement:
    claim = f"at equal training loss, models with more active parameters have higher {what}"
    if (const := _constant(rows, y)) is not None:
        return Statement(claim, const.answer, const.detail)
    pts = [(tl, math.log2(a), v, y.se(r)) for r in rows
           if (tl := TRAIN_LOSS.get(r)) is not None and (a := num(r.get("active_size"))) and (v := y.get(r)) is not None]
    if len({p[1] for p in pts}) < 2 or len(pts) < 4:
        return Statement(claim, NA, "needs ≥4 models over ≥2 active sizes with train loss and the metric")
    effect = regression_test([[p[0] for p in pts], [p[1] for p in pts]], [p[2] for p in pts], 1, [p[3] for p in pts],
                             level=level)
    if effect is None:
        return Statement(claim, NA, "train loss and active size are collinear in this study")
    unit, scale = _unit(y)
    answer = effect.verdict(positive=bool(y.higher_is_better))
    detail = (f"linear fit over {len(pts)} models: "
              f"{_fmt_effect(effect, f'{unit} per doubling of active parameters', scale)} at fixed train loss")
    if answer == INCONCLUSIVE:
        detail += "; " + power_note(effect, level, f"{unit} per doubling of active parameters", scale=scale)
    return Statement(claim, answer, detail)


def gap_trend(rows: list[dict], x: str, y: Quantity, *, what: str, xname: str, level: float = LEVEL) -> Statement:
    """Does the gap grow with ``x`` (log scale) within each set of models that differ only in ``x``?

    The pooled within-set slope of y on log10(x), one intercept per set; seeds are points of their
    set, not sets of their own. For ``lr`` and ``init_std`` a set is every other axis; for total
    parameters it is a line (budget, active size, lr, init std).
    """
    claim = f"{what} grows with {xname}"
    others = [c for c in ("budget", "d_model", "num_experts", "top_k", "lr", "init_std") if c != x]
    set_axes = others if x in ("lr", "init_std") else list(LINE_AXES)
    frame = table(rows, columns=[x, *set_axes], numeric=[x, *set_axes], quantities=[y])
    frame = frame.assign(log_x=np.log10(frame[x].where(frame[x] > 0))).dropna(subset=["log_x", y.key])
    sets_N = frame.groupby(set_axes, dropna=False, sort=False).ngroup()
    effect = slope_test(frame["log_x"].tolist(), frame[y.key].tolist(), sets_N.tolist(),
                        frame[se_column(y)].tolist(), level=level)
    if effect is None:
        return Statement(claim, NA, f"no set of models differs only in {xname}, with more models than sets plus one")
    unit, scale = _unit(y)
    answer = effect.verdict(positive=True)
    detail = (f"slope {_fmt_effect(effect, f'{unit} per 10× {xname}', scale)} over {effect.n} models in "
              f"{sets_N.nunique()} sets")
    if answer == INCONCLUSIVE:
        detail += "; " + power_note(effect, level, f"{unit} per 10× {xname}", scale=scale)
    return Statement(claim, answer, detail)


def status_statement(rows: list[dict]) -> Statement:
    """Counts the planned (pretraining) runs; post-trained variants are added to the detail."""
    pretrain = [r for r in rows if not r.get("posttrain")]
    counts = Counter(r["status"] for r in pretrain)
    planned = [r for r in pretrain if r["status"] != "infeasible"]
    done = counts.get("done", 0)
    detail = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s)) or "no runs"
    post = Counter(f"{r['posttrain']} {r['status']}" for r in rows if r.get("posttrain"))
    if post:
        detail += "; post-trained: " + ", ".join(f"{n} {what}" for what, n in sorted(post.items()))
    return Statement("every feasible planned run finished", YES if planned and done == len(planned) else NO, detail)


def _rank_statement(claim: str, pts: list[tuple[dict, float, float]], what_x: str, what_y: str,
                    level: float) -> Statement:
    """Is the ranking kept? Spearman ρ between the two measurements with its Fisher-z interval."""
    effect = rank_correlation_test([p[1] for p in pts], [p[2] for p in pts], level=level)
    if effect is None:
        return Statement(claim, NA, f"needs ≥4 models with varying {what_x} and {what_y}")
    best_x = max(pts, key=lambda p: p[1])[0].get("label")
    best_y = max(pts, key=lambda p: p[2])[0].get("label")
    return Statement(claim, effect.verdict(positive=True),
                     f"{effect.n} models; rank correlation (Spearman ρ) {_fmt_effect(effect, '')}; best by {what_x}: "
                     f"{best_x}, by {what_y}: {best_y}")


def prepost_statement(pairs, y_pre: Quantity, y_post: Quantity, *, what: str, level: float = LEVEL) -> Statement:
    claim = f"GRPO keeps the pretrained models' ranking by {what} (rank correlation pre/post > 0)"
    pts = [(pre, a, b) for pre, post in pairs if (a := y_pre.get(pre)) is not None and (b := y_post.get(post)) is not None]
    stmt = _rank_statement(claim, pts, "pretraining", "GRPO", level)
    if pts:
        stmt.detail += f"; accuracy rose for {sum(p[2] > p[1] for p in pts)} of {len(pts)}"
    return stmt


def ttc_statement(curves, *, task: str, level: float = LEVEL) -> Statement:
    claim = f"majority voting over the most samples keeps the greedy ranking of models ({task}; rank correlation > 0)"
    pts = [(r, c["greedy"], c["majority"][-1]) for r, c in curves
           if c.get("greedy") is not None and c.get("majority")]
    return _rank_statement(claim, pts, "greedy", "vote", level)


def summarize(rows: list[dict], families: list[str], optima: dict, *, prepost: dict | None = None,
              ttc: dict | None = None, margins=None, level: float = LEVEL) -> list[Statement]:
    """Every statement the data can speak to, in the report's order.

    The verdicts share ``level`` family-wise: each of the m tests runs at ``bonferroni(m, level)``.
    ``margins`` (the study's ``analysis.equivalence``) are the equivalence margins of the "little
    effect" claims; without them those rows read *not enough data*.
    """
    from functools import partial as bind

    from moelab.analysis.equivalence import gain_trend_kept, topk_little_effect

    done = completed(rows)
    tests = [bind(monotone_in_total, done, TRAIN_LOSS, increasing=False, what="pretraining train loss"),
             bind(monotone_in_total, done, VAL_LOSS, increasing=False, what="validation loss")]
    if present(done, MEMO_LOSS):  # claim 1's premise where capacity binds: the facts' own tokens
        tests.append(bind(monotone_in_total, done, MEMO_LOSS, increasing=False,
                          what="pretraining loss on memorisable tokens"))
    for fam in families:
        acc, loss = accuracy_of(fam, rows), task_loss_of(fam, rows)
        gap = task_gap_of(fam)
        tests += [bind(monotone_in_total, done, acc, increasing=True, what=f"{fam} accuracy"),
                  bind(monotone_in_total, done, loss, increasing=False, what=f"{fam} task loss"),
                  bind(best_at_largest, done, acc, what=f"{fam} accuracy"),
                  bind(u_shape, [g for g in optima.get(fam, []) if g.metric == "task_loss"], what=f"{fam} task loss"),
                  bind(active_at_equal_loss, done, acc, what=f"{fam} accuracy"),
                  bind(gap_trend, done, "total_params", gap, what=f"the {fam} task-loss generalization gap",
                       xname="total parameters")]
        for axis, name in (("lr", "the learning rate"), ("init_std", "the init std")):
            if len({num(r.get(axis)) for r in done}) > 1:
                tests.append(bind(gap_trend, done, axis, gap, what=f"the {fam} task-loss generalization gap",
                                  xname=name))
        for q, key, name in ((acc, "accuracy", "accuracy"), (loss, "task_loss_bits", "task loss")):
            tests.append(bind(topk_little_effect, done, q, getattr(margins, key, None), what=f"{fam} {name}"))
        if prepost and prepost.get("pairs"):
            pre_q, post_q = prepost["pre"](fam), prepost["post"](fam)
            tests.append(bind(prepost_statement, prepost["pairs"], pre_q, post_q, what=f"{fam} accuracy"))
            tests.append(bind(gain_trend_kept, _gains(prepost["pairs"], pre_q, post_q),
                              getattr(margins, "accuracy", None), quantity_key=pre_q.key,
                              claim=f"GRPO keeps the {fam} accuracy trend in total parameters (equivalence)"))
    for task, curves in (ttc or {}).items():
        tests.append(bind(ttc_statement, curves, task=task))
        gains = [(r, c["majority"][-1] - c["greedy"], None) for r, c in curves
                 if num(c.get("greedy")) is not None and c.get("majority") and num(c["majority"][-1]) is not None]
        tests.append(bind(gain_trend_kept, gains, getattr(margins, "accuracy", None), quantity_key="accuracy",
                          claim=f"majority voting keeps the {task} accuracy trend in total parameters (equivalence)"))
    from moelab.analysis.seeds import spread_summary

    spread = spread_summary(rows, families)
    each = bonferroni(len(tests) + len(spread), level)
    return [status_statement(rows), *(test(level=each) for test in tests),
            *seed_statements(rows, families, each, spread=spread)]


def _gains(pairs, y_pre: Quantity, y_post: Quantity) -> list[tuple[dict, float, float | None]]:
    """(pretrained row, post − pre, its standard error from both evaluations' intervals)."""
    out = []
    for pre, post in pairs:
        a, b = y_pre.get(pre), y_post.get(post)
        if a is not None and b is not None:
            sa, sb = y_pre.se(pre), y_post.se(post)
            out.append((pre, b - a, None if sa is None or sb is None else math.hypot(sa, sb)))
    return out


def seed_statements(rows: list[dict], families: list[str], level: float = LEVEL, *,
                    spread: list | None = None) -> list[Statement]:
    """With a seed axis: does each metric differ between configurations more than between seeds?

    One-way ANOVA over the configurations' seed replicates: yes when p < 0.05, else inconclusive
    (equal means cannot be proven, only not rejected).
    """
    from moelab.analysis.seeds import seed_groups, seed_quantities, spread_summary

    groups = seed_groups(rows)
    out = []
    spread = {key: (seed_sd, config_sd, n)
              for key, seed_sd, config_sd, n in (spread if spread is not None else spread_summary(rows, families))}
    for q in seed_quantities(rows, families):
        if q.key not in spread:
            continue
        seed_sd, config_sd, n = spread[q.key]
        claim = f"{q.key} differs between configurations by more than between seeds"
        test = anova_test([[v for r in members if (v := q.get(r)) is not None] for members in groups.values()])
        if test is None:
            out.append(Statement(claim, NA, f"{n} configurations with ≥2 seeds, but no spread to test"))
            continue
        f_stat, p_value = test
        out.append(Statement(claim, YES if p_value < 1 - level else INCONCLUSIVE,
                             f"{n} configurations with ≥2 seeds: sd of their means {config_sd:.3g}, median sd across "
                             f"seeds {seed_sd:.3g}; one-way ANOVA F = {f_stat:.3g}, p = {p_value:.3g}"))
    return out
