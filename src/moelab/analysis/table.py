"""The study's rows as a typed table: a pandas DataFrame with float columns for numbers.

    frame = table(rows, quantities=[acc])                 # rows: what moelab.analysis.data loads
    per_config = frame.groupby(list(CONFIG_AXES), dropna=False)[acc.key].agg(["mean", "std", "count"])

The store's rows are dicts whose values may be text (a results CSV), numbers or None, and the
older modules convert with :func:`moelab.analysis.data.num` at each use. Here every column whose
non-missing values are all numbers becomes ``float64`` (NaN for None, "", NaN, ±inf), and every
other column (``status``, ``label``, ``run_id``, ``budget_kind``, booleans such as ``feasible``)
keeps its values as they are, so a verdict can read like its formula: group, aggregate, test.

A :class:`~moelab.analysis.data.Quantity` is added as two float columns: ``q.key`` (its getter's
value, which may be computed — a gap, an ``eval/``-prefixed key) and ``se_column(q)`` (the standard
error its 95 % interval over items implies, NaN without one).

The frame's index is the position in ``rows``, so ``rows[i]`` is the dict behind frame row ``i``.

Who reads it: :mod:`moelab.analysis.summary` (``monotone_in_total``, ``best_at_largest``,
``gap_trend``: seeds as replicates), :mod:`moelab.analysis.equivalence` (``topk_little_effect``),
:mod:`moelab.analysis.seeds` (the spread per configuration) and :mod:`moelab.analysis.figures`
(``series_figure``'s and ``prepost_figure``'s seed means and sds). The other analysis modules
(optimum, fits, advise, extras, report, ``gain_trend_kept`` and the remaining summary statements)
still read dict rows with ``num()``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from moelab.analysis.data import Quantity, num

__all__ = ["table", "se_column", "is_missing"]


def se_column(q: Quantity) -> str:
    """The column holding ``q``'s standard errors over items."""
    return f"{q.key} se"


def is_missing(v: Any) -> bool:
    """None, blank text, NaN or ±inf: no value (what ``num`` maps to None, for numbers and blanks)."""
    if v is None:
        return True
    if isinstance(v, str):
        return not v.strip()
    if isinstance(v, float):
        return not math.isfinite(v)
    return False


def _numeric(values: list) -> bool:
    """Every present value is a number (or numeric text) and at least one is present."""
    present = [v for v in values if not is_missing(v)]
    return bool(present) and all(num(v) is not None for v in present)


def table(rows: Sequence[dict], *, columns: Iterable[str] | None = None, quantities: Iterable[Quantity] = (),
          numeric: Iterable[str] = ()) -> pd.DataFrame:
    """``rows`` as a DataFrame: numeric columns float64 (NaN for missing), the rest as they are.

    ``columns``: only these (missing ones are added empty); default every key of any row.
    ``numeric``: columns forced to float64 even when every value is missing (grouping axes such as
    ``lr`` of imported models: NaN, grouped with ``dropna=False``); a text value there becomes NaN.
    ``quantities``: each adds ``q.key`` and ``se_column(q)`` from its getter and interval.
    """
    rows = list(rows)
    if columns is None:
        names = list(dict.fromkeys(k for r in rows for k in r))
    else:
        names = list(dict.fromkeys(columns))
    forced = set(numeric)
    data: dict[str, Any] = {}
    for name in names:
        values = [r.get(name) for r in rows]
        if name in forced or _numeric(values):
            data[name] = np.array([np.nan if (x := num(v)) is None else x for v in values], dtype=float)
        else:
            data[name] = pd.Series(values, dtype=object)
    for q in quantities:
        data[q.key] = np.array([np.nan if (x := q.get(r)) is None else x for r in rows], dtype=float)
        data[se_column(q)] = np.array([np.nan if (s := q.se(r)) is None else s for r in rows], dtype=float)
    frame = pd.DataFrame(data, index=pd.RangeIndex(len(rows)))
    return frame
