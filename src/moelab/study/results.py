"""Result rows: flat dicts, one per run, written as CSV (and later to the DuckDB store)."""

from __future__ import annotations

import csv
import io

# Columns every results table starts with, in this order; the rest follow alphabetically.
LEADING = ["run_id", "name", "status", "budget", "d_model", "num_experts", "top_k", "sparsity",
           "total_params", "active_params", "tokens", "tpp", "train_flops", "train_loss", "val_loss"]


def columns(rows: list[dict]) -> list[str]:
    seen = {k for r in rows for k in r}
    return [c for c in LEADING if c in seen] + sorted(seen - set(LEADING))


def rows_to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns(rows), extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in r.items() if not isinstance(v, (dict, list))})
    return buf.getvalue()
