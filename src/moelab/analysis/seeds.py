"""Run-to-run spread: the same configuration trained with several seeds (the study's ``grid.seed``).

A difference between two sparsities means something only when it is larger than what a new seed
alone moves. For every configuration (budget, d_model, E, top-k, lr, init std) finished with two
or more seeds this computes the mean and the sample standard deviation of each headline metric,
and compares the typical seed spread with the spread across configurations.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from moelab.analysis.data import VAL_LOSS, Quantity, accuracy_of, completed, num, task_loss_of

__all__ = ["CONFIG_AXES", "seed_groups", "seed_quantities", "spread_rows", "spread_summary"]

CONFIG_AXES = ("budget", "d_model", "num_experts", "top_k", "lr", "init_std")


def seed_groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Finished pretrained models grouped by configuration, only groups with ≥ 2 distinct seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in completed(rows):
        groups[tuple(num(r.get(c)) for c in CONFIG_AXES)].append(r)
    return {k: v for k, v in groups.items() if len({num(r.get("seed")) for r in v}) >= 2}


def seed_quantities(rows: list[dict], families: list[str]) -> list[Quantity]:
    out = [VAL_LOSS]
    for fam in families:
        out += [task_loss_of(fam, rows), accuracy_of(fam, rows)]
    return out


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def spread_rows(rows: list[dict], families: list[str]) -> tuple[list[str], list[list]]:
    """CSV-ready header and rows: the configuration, the seeds, then mean and sd of each quantity."""
    quantities = seed_quantities(rows, families)
    header = [*CONFIG_AXES, "seeds"]
    for q in quantities:
        header += [f"{q.key} mean", f"{q.key} sd"]
    body = []
    for key, members in sorted(seed_groups(rows).items(), key=lambda kv: tuple(x or 0 for x in kv[0])):
        line = [*key, len(members)]
        for q in quantities:
            line += list(_mean_sd([v for r in members if (v := q.get(r)) is not None]))
        body.append(line)
    return header, body


def spread_summary(rows: list[dict], families: list[str]) -> list[tuple[str, float, float, int]]:
    """Per quantity: (key, median seed sd, sd of the configuration means, configurations)."""
    groups = seed_groups(rows)
    out = []
    for q in seed_quantities(rows, families):
        sds, means = [], []
        for members in groups.values():
            mean, sd = _mean_sd([v for r in members if (v := q.get(r)) is not None])
            if sd is not None:
                sds.append(sd)
                means.append(mean)
        if len(means) >= 2:
            out.append((q.key, statistics.median(sds), statistics.stdev(means), len(means)))
    return out
