"""Optimal sparsity: for a task family and each budget / active size, the best model and the
optimum of a quadratic fit of the metric against log10 TPP, with a bootstrap interval.

    groups = optimal_sparsity(rows, "reasoning", metric="accuracy")
    for g in groups: g.describe()

A group is the models of one budget and one active-parameter size (so, one d_model and top-k
in the usual grid) that differ in their number of experts — hence in total parameters, TPP
and sparsity — at one learning rate and init std; seeds are pooled as replicates. A second
kind of group pools every active size of a budget (``active is None``). The quadratic needs
three distinct TPP values; with fewer a group reports only its best measured model.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

from moelab.accounting import human_count
from moelab.analysis.data import Quantity, accuracy_of, budget_symbol, budget_text, completed, num, task_loss_of
from moelab.analysis.figures import fmt_si
from moelab.analysis.fits import Optimum, bootstrap_optimum

METRICS = ("accuracy", "task_loss")


@dataclass
class GroupOptimum:
    family: str
    metric: str  # "accuracy" (maximised) or "task_loss" (minimised)
    quantity: Quantity
    budget: float | None
    active: float | None  # None: every active size of the budget pooled
    lr: float | None
    init_std: float | None
    rows: list[dict] = field(repr=False)
    best: dict | None = field(repr=False, default=None)
    opt: Optimum | None = None

    @property
    def maximize(self) -> bool:
        return self.metric == "accuracy"

    @property
    def flops(self) -> float | None:
        """The group's training FLOPs (median over its models; iso-FLOP groups share one value)."""
        vals = [v for r in self.rows if (v := num(r.get("train_flops")))]
        return statistics.median(vals) if vals else None

    @property
    def key(self) -> str:
        sym = budget_symbol(self.rows)
        parts = [f"{sym}{fmt_si(self.budget)}" if self.budget is not None else "",
                 f"A{human_count(self.active)}" if self.active else "all-active"]
        if self.lr is not None:
            parts.append(f"lr{self.lr:g}")
        if self.init_std is not None:
            parts.append(f"std{self.init_std:g}")
        return "-".join(p for p in parts if p)

    @property
    def title(self) -> str:
        what = f"active {human_count(self.active)}" if self.active else "all active sizes"
        b = f"budget {budget_text(self.budget, self.rows)}" if self.budget is not None else "one budget"
        return f"{b}, {what}"

    def shape(self) -> dict:
        """(d_model, top_k) of the group when they are unique in it (an active-size group)."""
        out = {}
        for c in ("d_model", "top_k"):
            vals = {r.get(c) for r in self.rows}
            if len(vals) == 1:
                out[c] = vals.pop()
        return out

    def describe(self) -> dict:
        """A flat, JSON-able summary (used for the report's tables and its CSV)."""
        b = self.best or {}
        o = self.opt
        return {
            "family": self.family, "metric": self.metric, "group": self.key, "budget": self.budget,
            "active_size": self.active, "lr": self.lr, "init_std": self.init_std, "models": len(self.rows),
            "best_model": b.get("label"), "best_run_id": b.get("run_id"), "best_value": self.quantity.get(b) if b else None,
            "best_tpp": num(b.get("tpp")), "best_sparsity": num(b.get("sparsity")),
            "fit_optimum_tpp": 10 ** o.x if o else None,
            "interval_lo_tpp": 10 ** o.lo if o and o.lo is not None else None,
            "interval_hi_tpp": 10 ** o.hi if o and o.hi is not None else None,
            "interval_level": o.level if o else None,
            "interior": o.interior if o else None,
            "bootstrap_interior_share": o.interior_share if o else None,
            "bootstrap_refits": o.n_boot if o else None,
            "measured_tpp_min": min((num(r.get("tpp")) for r in self.rows), default=None),
            "measured_tpp_max": max((num(r.get("tpp")) for r in self.rows), default=None),
        }


def _groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        budget, lr, std = num(r.get("budget")), num(r.get("lr")), num(r.get("init_std"))
        active = num(r.get("active_size"))
        out.setdefault((budget, active, lr, std), []).append(r)
        out.setdefault((budget, None, lr, std), []).append(r)
    return out


def metric_quantity(family: str, rows: list[dict], metric: str) -> Quantity:
    assert metric in METRICS, metric
    return accuracy_of(family, rows) if metric == "accuracy" else task_loss_of(family, rows)


def optimal_sparsity(rows: list[dict], family: str, *, metric: str = "accuracy", n_boot: int = 1000,
                     level: float = 0.9, seed: int = 0) -> list[GroupOptimum]:
    """One :class:`GroupOptimum` per group with at least one measured model (see the module docstring).

    The pooled group of a budget is kept only when the budget has more than one active size.
    """
    done = completed(rows)
    y = metric_quantity(family, rows, metric)
    with_metric = [r for r in done if y.get(r) is not None and (num(r.get("tpp")) or 0) > 0]
    groups = _groups(with_metric)
    lrs = {k[2] for k in groups}
    stds = {k[3] for k in groups}
    out = []
    for (budget, active, lr, std), members in sorted(groups.items(), key=lambda kv: _sort_key(kv[0])):
        if active is None and len({num(r.get("active_size")) for r in members}) < 2:
            continue
        sign = 1 if metric == "accuracy" else -1
        best = max(members, key=lambda r: sign * y.get(r))
        xs = np.log10([num(r["tpp"]) for r in members])
        ys = np.asarray([y.get(r) for r in members], float)
        opt = None
        if np.ptp(ys) > 0:  # a constant metric (all models at 0 %) has no optimum to locate
            opt = bootstrap_optimum(xs, ys, maximize=metric == "accuracy", n_boot=n_boot, level=level, seed=seed)
        out.append(GroupOptimum(family, metric, y, budget, active, lr if len(lrs) > 1 else None,
                                std if len(stds) > 1 else None, members, best, opt))
    return out


def _sort_key(k: tuple) -> tuple:
    return tuple((v is None, v if v is not None else 0) for v in k)

