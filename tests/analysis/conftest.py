"""Fake study directories built from synthetic rows (no training: end-to-end runs are tested elsewhere)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synth import make_rows, with_failures  # noqa: E402

from moelab.study.results import rows_to_csv  # noqa: E402


def write_csv_study(d: Path, rows: list[dict]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "results.csv").write_text(rows_to_csv(rows))
    return d


def write_duckdb_study(d: Path, rows: list[dict], *, planned_extra: list[dict] = ()) -> Path:
    """``study.duckdb`` with a ``runs`` table (the store's column typing) and a ``plan.json`` that
    also lists ``planned_extra`` runs the store lacks."""
    import duckdb

    from moelab.study.results import columns
    from moelab.study.store import to_arrow

    d.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(d / "study.duckdb"))
    con.register("_arrow", to_arrow(rows, columns(rows)))
    con.execute("CREATE TABLE runs AS SELECT * FROM _arrow")
    con.close()
    plan = [{k: r.get(k) for k in ("run_id", "budget", "d_model", "num_experts", "top_k", "feasible")}
            for r in [*rows, *planned_extra]]
    (d / "plan.json").write_text(json.dumps({"study": "synthetic", "runs": plan}))
    return d


@pytest.fixture
def synthetic_rows() -> list[dict]:
    return make_rows()


@pytest.fixture
def failing_rows() -> list[dict]:
    return with_failures(make_rows(budgets=(1e12,), experts=(1, 2, 4, 8, 16)))
