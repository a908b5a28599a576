"""The report's plain-language summary: verdicts computed from the study's numbers and their noise.

Nothing here is a hand-written claim: each :class:`Statement` is a question the seed paper
answers (does knowledge accuracy rise with total parameters? is reasoning task loss U-shaped in
TPP? …), answered from this study's rows with the evidence in ``detail``. Every answer is *yes*,
*no*, *inconclusive* or *not enough data*, by the rule :data:`moelab.stats.DECISION_RULE`: an
effect counts only when its 95 % interval — built from the models' intervals over items, the
scatter of the models about the fit and, with seeds, the run-to-run spread — excludes no effect.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass


from moelab.accounting import human_count
from moelab.analysis.data import (STATUSES, TOTAL, TRAIN_LOSS, VAL_LOSS, Quantity, accuracy_of, budget_symbol,
                                  completed, num, task_gap_of, task_loss_of)
from moelab.analysis.figures import fmt_si
from moelab.analysis.verdicts import EQUIVALENT, NOT_EQUIVALENT, power_note
from moelab.stats import (INCONCLUSIVE, LEVEL, NO, NOT_ENOUGH, YES, anova_test, bonferroni, combine, difference_test,
                          rank_correlation_test, regression_test, slope_test)

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


_LINE_AXES = ("budget", "active_size", "lr", "init_std", "seed")


def _line_groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Models on one line of the figures: same budget, active size, lr, init std and seed."""
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        out[tuple(num(r.get(c)) for c in _LINE_AXES)].append(r)
    return out


def _group_name(key: tuple, members: list[dict], rows: list[dict] = ()) -> str:
    """``D3M/A150K``, plus ``/lr0.001``, ``/std0.02``, ``/seed1`` for the axes that vary across ``rows``."""
    budget, active = key[0], key[1]
    sym = budget_symbol(members)  # D for a token budget, C for FLOPs
    name = f"{sym}{fmt_si(budget)}/A{human_count(active)}" if active else f"{sym}{fmt_si(budget)}"
    for axis, prefix, value in zip(_LINE_AXES[2:], ("lr", "std", "seed"), key[2:]):
        if value is not None and len({num(r.get(axis)) for r in rows}) > 1:
            name += f"/{prefix}{value:g}"
    return name


def _constant(rows: list[dict], y: Quantity) -> Statement | None:
    values = {round(v, 12) for r in rows if (v := y.get(r)) is not None}
    if len(values) == 1:
        return Statement("", NA, f"every model has the same value ({values.pop():.4g}): no trend to read")
    return None


def _seed_sd(rows: list[dict], y: Quantity) -> float | None:
    """The median run-to-run standard deviation of ``y`` where the study has seed replicates."""
    from moelab.analysis.seeds import seed_groups

    sds = []
    for members in seed_groups(rows).values():
        vals = [v for r in members if (v := y.get(r)) is not None]
        if len(vals) >= 2:
            sds.append(statistics.stdev(vals))
    return statistics.median(sds) if sds else None


def _log10(v: float | None) -> float | None:
    return math.log10(v) if v is not None and v > 0 else None


def _fmt_effect(effect, unit: str, scale: float = 1.0) -> str:
    unit = f" {unit}" if unit else ""
    return f"{effect.estimate * scale:+.3g}{unit}, interval [{effect.lo * scale:+.3g}, {effect.hi * scale:+.3g}]"


def monotone_in_total(rows: list[dict], y: Quantity, *, increasing: bool, what: str,
                      level: float = LEVEL) -> Statement:
    """Within each line (active size, variant), does y move one way as total parameters grow?

    The effect is the pooled within-line slope of y on log10(total parameters). *Yes* needs that
    slope's interval on the claimed side and every line's own slope pointing the same way; *no*
    when the pooled slope, or one line's slope (Bonferroni over the lines), is significantly the
    other way; else *inconclusive*.
    """
    claim = f"{what} {'rises' if increasing else 'falls'} with total parameters at every active size"
    if (const := _constant(rows, y)) is not None:
        return Statement(claim, const.answer, const.detail)
    lines = []
    for key, members in _line_groups(rows).items():
        pts = [(x, v, y.se(r)) for r in members if (x := _log10(TOTAL.get(r))) is not None
               and (v := y.get(r)) is not None]
        if len({p[0] for p in pts}) >= 2:
            lines.append((_group_name(key, members, rows), pts))
    flat = [(name, p) for name, pts in lines for p in pts]
    pooled = slope_test([p[0] for _, p in flat], [p[1] for _, p in flat], [n for n, _ in flat], [p[2] for _, p in flat],
                        level=level)
    if pooled is None:
        return Statement(claim, NA, "needs lines of models that differ in total parameters, with more models than "
                                    "lines plus one")
    per_line = bonferroni(len(lines), level)
    sign = 1 if increasing else -1
    parts, against, same_way = [], False, True
    _, scale = _unit(y)  # each line's slope in the pooled slope's unit (points, not fractions)
    for name, pts in lines:
        effect = slope_test([p[0] for p in pts], [p[1] for p in pts], None, [p[2] for p in pts], level=per_line)
        if effect is None:  # two models: the sign alone
            slope = (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0]) if pts[-1][0] != pts[0][0] else 0.0
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
    unit, scale = _unit(y)
    detail = (f"pooled within-line slope {_fmt_effect(pooled, f'{unit} per 10× total parameters', scale)} over "
              f"{pooled.n} models; per line: " + "; ".join(parts[:6]) + (" …" if len(parts) > 6 else ""))
    if verdict == INCONCLUSIVE:
        detail += "; " + power_note(pooled, level, f"{unit} per 10× total parameters", scale=scale)
    return Statement(claim, verdict, detail)


def best_at_largest(rows: list[dict], y: Quantity, *, what: str, level: float = LEVEL) -> Statement:
    """Per line: is the largest model better than the best of the others, beyond the noise?

    The difference's interval uses both models' standard errors (items), plus the seed spread
    where the study has seeds, at a Bonferroni-corrected level over the lines.
    """
    claim = f"the best {what} of each active size is its model with the most total parameters"
    if (const := _constant(rows, y)) is not None:
        return Statement(claim, const.answer, const.detail)
    seed_sd = _seed_sd(rows, y) or 0.0
    lines = []
    for key, members in _line_groups(rows).items():
        pts = [(r, t, v) for r in members if (t := TOTAL.get(r)) and (v := y.get(r)) is not None]
        if len({p[1] for p in pts}) >= 2:
            lines.append((key, members, pts))
    if not lines:
        return Statement(claim, NA, "no active size has two models with different total parameters")
    sign = 1 if y.higher_is_better else -1
    level = bonferroni(len(lines), level)
    unit, scale = _unit(y)
    verdicts, parts, effects = [], [], []
    for key, members, pts in lines:
        largest = max(pts, key=lambda p: (p[1], sign * p[2]))
        others = [p for p in pts if p[1] < largest[1]]
        rival = max(others, key=lambda p: sign * p[2])
        se_l, se_r = y.se(largest[0]), y.se(rival[0])
        effect = difference_test(sign * largest[2], None if se_l is None else math.hypot(se_l, seed_sd),
                                 sign * rival[2], None if se_r is None else math.hypot(se_r, seed_sd), level=level)
        name = _group_name(key, members, rows)
        if effect is None:
            verdicts.append(NA)
            parts.append(f"{name}: no interval")
            continue
        v = effect.verdict(positive=True)
        verdicts.append(v)
        effects.append(effect)
        parts.append(f"{name}: largest {largest[0].get('label')} − best other {rival[0].get('label')} = "
                     f"{_fmt_effect(effect, unit, sign * scale)} → {v}")
    answer = combine(verdicts)
    detail = "; ".join(parts[:6]) + (" …" if len(parts) > 6 else "")
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
    """Does the gap grow with ``x`` (log scale) within each set of models that differ only in ``x``?"""
    claim = f"{what} grows with {xname}"
    others = [c for c in ("budget", "d_model", "num_experts", "top_k", "lr", "init_std", "seed") if c != x]
    xs, ys, gs, ses = [], [], [], []
    for r in rows:
        if (xv := _log10(num(r.get(x)))) is not None and (v := y.get(r)) is not None:
            key = tuple(num(r.get(c)) for c in others) if x in ("lr", "init_std") else \
                tuple(num(r.get(c)) for c in ("budget", "active_size", "lr", "init_std", "seed"))
            xs.append(xv), ys.append(v), gs.append(key), ses.append(y.se(r))
    effect = slope_test(xs, ys, gs, ses, level=level)
    if effect is None:
        return Statement(claim, NA, f"no set of models differs only in {xname}, with more models than sets plus one")
    unit, scale = _unit(y)
    answer = effect.verdict(positive=True)
    detail = f"slope {_fmt_effect(effect, f'{unit} per 10× {xname}', scale)} over {effect.n} models in {len(set(gs))} sets"
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
