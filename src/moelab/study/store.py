"""The results store: per-run files gathered into ``DIR/study.duckdb`` (+ parquet, CSV).

Per-run files stay the source of truth; the store is a cache that can be rebuilt at any
time (``rebuild_store(out)``), also while a sweep runs: it is built into a temp file and
renamed into place, so a reader sees the old store or the new one, never half of one.

Tables of ``study.duckdb``:

* ``runs`` — one row per planned run (infeasible and pending ones included), keyed by
  ``run_id``: ``status``, the plan columns (``PlannedRun.row()``; ``origin`` is ``trained`` or
  ``imported``, ``source`` an imported model's directory), the run's status
  details (``error``, ``diverged_step``, ``last_finite_step``, ``last_finite_loss``, ``step``,
  ``total_steps``), its train summary
  (keys that clash with a plan column get a ``train_`` prefix), its flat evaluation
  summary (nested keys joined with ``/``), and ``config`` (the run's effective config, JSON).
* ``train_metrics`` — every record of every ``metrics.jsonl``: ``run_id, step, kind`` and one
  column per metric (per-layer lists stay lists).
* ``evaluations`` — the evaluation summaries in long form: ``run_id, key, value, text``
  (``value`` for numbers, ``text`` for anything else).
* ``study`` — one row: study name, number of runs, when the store was rebuilt.

``DIR/results.parquet`` and ``DIR/results.csv`` hold the ``runs`` table.

Run states (``runs/<id>/status.json``, field ``state``): ``pending``, ``running``, ``done``,
``failed`` (``message`` holds the error), ``diverged`` (``step`` holds the step);
``infeasible`` only ever appears in the store. A terminal state written by the sweep
carries ``"by": "sweep"``; the trainer writes the same file while it trains.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any

from moelab.atomic import as_disk_full, atomic_path, atomic_write_json, atomic_write_text
from moelab.errors import UserError

STORE_FILE = "study.duckdb"
PARQUET_FILE = "results.parquet"
CSV_FILE = "results.csv"
PLAN_FILE = "plan.json"
STUDY_FILE = "study.yaml"
RUNS_DIR = "runs"

# ---------------------------------------------------------------- per-run status files


def run_dir(out: str | Path, run_id: str) -> Path:
    return Path(out) / RUNS_DIR / run_id


def read_status(rdir: str | Path) -> dict | None:
    try:
        data = json.loads((Path(rdir) / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_status(rdir: str | Path, state: str, *, keep: dict | None = None, **fields: Any) -> dict:
    """Write ``status.json`` atomically; ``keep`` is a previous status whose fields carry over
    (the trainer's ``step``/``total_steps`` for instance) unless overridden here."""
    status = dict(keep or {})
    status.update(fields)
    status["state"] = state
    status["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    status.setdefault("message", "")
    atomic_write_json(Path(rdir) / "status.json", status)
    return status


def run_state(status: dict | None) -> str:
    """The sweep's view of a run: ``done``/``failed``/``diverged`` only when the sweep recorded them.

    The trainer also writes ``done`` (training finished, evaluation may be missing) and
    ``failed`` (including a Ctrl-C); without the sweep's mark those are resumable, i.e.
    ``running`` when there is progress and ``pending`` when there is none.
    """
    if not status:
        return "pending"
    state = status.get("state", "pending")
    if state in ("done", "failed") and status.get("by") != "sweep":
        return "running"
    if state == "diverged":
        return "diverged"  # the trainer's mark is final: resuming would diverge again
    return state if state in ("pending", "running", "done", "failed") else "running"


# ---------------------------------------------------------------- gathering rows


def flatten(d: dict, prefix: str = "", sep: str = "/") -> dict:
    """Nested dicts → one level with ``sep``-joined keys; lists and scalars stay as they are."""
    out: dict = {}
    for key, value in d.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def saved_plan_rows(out: Path) -> list[dict] | None:
    """The runs of ``out/plan.json`` as written, or None when it is absent or unreadable."""
    plan = _read_json(out / PLAN_FILE)
    return plan["runs"] if isinstance(plan, dict) and isinstance(plan.get("runs"), list) else None


def load_plan_rows(out: Path) -> list[dict]:
    """The planned runs of ``out``: ``plan.json`` if present, else a fresh plan of ``study.yaml``."""
    saved = saved_plan_rows(out)
    if saved is not None:
        return saved
    if (out / STUDY_FILE).is_file():
        from moelab.config import load_study_config
        from moelab.study.plan import plan as make_plan

        return [plan_row(r) for r in make_plan(load_study_config(out / STUDY_FILE))]
    raise UserError(f"{out}: not a sweep directory (no {PLAN_FILE} or {STUDY_FILE})")


def plan_row(run) -> dict:
    """``PlannedRun.row()`` plus the run's config (what ``plan.json`` stores per run)."""
    row = run.row()
    if getattr(run, "est_seconds", None) is not None:
        row["est_seconds"] = run.est_seconds
    row["config"] = run.config.model_dump(mode="json") if run.config is not None else None
    return row


_STATUS_COLUMNS = {"message": "error", "step": "step", "total_steps": "total_steps", "updated": "status_updated",
                   "seconds": "run_seconds"}
# Every runs row has these (None when not applicable), so queries on them work before any run ends.
_STABLE = {"error": None, "diverged_step": None, "last_finite_step": None, "last_finite_loss": None, "step": None,
           "total_steps": None, "status_updated": None, "run_seconds": None}
# Train-summary keys that repeat the plan (or are bookkeeping): left out of the runs table.
_SUMMARY_SKIP = {"name", "state", "model_dir", "model_name", "d_model", "num_experts", "top_k", "total_params",
                 "active_params", "origin"}
# Columns that stay text even when every value is missing (all-missing columns are otherwise DOUBLE).
TEXT_COLUMNS = {"run_id", "name", "status", "reason", "error", "status_updated", "config", "kind", "key", "text",
                "model_name", "origin", "source", "train_log"}


# The per-run files the store reads (relative to the run directory); a damaged one marks the run.
_RUN_JSON_FILES = ("status.json", "train_summary.json", "eval/summary.json", "grpo/eval/summary.json")


def damaged_files(rdir: Path) -> list[str]:
    """``"NAME (why)"`` for every per-run file of ``rdir`` that exists but cannot be read."""
    from moelab.jsonfile import json_problem

    found = [f"{name} ({why})" for name in _RUN_JSON_FILES if (why := json_problem(rdir / name))]
    cfg = rdir / "config.yaml"
    if cfg.is_file():
        import yaml

        try:
            data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                found.append("config.yaml (not a mapping)")
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            found.append(f"config.yaml (invalid YAML: {type(err).__name__})")
    return found


def collect(out: str | Path) -> tuple[list[dict], list[dict], list[dict]]:
    """(runs, train_metrics, evaluations) rows gathered from the per-run files of ``out``."""
    from moelab.train.metrics import read_jsonl

    out = Path(out)
    runs: list[dict] = []
    metrics: list[dict] = []
    evaluations: list[dict] = []
    for planned in load_plan_rows(out):
        planned = dict(planned)
        config = planned.pop("config", None)
        rid = planned["run_id"]
        rdir = run_dir(out, rid)
        row = {"run_id": rid, "status": "infeasible"} | planned | _STABLE
        if planned.get("feasible"):
            status = read_status(rdir)
            row["status"] = run_state(status)
            for src, dst in _STATUS_COLUMNS.items():
                if status and src in status:
                    row[dst] = status[src]
            if row["status"] != "failed":
                row["error"] = None
            if row["status"] == "diverged":
                row["diverged_step"] = status.get("step")
                last = status.get("last_finite")  # the trainer's metrics of the last finite step
                if isinstance(last, dict):
                    row["last_finite_step"], row["last_finite_loss"] = last.get("step"), last.get("loss")
            summary = _read_json(rdir / "train_summary.json")
            if isinstance(summary, dict):
                for key, value in flatten(summary).items():
                    if key in _SUMMARY_SKIP:
                        continue
                    if key in row:
                        key = key if key.startswith("train_") else f"train_{key}"
                    row.setdefault(key, value)
            evaluation = _read_json(rdir / "eval" / "summary.json")
            if isinstance(evaluation, dict):
                for key, value in flatten(evaluation).items():
                    evaluations.append({"run_id": rid, "key": key} | _eval_value(value))
                    row.setdefault(key if key not in row else f"eval/{key}", value)
            saved = rdir / "config.yaml"
            damaged = damaged_files(rdir)
            if saved.is_file() and "config.yaml" not in " ".join(damaged):
                import yaml  # the effective config the trainer used (vocab size from the tokenizer)

                config = yaml.safe_load(saved.read_text()) or config
            if damaged:  # named on the run, never silently dropped or shown as "pending"
                row["status"] = "corrupt"
                row["error"] = ("damaged: " + "; ".join(damaged) + " — run the same `moelab sweep` again "
                                "(it rebuilds what it can) or restore the files")
            for rec in read_jsonl(rdir / "metrics.jsonl"):
                metrics.append({"run_id": rid, "step": rec.get("step"), "kind": rec.get("kind")}
                               | {k: v for k, v in rec.items() if k not in ("run_id", "step", "kind")})
        row["config"] = json.dumps(config, sort_keys=True) if config is not None else None
        runs.append(row)
        post = _read_json(rdir / "grpo" / "eval" / "summary.json") if planned.get("feasible") else None
        if isinstance(post, dict):  # the post-trained variant, linked to its pretrained run
            variant = {k: v for k, v in row.items() if "/" not in k and not k.startswith("pretrain_")}
            variant |= {"run_id": f"{rid}+grpo", "base_run_id": rid, "posttrain": "grpo", "status": "done"}
            for key, value in flatten(post).items():
                evaluations.append({"run_id": f"{rid}+grpo", "key": key} | _eval_value(value))
                variant[key if key not in variant else f"eval/{key}"] = value
            runs.append(variant)
    ids = [r["run_id"] for r in runs]
    assert len(ids) == len(set(ids)), "duplicate run ids in the plan"
    return runs, metrics, evaluations


def _eval_value(value: Any) -> dict:
    if isinstance(value, bool):
        return {"value": float(value), "text": None}
    if isinstance(value, (int, float)):
        return {"value": float(value), "text": None}
    return {"value": None, "text": value if isinstance(value, str) else json.dumps(value)}


# ---------------------------------------------------------------- arrow conversion


_NONFINITE = {"nan", "inf", "-inf", "infinity", "-infinity"}


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "nonfinite" if v.strip().lower() in _NONFINITE else "str"
    if isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return "numlist"
    return "json"


def _column(values: list[Any], text: bool = False):
    """One arrow array with a single sensible type for a column of JSON-ish values."""
    import pyarrow as pa

    kinds = {_kind(v) for v in values if v is not None}
    if not kinds:
        return pa.array([None] * len(values), type=pa.string() if text else pa.float64())
    if kinds == {"bool"}:
        return pa.array(values, type=pa.bool_())
    if kinds == {"int"} and all(v is None or -2**63 <= v < 2**63 for v in values):
        return pa.array(values, type=pa.int64())
    if kinds <= {"int", "float", "bool", "nonfinite"}:
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    if kinds == {"numlist"}:
        return pa.array([None if v is None else [float(x) for x in v] for v in values], type=pa.list_(pa.float64()))
    if kinds <= {"str", "nonfinite"}:
        return pa.array(values, type=pa.string())
    return pa.array([None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values],
                    type=pa.string())


def to_arrow(rows: list[dict], columns: list[str]):
    import pyarrow as pa

    return pa.table({c: _column([r.get(c) for r in rows], c in TEXT_COLUMNS) for c in columns})


# ---------------------------------------------------------------- building the store


def rebuild_store(out: str | Path) -> Path:
    """Gather the per-run files of ``out`` into ``study.duckdb``, ``results.parquet`` and
    ``results.csv`` (each replaced atomically). Returns the path of the DuckDB file."""
    import duckdb
    import pyarrow.parquet as pq

    from moelab.study.results import columns as result_columns
    from moelab.study.results import rows_to_csv

    from moelab.resources import check_writable_dir

    out = Path(out)
    check_writable_dir(out, "study folder")  # a read-only folder: one line before any work
    runs, metrics, evaluations = collect(out)
    run_cols = result_columns(runs)
    run_cols = [c for c in run_cols if c != "config"] + ["config"]
    runs_tbl = to_arrow(runs, run_cols)
    metric_cols = ["run_id", "step", "kind"] + sorted({k for m in metrics for k in m} - {"run_id", "step", "kind"})
    metrics_tbl = to_arrow(metrics, metric_cols)
    evals_tbl = to_arrow(evaluations, ["run_id", "key", "value", "text"])
    study_name = _study_name(out)

    _remove_dead_writers_temps(out)
    tmp = out / f".{STORE_FILE}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        con = duckdb.connect(str(tmp))
        try:
            for name, tbl in (("runs", runs_tbl), ("train_metrics", metrics_tbl), ("evaluations", evals_tbl)):
                con.register("_arrow", tbl)
                con.execute(f"CREATE TABLE {name} AS SELECT * FROM _arrow")
                con.unregister("_arrow")
            con.execute("ALTER TABLE runs ADD PRIMARY KEY (run_id)")
            # all-missing columns arrive as DOUBLE; these are counts
            con.execute("ALTER TABLE train_metrics ALTER COLUMN step TYPE BIGINT")
            for col in ("step", "total_steps", "diverged_step", "last_finite_step"):
                con.execute(f"ALTER TABLE runs ALTER COLUMN {col} TYPE BIGINT")
            con.execute("CREATE TABLE study (name VARCHAR, num_runs BIGINT, rebuilt_at VARCHAR)")
            con.execute("INSERT INTO study VALUES (?, ?, ?)",
                        [study_name, len(runs), time.strftime("%Y-%m-%dT%H:%M:%S%z")])
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, out / STORE_FILE)
    except Exception as err:
        full = as_disk_full(err, out / STORE_FILE, tmp)  # DuckDB says it in its own words
        if full is not None:
            raise full from err
        raise
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    with atomic_path(out / PARQUET_FILE) as ptmp:
        pq.write_table(runs_tbl, ptmp)
    atomic_write_text(out / CSV_FILE, rows_to_csv([{k: v for k, v in r.items() if k != "config"} for r in runs]))
    return out / STORE_FILE


def _remove_dead_writers_temps(out: Path) -> None:
    """Delete the temp databases (and WAL files) of rebuilds killed before their rename: the writer's
    PID is in the name, so a temp file of a rebuild still running elsewhere is left alone."""
    for p in out.glob(f".{STORE_FILE}.*.tmp*"):
        try:
            pid = int(p.name.split(".")[3])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            p.unlink(missing_ok=True)
        except PermissionError:  # alive, someone else's
            pass


def _study_name(out: Path) -> str | None:
    try:
        import yaml

        return (yaml.safe_load((out / STUDY_FILE).read_text()) or {}).get("name")
    except (OSError, ValueError, AttributeError):
        return None


# ---------------------------------------------------------------- querying


def _store_path(out: str | Path) -> Path:
    p = Path(out)
    if p.is_file() and p.suffix == ".duckdb":
        return p
    if not p.is_dir():
        raise UserError(f"{p}: no such directory")
    store = p / STORE_FILE
    if not store.is_file():
        if (p / PLAN_FILE).is_file() or (p / STUDY_FILE).is_file():
            rebuild_store(p)
        else:
            raise UserError(f"{p}: no results store ({STORE_FILE}) and not a sweep directory")
    return store


_READ_ONLY = {"enable_external_access": False, "autoinstall_known_extensions": False,
              "autoload_known_extensions": False, "lock_configuration": True}


def query(out: str | Path, sql: str, *, rebuild: bool = False) -> tuple[list[str], list[tuple]]:
    """Run ``sql`` against ``out``'s store (read-only); returns (column names, rows).

    The store is built first when missing (or when ``rebuild``). A SQL error is a one-line
    ``UserError``.
    """
    import duckdb

    if not sql.strip():
        raise UserError("query: the SQL is empty (e.g. \"SELECT run_id, status FROM runs\")")
    if rebuild and Path(out).is_dir():
        rebuild_store(out)
    store = _store_path(out)
    try:
        # DuckDB's own guards, not SQL parsing: the database is opened read-only, and with external
        # access off and the configuration locked no statement can read or write any other file
        # (COPY … TO, EXPORT, ATTACH, read_csv, INSTALL/LOAD) or turn those back on (SET, PRAGMA).
        con = duckdb.connect(str(store), read_only=True, config=_READ_ONLY)
    except duckdb.Error as err:
        raise UserError(f"{store}: cannot open the results store ({_one_line(err)})") from None
    try:
        cur = con.execute(sql)
        if cur.description is None:
            return [], []
        columns = [d[0] for d in cur.description]
        return columns, cur.fetchall()
    except duckdb.Error as err:
        raise UserError(f"query failed: {_one_line(err)}") from None
    finally:
        con.close()


def _one_line(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return " ".join(lines[:2]) if lines else type(err).__name__


def jsonable(value: Any) -> Any:
    """A query cell as JSON (NaN/inf become None, anything exotic its string)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)
