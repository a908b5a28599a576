"""Run-to-run spread: the same configuration trained with several seeds (the study's ``grid.seed``).

A difference between two sparsities means something only when it is larger than what a new seed
alone moves. For every configuration (budget, d_model, E, top-k, lr, init std) finished with two
or more seeds this computes the mean and the sample standard deviation of each headline metric,
and compares the typical seed spread with the spread across configurations. The numbers are read
from the typed table (:mod:`moelab.analysis.table`): one ``groupby`` per quantity.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from moelab.analysis.data import (MEMO_LOSS, VAL_LOSS, Quantity, accuracy_of, completed, digit_accuracy_of, present,
                                  task_loss_of)
from moelab.analysis.table import table

__all__ = ["CONFIG_AXES", "config_ids", "seed_groups", "seed_quantities", "seeded_frame", "config_stats", "spread_rows",
           "spread_summary"]

CONFIG_AXES = ("budget", "d_model", "num_experts", "top_k", "lr", "init_std")


def config_ids(frame: pd.DataFrame) -> np.ndarray:
    """One id per row of a typed table (``CONFIG_AXES`` and ``seed`` as float columns): rows of one
    configuration whose seeds differ share an id — they are its replicates. A row without a seed
    (an imported model), or a group whose seeds repeat (rows that differ in an axis outside the
    configuration), keeps an id of its own, so nothing that is not a replicate is averaged."""
    by_config = frame.groupby(list(CONFIG_AXES), dropna=False, sort=False)
    ids_N = by_config.ngroup().to_numpy(copy=True)
    replicates_N = (by_config["seed"].transform("nunique") == by_config["seed"].transform("size")).to_numpy()
    solo_N = frame["seed"].isna().to_numpy() | ~replicates_N
    ids_N[solo_N] = ids_N.max(initial=-1) + 1 + np.arange(solo_N.sum())
    return ids_N


def seeded_frame(rows: list[dict], quantities=()) -> pd.DataFrame:
    """Finished pretrained models of the configurations with ≥ 2 distinct seeds, as a typed table
    (index: the position in ``completed(rows)``)."""
    frame = table(completed(rows), columns=[*CONFIG_AXES, "seed"], numeric=[*CONFIG_AXES, "seed"],
                  quantities=quantities)
    seeds = frame.groupby(list(CONFIG_AXES), dropna=False)["seed"].transform("nunique")
    return frame[seeds >= 2]


def seed_groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Finished pretrained models grouped by configuration, only groups with ≥ 2 distinct seeds.

    Keys hold None for a missing axis (as :func:`moelab.analysis.data.num` gives)."""
    done = completed(rows)
    frame = seeded_frame(rows)
    return {tuple(None if pd.isna(v) else float(v) for v in key): [done[i] for i in members.index]
            for key, members in frame.groupby(list(CONFIG_AXES), dropna=False, sort=False)}


def seed_quantities(rows: list[dict], families: list[str]) -> list[Quantity]:
    out = [VAL_LOSS] + [q for q in (MEMO_LOSS,) if present(rows, q)]
    for fam in families:
        out += [task_loss_of(fam, rows), accuracy_of(fam, rows)]
        out += [q for q in (digit_accuracy_of(fam, rows),) if present(rows, q)]
    return out


def config_stats(frame: pd.DataFrame, metric: str, axes=CONFIG_AXES) -> pd.DataFrame:
    """Per configuration: mean, sample sd (ddof 1; NaN for one seed) and count of ``metric`` over seeds."""
    return frame.groupby(list(axes), dropna=False)[metric].agg(["mean", "std", "count"])


def _value(v) -> float | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)


def spread_rows(rows: list[dict], families: list[str]) -> tuple[list[str], list[list]]:
    """CSV-ready header and rows: the configuration, the seeds, then mean and sd of each quantity."""
    quantities = seed_quantities(rows, families)
    frame = seeded_frame(rows, quantities)
    header = [*CONFIG_AXES, "seeds"]
    for q in quantities:
        header += [f"{q.key} mean", f"{q.key} sd"]
    if frame.empty:
        return header, []
    by_config = frame.groupby(list(CONFIG_AXES), dropna=False)
    stats = {q.key: by_config[q.key].agg(["mean", "std"]) for q in quantities}
    runs = by_config.size()  # seeds = the runs of the configuration, with or without each quantity
    body = []
    for key in sorted(runs.index, key=lambda k: tuple(0 if pd.isna(x) else x for x in k)):
        line = [_value(x) for x in key] + [int(runs[key])]
        for q in quantities:
            line += [_value(stats[q.key].at[key, "mean"]), _value(stats[q.key].at[key, "std"])]
        body.append(line)
    return header, body


def spread_summary(rows: list[dict], families: list[str]) -> list[tuple[str, float, float, int]]:
    """Per quantity: (key, median seed sd, sd of the configuration means, configurations)."""
    quantities = seed_quantities(rows, families)
    frame = seeded_frame(rows, quantities)
    out = []
    for q in quantities:
        per_config = config_stats(frame, q.key).dropna(subset=["std"])  # configurations with ≥ 2 values
        if len(per_config) >= 2:
            out.append((q.key, float(per_config["std"].median()), float(per_config["mean"].std()), len(per_config)))
    return out
