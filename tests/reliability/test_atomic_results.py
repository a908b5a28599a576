"""A half-written results file never replaces a good one: the results store (``study.duckdb``,
``results.parquet``, ``results.csv``) and evaluation summaries are written to a temporary name,
fsynced and renamed. A write that fails part-way, or a process killed during it, leaves the
previous complete file byte for byte.
"""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from moelab.atomic import atomic_write_json, atomic_write_text
from moelab.config import StudyConfig, dump_yaml, validate
from moelab.study import store
from moelab.study.plan import plan

from rel_helpers import ENV, make_fake_run, snapshot

STORE_FILES = (store.STORE_FILE, store.PARQUET_FILE, store.CSV_FILE)


def _sweep_dir(out: Path) -> list[str]:
    """A sweep directory with two finished runs (per-run files only, no training)."""
    study = validate(StudyConfig, {"name": "atomic", "tokens": [1e5], "head_dim": 16,
                                   "grid": {"d_model": [32], "num_experts": [1, 4], "top_k": [1]}}, "study")
    runs = [r for r in plan(study) if r.feasible]
    out.mkdir(parents=True)
    atomic_write_text(out / store.STUDY_FILE, dump_yaml(study))
    atomic_write_json(out / store.PLAN_FILE, {"study": study.name, "runs": [store.plan_row(r) for r in runs]})
    for i, r in enumerate(runs):
        rdir = store.run_dir(out, r.run_id)
        (rdir / "eval").mkdir(parents=True)
        store.write_status(rdir, "done", by="sweep", step=10, total_steps=10)
        atomic_write_json(rdir / "train_summary.json", {"steps": 10, "final_train_loss": 3.0 + i})
        atomic_write_json(rdir / "eval" / "summary.json", {"reasoning": {"accuracy": 0.1 * i}})
    return [r.run_id for r in runs]


def _store_files(out: Path) -> dict:
    return {name: snapshot(out / name) for name in STORE_FILES}


def _temps(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def _accuracies(out: Path) -> list:
    _, rows = store.query(out, 'SELECT "reasoning/accuracy" FROM runs ORDER BY run_id')
    return [r[0] for r in rows]


@pytest.mark.parametrize("fail_at", [store.STORE_FILE, store.PARQUET_FILE, store.CSV_FILE])
def test_a_failed_store_write_keeps_the_previous_file(tmp_path, monkeypatch, fail_at):
    out = tmp_path / "sweep"
    ids = _sweep_dir(out)
    store.rebuild_store(out)
    before = _store_files(out)
    atomic_write_json(store.run_dir(out, ids[0]) / "eval" / "summary.json", {"reasoning": {"accuracy": 0.9}})

    import moelab.atomic as atomic

    real_replace, real_fsync = store.os.replace, atomic.fsync_file

    def replace(src, dst, *a, **k):  # the DuckDB file is renamed with os.replace by the store itself
        if Path(dst).name == fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *a, **k)

    def fsync(path):  # parquet and CSV go through atomic_path: fail the fsync of their temp file
        if Path(path).name.startswith(f".{fail_at}."):
            raise OSError(errno.EIO, "I/O error")
        return real_fsync(path)

    monkeypatch.setattr(store.os, "replace", replace)
    monkeypatch.setattr(atomic, "fsync_file", fsync)
    with pytest.raises(OSError):
        store.rebuild_store(out)
    monkeypatch.undo()
    after = _store_files(out)
    assert after[fail_at] == before[fail_at], f"{fail_at} was replaced by a failed write"
    assert _temps(out) == [], "temporary files left behind"
    # every file is still a complete one: the old version, or the new one written before the failure
    assert _accuracies(out) in ([0.0, 0.1], [0.9, 0.1])
    store.rebuild_store(out)
    assert _accuracies(out) == [0.9, 0.1]


KILL_IN_REBUILD = r"""
import os, sys, time
from pathlib import Path
from moelab.study import store
real_replace = os.replace
def replace(src, dst, *a, **k):
    if Path(dst).name == store.STORE_FILE:  # the new database is complete in its temp file: stop here
        Path(sys.argv[2]).write_text("paused")
        time.sleep(600)
    return real_replace(src, dst, *a, **k)
os.replace = replace
store.rebuild_store(sys.argv[1])
"""


def test_sigkill_during_a_store_rebuild_keeps_the_old_store_readable(tmp_path):
    out = tmp_path / "sweep"
    ids = _sweep_dir(out)
    store.rebuild_store(out)
    before = _store_files(out)
    atomic_write_json(store.run_dir(out, ids[0]) / "eval" / "summary.json", {"reasoning": {"accuracy": 0.9}})
    marker = tmp_path / "paused"
    proc = subprocess.Popen([sys.executable, "-c", KILL_IN_REBUILD, str(out), str(marker)], env=ENV,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "the rebuild never reached the rename"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _store_files(out) == before
    con = duckdb.connect(str(out / store.STORE_FILE), read_only=True)  # the old store opens and answers
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (2,)
    con.close()
    assert len(_temps(out)) == 1  # the killed writer's complete-but-unrenamed database
    store.rebuild_store(out)  # the next rebuild replaces the store and clears the dead writer's temp file
    assert _accuracies(out) == [0.9, 0.1] and _temps(out) == []


def test_a_failed_eval_summary_write_keeps_the_previous_summary(tmp_path, monkeypatch, capsys):
    """``moelab eval all --out`` (in-process): the summary write fails after the evaluation; the old
    summary stays whole and no temp file is left."""
    import moelab.atomic as atomic
    from moelab.cli import main

    run = make_fake_run(tmp_path)
    task = tmp_path / "task.jsonl"
    task.write_text('{"prompt": "Q: 2+2?\\nA:", "answer": " 4"}\n')
    out = tmp_path / "eval"
    out.mkdir()
    old = {"note": "a complete earlier summary"}
    atomic_write_json(out / "summary.json", old)
    real_fsync = atomic.fsync_file

    def fsync(path):
        if Path(path).name.startswith(".summary.json."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(path)

    monkeypatch.setattr(atomic, "fsync_file", fsync)
    argv = ["eval", "all", "--model", str(run / "model"), "--task", "knowledge", "--task-file", str(task),
            "--limit", "1", "--max-new-tokens", "2", "--device", "cpu", "--json", "--out", str(out)]
    capsys.readouterr()
    assert main(argv) == 1  # a full disk: one line, exit 1 (not a traceback)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "run the same command again" in err[0], err
    assert json.loads((out / "summary.json").read_text()) == old
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert main(argv) == 0
    assert "knowledge" in json.dumps(json.loads((out / "summary.json").read_text()))


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    """SIGKILL between creating the temp sibling and the rename leaves it behind; the next
    successful write of the same file removes it, but never a live writer's or another host's."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    from moelab.atomic import atomic_write_text

    target = tmp_path / "results.csv"
    atomic_write_text(target, "old\n")
    # a real writer, killed for real while it holds its temp file open
    code = ("import sys, time; from moelab.atomic import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    open(tmp, 'w').write('half'); print('ready', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and f"-{proc.pid}." in leftovers[0].name
    host = socket.gethostname().replace(".", "_")
    live = tmp_path / f".results.csv.{host}-{os.getpid()}.live.tmp"  # this process: alive
    other_host = tmp_path / f".results.csv.elsewhere-{proc.pid}.x.tmp"  # a writer on another machine
    live.write_text("")
    other_host.write_text("")

    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == sorted([live.name, other_host.name])
