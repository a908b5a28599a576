"""Two processes on one study (docs/reliability.md), all of them real ``moelab`` processes.

* A second ``moelab sweep`` on a folder whose sweep is running is refused in one line (exit 2),
  naming the running sweep's PID, and writes nothing.
* ``moelab query`` and ``moelab report`` run while the sweep trains, evaluates and rebuilds its
  store read a consistent snapshot: every query succeeds and every row is whole (a planned run id,
  a known state, a finished run with its losses), every report is built.
* The same under a writer that does nothing but rebuild the store, as fast as it can.
* ``moelab status`` probing the lock never makes a starting sweep refuse.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from battery_assets import _fake_sweep
from rel_helpers import ENV, moelab

STUDY = {
    "name": "two", "budgets": [6e8], "head_dim": 16,
    "grid": {"d_model": [32], "num_experts": [1, 4], "top_k": [1]},
    "base": {"model": {"n_layers": 2, "max_seq_len": 32},
             "data": {"seq_len": 32, "vocab_size": 512,
                      "world": {"num_people": 30, "reasoning_train_items": 40, "reasoning_eval_items": 8,
                                "knowledge_eval_items": 8}},
             "train": {"batch_size": 4, "warmup_steps": 2, "eval_every": 10, "checkpoint_every": 5, "log_every": 5,
                       "eval_batches": 1, "precision": "fp32", "device": "cpu"},
             "eval": {"tasks": ["knowledge"], "limit": 2, "max_new_tokens": 4}},
}

# ``python -c READER DIR SECONDS|until:FILE``: query and report DIR in a loop (one process, the CLI's
# code path) until the time is up or FILE exists; prints one JSON line per read, then a summary.
READER = r'''
import contextlib, io, json, os, sys, time
from moelab.cli import main
d, until = sys.argv[1], sys.argv[2]
stop = (lambda: os.path.exists(until[6:])) if until.startswith("until:") else (lambda t=time.time() + float(until): time.time() > t)
sql = "SELECT * FROM runs ORDER BY run_id"  # columns appear as runs finish: ask for all of them
n = {"query": 0, "report": 0, "no store yet": 0}
while not stop():
    for argv in (["query", d, sql, "--json"], ["report", d, "--bootstrap", "50"]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        if code != 0 and ("no results store" in err.getvalue() or "no runs in it" in err.getvalue()):
            n["no store yet"] += 1  # before the sweep's first rebuild: said in one line
            continue
        if code != 0:
            print(json.dumps({"failed": argv[0], "code": code, "stderr": err.getvalue()[-2000:]}), flush=True)
            sys.exit(1)
        n[argv[0]] += 1
        if argv[0] == "query":
            print(json.dumps({"rows": json.loads(out.getvalue())}), flush=True)
print(json.dumps({"done": n}), flush=True)
'''


def _check_rows(rows: list[dict], planned: set[str]) -> None:
    ids = [r["run_id"] for r in rows]
    assert len(ids) == len(set(ids)) and set(ids) <= planned, ids
    for r in rows:
        assert r["status"] in ("pending", "running", "done", "failed", "diverged", "corrupt"), r
        if r["status"] == "done":
            assert isinstance(r.get("final_train_loss"), float), r  # a finished run's row is whole


def _reads(reader: subprocess.Popen) -> tuple[list[list[dict]], dict]:
    out, err = reader.communicate(timeout=300)
    lines = [json.loads(ln) for ln in out.splitlines() if ln.strip()]
    assert reader.returncode == 0, (lines[-1:], err[-2000:])
    return [ln["rows"] for ln in lines if "rows" in ln], lines[-1]["done"]


def test_a_second_sweep_is_refused_and_readers_see_whole_snapshots_while_a_sweep_runs(tmp_path):
    from moelab.study.lock import lock_holder

    study, out, ended = tmp_path / "study.yaml", tmp_path / "sweep", tmp_path / "sweep-ended"
    study.write_text(yaml.safe_dump(STUDY))
    first = subprocess.Popen([sys.executable, "-m", "moelab", "sweep", study, "--out", out, "--quiet"],
                             env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reader = None
    try:
        deadline = time.monotonic() + 120
        while lock_holder(out) != first.pid:  # the first sweep holds the folder
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()[-2000:]
            time.sleep(0.05)
        reader = subprocess.Popen([sys.executable, "-c", READER, str(out), f"until:{ended}"], env=ENV,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        second = moelab("sweep", study, "--out", out, "--quiet")
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
        assert f"pid {first.pid}" in lines[0], lines[0]
        assert first.poll() is None  # the refusal came while the first one ran
        assert first.wait(timeout=300) == 0, first.stderr.read()[-6000:]
    finally:
        ended.write_text("")
        if first.poll() is None:
            first.kill()
            first.wait()
    snapshots, counts = _reads(reader)
    planned = {r["run_id"] for r in json.loads((out / "plan.json").read_text())["runs"] if r["feasible"]}
    assert snapshots and counts["query"] >= 1 and counts["report"] >= 1, counts
    for rows in snapshots:
        _check_rows(rows, planned)
    res = moelab("query", out, "SELECT count(*) AS n FROM runs WHERE status = 'done'", "--json")
    assert json.loads(res.stdout) == [{"n": 2}], res.stderr


LOOPER = r'''
import importlib, sys, time
module, name = sys.argv[1].rsplit(".", 1)
call = getattr(importlib.import_module(module), name)
t = time.time() + float(sys.argv[3])
n = 0
while time.time() < t:
    call(sys.argv[2])
    n += 1
print(n)
'''  # python -c LOOPER MODULE.FUNCTION ARG SECONDS: calls FUNCTION(ARG) without pause, prints how often


def test_query_and_report_under_a_writer_that_rebuilds_the_store_without_pause(tmp_path):
    sweep = _fake_sweep(tmp_path)
    writer = subprocess.Popen([sys.executable, "-c", LOOPER, "moelab.study.store.rebuild_store", str(sweep), "8"],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(sweep), "8"], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    snapshots, counts = _reads(reader)
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0 and int(out) >= 3, err[-2000:]  # the store really was replaced meanwhile
    planned = {r["run_id"] for r in json.loads((sweep / "plan.json").read_text())["runs"]}
    assert counts["query"] >= 3, counts
    for rows in snapshots:
        assert len(rows) == 2  # both runs, every time: never a half-built store
        _check_rows(rows, planned)
    assert not [p for p in Path(sweep).iterdir() if p.name.endswith(".tmp")]  # no temp left behind


def test_moelab_status_probing_the_lock_never_makes_a_starting_sweep_refuse(tmp_path):
    """``moelab status`` asks whether a sweep runs by taking the lock shared for an instant; a sweep
    that starts in that instant must still get its lock (and a live sweep's refusal must stand)."""
    from moelab.errors import UserError
    from moelab.study.lock import SweepLock

    (tmp_path / ".lock").touch()
    prober = subprocess.Popen([sys.executable, "-c", LOOPER, "moelab.study.lock.lock_holder", str(tmp_path), "4"],
                              env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # the prober is running
        for _ in range(100):
            with SweepLock(tmp_path):
                pass
    finally:
        out, _ = prober.communicate(timeout=60)
    assert int(out) > 1000  # it really probed all along
    with SweepLock(tmp_path):  # and a held lock is still refused
        with pytest.raises(UserError, match="being written by another sweep"):
            SweepLock(tmp_path).acquire(timeout=0.1)
