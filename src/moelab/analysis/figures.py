"""Scaling-law figures with one visual grammar across the whole report.

Colour encodes the active-parameter size, marker encodes top-k and line style the budget
(and any learning-rate / init-std variant), fixed once per study by :class:`Style`, so a
reader can follow one family from figure to figure. Seeds are replicates, not lines: where a study
has ≥ 2 seeds per configuration, :func:`series_figure` draws each configuration's seed mean with an
error bar of the seeds' standard deviation (the individual seeds faint behind it). x axes that span orders of magnitude (total
parameters, TPP, FLOPs, density, learning rate) are log-scaled; axis labels carry units; legends
sit outside the axes so they never hide data. Every figure writes the series it plots as CSV.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from moelab.accounting import human_count  # noqa: E402
from moelab.analysis.data import Quantity, num  # noqa: E402
from moelab.analysis.seeds import CONFIG_AXES, config_ids  # noqa: E402
from moelab.analysis.table import table  # noqa: E402
from moelab.stats import wilson_interval  # noqa: E402

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">"]
LINESTYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3))]
# axes that split a line beyond the active size; not the seed: a configuration's seeds are replicates,
# drawn as one mean ± sd on their line (DESIGN: "seeds are replicates")
VARIANT_AXES = ("budget", "lr", "init_std")
FIGSIZE = (5.4, 3.5)
DPI = 110


def fmt_si(x: float | None) -> str:
    """3 significant figures with a K/M/B/T/P/E suffix: 6e12 → '6T'."""
    if x is None:
        return "–"
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


@dataclass
class Figure:
    """One figure of the report: its PNG and CSV, or the note saying why it was skipped."""

    key: str
    title: str
    caption: str = ""
    png: Path | None = None
    csv: Path | None = None
    note: str = ""
    wide: bool = False  # spans the page width (multi-panel figures)


class Style:
    """Stable colour per active size, marker per top-k, line style per variant (budget, lr, init
    std — only the axes that vary in the study) for one study's rows."""

    def __init__(self, rows: list[dict]):
        actives = sorted({a for r in rows if (a := num(r.get("active_size")))})
        ks = sorted({int(k) for r in rows if (k := num(r.get("top_k")))})
        cmap = plt.get_cmap("viridis" if len(actives) > 3 else "tab10")
        if len(actives) > 3:
            n = len(actives) - 1
            self.colours = {a: cmap(0.05 + 0.8 * i / n) for i, a in enumerate(actives)}
        else:
            self.colours = {a: cmap(i) for i, a in enumerate(actives)}
        self.markers = {k: MARKERS[i % len(MARKERS)] for i, k in enumerate(ks)}
        self.budget_symbol = "D" if any(r.get("budget_kind") == "tokens" for r in rows) else "C"
        self.axes = [a for a in VARIANT_AXES if len({r.get(a) for r in rows if r.get(a) is not None}) > 1]
        variants = sorted({self.variant(r) for r in rows}, key=lambda v: tuple((x is None, x) for x in v))
        self.linestyles = {v: LINESTYLES[i % len(LINESTYLES)] for i, v in enumerate(variants)}

    def variant(self, row: dict) -> tuple:
        return tuple(num(row.get(a)) for a in self.axes)

    def colour(self, row: dict):
        return self.colours.get(num(row.get("active_size")), "grey")

    def marker(self, row: dict) -> str:
        k = num(row.get("top_k"))
        return self.markers.get(int(k) if k else None, "o")

    def linestyle(self, row: dict):
        return self.linestyles.get(self.variant(row), "-")

    def variant_label(self, variant: tuple) -> str:
        names = {"budget": self.budget_symbol, "lr": "lr", "init_std": "std", "seed": "seed"}
        return ", ".join(f"{names[a]}={fmt_si(v) if a == 'budget' else f'{v:g}'}"
                         for a, v in zip(self.axes, variant) if v is not None)

    def legend(self, ax, rows: list[dict], *, lines: bool = True, variants: bool = True) -> None:
        """Legend outside the axes, listing only the sizes, k and variants present in ``rows``."""
        actives = sorted({a for r in rows if (a := num(r.get("active_size")))})
        ks = sorted({int(k) for r in rows if (k := num(r.get("top_k")))})
        show_variants = variants
        variants = sorted({self.variant(r) for r in rows}, key=lambda v: tuple((x is None, x) for x in v))
        for a in actives:
            ax.plot([], [], "-" if lines else "o", color=self.colours.get(a, "grey"), label=f"A{human_count(a)}")
        for k in ks:
            ax.plot([], [], self.markers.get(k, "o"), color="grey", ls="none", label=f"k={k}")
        if lines and show_variants and len(variants) > 1:
            for v in variants:
                ax.plot([], [], color="black", ls=self.linestyles.get(v, "-"), label=self.variant_label(v))
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False)


# ---------------------------------------------------------------- plumbing


def _setup(title: str, x: Quantity | None, ylabel: str):
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    ax.set_title(title, fontsize=9)
    if x is not None:
        ax.set_xlabel(x.label)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.tick_params(labelsize=7)
    return fig, ax


def _save(fig, out_dir: Path, key: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{key}.png"
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def write_csv(path: Path, header: Sequence[str], records: list[Sequence]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for rec in records:
            w.writerow(["" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v for v in rec])
    return path


ID_COLUMNS = ("run_id", "name", "posttrain", "budget", "d_model", "num_experts", "top_k", "active_params",
              "total_params", "lr", "init_std", "seed")


def _points(rows: list[dict], x: Quantity, y: Quantity) -> list[tuple[dict, float, float]]:
    pts = []
    for r in rows:
        xv, yv = x.get(r), y.get(r)
        if xv is not None and yv is not None and (not x.log or xv > 0):
            pts.append((r, xv, yv))
    return pts


def error_bar(ax, r: dict, xv: float, yv: float, y: Quantity, colour, x: Quantity | None = None, **kw) -> None:
    """The 95 % intervals (over items) of a model's point, where its quantities have them."""
    ci, xci = y.ci(r), (x.ci(r) if x is not None else None)
    if ci is None and xci is None:
        return
    yerr = None if ci is None else [[max(yv - ci[0], 0.0)], [max(ci[1] - yv, 0.0)]]
    xerr = None if xci is None else [[max(xv - xci[0], 0.0)], [max(xci[1] - xv, 0.0)]]
    ax.errorbar(xv, yv, yerr=yerr, xerr=xerr, fmt="none", ecolor=colour, elinewidth=0.9, capsize=2, alpha=0.8, **kw)


def skipped(key: str, title: str, why: str) -> Figure:
    return Figure(key, title, note=f"skipped: {why}")


def _set_log(ax, x: Quantity, xs: list[float]) -> None:
    if x.log and xs and min(xs) > 0 and max(xs) / min(xs) > 1.0001:
        log_x(ax)


def log_x(ax, base: float = 10) -> None:
    """Log-scaled x with plain labels (6.4M, 0.5, 20): readable, and much cheaper to draw than
    matplotlib's mathtext powers of ten. Ticks at 1-2-5 steps so even a narrow range is labelled."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log", base=base)
    lo, hi = ax.dataLim.intervalx
    if base == 10:
        narrow = lo > 0 and hi / lo < 10
        subs = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0) if narrow else (1.0, 2.0, 5.0)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    else:
        ax.xaxis.set_major_locator(LogLocator(base=base, numticks=12))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _tick(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _tick(v: float) -> str:
    if v >= 1000:
        return fmt_si(v)
    return f"{v:.3g}"


# ---------------------------------------------------------------- figures


def series_figure(rows: list[dict], x: Quantity, y: Quantity, out_dir: Path, key: str, *, title: str,
                  style: Style, caption: str = "", min_points: int = 2,
                  line_key: Callable[[dict], tuple] | None = None,
                  end_label: Callable[[dict], str] | None = None) -> Figure:
    """y against x, one line per active size and variant (points sorted by x); see :func:`draw_series`.

    ``line_key`` groups points into lines differently (e.g. one line per architecture when x is the
    learning rate); such lines are drawn solid and labelled at their end with ``end_label``.
    """
    pts = _points(rows, x, y)
    if len(pts) < min_points:
        return skipped(key, title, f"needs at least {min_points} models with both {x.key} and {y.key} "
                                   f"(the study has {len(pts)})")
    fig, ax = _setup(title, x, y.label)
    seeds = draw_series(ax, pts, y, style=style, line_key=line_key, end_label=end_label)
    _set_log(ax, x, [p[1] for p in pts])
    style.legend(ax, [p[0] for p in pts], variants=line_key is None)
    png = _save(fig, out_dir, key)
    header = [*ID_COLUMNS, x.key, y.key, f"{y.key} lo", f"{y.key} hi"]
    records = [[r.get(c) for c in ID_COLUMNS] + [xv, yv, *(y.ci(r) or (None, None))] for r, xv, yv in pts]
    if seeds.max_n >= 2:  # each seed's row, with its configuration's mean and sd as drawn
        header += ["seeds", f"{y.key} seed mean", f"{y.key} seed sd"]
        records = [rec + list(seeds.per_row[i]) for i, rec in enumerate(records)]
        what = "Points: mean ± sd over " + seeds.text() + " per configuration (faint: the individual seeds)."
        caption = (caption + " " if caption else "") + what
    elif any(y.ci(r) is not None for r, _, _ in pts):
        caption = (caption + " " if caption else "") + "Error bars: 95 % interval over the evaluation items."
    data = write_csv(out_dir / "data" / f"{key}.csv", header, records)
    return Figure(key, title, caption, png, data)


@dataclass
class SeedCounts:
    """What :func:`draw_series` drew: seeds per configuration, and per point (count, mean, sd)."""

    min_n: int
    max_n: int
    per_row: list[tuple[int, float, float | None]]

    def text(self) -> str:
        n = f"{self.max_n}" if self.min_n == self.max_n else f"{self.min_n}–{self.max_n}"
        return f"{n} seeds"


def replicate_frame(rows: list[dict]) -> pd.DataFrame:
    """``rows`` as a typed table of the configuration axes and seed, with a ``config`` id shared by a
    configuration's seeds (:func:`moelab.analysis.seeds.config_ids`): what every seeded figure groups by."""
    frame = table(rows, columns=[*CONFIG_AXES, "seed"], numeric=[*CONFIG_AXES, "seed"])
    return frame.assign(config=config_ids(frame))


def draw_series(ax, pts: list[tuple[dict, float, float]], y: Quantity, *, style: Style,
                line_key: Callable[[dict], tuple] | None = None,
                end_label: Callable[[dict], str] | None = None) -> SeedCounts:
    """Draws ``pts`` (row, x, y) on ``ax``: one line per active size, top-k and variant (or ``line_key``).

    With ≥ 2 seeds per configuration (the study's ``grid.seed``), each configuration is one point
    on its line: the seed mean, with an error bar of the seeds' sample standard deviation (in x as
    well where x differs between seeds, e.g. train loss) and the seeds themselves faint behind it.
    Otherwise every model is a point with its 95 % interval over items, as for one seed.
    """
    # one line per active size and top-k: with per_k widths the k of one active size share a colour,
    # and a line through all of them would zig-zag between k at equal x
    key_of = line_key or (lambda r: (num(r.get("active_size")), num(r.get("top_k")), *style.variant(r)))
    line_keys = sorted({sort_key(key_of(r)) for r, _, _ in pts})
    frame = replicate_frame([r for r, _, _ in pts])
    frame = frame.assign(x=[p[1] for p in pts], y=[p[2] for p in pts],
                         line=[line_keys.index(sort_key(key_of(r))) for r, _, _ in pts], row=range(len(pts)))
    # per configuration (C rows): its seeds' mean and sample sd (NaN for one seed), count, first row
    configs_C = frame.groupby("config").agg(x=("x", "mean"), x_sd=("x", "std"), y=("y", "mean"), y_sd=("y", "std"),
                                            n=("y", "size"), line=("line", "first"), row=("row", "first"))
    seeded = bool(configs_C["n"].max() >= 2)
    drawn = configs_C["n"][configs_C["n"] >= 2] if seeded else configs_C["n"]
    mine = configs_C.loc[frame["config"]]
    info = SeedCounts(int(drawn.min()), int(drawn.max()),
                      [(int(c.n), c.y, None if np.isnan(c.y_sd) else c.y_sd) for c in mine.itertuples()])
    for _, line in configs_C.groupby("line"):
        line = line.sort_values("x")
        r0 = pts[int(line["row"].iloc[0])][0]
        colour, marker = style.colour(r0), style.marker(r0)
        if len(line) > 1:
            ax.plot(line["x"], line["y"], color=colour, ls="-" if line_key else style.linestyle(r0), lw=1.2, alpha=0.7)
        for c in line.itertuples():
            r = pts[int(c.row)][0]
            if c.n >= 2:
                seeds = frame[frame["config"] == c.Index]
                ax.plot(seeds["x"], seeds["y"], marker, color=colour, ls="none", ms=3.5, alpha=0.3, mew=0)
                ax.errorbar(c.x, c.y, yerr=c.y_sd, xerr=c.x_sd if c.x_sd > 0 else None, fmt="none", ecolor=colour,
                            elinewidth=0.9, capsize=2.5, alpha=0.9)
            elif not seeded:  # one seed: the model's interval over items, as ever
                error_bar(ax, r, c.x, c.y, y, colour)
            ax.plot(c.x, c.y, marker, color=colour, ms=6, mec="black", mew=0.4)
        if end_label is not None:
            last = line.iloc[-1]
            ax.annotate(end_label(pts[int(last["row"])][0]), (last["x"], last["y"]), xytext=(4, 0),
                        textcoords="offset points", fontsize=6, va="center", color=colour)
    if seeded:  # legend entries for the two kinds of point
        ax.plot([], [], "o", color="grey", mec="black", mew=0.4, ls="none", label=f"mean ± sd over {info.text()}")
        ax.plot([], [], "o", color="grey", ms=3.5, alpha=0.3, mew=0, ls="none", label="one seed")
    return info


def sort_key(key) -> tuple:
    """Sort tuples holding numbers, text and None (None last)."""
    key = key if isinstance(key, tuple) else (key,)
    return tuple((v is None, str(type(v)), v if v is not None else 0) for v in key)


def optimum_figure(groups: list, out_dir: Path, key: str, *, title: str, style: Style, caption: str = "") -> Figure:
    """The metric against TPP, one panel per budget: each active size's quadratic fit in log TPP (its
    colour; the pooled fit of all active sizes black, dashed) and, stacked at the top, each fit's
    optimum (marker) with its bootstrap interval (bar). ``groups`` are one family's and one metric's
    :class:`moelab.analysis.optimum.GroupOptimum` values."""
    groups = [g for g in groups if len(g.rows) >= 1]
    npts = sum(len(g.rows) for g in groups if g.active is not None)
    if npts < 2:
        return skipped(key, title, f"needs at least 2 models with TPP and the metric (the study has {npts})")
    budgets = sorted({g.budget for g in groups}, key=lambda b: (b is None, b or 0))
    ncols = min(len(budgets), 3)
    nrows = -(-len(budgets) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(FIGSIZE[0] * (0.75 + 0.45 * ncols), FIGSIZE[1] * nrows),
                             dpi=DPI, squeeze=False, sharey=True)
    records = []
    y = groups[0].quantity
    for ax, budget in zip(axes.flat, budgets):
        panel = [g for g in groups if g.budget == budget]
        unit = "tokens" if style.budget_symbol == "D" else "FLOPs"
        ax.set_title(f"budget {fmt_si(budget)} {unit}" if budget is not None else "", fontsize=8)
        rows = [r for g in panel if g.active is not None for r in g.rows]
        for r in rows:
            xv, yv = num(r.get("tpp")), y.get(r)
            error_bar(ax, r, xv, yv, y, style.colour(r), zorder=3)
            ax.plot(xv, yv, style.marker(r), color=style.colour(r), ms=6, mec="black", mew=0.4, zorder=3)
            records.append([r.get(c) for c in ID_COLUMNS] + [xv, yv, "model", None, None, None])
        for i, g in enumerate(sorted(panel, key=lambda g: (g.active is None, g.active or 0))):
            colour = "black" if g.active is None else style.colours.get(g.active, "grey")
            if g.opt is None:
                continue
            o = g.opt
            grid = np.linspace(o.fit.lo, o.fit.hi, 80)
            ax.plot(10 ** grid, o.fit.predict(grid), color=colour, ls="--" if g.active is None else "-", lw=1,
                    alpha=0.8, zorder=2)
            level = 0.97 - 0.05 * i  # stacked optimum markers and interval bars, in axes coordinates
            trans = ax.get_xaxis_transform()
            if o.lo is not None:
                ax.plot([10 ** o.lo, 10 ** o.hi], [level, level], color=colour, lw=2.5, alpha=0.45,
                        transform=trans, solid_capstyle="butt")
            ax.plot(10 ** o.x, level, "|" if not o.interior else "D", color=colour, ms=7, transform=trans)
            records.append([None] * len(ID_COLUMNS) + [None, None, g.key, 10 ** o.x,
                            None if o.lo is None else 10 ** o.lo, None if o.hi is None else 10 ** o.hi])
        log_x(ax)
        ax.set_xlabel("tokens per parameter (TPP)", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(budgets):]:
        ax.set_visible(False)
    values = [v for g in groups for r in g.rows if (v := y.get(r)) is not None]
    span = (max(values) - min(values)) or abs(max(values)) or 1.0
    n_levels = max(sum(1 for g in groups if g.budget == b) for b in budgets)
    # headroom above the data for the stacked optimum markers, so they never cover a point
    axes[0, 0].set_ylim(min(values) - 0.05 * span, max(values) + span * (0.1 + 0.07 * n_levels) / 0.9)
    axes[0, 0].set_ylabel(y.label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    last = axes.flat[len(budgets) - 1]
    last.plot([], [], "k--", lw=1, label="all active sizes pooled")
    last.plot([], [], "D", color="grey", label="fitted optimum (inside range)")
    last.plot([], [], "|", color="grey", ms=7, label="optimum at range edge")
    last.plot([], [], "-", color="grey", lw=2.5, alpha=0.45, label="bootstrap interval")
    style.legend(last, [r for g in groups for r in g.rows], variants=False)
    png = _save(fig, out_dir, key)
    data = write_csv(out_dir / "data" / f"{key}.csv",
                     [*ID_COLUMNS, "tpp", y.key, "series", "optimum_tpp", "interval_lo_tpp", "interval_hi_tpp"],
                     records)
    return Figure(key, title, caption, png, data, wide=len(budgets) > 1)


def isotonic_figure(rows: list[dict], x: Quantity, y: Quantity, out_dir: Path, key: str, *, title: str,
                    style: Style, fit, caption: str = "") -> Figure:
    """Accuracy against task loss across the models with the monotone fit, and the residuals."""
    pts = _points(rows, x, y)
    if len(pts) < 2:
        return skipped(key, title, f"needs at least 2 models with {x.key} and {y.key} (the study has {len(pts)})")
    fig, (ax, ax_res) = plt.subplots(1, 2, figsize=(FIGSIZE[0] * 1.6, FIGSIZE[1]), dpi=DPI,
                                     gridspec_kw={"width_ratios": [1.4, 1], "wspace": 0.35})
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(x.label, fontsize=8)
    ax.set_ylabel(y.label, fontsize=8)
    for r, xv, yv in pts:
        error_bar(ax, r, xv, yv, y, style.colour(r), x=x)
        ax.plot(xv, yv, style.marker(r), color=style.colour(r), ms=6, mec="black", mew=0.4)
    grid = np.linspace(min(p[1] for p in pts), max(p[1] for p in pts), 200)
    ax.plot(grid, fit.predict(grid), "k-", lw=1, alpha=0.7)
    resid = [yv - float(fit.predict(xv)) for _, xv, yv in pts]
    order = np.argsort([p[1] for p in pts])
    ax_res.bar(range(len(pts)), [resid[i] for i in order], color=[style.colour(pts[i][0]) for i in order],
               edgecolor="black", lw=0.4)
    ax_res.axhline(0, color="black", lw=0.8)
    ax_res.set_xticks(range(len(pts)))
    ax_res.set_xticklabels([str(pts[i][0].get("run_id", "")) for i in order], rotation=70, ha="right", fontsize=6)
    ax_res.set_ylabel("residual: accuracy − fit", fontsize=8)
    ax_res.set_title("per-model residual (ordered by task loss)", fontsize=9)
    for a in (ax, ax_res):
        a.grid(alpha=0.3)
        a.tick_params(labelsize=7)
    style.legend(ax_res, [p[0] for p in pts], lines=False)
    png = _save(fig, out_dir, key)
    data = write_csv(out_dir / "data" / f"{key}.csv", [*ID_COLUMNS, x.key, y.key, "isotonic_fit", "residual"],
                     [[r.get(c) for c in ID_COLUMNS] + [xv, yv, float(fit.predict(xv)), res]
                      for (r, xv, yv), res in zip(pts, resid)])
    return Figure(key, title, caption, png, data, wide=True)


def prepost_figure(pairs: list[tuple[dict, dict]], y_pre: Quantity, y_post: Quantity, out_dir: Path, key: str, *,
                   title: str, style: Style, x: Quantity, caption: str = "",
                   names: tuple[str, str] = ("pretrained", "post-trained"), ylabel: str | None = None) -> Figure:
    """Before (filled, solid) and after (open, dashed) — post-training, or greedy vs voting — against x,
    one pair of lines per active size and variant (lr, init std, budget; seeds are replicates, drawn as
    their configuration's mean ± sd)."""
    pts = [(pre, post, xv, a, b) for pre, post in pairs
           if (xv := x.get(pre)) is not None and (a := y_pre.get(pre)) is not None and (b := y_post.get(post)) is not None]
    if len(pts) < 1:
        return skipped(key, title, "no model has both a pre- and a post-training value")
    fig, ax = _setup(title, x, ylabel or y_pre.label)
    # Seeds are replicates: a configuration with >= 2 seeds is one point per measurement (the seeds'
    # mean, error bar their sample sd, the seeds faint behind it); one seed keeps its items' interval.
    frame = replicate_frame([p[0] for p in pts])
    frame = frame.assign(x=[p[2] for p in pts], a=[p[3] for p in pts], b=[p[4] for p in pts], row=range(len(pts)))
    configs_C = frame.groupby("config").agg(x=("x", "mean"), a=("a", "mean"), a_sd=("a", "std"), b=("b", "mean"),
                                            b_sd=("b", "std"), n=("a", "size"), row=("row", "first"))
    seeded = bool(configs_C["n"].max() >= 2)

    def line_of(r: dict) -> tuple:  # active size and the varying axes but the seed
        return (num(r.get("active_size")),
                *(v for axis, v in zip(style.axes, style.variant(r)) if axis != "seed"))

    lines: dict = defaultdict(list)
    for c in configs_C.itertuples():
        lines[sort_key(line_of(pts[int(c.row)][0]))].append(c)
    for members in lines.values():
        members.sort(key=lambda c: c.x)
        r0 = pts[int(members[0].row)][0]
        colour = style.colour(r0)
        xs = [c.x for c in members]
        ax.plot(xs, [c.a for c in members], color=colour, ls="-", lw=1.2, alpha=0.7)
        ax.plot(xs, [c.b for c in members], color=colour, ls="--", lw=1.2, alpha=0.7)
        if style.axes:  # pre/post take the line styles: the variant (lr, init std) is written at the end
            ax.annotate(style.variant_label(style.variant(r0)), (members[-1].x, members[-1].a), xytext=(6, 0),
                        textcoords="offset points", fontsize=6, va="center", color=colour)
        for c in members:
            pre, post = pts[int(c.row)][0], pts[int(c.row)][1]
            marker = style.marker(pre)
            if c.n >= 2:
                seeds = frame[frame["config"] == c.Index]
                ax.plot(seeds["x"], seeds["a"], marker, color=colour, ls="none", ms=3.5, alpha=0.3, mew=0)
                ax.plot(seeds["x"], seeds["b"], marker, mfc="none", mec=colour, ls="none", ms=3.5, alpha=0.3)
                ax.errorbar([c.x, c.x], [c.a, c.b], yerr=[c.a_sd, c.b_sd], fmt="none", ecolor=colour,
                            elinewidth=0.9, capsize=2.5, alpha=0.9)
            elif not seeded:
                error_bar(ax, pre, c.x, c.a, y_pre, colour)
                error_bar(ax, post, c.x, c.b, y_post, colour)
            ax.plot(c.x, c.a, marker, color=colour, ms=6, mec="black", mew=0.4)
            ax.plot(c.x, c.b, marker, mfc="white", mec=colour, ms=6, mew=1.2)
    if seeded:
        counts = SeedCounts(int(configs_C["n"][configs_C["n"] >= 2].min()), int(configs_C["n"].max()), [])
        caption = (caption + " " if caption else "") + (
            f"Points: mean ± sd over {counts.text()} per configuration (faint: the individual seeds).")
    ax.plot([], [], "k-", label=names[0])
    ax.plot([], [], "k--", label=names[1])
    _set_log(ax, x, [p[2] for p in pts])
    style.legend(ax, [p[0] for p in pts], variants=False)
    png = _save(fig, out_dir, key)
    data = write_csv(out_dir / "data" / f"{key}.csv", [*ID_COLUMNS, x.key, "before", "after"],
                     [[pre.get(c) for c in ID_COLUMNS] + [xv, a, b] for pre, _, xv, a, b in pts])
    return Figure(key, title, caption, png, data)


def ttc_figure(curves: list[tuple[dict, dict]], out_dir: Path, key: str, *, title: str, style: Style,
               caption: str = "") -> Figure:
    """Majority-vote accuracy (solid) and coverage pass@n (dotted) against samples n, one line per model."""
    usable = [(r, c) for r, c in curves if c.get("n") and c.get("majority")]
    if not usable:
        return skipped(key, title, "no test-time-compute curve")
    fig, ax = _setup(title, None, "accuracy (fraction of questions)")
    ax.set_xlabel("samples per question n (log scale)")
    records = []
    for r, c in usable:
        n = list(c["n"])
        m = c.get("num_questions")
        cis = [wilson_interval(v, m) for v in c["majority"]]  # 95 % over the questions
        if all(ci is not None for ci in cis):
            ax.errorbar(n, c["majority"], yerr=[[max(v - ci[0], 0) for v, ci in zip(c["majority"], cis)],
                                                [max(ci[1] - v, 0) for v, ci in zip(c["majority"], cis)]],
                        fmt="none", ecolor=style.colour(r), elinewidth=0.8, capsize=2, alpha=0.7)
        ax.plot(n, c["majority"], color=style.colour(r), ls="-", marker=style.marker(r), ms=4, lw=1.1)
        ax.annotate(f"E{r.get('num_experts')} k{r.get('top_k')}", (n[-1], c["majority"][-1]), xytext=(4, 0),
                    textcoords="offset points", fontsize=6, va="center", color=style.colour(r))
        if c.get("pass_at_k"):
            ax.plot(n, c["pass_at_k"], color=style.colour(r), ls=":", lw=1.0, alpha=0.8)
        for i, ni in enumerate(n):
            records.append([r.get(cn) for cn in ID_COLUMNS] + [c.get("task"), ni, c["majority"][i],
                            *(cis[i] or (None, None)), (c.get("pass_at_k") or [None] * len(n))[i], c.get("greedy")])
    ax.plot([], [], "k-", label="majority vote @n")
    ax.plot([], [], "k:", label="pass@n (coverage)")
    log_x(ax, base=2)
    style.legend(ax, [r for r, _ in usable], variants=False)
    png = _save(fig, out_dir, key)
    data = write_csv(out_dir / "data" / f"{key}.csv",
                     [*ID_COLUMNS, "task", "n", "majority", "majority lo", "majority hi", "pass_at_k", "greedy"], records)
    return Figure(key, title, caption, png, data)


def reward_figure(curves: list, out_dir: Path, key: str, *, title: str, style: Style, caption: str = "") -> Figure:
    """GRPO's mean reward per step, one line per model — or, with seeds, one line per configuration:
    its seeds' mean with a band of their sd, the seeds faint behind it (the CSV keeps every run's steps
    and each step's reward sd over the group's completions)."""
    if not curves:
        return skipped(key, title, "no GRPO metrics")
    fig, ax = _setup(title, None, "mean reward (fraction of completions correct)")
    ax.set_xlabel("GRPO step")
    records = [[r.get(c) for c in ID_COLUMNS] + [step, m, sd] for r, pts in curves for step, m, sd in pts]
    by_config: dict = defaultdict(list)
    for config, curve in zip(replicate_frame([r for r, _ in curves])["config"], curves):
        by_config[config].append(curve)
    seeded = max(len(members) for members in by_config.values()) >= 2
    vary = [c for c in ("lr", "init_std", *(() if seeded else ("seed",)))
            if len({num(r.get(c)) for r, _ in curves}) > 1]
    # one colour per configuration where they are few (they share an active size, so its colour tells nothing)
    palette = plt.get_cmap("tab10") if len(by_config) <= 10 else None
    for i, members in enumerate(by_config.values()):
        r0 = members[0][0]
        colour = palette(i) if palette else style.colour(r0)
        label = f"E{r0.get('num_experts')} k{r0.get('top_k')}" + "".join(
            f" {c}={v:g}" for c in vary if (v := num(r0.get(c))) is not None)  # imported models: no lr, seed
        if len(members) >= 2:
            steps = sorted(set.intersection(*({p[0] for p in pts} for _, pts in members)))
            reward_SxT = np.array([[dict((p[0], p[1]) for p in pts)[t] for t in steps] for _, pts in members])
            mean_T, sd_T = reward_SxT.mean(0), reward_SxT.std(0, ddof=1)
            for _, pts in members:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colour, lw=0.6, alpha=0.25)
            ax.fill_between(steps, mean_T - sd_T, mean_T + sd_T, color=colour, alpha=0.12, lw=0)
            label += f" ({len(members)} seeds)"
        else:
            steps, mean_T = [p[0] for p in members[0][1]], np.array([p[1] for p in members[0][1]])
        ax.plot(steps, mean_T, color=colour, ls=style.linestyle(r0), marker=style.marker(r0), ms=3, lw=1.2)
        ax.annotate(label, (steps[-1], mean_T[-1]), xytext=(4, 0), textcoords="offset points", fontsize=6,
                    va="center", color=colour)
    if seeded:
        caption = (caption + " " if caption else "") + ("Lines: mean over the seeds of each configuration, band ± "
                                                        "their sd; faint: the individual seeds.")
    if palette is None:  # colours by active size: the study's legend applies (else each line is labelled)
        style.legend(ax, [r for r, _ in curves], variants=False)
    png = _save(fig, out_dir, key)
    data = write_csv(out_dir / "data" / f"{key}.csv", [*ID_COLUMNS, "step", "reward_mean", "reward_sd"], records)
    return Figure(key, title, caption, png, data)
