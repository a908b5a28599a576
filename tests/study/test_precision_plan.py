"""Precision fixed when a study is planned (issue 25, item 9): recorded in plan.json / demo.json,
used by every re-run and resume instead of a new measurement."""

import json

import yaml

from moelab.study import store
from moelab.study.plan import plan
from moelab.study.precision_plan import fix_precisions, recorded_precisions
from moelab.study.sweep import sweep

from tests.study.test_sweep import tiny_study


def _auto_study():
    study = tiny_study()
    study.base.train.precision = "auto"
    return study


def test_recorded_choice_wins_then_configured_then_resolved(tmp_path, monkeypatch):
    monkeypatch.setenv("MOELAB_AUTO_PRECISION", "fp32")  # the unmeasured rule: deterministic here
    runs = [r for r in plan(_auto_study()) if r.feasible]
    first, second = runs
    chosen = fix_precisions(runs, {first.run_id: {"precision": "bf16", "precision_rule": "planned: earlier"}},
                            lambda rid: tmp_path / rid)
    assert chosen[first.run_id] == {"precision": "bf16", "precision_rule": "planned: earlier"}
    assert first.config.train.precision == "bf16"  # the run trains what was recorded, not a new choice
    assert chosen[second.run_id]["precision"] == "fp32" and second.config.train.precision == "fp32"
    assert chosen[second.run_id]["precision_rule"].startswith("planned: auto: fp32 on CPU")

    configured = [r for r in plan(tiny_study()) if r.feasible]  # tiny_study names fp32
    assert set(v["precision_rule"] for v in fix_precisions(configured, {}, lambda rid: tmp_path / rid).values()) \
        == {"precision: fp32 (as configured)"}


def test_a_started_run_without_a_record_keeps_its_checkpoints_precision(tmp_path, monkeypatch):
    monkeypatch.setenv("MOELAB_AUTO_PRECISION", "fp32")
    runs = [r for r in plan(_auto_study()) if r.feasible]
    (tmp_path / runs[0].run_id / "checkpoints" / "step-5").mkdir(parents=True)
    chosen = fix_precisions(runs, {}, lambda rid: tmp_path / rid)
    assert chosen[runs[0].run_id]["precision"] == "auto" and runs[0].config.train.precision == "auto"
    assert chosen[runs[1].run_id]["precision"] == "fp32"


def test_recorded_precisions_reads_only_real_choices():
    rows = [{"run_id": "a", "precision": "bf16", "precision_rule": "r"}, {"run_id": "b", "precision": "auto"},
            {"run_id": "c"}, "garbage", {"precision": "fp32"}]
    assert recorded_precisions(rows) == {"a": {"precision": "bf16", "precision_rule": "r"}}


def test_sweep_records_the_choice_and_a_rerun_keeps_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MOELAB_AUTO_PRECISION", "fp32")
    study, out = _auto_study(), tmp_path / "sweep"
    sweep(study, out, progress=False)
    rows = {r["run_id"]: r for r in json.loads((out / store.PLAN_FILE).read_text())["runs"]}
    for rid, row in rows.items():
        assert row["precision"] == "fp32" and row["config"]["train"]["precision"] == "fp32"
        saved = yaml.safe_load((store.run_dir(out, rid) / "config.yaml").read_text())
        assert saved["train"]["precision"] == "fp32"  # the run itself was told, not left to 'auto'
        assert json.loads((store.run_dir(out, rid) / "train_summary.json").read_text())["precision"] == "fp32"

    # Another machine (here: the measuring rule) re-running the folder reads the record back.
    monkeypatch.setenv("MOELAB_AUTO_PRECISION", "measure")
    plan_path = out / store.PLAN_FILE
    data = json.loads(plan_path.read_text())
    data["runs"][0]["precision_rule"] = "planned: recorded on the first machine"
    plan_path.write_text(json.dumps(data))
    result = sweep(study, out, progress=False)
    assert result.executed == []  # nothing retrained
    again = json.loads(plan_path.read_text())["runs"]
    assert again[0]["precision_rule"] == "planned: recorded on the first machine"
    assert [r["precision"] for r in again if r["feasible"]] == ["fp32", "fp32"]
