"""The results store: rebuilt from per-run files, one row per planned run, queryable."""

import csv
import json

import pyarrow.parquet as pq
import pytest

from moelab.atomic import atomic_write_json, atomic_write_text
from moelab.config import StudyConfig, dump_yaml, validate
from moelab.errors import UserError
from moelab.study import store
from moelab.study.plan import plan


def _study() -> StudyConfig:
    return validate(StudyConfig, {
        "name": "store-test", "budgets": [6e8], "head_dim": 16,
        "grid": {"d_model": [32], "num_experts": [1, 4], "top_k": [1, 2]},
        "base": {"model": {"n_layers": 2}, "data": {"seq_len": 32, "vocab_size": 512}, "train": {"batch_size": 4}},
    }, "study")


def _write_plan(out, study):
    runs = plan(study)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.yaml", dump_yaml(study))
    atomic_write_json(out / "plan.json", {"study": study.name, "runs": [store.plan_row(r) for r in runs]})
    return runs


def _fake_done_run(out, run_id):
    rdir = store.run_dir(out, run_id)
    (rdir / "eval").mkdir(parents=True)
    store.write_status(rdir, "done", by="sweep", step=10, total_steps=10, message="trained and evaluated")
    atomic_write_json(rdir / "train_summary.json", {
        "state": "done", "name": run_id, "steps": 10, "final_train_loss": 3.5, "final_val_loss": 3.7,
        "tokens_per_s": 1000.0})
    lines = [{"kind": "train", "step": 5, "loss": 4.0, "load_max_mean": [1.0, 1.5]},
             {"kind": "train", "step": 10, "loss": "nan", "load_max_mean": [1.0, 1.2]},
             {"kind": "val", "step": 10, "val_loss": 3.7}]
    (rdir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"torn": ')
    atomic_write_json(rdir / "eval" / "summary.json", {
        "knowledge": {"accuracy": 0.25, "task_loss_bits": 2.0}, "reasoning": {"accuracy": 0.0},
        "note": "hello"})


def test_rebuild_with_pending_failed_done_and_infeasible_runs(tmp_path):
    out = tmp_path / "sweep"
    runs = _write_plan(out, _study())
    ids = [r.run_id for r in runs]
    feasible = [r.run_id for r in runs if r.feasible]
    infeasible = [r.run_id for r in runs if not r.feasible]
    assert len(runs) == 4 and len(feasible) == 3 and len(infeasible) == 1  # E1-k2 is infeasible
    _fake_done_run(out, feasible[0])
    failed_dir = store.run_dir(out, feasible[1])
    store.write_status(failed_dir, "failed", by="sweep", message="ValueError: boom")
    # feasible[2] has no run directory at all: pending

    store.rebuild_store(out)
    store.rebuild_store(out)  # rebuilding is idempotent
    cols, rows = store.query(out, "SELECT run_id, status, error, feasible, reason FROM runs ORDER BY run_id")
    assert cols == ["run_id", "status", "error", "feasible", "reason"]
    assert sorted(r[0] for r in rows) == sorted(ids)  # one row per planned run, no duplicates
    by_id = {r[0]: r for r in rows}
    assert by_id[feasible[0]][1] == "done"
    assert by_id[feasible[1]][1:3] == ("failed", "ValueError: boom")
    assert by_id[feasible[2]][1] == "pending"
    assert by_id[infeasible[0]][1] == "infeasible" and "exceeds num_experts" in by_id[infeasible[0]][4]

    _, [(loss, tps, acc, cfg)] = store.query(
        out, f"SELECT final_train_loss, tokens_per_s, \"knowledge/accuracy\", config FROM runs "
             f"WHERE run_id = '{feasible[0]}'")
    assert loss == 3.5 and tps == 1000.0 and acc == 0.25
    assert json.loads(cfg)["model"]["num_experts"] == runs[0].num_experts  # the run's config, as JSON

    _, metric_rows = store.query(out, "SELECT run_id, step, kind, loss, load_max_mean FROM train_metrics "
                                      "ORDER BY step, kind")
    assert len(metric_rows) == 3  # the torn last line is skipped
    assert metric_rows[0][1:] == (5, "train", 4.0, [1.0, 1.5])
    assert metric_rows[1][3] != metric_rows[1][3]  # "nan" came back as a float NaN

    _, evals = store.query(out, "SELECT key, value, text FROM evaluations ORDER BY key")
    assert evals == [("knowledge/accuracy", 0.25, None), ("knowledge/task_loss_bits", 2.0, None),
                     ("note", None, "hello"), ("reasoning/accuracy", 0.0, None)]

    table = pq.read_table(out / "results.parquet")
    assert table.num_rows == 4 and "status" in table.column_names
    with open(out / "results.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == 4 and list(csv_rows[0])[:3] == ["run_id", "name", "status"]
    assert not list(out.glob(".study.duckdb*"))  # no temp files left behind


def test_trainer_marks_are_resumable_not_final(tmp_path):
    assert store.run_state(None) == "pending"
    assert store.run_state({"state": "done", "step": 9}) == "running"  # trained, not yet evaluated
    assert store.run_state({"state": "failed", "message": "KeyboardInterrupt"}) == "running"
    assert store.run_state({"state": "failed", "by": "sweep"}) == "failed"
    assert store.run_state({"state": "done", "by": "sweep"}) == "done"
    assert store.run_state({"state": "diverged", "step": 3}) == "diverged"


def test_query_builds_a_missing_store_and_reports_sql_errors(tmp_path):
    out = tmp_path / "sweep"
    _write_plan(out, _study())
    cols, rows = store.query(out, "SELECT count(*) AS n, count(*) FILTER (status = 'pending') FROM runs")
    assert cols[0] == "n" and rows == [(4, 3)]
    with pytest.raises(UserError) as err:
        store.query(out, "SELECT nope FROM runs")
    assert "\n" not in str(err.value) and "nope" in str(err.value)
    with pytest.raises(UserError, match="not a sweep directory"):
        store.query(tmp_path, "SELECT 1")
    with pytest.raises(UserError, match="no such directory"):
        store.query(tmp_path / "missing", "SELECT 1")
