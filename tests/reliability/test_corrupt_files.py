"""Damaged files are named, never guessed around (docs/reliability.md).

A truncated status, summary or config file is reported in one line naming the file, or — in the
store rebuild and ``moelab status`` — marked on its run as ``corrupt``; it is never shown as
"pending", dropped from the results, or replaced by defaults. A sweep that finds its own status file
damaged says so and checks the run again (training resumes, finished work is kept).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from battery_assets import STUDY, build_assets
from test_bad_input_battery import run_cli


@pytest.fixture(scope="module")
def assets(tmp_path_factory, one_thread) -> Path:
    return build_assets(tmp_path_factory.mktemp("corrupt") / "assets")


@pytest.fixture
def sweep_copy(assets, tmp_path) -> Path:
    shutil.copytree(assets / "sweep", tmp_path / "sweep")
    return tmp_path / "sweep"


def _first_run(sweep: Path) -> Path:
    return sorted((sweep / "runs").iterdir())[0]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _runs(sweep: Path) -> dict:
    code, out, err = run_cli(["query", sweep, "SELECT run_id, status, error FROM runs ORDER BY run_id", "--json",
                              "--rebuild"], sweep)
    assert code == 0, err
    return {r["run_id"]: r for r in json.loads(out)}


@pytest.mark.parametrize("name", ["eval/summary.json", "status.json", "train_summary.json"])
def test_a_damaged_run_file_marks_the_run_corrupt_in_the_store_and_status(sweep_copy, name):
    rdir = _first_run(sweep_copy)
    _truncate(rdir / name)
    rows = _runs(sweep_copy)
    row = rows[rdir.name]
    assert row["status"] == "corrupt"
    assert name in row["error"] and "invalid JSON" in row["error"]
    others = [r for rid, r in rows.items() if rid != rdir.name]
    assert others and all(r["status"] == "done" for r in others)  # the other run is untouched
    code, out, err = run_cli(["status", sweep_copy, "--json"], sweep_copy)
    assert code == 0, err
    states = {r["run_id"]: (r["state"], r["message"]) for r in json.loads(out)["runs"]}
    assert states[rdir.name][0] == "corrupt" and name in states[rdir.name][1]


def test_a_damaged_config_marks_the_run_corrupt(sweep_copy):
    rdir = _first_run(sweep_copy)
    (rdir / "config.yaml").write_text("model:\n  d_model: [64,\n")
    assert _runs(sweep_copy)[rdir.name]["status"] == "corrupt"
    assert "config.yaml" in _runs(sweep_copy)[rdir.name]["error"]


def test_a_damaged_evaluation_is_named_then_evaluated_again(tmp_path, one_thread):
    """``evaluate_run``'s cache is moelab's own: a damaged one is named in a warning and recomputed."""
    from moelab.config import RunConfig
    from moelab.eval.run import evaluate_run
    from moelab.train.trainer import train

    cfg = RunConfig.model_validate(STUDY["base"] | {"eval": {"limit": 2}, "train": {
        **STUDY["base"]["train"], "steps": 2, "eval_every": 2, "checkpoint_every": 2, "log_every": 1}})
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    first = evaluate_run(run, cfg, progress=False)
    _truncate(run / "eval" / "summary.json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = evaluate_run(run, cfg, progress=False)
    assert any("summary.json" in str(w.message) and "damaged" in str(w.message) for w in caught)
    assert again == first
    assert json.loads((run / "eval" / "summary.json").read_text()) == first

    _truncate(run / "train_summary.json")  # the trainer names a damaged summary of a finished run
    code, _, err = run_cli(["train", _write_config(tmp_path, cfg), "--out", run, "--quiet"], tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "train_summary.json: damaged" in err and "delete it" in err


def _write_config(d: Path, cfg) -> Path:
    from moelab.config import dump_yaml

    path = d / "run.yaml"
    path.write_text(dump_yaml(cfg))
    return path


def test_the_sweep_names_a_damaged_status_and_checks_that_run_again(sweep_copy):
    """Its own status file damaged: the sweep says which and queues that run again (training resumes
    from its last checkpoint; a finished evaluation is kept); the other run is skipped as done."""
    from moelab.config import load_study_config
    from moelab.study.plan import plan
    from moelab.study.sweep import SweepResult, _jobs_to_run

    damaged, other = sorted((sweep_copy / "runs").iterdir())
    _truncate(damaged / "status.json")
    study = load_study_config(sweep_copy / "study.yaml")
    feasible = [r for r in plan(study) if r.feasible]
    result = SweepResult(out=sweep_copy, planned=len(feasible), feasible=len(feasible))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jobs = _jobs_to_run(feasible, sweep_copy, False, result, study)
    assert [str(w.message) for w in caught if "was damaged" in str(w.message)] == [
        f"{damaged / 'status.json'} was damaged; checking {damaged.name} again (training resumes from its last "
        "checkpoint, a finished evaluation is kept)"]
    assert [j.run_id for j in jobs] == [damaged.name] and result.skipped == [other.name]
    assert json.loads((damaged / "status.json").read_text())["state"] == "pending"
