"""Studies of existing checkpoints (a study's ``models:``): planned from each ``config.json``, swept
(evaluated only, exactly once, also after a SIGKILL), reported and advised like trained runs; bad
entries refused before anything is written.

The checkpoints are tiny ``MixtralForCausalLM`` directories saved here by transformers with the seed
paper's config fields (RMSNorm eps 1e-5, rotary base 10,000, untied head, no biases) and a BPE
tokenizer trained on the study's small world.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

from moelab import accounting
from moelab.config import StudyConfig, validate
from moelab.errors import UserError
from moelab.study import store
from moelab.study.plan import plan
from moelab.study.sweep import sweep, sweep_status

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
WORLD = {"num_people": 30, "reasoning_train_items": 40, "reasoning_eval_items": 8, "knowledge_eval_items": 8}
EVAL = {"tasks": ["knowledge", "reasoning"], "limit": 3, "max_new_tokens": 8}
TOKENS = 2.0e6


@pytest.fixture(scope="module")
def tokenizer():
    from moelab.config import WorldConfig
    from moelab.data.tokenizer import train_tokenizer
    from moelab.data.world import build_world

    return train_tokenizer(build_world(WorldConfig(**WORLD)).documents(), vocab_size=320)


def make_mixtral(path: Path, tok, *, experts: int, top_k: int = 2, seed: int = 0) -> Path:
    """A tiny Hugging Face Mixtral directory: config.json, model.safetensors, tokenizer files."""
    from moelab.data.tokenizer import save_tokenizer

    torch.manual_seed(seed)
    cfg = MixtralConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, num_local_experts=experts, num_experts_per_tok=top_k, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False,
        max_position_embeddings=64, initializer_range=0.02, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = MixtralForCausalLM(cfg)
    assert not any(name.endswith(".bias") for name, _ in model.named_parameters())
    model.save_pretrained(path)
    save_tokenizer(tok, path)
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tokenizer):
    """Two checkpoints of one d_model and top-k differing in E, and a train log for the first."""
    root = tmp_path_factory.mktemp("ckpts")
    a = make_mixtral(root / "d32-E4-k2", tokenizer, experts=4, seed=1)
    b = make_mixtral(root / "d32-E8-k2", tokenizer, experts=8, seed=2)
    log = root / "loss.csv"
    log.write_text("step,tokens,train_loss,val_loss\n10,1000000,3.5,\n20,2000000,3.0,3.25\n")
    return a, b, log


def study_dict(models, **extra) -> dict:
    return {"name": "released", "models": models, "eval": EVAL, "base": {"data": {"world": WORLD}}} | extra


def imported_study(checkpoints) -> StudyConfig:
    a, b, log = checkpoints
    return validate(StudyConfig, study_dict([{"path": str(a), "tokens": TOKENS, "train_log": str(log)},
                                             {"path": str(b), "tokens": TOKENS}]), "study")


def moelab(capsys, *args) -> tuple[int, str, str]:
    """The CLI in this process: (exit code, stdout, stderr)."""
    from moelab.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------- planning


def test_plan_reads_each_config_and_counts_parameters_like_the_built_model(checkpoints, tmp_path, capsys):
    study = imported_study(checkpoints)
    runs = plan(study)
    assert [r.run_id for r in runs] == ["hf-d32-E4-k2", "hf-d32-E8-k2"]
    for run, path, experts in zip(runs, checkpoints[:2], (4, 8)):
        hf = MixtralForCausalLM.from_pretrained(path)
        total = sum(p.numel() for p in hf.parameters())
        # active: every weight but the E − k experts a token skips in each layer
        per_expert = sum(p.numel() for p in hf.model.layers[0].mlp.experts.parameters()) // experts
        active = total - 2 * (experts - 2) * per_expert
        assert run.feasible and run.imported and run.source == str(path)
        assert (run.d_model, run.num_experts, run.top_k) == (32, experts, 2)
        assert (run.total_params, run.active_params) == (total, active)
        assert run.name == accounting.model_name(run.config.model)  # the seed paper's names
        assert run.name.startswith(f"d32-E{experts}-k2-{accounting.human_count(total)}-A")
        assert run.tokens == int(TOKENS) and run.tpp == pytest.approx(TOKENS / total)
        assert run.train_flops == pytest.approx(6 * active * TOKENS) and run.budget == TOKENS
        assert run.steps == 0 and run.config.model.rope_theta == 10000.0 and run.config.model.rms_eps == 1e-5
        assert not run.config.model.tie_embeddings
    assert runs[0].train_log == str(checkpoints[2]) and runs[1].train_log is None
    assert runs[0].row()["origin"] == "imported" and runs[0].row()["source"] == str(checkpoints[0])

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study_dict([{"path": str(checkpoints[0]), "tokens": TOKENS}])))
    code, text, err = moelab(capsys, "plan", path, "--no-probe")
    assert code == 0, err
    assert "hf-d32-E4-k2" in text and "imported from" in text and "E=4, k=2" in text
    code, text, _ = moelab(capsys, "plan", path, "--json", "--no-probe")
    [row] = json.loads(text)
    assert row["origin"] == "imported" and row["total_params"] == runs[0].total_params and "est_seconds" not in row


def test_study_needs_a_grid_budget_or_models_and_eval_is_short_for_base_eval(checkpoints):
    a = str(checkpoints[0])
    with pytest.raises(UserError, match="or 'models'"):
        validate(StudyConfig, {"name": "x"}, "s")
    with pytest.raises(UserError, match="'grid' needs"):
        validate(StudyConfig, study_dict([{"path": a, "tokens": TOKENS}], grid={"d_model": [64]}), "s")
    with pytest.raises(UserError, match="the same checkpoint as models\\[0\\]"):
        validate(StudyConfig, study_dict([{"path": a, "tokens": TOKENS}, {"path": a, "tokens": 1e6}]), "s")
    with pytest.raises(UserError, match="once: 'eval' or 'base.eval'"):
        validate(StudyConfig, study_dict([{"path": a, "tokens": TOKENS}], base={"eval": EVAL}), "s")
    study = imported_study(checkpoints)
    assert study.base.eval.limit == 3
    rel = validate(StudyConfig, study_dict([{"path": "ckpts/x", "tokens": TOKENS}]), "s")
    assert rel.models[0].path == os.path.join(os.getcwd(), "ckpts", "x")  # relative: from the current directory
    again = validate(StudyConfig, yaml.safe_load(yaml.safe_dump(study.model_dump(mode="json"))), "saved")
    assert again == study  # a saved study (default grid written out) loads back the same


def test_run_ids_and_train_logs(tmp_path):
    from moelab.study.imported import log_records, read_train_log, run_ids

    assert run_ids(["/a/ckpt-final", "/b/ckpt-final", "/c/d512 E8"]) == ["hf-a-ckpt-final", "hf-b-ckpt-final",
                                                                         "hf-d512-E8"]
    assert run_ids(["/a/x/m", "/b/x/m"]) == ["hf-x-m-0", "hf-x-m-1"]
    log = tmp_path / "log.csv"
    log.write_text("Tokens,train/loss,lr\n100,4.0,0.1\n200,,0.1\n300,3.5,0.1\n")
    rows = read_train_log(log)
    assert [(r["tokens"], r["train_loss"], r["val_loss"]) for r in rows] == [(100, 4.0, None), (200, None, None),
                                                                             (300, 3.5, None)]
    assert log_records(rows) == [{"kind": "train", "step": None, "tokens": 100, "loss": 4.0},
                                 {"kind": "train", "step": None, "tokens": 300, "loss": 3.5}]
    log.write_text("step,accuracy\n1,0.5\n")
    with pytest.raises(UserError, match="needs a header with step or tokens and train_loss or val_loss"):
        read_train_log(log)


def _pickle_bomb(marker: Path) -> bytes:
    """Pickle bytes that create ``marker`` when unpickled: the test's proof nothing unpickled them."""
    class Bomb:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    return pickle.dumps(Bomb())


def test_bad_entries_are_refused_before_anything_is_written(checkpoints, tmp_path, capsys):
    a = checkpoints[0]
    llama = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2)).save_pretrained(llama)
    pickled, marker = tmp_path / "pickled", tmp_path / "unpickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((a / "config.json").read_text())
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (pickled / name).write_text((a / name).read_text())
    (pickled / "pytorch_model.bin").write_bytes(_pickle_bomb(marker))
    notok = tmp_path / "no-tokenizer"
    notok.mkdir()
    for name in ("config.json", "model.safetensors"):
        (notok / name).write_bytes((a / name).read_bytes())
    badlog = tmp_path / "bad.csv"
    badlog.write_text("step,train_loss\n1,abc\n")
    cases = [
        ({"path": str(tmp_path / "missing"), "tokens": TOKENS}, "models\\[0\\]: .*missing: no such directory"),
        ({"path": str(llama), "tokens": TOKENS}, "models\\[0\\]: .*model_type is 'llama'"),
        ({"path": str(pickled), "tokens": TOKENS}, "models\\[0\\]: .*only pickle weights \\(pytorch_model.bin\\)"),
        ({"path": str(notok), "tokens": TOKENS}, "models\\[0\\]: .*no tokenizer files"),
        ({"path": str(a), "tokens": -1.0}, "models.0.tokens: .*greater than 0"),
        ({"path": str(a), "tokens": TOKENS, "train_log": str(badlog)}, "line 2: train_loss is not a number"),
        ({"path": str(a), "tokens": TOKENS, "train_log": str(tmp_path / "nolog.csv")}, "nolog.csv: no such file"),
    ]
    for entry, message in cases:
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump(study_dict([entry])))
        out = tmp_path / "out"
        for argv in (("plan", path, "--no-probe"), ("sweep", path, "--out", out, "--quiet")):
            code, _, err = moelab(capsys, *argv)
            lines = err.strip().splitlines()
            assert code == 2 and len(lines) == 1, (entry, lines)
            assert re.search(message, lines[0]), (message, lines[0])
            assert not out.exists()
    assert not marker.exists(), "a pickle was unpickled"
    # a checkpoint inside the sweep's own output directory is refused too
    inside = tmp_path / "out2" / "ckpt"
    shutil.copytree(a, inside)
    with pytest.raises(UserError, match="holds the imported checkpoint"):
        sweep(validate(StudyConfig, study_dict([{"path": str(inside), "tokens": TOKENS}]), "s"),
              tmp_path / "out2", progress=False)
    assert list((tmp_path / "out2").iterdir()) == [inside]


# ---------------------------------------------------------------- the check: sweep, SIGKILL, resume, report, advise


# ``python PAUSE_SCRIPT moelab-args…``: the real CLI, except that the evaluation of the run named by
# MOELAB_PAUSE_RUN writes MOELAB_PAUSE_MARKER and sleeps once the model is loaded, so that the test can
# SIGKILL the sweep exactly there. A script file, not ``-c``: the sweep's spawned workers run its top
# level too (as ``__mp_main__``), which is where the evaluation happens.
PAUSE_SCRIPT = r'''
import os, sys, time
from pathlib import Path


def _install():
    target = os.environ.get("MOELAB_PAUSE_RUN")
    if not target:
        return
    from moelab.eval import gaps, run

    armed, evaluate_run, evaluate_model = [False], run.evaluate_run, gaps.evaluate_model

    def run_hook(run_dir, *a, **k):
        armed[0] = Path(run_dir).name == target
        return evaluate_run(run_dir, *a, **k)

    def model_hook(*a, **k):
        if armed[0]:
            Path(os.environ["MOELAB_PAUSE_MARKER"]).write_text(str(os.getpid()))
            time.sleep(600)
        return evaluate_model(*a, **k)

    run.evaluate_run, gaps.evaluate_model = run_hook, model_hook


_install()

if __name__ == "__main__":
    from moelab.cli import main

    sys.exit(main(sys.argv[1:]))
'''


def _alive(pid: int) -> bool:
    try:
        return "(zombie)" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _states(out):
    return {r["run_id"]: r["state"] for r in sweep_status(out)} if (out / "plan.json").exists() else {}


def test_imported_study_sweeps_once_through_a_sigkill_then_reports_and_advises(checkpoints, tmp_path, capsys):
    study = imported_study(checkpoints)
    first, second = [r.run_id for r in plan(study)]
    path, out = tmp_path / "study.yaml", tmp_path / "sweep"
    path.write_text(yaml.safe_dump(study.model_dump(mode="json")))
    script, marker = tmp_path / "pausable.py", tmp_path / "paused"
    script.write_text(PAUSE_SCRIPT)
    env = {**ENV, "MOELAB_PAUSE_RUN": second, "MOELAB_PAUSE_MARKER": str(marker)}
    proc = subprocess.Popen([sys.executable, str(script), "sweep", str(path), "--out", str(out), "--quiet",
                             "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    try:  # until the second model is being evaluated (its model loaded), the first one evaluated
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the sweep never reached the second evaluation"
            time.sleep(0.05)
        worker = int(marker.read_text())
        assert _states(out) == {first: "done", second: "running"}
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    for _ in range(100):  # the worker dies with the sweep (no orphan goes on writing)
        if not _alive(worker):
            break
        time.sleep(0.1)
    assert not _alive(worker)
    done, killed = first, second
    summary = store.run_dir(out, done) / "eval" / "summary.json"
    mtime = summary.stat().st_mtime_ns
    assert not (store.run_dir(out, killed) / "eval" / "summary.json").exists()

    result = sweep(study, out, progress=False)
    assert result.ok and sorted(result.done) == [first, second]
    assert result.skipped == [done] and result.executed == [killed]
    assert summary.stat().st_mtime_ns == mtime  # not evaluated again
    assert store.read_status(store.run_dir(out, killed))["message"] == "imported and evaluated"
    again = sweep(study, out, progress=False)
    assert again.executed == [] and sorted(again.skipped) == [first, second]

    # the run directory: read in place (no weights copied), like a trained run's
    rdir = store.run_dir(out, first)
    assert json.loads((rdir / "imported.json").read_text())["source"] == str(checkpoints[0])
    assert not list(rdir.rglob("*.safetensors")) and (rdir / "config.yaml").is_file()
    ts = json.loads((rdir / "train_summary.json").read_text())
    assert ts["train_loss"] == 3.0 and ts["val_loss"] == 3.25 and ts["origin"] == "imported"

    # `moelab eval` on the run directory gives the numbers the sweep stored
    code, text, err = moelab(capsys, "eval", "all", "--model", rdir, "--limit", 3, "--max-new-tokens", 8,
                             "--device", "cpu", "--json")
    assert code == 0, err[-2000:]
    direct, stored = json.loads(text), json.loads((rdir / "eval" / "summary.json").read_text())
    for key in ("task_loss/knowledge/heldout", "task_loss/reasoning/train", "accuracy/reasoning/heldout"):
        assert direct[key] == pytest.approx(stored[key], rel=1e-6), key
    assert direct["pretrain_train_loss"] == 3.0

    # the store: one row and one evaluation per model
    code, text, _ = moelab(capsys, "query", out, "SELECT run_id, status, origin, source, final_train_loss, tpp "
                                                "FROM runs ORDER BY run_id", "--json")
    rows = json.loads(text)
    assert [(r["run_id"], r["status"], r["origin"]) for r in rows] == [(first, "done", "imported"),
                                                                       (second, "done", "imported")]
    assert rows[0]["final_train_loss"] == 3.0 and rows[1]["final_train_loss"] is None
    _, dup = store.query(out, "SELECT run_id, key, count(*) c FROM evaluations GROUP BY ALL HAVING c > 1")
    assert dup == []
    _, [(n_log,)] = store.query(out, f"SELECT count(*) FROM train_metrics WHERE run_id = '{first}'")
    assert n_log == 3  # two train losses and one validation loss from the log

    code, _, err = moelab(capsys, "report", out, "--bootstrap", 50)
    assert code == 0, err[-2000:]
    page = (out / "report" / "index.html").read_text()
    assert "(imported)" in page and "without a <code>train_log</code>" in page and "d32-E8-k2" in page
    code, text, err = moelab(capsys, "advise", out, "--budget", 1e13, "--task-family", "reasoning",
                             "--bootstrap", 50, "--json")
    assert code == 0, err[-2000:]
    advice = json.loads(text)
    assert advice["recommendation"]["d_model"] == 32 and advice["recommendation"]["top_k"] == 2
    assert advice["nearest_budget"]["best_run_id"] in (first, second)


# ---------------------------------------------------------------- mixed studies, GRPO and test-time compute

POSTTRAIN = {"task": "reasoning", "steps": 1, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 4,
             "eval_every": 1, "eval_limit": 2, "checkpoint_every": 1, "lr": 1e-3, "device": "cpu"}
TTC = {"task": "reasoning", "samples": 2, "limit": 2, "max_new_tokens": 4}


def test_mixed_study_trains_the_grid_imports_the_rest_and_post_trains_both(checkpoints, tmp_path):
    data = study_dict([{"path": str(checkpoints[0]), "tokens": 1.0e5, "train_log": str(checkpoints[2])}],
                      budgets=[4e8], head_dim=16, grid={"d_model": [32], "num_experts": [4], "top_k": [2]},
                      posttrain=POSTTRAIN, ttc=TTC)
    data["eval"] = {"tasks": ["reasoning"], "limit": 2, "max_new_tokens": 4}
    data["base"] |= {"model": {"n_layers": 1, "max_seq_len": 32},
                     "data": {"seq_len": 32, "vocab_size": 320, "world": WORLD},
                     "train": {"batch_size": 4, "warmup_steps": 1, "eval_every": 10, "checkpoint_every": 10,
                               "log_every": 5, "eval_batches": 1, "precision": "fp32", "device": "cpu"}}
    study = validate(StudyConfig, data, "mixed")
    trained, imported = plan(study)
    assert not trained.imported and imported.imported and trained.run_id.startswith("C")
    assert imported.budget == pytest.approx(imported.train_flops)  # an iso-FLOP study: budgets are FLOPs
    out = tmp_path / "sweep"
    result = sweep(study, out, progress=False)
    assert result.ok and sorted(result.done) == sorted([trained.run_id, imported.run_id])
    for rid in result.done:
        rdir = store.run_dir(out, rid)
        assert (rdir / "grpo" / "eval" / "summary.json").is_file()
        assert json.loads((rdir / "ttc" / "reasoning-n2" / "ttc.json").read_text())["n"] == [1, 2]
    assert (store.run_dir(out, trained.run_id) / "model").is_dir()
    assert not (store.run_dir(out, imported.run_id) / "model").exists()  # evaluated in place, never trained
    _, rows = store.query(out, "SELECT run_id, origin, status, posttrain FROM runs ORDER BY run_id")
    assert rows == sorted([(trained.run_id, "trained", "done", None), (trained.run_id + "+grpo", "trained", "done", "grpo"),
                           (imported.run_id, "imported", "done", None),
                           (imported.run_id + "+grpo", "imported", "done", "grpo")])
    from moelab.analysis.report import build_report

    page = build_report(out, n_boot=50).read_text()
    assert "(imported)" in page and "without a <code>train_log</code>" not in page  # both have a pretraining loss
