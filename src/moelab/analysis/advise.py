"""``moelab advise``: which d, E, k to train for a compute budget and a task family, from a study's fits.

    moelab advise runs/paper-cpu --budget 2e13 --task-family reasoning
    rec = advise(Path("runs/paper-cpu"), 2e13, "reasoning")

How:

1. For each measured budget and active size, the family's metric (accuracy; task loss when accuracy
   does not vary) is fitted by a quadratic in log10 TPP (:mod:`moelab.analysis.optimum`); at each
   budget the active size whose best model scores best is kept.
2. The optimum's log10 TPP and its bootstrap interval are interpolated linearly in log budget
   between the measured budgets. Outside the measured range the nearest budget's values are used,
   and the answer says so (``in_range: False``): that is an extrapolation. A budget more than
   ``MAX_EXTRAPOLATION`` (x1000) beyond the measured range is refused (``UserError``).
3. With the kept active size's d_model and top_k, total parameters are linear in E (the study's
   own models give the line), so the optimal TPP at the requested budget gives a total-parameter
   count, hence an E, rounded to a power of two not below k. The TPP interval maps to an E interval.

A task family the study lacks is a ``UserError`` naming the ones it has.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np

from moelab.accounting import human_count
from moelab.analysis.data import accuracy_of, completed, load_study_rows, num, task_names
from moelab.analysis.figures import fmt_si
from moelab.analysis.fits import interp_clamped
from moelab.analysis.optimum import GroupOptimum, optimal_sparsity
from moelab.errors import UserError

__all__ = ["advise", "format_advice", "parse_budget"]

# How far outside the measured budgets an answer may reach (either side, as a factor). Three
# decades: about what compute-optimal fits are trusted to extrapolate (Chinchilla's fits reach
# ~2-3 orders of magnitude past their runs); beyond it an optimum is a guess, and an E from it
# can be absurd (1e30 FLOPs from a study at 6e10 gave 7e19 experts).
MAX_EXTRAPOLATION = 1000.0

_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def parse_budget(text: str) -> float:
    """'2e13', '2.5T', '300P' → FLOPs; anything else is a one-line UserError."""
    t = str(text).strip().replace("_", "")
    scale = 1.0
    if t and t[-1].upper() in _SUFFIX and not t[-1].isdigit():
        scale, t = _SUFFIX[t[-1].upper()], t[:-1]
    try:
        value = float(t) * scale
    except ValueError:
        raise UserError(f"--budget: not a number of FLOPs: '{text}' (e.g. 2e13 or 20T)") from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"--budget: must be a positive number of FLOPs, got '{text}'")
    return value


def _pick_metric(rows: list[dict], family: str) -> str:
    acc = accuracy_of(family, rows)
    values = {acc.get(r) for r in completed(rows)} - {None}
    return "accuracy" if len(values) > 1 else "task_loss"


def _best_value(g: GroupOptimum) -> float:
    v = g.quantity.get(g.best)
    return v if g.maximize else -v


def _shape_line(rows: list[dict], d_model, top_k) -> tuple[float, float, float, list[int]] | None:
    """(α, β, FLOPs per token, measured E values) with total ≈ α + β·E for the models of (d, k)."""
    pts = {}
    fpt = []
    for r in rows:
        if r.get("d_model") == d_model and r.get("top_k") == top_k and (t := num(r.get("total_params"))):
            pts[int(r["num_experts"])] = t
            if (f := num(r.get("train_flops"))) and (n := num(r.get("tokens"))):
                fpt.append(f / n)
    if not pts or not fpt:
        return None
    es = sorted(pts)
    if len(es) == 1:
        return None
    beta, alpha = np.polyfit(es, [pts[e] for e in es], 1)
    return float(alpha), float(beta), statistics.median(fpt), es


def _experts_for(total: float, alpha: float, beta: float, k: int) -> float:
    return max(float(k), (total - alpha) / beta)


def _pow2(e: float, k: int) -> int:
    return max(k, 2 ** int(round(math.log2(max(e, 1.0)))))


def advise(study_dir: str | Path, budget: float, task_family: str, *, metric: str | None = None,
           n_boot: int = 1000, seed: int = 0) -> dict:
    """A recommendation (see the module docstring) as a JSON-able dict."""
    rows, _ = load_study_rows(Path(study_dir), write_store=False)  # advice writes nothing
    tasks = task_names(rows)
    if task_family not in tasks:
        known = ", ".join(tasks) if tasks else "none: no run has been evaluated"
        raise UserError(f"task family '{task_family}' is not in study {study_dir} (it has: {known})")
    if not budget > 0:
        raise UserError(f"--budget: must be positive, got {budget:g}")
    if metric not in (None, "accuracy", "task_loss"):
        raise UserError(f"--metric: expected accuracy or task_loss, got '{metric}'")
    metric = metric or _pick_metric(rows, task_family)
    groups = [g for g in optimal_sparsity(rows, task_family, metric=metric, n_boot=n_boot, seed=seed)
              if g.active is not None and g.flops]
    if not groups:
        raise UserError(f"study {study_dir}: no finished run has {task_family} {metric} and training FLOPs to fit")

    # step 1: per measured budget, the active size whose best model is best
    levels: dict = {}
    for g in groups:
        if g.budget not in levels or _best_value(g) > _best_value(levels[g.budget]):
            levels[g.budget] = g
    chosen = sorted(levels.values(), key=lambda g: g.flops)
    flops = [g.flops for g in chosen]
    lo_f, hi_f = min(g.flops for g in groups), max(g.flops for g in groups)
    in_range = lo_f * 0.99 <= budget <= hi_f * 1.01
    if not lo_f / MAX_EXTRAPOLATION <= budget <= hi_f * MAX_EXTRAPOLATION:
        side = (f"{budget / hi_f:.3g}x the largest" if budget > hi_f else f"1/{lo_f / budget:.3g} of the smallest")
        raise UserError(
            f"--budget {budget:.3g} FLOPs is {side} measured budget (study {study_dir} measured "
            f"{lo_f:.3g} - {hi_f:.3g} FLOPs); advise extrapolates at most x{MAX_EXTRAPOLATION:g} beyond the "
            "measured range, past which the fits say nothing: measure budgets nearer to it first")

    # step 2: optimal log TPP (and interval) interpolated in log budget
    def loc(g: GroupOptimum) -> tuple[float, float | None, float | None]:
        if g.opt is not None:
            return g.opt.x, g.opt.lo, g.opt.hi
        return math.log10(num(g.best["tpp"])), None, None

    logb = [math.log10(f) for f in flops]
    x_star, _ = interp_clamped(math.log10(budget), logb, [loc(g)[0] for g in chosen])
    with_iv = [(lb, loc(g)) for lb, g in zip(logb, chosen) if loc(g)[1] is not None]
    interval = None
    if with_iv:
        lo_x, _ = interp_clamped(math.log10(budget), [w[0] for w in with_iv], [w[1][1] for w in with_iv])
        hi_x, _ = interp_clamped(math.log10(budget), [w[0] for w in with_iv], [w[1][2] for w in with_iv])
        interval = (10 ** min(lo_x, x_star), 10 ** max(hi_x, x_star))
    nearest = min(chosen, key=lambda g: abs(math.log10(g.flops) - math.log10(budget)))

    # step 3: the architecture
    # An active-size family holds several top-k when the study keeps active parameters fixed across k
    # (expert_width_rule: per_k); then the best model's k is the one to recommend.
    shape = nearest.shape()
    d = shape.get("d_model", nearest.best.get("d_model"))
    k = shape.get("top_k", nearest.best.get("top_k"))
    rec: dict | None = None
    line = _shape_line(rows, d, k) if d is not None and k is not None else None
    if line is not None:
        alpha, beta, fpt, measured_e = line
        tokens = budget / fpt
        e_cont = _experts_for(tokens / 10 ** x_star, alpha, beta, int(k))
        e = _pow2(e_cont, int(k))
        total = alpha + beta * e
        active = num(nearest.best.get("active_params"))
        # The paper's names count active parameters without the router, a count that does not depend
        # on E (embeddings, attention and k experts); older stores lack the column: no name then.
        named_active = num(nearest.best.get("active_params_without_router"))
        rec = {"d_model": int(d), "num_experts": e, "top_k": int(k), "sparsity": 1 - int(k) / e,
               "name": f"d{int(d)}-E{e}-k{int(k)}-{human_count(total)}-A{human_count(named_active)}"
               if named_active else None,
               "total_params": total, "active_params": active, "tokens": tokens, "tpp": tokens / total,
               "experts_continuous": e_cont, "measured_experts": measured_e,
               "experts_outside_measured": not (min(measured_e) <= e <= max(measured_e))}
        if interval is not None:
            e_lo = _experts_for(tokens / interval[1], alpha, beta, int(k))
            e_hi = _experts_for(tokens / interval[0], alpha, beta, int(k))
            rec["experts_interval"] = [e_lo, e_hi]
    best = nearest.best
    note = "" if in_range else (
        f"budget {fmt_si(budget)} FLOPs lies outside the measured range {fmt_si(lo_f)} – {fmt_si(hi_f)} FLOPs: "
        f"the optimal TPP is extrapolated as that of the nearest measured budget ({fmt_si(nearest.flops)})")
    if nearest.opt is None or not nearest.opt.interior:
        edge = ("the fitted curve has no interior optimum at the nearest budget: the best TPP may lie beyond the "
                "measured range")
        note = f"{note}; {edge}" if note else edge
    return {
        "task_family": task_family, "metric": metric, "higher_is_better": metric == "accuracy",
        "split": nearest.quantity.key.split("/")[-1], "budget": budget, "in_range": in_range,
        "measured_budgets": flops, "measured_range": [lo_f, hi_f],
        "optimal_tpp": 10 ** x_star, "tpp_interval": list(interval) if interval else None,
        "interval_level": nearest.opt.level if nearest.opt else None,
        "recommendation": rec, "note": note,
        "nearest_budget": {"flops": nearest.flops, "active_params": nearest.active,
                           "best_model": best.get("name") or best.get("run_id"), "best_run_id": best.get("run_id"),
                           "best_value": nearest.quantity.get(best), "best_tpp": num(best.get("tpp"))},
    }


def format_advice(a: dict) -> str:
    """The recommendation as a few plain lines (what the CLI prints)."""
    m = a["metric"].replace("_", " ")
    lines = [f"task family: {a['task_family']} (by {m} on the {a['split']} split, "
             f"{'higher' if a['higher_is_better'] else 'lower'} is better)"]
    lo, hi = a["measured_range"]
    where = "inside" if a["in_range"] else "OUTSIDE"
    lines.append(f"budget: {fmt_si(a['budget'])} FLOPs — {where} the measured range {fmt_si(lo)} – {fmt_si(hi)} FLOPs")
    iv = a["tpp_interval"]
    lines.append(f"optimal tokens per parameter: {a['optimal_tpp']:.3g}"
                 + (f" ({a['interval_level']:.0%} bootstrap interval {iv[0]:.3g} – {iv[1]:.3g})" if iv
                    else " (no interval: too few models for a fit)"))
    r = a["recommendation"]
    if r:
        lines.append(f"recommendation: d_model={r['d_model']}, E={r['num_experts']}, k={r['top_k']} "
                     f"(sparsity {r['sparsity']:.3f}): {human_count(r['total_params'])} total, "
                     f"{human_count(r['active_params']) if r['active_params'] else '?'} active parameters, "
                     f"{fmt_si(r['tokens'])} tokens, TPP {r['tpp']:.3g}")
        if r.get("experts_interval"):
            e_lo, e_hi = r["experts_interval"]
            lines.append(f"  E over the TPP interval: {e_lo:.3g} – {e_hi:.3g} (measured E: "
                         f"{', '.join(map(str, r['measured_experts']))})")
        if r["experts_outside_measured"]:
            lines.append("  note: this E lies outside the E values the study measured")
    else:
        lines.append("recommendation: none (the study has no two models of one d_model and top-k to relate E "
                     "to total parameters)")
    n = a["nearest_budget"]
    lines.append(f"best measured model at the nearest budget ({fmt_si(n['flops'])} FLOPs): {n['best_model']} "
                 f"({m} {n['best_value']:.4g}, TPP {n['best_tpp']:.3g})")
    if a["note"]:
        lines.append(f"warning: {a['note']}")
    return "\n".join(lines)
