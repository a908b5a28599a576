"""The report's plain-language summary: yes/no statements computed from the study's numbers.

Nothing here is a hand-written claim: each :class:`Statement` is a question the seed paper
answers (does knowledge accuracy rise with total parameters? is reasoning task loss U-shaped in
TPP? …), answered from this study's rows with the evidence in ``detail``, or "not enough data"
when the study cannot answer it.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from moelab.accounting import human_count
from moelab.analysis.data import (STATUSES, TOTAL, TRAIN_LOSS, VAL_LOSS, Quantity, accuracy_of, budget_symbol,
                                  completed, num, task_gap_of, task_loss_of)
from moelab.analysis.figures import fmt_si
from moelab.analysis.fits import is_monotone, least_squares, spearman

YES, NO, PARTLY, NA = "yes", "no", "partly", "not enough data"


@dataclass
class Statement:
    claim: str
    answer: str  # yes / no / partly / not enough data
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


def monotone_in_total(rows: list[dict], y: Quantity, *, increasing: bool, what: str) -> Statement:
    """Along every line (active size, variant) with ≥2 models, does y move one way as total params grow?"""
    claim = f"{what} {'rises' if increasing else 'falls'} monotonically with total parameters at every active size"
    if (const := _constant(rows, y)) is not None:
        return Statement(claim, const.answer, const.detail)
    verdicts = []
    for key, members in _line_groups(rows).items():
        pts = sorted(((t, v) for r in members if (t := TOTAL.get(r)) and (v := y.get(r)) is not None))
        if len({t for t, _ in pts}) >= 2:
            rho = spearman([t for t, _ in pts], [v for _, v in pts]) if len(pts) >= 3 else None
            verdicts.append((_group_name(key, members, rows), is_monotone([v for _, v in pts], increasing=increasing), rho))
    if not verdicts:
        return Statement(claim, NA, "no active size has two models with different total parameters")
    good = [v for v in verdicts if v[1]]
    bad = [v[0] for v in verdicts if not v[1]]
    detail = f"{len(good)} of {len(verdicts)} lines"
    if bad:
        detail += f"; not at {', '.join(bad[:6])}{' …' if len(bad) > 6 else ''}"
    # Strict monotonicity fails on any noisy point; the rank correlation shows the trend itself.
    rhos = [f"{name} ρ = {rho:+.2f}" for name, _, rho in verdicts if rho is not None and math.isfinite(rho)]
    if rhos:
        detail += f"; rank correlation with total parameters: {', '.join(rhos[:6])}{' …' if len(rhos) > 6 else ''}"
    return Statement(claim, YES if not bad else NO, detail)


def best_at_largest(rows: list[dict], y: Quantity, *, what: str) -> Statement:
    claim = f"the best {what} of each active size is its model with the most total parameters"
    if (const := _constant(rows, y)) is not None:
        return Statement(claim, const.answer, const.detail)
    verdicts = []
    for key, members in _line_groups(rows).items():
        pts = [(r, t, v) for r in members if (t := TOTAL.get(r)) and (v := y.get(r)) is not None]
        if len({p[1] for p in pts}) >= 2:
            sign = 1 if y.higher_is_better else -1
            best = max(pts, key=lambda p: (sign * p[2], p[1]))
            verdicts.append((_group_name(key, members, rows), best[1] == max(p[1] for p in pts), best[0]))
    if not verdicts:
        return Statement(claim, NA, "no active size has two models with different total parameters")
    bad = [f"{name} (best: {r.get('label')})" for name, ok, r in verdicts if not ok]
    answer = YES if not bad else (NO if len(bad) == len(verdicts) else PARTLY)
    return Statement(claim, answer, f"{len(verdicts) - len(bad)} of {len(verdicts)} active sizes"
                     + (f"; not at {', '.join(bad[:4])}" if bad else ""))


def u_shape(optima, *, what: str) -> Statement:
    """Task loss (or accuracy) has a turning point inside the measured TPP range, per group."""
    claim = f"{what} has an optimum inside the measured TPP range (U-shape) at each budget and active size"
    fitted = [g for g in optima if g.opt is not None and g.active is not None]
    if not fitted:
        return Statement(claim, NA, "no budget/active size has 3 distinct TPP values with a varying metric")
    inner = [g for g in fitted if g.opt.interior and g.opt.lo is not None and g.opt.lo > g.opt.fit.lo
             and g.opt.hi < g.opt.fit.hi]
    parts = [f"{g.key}: TPP {10 ** g.opt.x:.3g} [{10 ** g.opt.lo:.3g}, {10 ** g.opt.hi:.3g}]"
             for g in inner if g.opt.lo is not None]
    edge = [f"{g.key}: at the {'low' if g.opt.x <= g.opt.fit.lo else 'high'} TPP edge"
            if not g.opt.interior else f"{g.key}: interval reaches the range edge" for g in fitted if g not in inner]
    answer = YES if len(inner) == len(fitted) else (NO if not inner else PARTLY)
    return Statement(claim, answer, f"{len(inner)} of {len(fitted)} groups; " + "; ".join(parts + edge))


def active_at_equal_loss(rows: list[dict], y: Quantity, *, what: str) -> Statement:
    claim = f"at equal training loss, models with more active parameters have higher {what}"
    if (const := _constant(rows, y)) is not None:
        return Statement(claim, const.answer, const.detail)
    pts = [(tl, math.log2(a), v) for r in rows
           if (tl := TRAIN_LOSS.get(r)) is not None and (a := num(r.get("active_size"))) and (v := y.get(r)) is not None]
    if len({p[1] for p in pts}) < 2 or len(pts) < 4:
        return Statement(claim, NA, "needs ≥4 models over ≥2 active sizes with train loss and the metric")
    coef = least_squares([[p[0] for p in pts], [p[1] for p in pts]], [p[2] for p in pts])
    if coef is None:
        return Statement(claim, NA, "train loss and active size are collinear in this study")
    sign = 1 if y.higher_is_better else -1
    return Statement(claim, YES if sign * coef[2] > 0 else NO,
                     f"linear fit over {len(pts)} models: {coef[2]:+.3g} per doubling of active parameters "
                     f"at fixed train loss")


def gap_trend(rows: list[dict], x: str, y: Quantity, *, what: str, xname: str) -> Statement:
    """Does the gap grow with ``x`` within each line of models that differ only in ``x``?"""
    claim = f"{what} grows with {xname}"
    others = [c for c in ("budget", "d_model", "num_experts", "top_k", "lr", "init_std", "seed") if c != x]
    groups: dict = defaultdict(list)
    for r in rows:
        if (xv := num(r.get(x))) is not None and (v := y.get(r)) is not None:
            key = tuple(num(r.get(c)) for c in others) if x in ("lr", "init_std") else \
                tuple(num(r.get(c)) for c in ("budget", "active_size", "lr", "init_std", "seed"))
            groups[key].append((xv, v))
    rhos = [rho for pts in groups.values() if len({p[0] for p in pts}) >= 2
            and (rho := spearman([p[0] for p in pts], [p[1] for p in pts])) is not None]
    if not rhos:
        return Statement(claim, NA, f"no set of models differs only in {xname}")
    up = sum(r > 0 for r in rhos)
    answer = YES if up == len(rhos) else (NO if up == 0 else PARTLY)
    return Statement(claim, answer, f"rank correlation positive in {up} of {len(rhos)} groups "
                                    f"(median ρ = {float(np.median(rhos)):+.2f})")


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


def prepost_statement(pairs, y_pre: Quantity, y_post: Quantity, *, what: str) -> Statement:
    claim = f"the best pretrained model by {what} is still the best after GRPO"
    pts = [(pre, a, b) for pre, post in pairs if (a := y_pre.get(pre)) is not None and (b := y_post.get(post)) is not None]
    if len(pts) < 2:
        return Statement(claim, NA, "needs ≥2 models evaluated before and after GRPO")
    best_pre = max(pts, key=lambda p: p[1])[0]
    best_post = max(pts, key=lambda p: p[2])[0]
    rho = spearman([p[1] for p in pts], [p[2] for p in pts])
    rose = sum(p[2] > p[1] for p in pts)
    return Statement(claim, YES if best_pre is best_post else NO,
                     f"{len(pts)} models; accuracy rose for {rose}; rank correlation pre/post "
                     f"{'–' if rho is None else f'{rho:+.2f}'}; best after: {best_post.get('label')}")


def ttc_statement(curves, *, task: str) -> Statement:
    claim = f"majority voting over the most samples keeps the greedy ranking's best model ({task})"
    pts = [(r, c["greedy"], c["majority"][-1]) for r, c in curves
           if c.get("greedy") is not None and c.get("majority")]
    if len(pts) < 2:
        return Statement(claim, NA, "needs ≥2 models with a test-time-compute curve")
    best_greedy = max(pts, key=lambda p: p[1])[0]
    best_vote = max(pts, key=lambda p: p[2])[0]
    return Statement(claim, YES if best_greedy is best_vote else NO,
                     f"{len(pts)} models; best by vote: {best_vote.get('label')}, by greedy: {best_greedy.get('label')}")


def summarize(rows: list[dict], families: list[str], optima: dict, *, prepost: dict | None = None,
              ttc: dict | None = None) -> list[Statement]:
    """Every statement the data can speak to, in the report's order."""
    done = completed(rows)
    out = [status_statement(rows),
           monotone_in_total(done, TRAIN_LOSS, increasing=False, what="pretraining train loss"),
           monotone_in_total(done, VAL_LOSS, increasing=False, what="validation loss")]
    for fam in families:
        acc, loss = accuracy_of(fam, rows), task_loss_of(fam, rows)
        out += [monotone_in_total(done, acc, increasing=True, what=f"{fam} accuracy"),
                monotone_in_total(done, loss, increasing=False, what=f"{fam} task loss"),
                best_at_largest(done, acc, what=f"{fam} accuracy"),
                u_shape([g for g in optima.get(fam, []) if g.metric == "task_loss"], what=f"{fam} task loss"),
                active_at_equal_loss(done, acc, what=f"{fam} accuracy"),
                gap_trend(done, "total_params", task_gap_of(fam), what=f"the {fam} task-loss generalization gap",
                          xname="total parameters")]
        for axis, name in (("lr", "the learning rate"), ("init_std", "the init std")):
            if len({num(r.get(axis)) for r in done}) > 1:
                out.append(gap_trend(done, axis, task_gap_of(fam), what=f"the {fam} task-loss generalization gap",
                                     xname=name))
        if prepost and prepost.get("pairs"):
            out.append(prepost_statement(prepost["pairs"], prepost["pre"](fam), prepost["post"](fam),
                                          what=f"{fam} accuracy"))
    for task, curves in (ttc or {}).items():
        out.append(ttc_statement(curves, task=task))
    out += seed_statements(rows, families)
    return out


def seed_statements(rows: list[dict], families: list[str]) -> list[Statement]:
    """With a seed axis: does each metric differ between configurations more than between seeds?"""
    from moelab.analysis.seeds import spread_summary

    out = []
    for key, seed_sd, config_sd, n in spread_summary(rows, families):
        claim = f"{key} differs between configurations by more than between seeds"
        ratio = config_sd / seed_sd if seed_sd > 0 else math.inf
        answer = YES if ratio >= 2 else (PARTLY if ratio >= 1 else NO)
        out.append(Statement(claim, answer, f"{n} configurations with ≥2 seeds: sd of their means {config_sd:.3g}, "
                                            f"median sd across seeds {seed_sd:.3g} (ratio {ratio:.2g})"))
    return out
