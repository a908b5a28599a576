"""The sweep end to end on a tiny study: status per run, resume after SIGKILL, failures that
stay contained, --retry-failed, the directory lock, and the Ray executor."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from moelab.config import StudyConfig, dump_yaml, validate
from moelab.errors import UserError
from moelab.study import store
from moelab.study.plan import plan
from moelab.study.sweep import sweep, sweep_status


def tiny_study(**grid) -> StudyConfig:
    """Two-layer d=32 models on a tiny world: 14 optimizer steps per run, a few eval items."""
    return validate(StudyConfig, {
        "name": "tiny", "budgets": [6e8], "head_dim": 16,
        "grid": {"d_model": [32], "num_experts": [1, 4], "top_k": [1]} | grid,
        "base": {
            "model": {"n_layers": 2, "max_seq_len": 32},
            "data": {"seq_len": 32, "vocab_size": 512,
                     "world": {"num_people": 30, "reasoning_train_items": 40, "reasoning_eval_items": 8,
                               "knowledge_eval_items": 8}},
            "train": {"batch_size": 4, "warmup_steps": 2, "eval_every": 10, "checkpoint_every": 5, "log_every": 5,
                      "eval_batches": 1, "precision": "fp32", "device": "cpu"},
            "eval": {"tasks": ["knowledge", "reasoning"], "limit": 2, "max_new_tokens": 8},
        },
    }, "tiny")


def _ids(study):
    return [r.run_id for r in plan(study) if r.feasible]


def _states(out):
    return {r["run_id"]: r["state"] for r in sweep_status(out)}


def _metric_keys(out, rid):
    recs = [json.loads(x) for x in (store.run_dir(out, rid) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["kind"]) for r in recs]


def test_sweep_end_to_end_with_failing_and_diverging_runs_and_retry(tmp_path):
    study = tiny_study(lr=[3e-3, 1e9])  # lr 1e9 diverges at step 2
    out = tmp_path / "sweep"
    good, div1, bad, div4 = _ids(study)  # E1 lr3e-3, E1 lr1e9, E4 lr3e-3, E4 lr1e9
    # Make one run fail at run time: its directory holds a different run's config, which the
    # trainer refuses (a failure the worker process meets, not something the planner can see).
    bad_dir = store.run_dir(out, bad)
    bad_dir.mkdir(parents=True)
    other = plan(tiny_study(seed=[7]))[0].config
    (bad_dir / "config.yaml").write_text(dump_yaml(other))

    result = sweep(study, out, progress=False)
    assert result.done == [good] and result.failed == [bad] and sorted(result.diverged) == sorted([div1, div4])
    assert sorted(result.executed) == sorted([good, div1, bad, div4])
    status = store.read_status(bad_dir)
    assert status["state"] == "failed" and "holds a different run" in status["message"]
    assert "\n" not in status["message"] and "Traceback" in (bad_dir / "error.txt").read_text()
    assert (store.run_dir(out, good) / "eval" / "summary.json").is_file()
    assert store.read_status(store.run_dir(out, div1))["step"] == 2

    cols, rows = store.query(out, "SELECT run_id, status, error, final_train_loss, diverged_step FROM runs")
    by_id = {r[0]: r for r in rows}
    assert len(rows) == 4 and by_id[good][1] == "done" and by_id[good][3] > 0
    assert by_id[bad][1] == "failed" and "holds a different run" in by_id[bad][2]
    assert by_id[div1][1] == "diverged" and by_id[div1][4] == 2
    _, [(n_eval,)] = store.query(out, f"SELECT count(*) FROM evaluations WHERE run_id = '{good}'")
    assert n_eval > 0
    assert yaml.safe_load((out / "study.yaml").read_text())["name"] == "tiny"
    assert len(json.loads((out / "plan.json").read_text())["runs"]) == 4

    # Re-running skips the done and diverged runs and, without --retry-failed, the failed one.
    mtime = (store.run_dir(out, good) / "train_summary.json").stat().st_mtime_ns
    again = sweep(study, out, progress=False)
    assert again.executed == [] and len(again.skipped) == 4 and again.failed == [bad]

    # Fix the cause; --retry-failed re-runs only the failed run.
    (bad_dir / "config.yaml").unlink()
    retried = sweep(study, out, progress=False, retry_failed=True)
    assert retried.executed == [bad] and sorted(retried.done) == sorted([good, bad]) and retried.ok
    assert (store.run_dir(out, good) / "train_summary.json").stat().st_mtime_ns == mtime
    assert not (bad_dir / "error.txt").exists()
    _, rows = store.query(out, "SELECT status, count(*) FROM runs GROUP BY status ORDER BY status")
    assert rows == [("diverged", 2), ("done", 2)]

    # The directory belongs to this study now.
    with pytest.raises(UserError, match="holds a different study"):
        sweep(tiny_study(num_experts=[1, 2]), out, progress=False)


def test_sigkill_midway_then_rerun_finishes_every_run_exactly_once(tmp_path):
    study = tiny_study(lr=[3e-3, 1e-3])
    ids = _ids(study)
    assert len(ids) == 4
    out = tmp_path / "sweep"
    study_file = tmp_path / "study.yaml"
    study_file.write_text(dump_yaml(study))
    from moelab.cli import build_parser

    if "sweep" in build_parser()._subparsers._group_actions[0].choices:  # the CLI is wired
        cmd = [sys.executable, "-m", "moelab", "sweep", str(study_file), "--out", str(out), "--quiet"]
    else:
        cmd = [sys.executable, "-c", textwrap.dedent(f"""
            from moelab.config import load_study_config
            from moelab.study.sweep import sweep
            sweep(load_study_config({str(study_file)!r}), {str(out)!r}, progress=False)
        """)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    try:
        # wait until one run is done and a second one is under way (training or evaluating)
        while time.time() < deadline:
            states = list(_states(out).values()) if (out / "plan.json").exists() else []
            if states.count("done") >= 1 and states.count("running") >= 1:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        else:
            pytest.fail("the sweep made no progress")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = [r for r, s in _states(out).items() if s == "done"]
    assert 1 <= len(done_before) < 4
    mtimes = {r: (store.run_dir(out, r) / "train_summary.json").stat().st_mtime_ns for r in done_before}

    result = sweep(study, out, progress=False)
    assert sorted(result.done) == sorted(ids) and result.ok
    assert sorted(result.skipped) == sorted(done_before)
    assert sorted(result.executed) == sorted(set(ids) - set(done_before))
    for r in done_before:  # not retrained
        assert (store.run_dir(out, r) / "train_summary.json").stat().st_mtime_ns == mtimes[r]
    for r in ids:  # every logged step exactly once, the last one the final step
        keys = _metric_keys(out, r)
        assert len(keys) == len(set(keys)) and max(k[0] for k in keys) == 14
    _, rows = store.query(out, "SELECT run_id, status FROM runs")
    assert sorted(rows) == sorted((r, "done") for r in ids)
    _, dup = store.query(out, "SELECT run_id, step, kind, count(*) c FROM train_metrics GROUP BY ALL HAVING c > 1")
    assert dup == []


def test_lock_refuses_a_second_sweep_and_names_its_pid(tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"from moelab.study.lock import SweepLock; import time; l = SweepLock({str(out)!r}).acquire(); "
         f"print('locked', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(UserError, match=f"another sweep \\(pid {holder.pid}\\)"):
            sweep(tiny_study(), out, progress=False)
        assert not (out / "study.yaml").exists()  # refused before writing anything
        from moelab.study.lock import lock_holder

        assert lock_holder(out) == holder.pid
    finally:
        holder.kill()
        holder.wait()
    from moelab.study.lock import SweepLock, lock_holder

    assert lock_holder(out) is None  # the kernel released the dead holder's lock
    with SweepLock(out):
        assert lock_holder(out) == os.getpid()


def test_ray_executor_with_a_local_instance(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        study = tiny_study()
        result = sweep(study, tmp_path / "sweep", executor="ray", workers=2, progress=False)
    finally:
        ray.shutdown()
    assert result.executor == "ray" and result.ok and sorted(result.done) == sorted(_ids(study))
    _, rows = store.query(tmp_path / "sweep", "SELECT status, count(*) FROM runs GROUP BY status")
    assert rows == [("done", 2)]


def test_bad_arguments_are_user_errors_before_anything_is_written(tmp_path):
    out = tmp_path / "sweep"
    with pytest.raises(UserError, match="unknown executor"):
        sweep(tiny_study(), out, executor="slurm", progress=False)
    with pytest.raises(UserError, match="--workers"):
        sweep(tiny_study(), out, workers=0, progress=False)
    with pytest.raises(UserError, match="no feasible run"):
        sweep(tiny_study(top_k=[8]), out, progress=False)
    assert not out.exists()
