"""Scaling-law figures with one visual grammar across the whole report.

Colour encodes the active-parameter size, marker encodes top-k, so a reader can
follow one family from figure to figure. x axes that span orders of magnitude
(total parameters, TPP, FLOPs) are log-scaled.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402

from moelab.accounting import human_count  # noqa: E402

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LOG_AXES = {"total_params", "active_params", "tpp", "tokens", "train_flops"}
AXIS_LABELS = {
    "total_params": "total parameters",
    "active_params": "active parameters",
    "tpp": "tokens per parameter (TPP)",
    "sparsity": "sparsity (1 − k/E)",
    "density": "density (k/E)",
    "train_flops": "training FLOPs",
}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


class Style:
    """Stable colour per active size and marker per top-k for a set of rows."""

    def __init__(self, rows: list[dict]):
        actives = sorted({r["active_params"] for r in rows if r.get("active_params")})
        ks = sorted({r["top_k"] for r in rows if r.get("top_k")})
        cmap = plt.get_cmap("viridis")
        n = max(len(actives) - 1, 1)
        self.colour = {a: cmap(0.1 + 0.75 * i / n) for i, a in enumerate(actives)}
        self.marker = {k: MARKERS[i % len(MARKERS)] for i, k in enumerate(ks)}

    def label(self, active: int, k: int | None = None) -> str:
        return f"A{human_count(active)}" + (f", k={k}" if k is not None else "")


def line_plot(rows: list[dict], x: str, y: str, path: Path, *, title: str, ylabel: str,
              group: str = "active_params", style: Style | None = None) -> Path | None:
    """y against x, one line per ``group`` value (points sorted by x), coloured by active size
    and marked by top-k. Returns None (and draws nothing) when no row has both values."""
    pts = [r for r in rows if _finite(r.get(x)) and _finite(r.get(y))]
    if not pts:
        return None
    style = style or Style(rows)
    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=110)
    groups: dict = defaultdict(list)
    for r in pts:
        groups[r.get(group)].append(r)
    for key in sorted(groups, key=lambda v: (v is None, v)):
        g = sorted(groups[key], key=lambda r: r[x])
        colour = style.colour.get(g[0].get("active_params"), "grey")
        ax.plot([r[x] for r in g], [r[y] for r in g], "-", color=colour, alpha=0.6, lw=1.2)
        for r in g:
            ax.plot(r[x], r[y], style.marker.get(r.get("top_k"), "o"), color=colour, ms=6, mec="black", mew=0.4)
        lbl = style.label(g[0]["active_params"]) if group == "active_params" else f"{group}={key}"
        ax.plot([], [], "-", color=colour, label=lbl)
    for k, m in style.marker.items():
        ax.plot([], [], m, color="grey", ls="none", label=f"k={k}")
    if x in LOG_AXES and all(r[x] > 0 for r in pts):
        ax.set_xscale("log")
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best", framealpha=0.7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
