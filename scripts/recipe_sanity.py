"""Pretraining loss of the recipe sanity study (issue 24, item 6): old recipe against new, seeds as replicates.

    moelab sweep scripts/recipe-sanity/before.yaml --out runs/sanity-before
    moelab sweep scripts/recipe-sanity/after.yaml --out runs/sanity-after
    python scripts/recipe_sanity.py runs/sanity-before runs/sanity-after --figure docs/figures/recipe-sanity.png

Prints, per model and recipe, the final training loss (mean of the last 10 % of logged steps, as the
store's ``train_loss``) and the last validation loss, each as mean ± sd over the seeds with a 95 %
t interval of the mean, and each MoE model's difference from the dense model of the same recipe
(Welch interval over seeds). The figure draws the loss curves, seed mean and band of min–max.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np
from scipy import stats


def read_run(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    train, val = [], []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "train":
            train.append((rec["step"], rec["lm_loss"]))
        elif rec.get("kind") == "val":
            val.append((rec["step"], rec["val_loss"]))
    if not train:
        return None
    steps, losses = np.array(train).T
    tail = losses[int(0.9 * len(losses)):]
    return {"steps": steps, "loss": losses, "train_loss": float(tail.mean()),
            "val_loss": val[-1][1] if val else math.nan, "val": np.array(val)}


def collect(study_dir: Path) -> dict[str, list[dict]]:
    """``{'d64-E4-k2': [run per seed, …]}`` for runs whose status is done."""
    groups: dict[str, list[dict]] = {}
    for run_dir in sorted((study_dir / "runs").iterdir()):
        status = run_dir / "status.json"
        if not status.is_file() or json.loads(status.read_text()).get("state") != "done":
            continue
        m = re.search(r"(d\d+-E\d+-k\d+)-s(\d+)$", run_dir.name)
        run = read_run(run_dir)
        if m and run:
            groups.setdefault(m.group(1), []).append(run)
    return groups


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean, sd and half-width of the 95 % t interval of the mean."""
    a = np.asarray(values, dtype=float)
    if len(a) < 2:
        return float(a.mean()), math.nan, math.nan
    sd = float(a.std(ddof=1))
    return float(a.mean()), sd, float(stats.t.ppf(0.975, len(a) - 1) * sd / math.sqrt(len(a)))


def welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Difference of means a − b and its 95 % Welch interval."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se > 0 else 1.0
    half = float(stats.t.ppf(0.975, dof) * se)
    diff = float(a.mean() - b.mean())
    return diff, diff - half, diff + half


def table(label: str, groups: dict[str, list[dict]]) -> list[str]:
    dense = next((g for name, g in groups.items() if "-E1-" in name), None)
    rows = []
    for name in sorted(groups, key=lambda n: (int(re.search(r"E(\d+)", n).group(1)), n)):
        runs = groups[name]
        tr, va = [r["train_loss"] for r in runs], [r["val_loss"] for r in runs]
        mt, st, ht = mean_ci(tr)
        mv, sv, hv = mean_ci(va)
        if dense is not None and "-E1-" not in name and len(runs) > 1 and len(dense) > 1:
            d, lo, hi = welch(tr, [r["train_loss"] for r in dense])
            vs = f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"
        else:
            vs = "—"
        rows.append(f"| {label} | {name} | {len(runs)} | {mt:.4f} ± {st:.4f} (±{ht:.4f}) | "
                    f"{mv:.4f} ± {sv:.4f} | {vs} |")
    return rows


def figure(studies: dict[str, dict[str, list[dict]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(studies), figsize=(6 * len(studies), 4.2), sharey=True)
    for ax, (label, groups) in zip(np.atleast_1d(axes), studies.items()):
        for name in sorted(groups, key=lambda n: (int(re.search(r"E(\d+)", n).group(1)), n)):
            runs = groups[name]
            n = min(len(r["loss"]) for r in runs)
            steps = runs[0]["steps"][:n]
            curves = np.stack([r["loss"][:n] for r in runs])
            line, = ax.plot(steps, curves.mean(0), label=f"{name} ({len(runs)} seeds)")
            ax.fill_between(steps, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.2)
        ax.set_title(f"{label} recipe")
        ax.set_xlabel("step")
        ax.set_ylim(top=1.6)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel("training loss (nats/token)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--figure", type=Path)
    args = ap.parse_args()
    studies = {"old": collect(args.before), "new": collect(args.after)}
    print("| recipe | model | seeds | train loss: mean ± sd (95 % CI ±) | val loss: mean ± sd | train − dense [95 % Welch] |")
    print("|---|---|---|---|---|---|")
    for label, groups in studies.items():
        print("\n".join(table(label, groups)))
    if args.figure:
        figure(studies, args.figure)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
