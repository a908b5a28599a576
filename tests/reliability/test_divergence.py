"""A diverging run is a result, not a crash: ``moelab sweep`` with an absurd learning rate in its grid
marks that run ``diverged`` with its step and last finite metrics, finishes the others, and the
results store (and ``moelab status``) show it."""

from __future__ import annotations

import json
import math

import yaml

from moelab.study import store

from rel_helpers import moelab

STUDY = {
    "name": "diverge", "tokens": [4096], "head_dim": 16,
    "grid": {"d_model": [32], "num_experts": [4], "top_k": [2], "lr": [3e-3, 1e6]},
    "base": {
        "model": {"n_layers": 1, "max_seq_len": 32},
        "data": {"seq_len": 32, "vocab_size": 320,
                 "world": {"num_people": 12, "reasoning_train_items": 20, "reasoning_eval_items": 2,
                           "knowledge_eval_items": 2, "bio_paraphrases": 1}},
        "train": {"batch_size": 4, "warmup_steps": 0, "eval_every": 16, "checkpoint_every": 8, "log_every": 1,
                  "eval_batches": 1, "precision": "fp32", "device": "cpu"},
        "eval": {"tasks": ["knowledge"], "limit": 1, "max_new_tokens": 4},
    },
}


def test_a_diverging_run_is_marked_and_the_sweep_goes_on(tmp_path):
    study, out = tmp_path / "study.yaml", tmp_path / "sweep"
    study.write_text(yaml.safe_dump(STUDY))
    res = moelab("sweep", study, "--out", out, "--workers", "1", "--quiet", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(res.stdout)
    assert len(result["done"]) == 1 and len(result["diverged"]) == 1 and not result["failed"], result
    good, bad = result["done"][0], result["diverged"][0]
    assert "lr1e" in bad, bad

    status = store.read_status(store.run_dir(out, bad))
    step = status["step"]
    assert status["state"] == "diverged" and step >= 1 and "diverged at step" in status["message"]
    last = status["last_finite"]
    if step > 1:  # the last optimizer step that was still finite, with its metrics
        assert last["step"] == step - 1 and math.isfinite(last["loss"]) and math.isfinite(last["grad_norm"])
    assert not (store.run_dir(out, bad) / "model").exists()  # no final model from a diverged run
    assert (store.run_dir(out, good) / "eval" / "summary.json").is_file()

    _, rows = store.query(out, "SELECT run_id, status, diverged_step, last_finite_step, last_finite_loss "
                               "FROM runs ORDER BY run_id")
    by_id = {r[0]: r for r in rows}
    assert by_id[good][1:3] == ("done", None)
    assert by_id[bad][1] == "diverged" and by_id[bad][2] == step
    assert by_id[bad][3] == (last or {}).get("step") and by_id[bad][4] == (last or {}).get("loss")

    from moelab.study.sweep import sweep_status  # what `moelab status DIR` prints

    assert {r["run_id"]: r["state"] for r in sweep_status(out)} == {good: "done", bad: "diverged"}
    # (a re-run skips the diverged run rather than diverge again: tests/study/test_sweep.py)


def test_moelab_train_reports_divergence_in_one_line_with_exit_2(tmp_path):
    """``moelab train`` on a run that blows up: one line naming the step, exit 2, no traceback; the
    same command again says the same without training (the run's status.json records it)."""
    from rel_helpers import tiny_run

    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run(train={"lr": 1e6, "warmup_steps": 0, "steps": 12})))
    for _ in range(2):
        res = moelab("train", cfg, "--out", tmp_path / "out", "--quiet")
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
        assert len(lines) == 1 and lines[0].startswith("moelab: error: training diverged at step "), lines
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    assert status["state"] == "diverged" and f"step {status['step']}" in lines[0]
