"""A study's `posttrain:` (GRPO) and `ttc:` sections run for every trained model of a sweep,
land in the store as post-trained variants, and reach the report."""

import json

import duckdb
import pytest

from moelab.config import StudyConfig, validate
from moelab.errors import UserError
from moelab.study import store
from moelab.study.sweep import sweep

POSTTRAIN = {"task": "reasoning", "steps": 2, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 8,
             "eval_every": 2, "eval_limit": 2, "checkpoint_every": 2, "lr": 1e-3, "device": "cpu"}
TTC = {"task": "reasoning", "samples": 2, "limit": 2, "max_new_tokens": 8}


def study(**extra) -> StudyConfig:
    return validate(StudyConfig, {
        "name": "post", "budgets": [4e8], "head_dim": 16,
        "grid": {"d_model": [32], "num_experts": [1, 4], "top_k": [1]},
        "base": {
            "model": {"n_layers": 1, "max_seq_len": 32},
            "data": {"seq_len": 32, "vocab_size": 512,
                     "world": {"num_people": 20, "reasoning_train_items": 30, "reasoning_eval_items": 4,
                               "knowledge_eval_items": 4}},
            "train": {"batch_size": 4, "warmup_steps": 1, "eval_every": 10, "checkpoint_every": 10,
                      "log_every": 5, "eval_batches": 1, "precision": "fp32", "device": "cpu"},
            "eval": {"tasks": ["reasoning"], "limit": 2, "max_new_tokens": 8},
        },
    } | extra, "post")


def test_posttrain_and_ttc_sections_run_per_model(tmp_path):
    out = tmp_path / "sweep"
    result = sweep(study(posttrain=POSTTRAIN, ttc=TTC), out, progress=False)
    assert result.ok and len(result.done) == 2
    for rid in result.done:
        rdir = store.run_dir(out, rid)
        assert (rdir / "grpo" / "model" / "model.safetensors").is_file()
        assert (rdir / "grpo" / "eval" / "summary.json").is_file()
        ttc = json.loads((rdir / "ttc" / "reasoning-n2" / "ttc.json").read_text())
        assert ttc["n"] == [1, 2]
    con = duckdb.connect(str(out / "study.duckdb"), read_only=True)
    rows = con.execute('SELECT run_id, base_run_id, posttrain, status, "accuracy/reasoning/heldout" '
                       "FROM runs WHERE posttrain = 'grpo' ORDER BY run_id").fetchall()
    assert [(r[1], r[2], r[3]) for r in rows] == [(rid, "grpo", "done") for rid in sorted(result.done)]
    assert all(0.0 <= r[4] <= 1.0 for r in rows)
    # a re-run finds everything done: nothing is post-trained or sampled again
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/grpo/eval/summary.json")}
    sweep(study(posttrain=POSTTRAIN, ttc=TTC), out, progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_base_logging_reaches_every_run_and_its_post_training(tmp_path):
    """``base.logging`` logs each run's training and (inherited) its GRPO; logging is not part of the
    study's identity: the same DIR accepts the study with the logger turned off."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def logged(s):
        s.base.logging.tensorboard = True
        return s

    def tags(path):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        return set(acc.Tags()["scalars"])

    out = tmp_path / "sweep"
    one = {"grid": {"d_model": [32], "num_experts": [4], "top_k": [1]}}
    result = sweep(logged(study(posttrain=POSTTRAIN, **one)), out, progress=False)
    assert result.ok and len(result.done) == 1
    rdir = store.run_dir(out, result.done[0])
    assert {"train/loss", "val/val_loss"} <= tags(rdir / "logs" / "tensorboard")
    assert {"grpo/reward_mean", "eval/accuracy"} <= tags(rdir / "grpo" / "logs" / "tensorboard")
    assert sweep(study(posttrain=POSTTRAIN, **one), out, progress=False).ok  # not "a different study"


def test_bad_posttrain_option_stops_before_anything_is_written(tmp_path):
    with pytest.raises(UserError, match="group"):
        sweep(study(posttrain={"group_size": 1}), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
