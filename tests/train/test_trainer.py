"""End-to-end training on a tiny model: outputs, learning, exact resume, divergence, config guard."""

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from moelab.config import load_run_config
from moelab.errors import UserError
from moelab.train.metrics import read_jsonl
from moelab.train.trainer import Diverged, train

_TIMING = ("tokens_per_s", "elapsed_s")


def _trajectory(run_dir):
    """Every metrics record without the wall-clock fields."""
    return [{k: v for k, v in r.items() if k not in _TIMING} for r in read_jsonl(run_dir / "metrics.jsonl")]


def _weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_cfg):
    """20 uninterrupted steps; shared by the tests that compare against it."""
    make_cfg = tiny_cfg
    run_dir = tmp_path_factory.mktemp("ref")
    summary = train(make_cfg(), run_dir, progress=False)
    return run_dir, summary


def test_outputs_and_learning(reference_run, tiny_cfg):
    make_cfg = tiny_cfg
    run_dir, summary = reference_run
    for name in ("config.yaml", "metrics.jsonl", "status.json", "train_summary.json", "tokenizer", "model"):
        assert (run_dir / name).exists(), name
    assert sorted(p.name for p in (run_dir / "model").iterdir()) >= ["model.safetensors", "moelab_model.json"]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done" and status["step"] == 20
    cfg = load_run_config(run_dir / "config.yaml")
    assert cfg.model.vocab_size == json.loads((run_dir / "model" / "moelab_model.json").read_text())["vocab_size"]
    records = read_jsonl(run_dir / "metrics.jsonl")
    train_rec = [r for r in records if r["kind"] == "train"]
    val_rec = [r for r in records if r["kind"] == "val"]
    assert [r["step"] for r in train_rec] == list(range(1, 21))
    assert [r["step"] for r in val_rec] == [10, 20]
    first = train_rec[0]
    for key in ("loss", "lm_loss", "aux_loss", "z_loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s"):
        assert key in first, key
    assert len(first["load_max_mean"]) == 2 and len(first["router_entropy"]) == 2
    assert first["lm_loss"] > train_rec[-1]["lm_loss"] + 0.5  # it learns
    assert val_rec[-1]["val_loss"] < first["lm_loss"]
    assert summary["steps"] == 20 and summary["tokens"] == 20 * 8 * 32
    assert summary["final_val_loss"] == val_rec[-1]["val_loss"]
    assert summary["final_train_loss"] == pytest.approx(sum(r["loss"] for r in train_rec[-2:]) / 2)
    # already done: returns the summary without touching anything
    mtime = (run_dir / "metrics.jsonl").stat().st_mtime_ns
    assert train(make_cfg(), run_dir, progress=False) == summary
    assert (run_dir / "metrics.jsonl").stat().st_mtime_ns == mtime


def test_exact_resume_after_crash(reference_run, tmp_path, tiny_cfg):
    """Stop at 13, lose the step-13 checkpoint (bit flip), resume: replays 11..13 from step 10."""
    make_cfg = tiny_cfg

    ref_dir, _ = reference_run
    part = train(make_cfg(), tmp_path, progress=False, max_steps_this_call=13)
    assert part == {"state": "running", "step": 13, "total_steps": 20}
    blob = tmp_path / "checkpoints" / "step-13" / "model.safetensors"
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="corrupt"):
        train(make_cfg(), tmp_path, progress=False)
    assert _trajectory(tmp_path) == _trajectory(ref_dir)
    ref, got = _weights(ref_dir), _weights(tmp_path)
    assert ref.keys() == got.keys()
    for name in ref:
        assert torch.equal(ref[name], got[name]), name


def test_resume_in_two_calls(reference_run, tmp_path, tiny_cfg):
    make_cfg = tiny_cfg

    ref_dir, _ = reference_run
    train(make_cfg(), tmp_path, progress=False, max_steps_this_call=10)
    train(make_cfg(), tmp_path, progress=False)
    assert _trajectory(tmp_path) == _trajectory(ref_dir)
    assert all(torch.equal(a, b) for a, b in zip(_weights(ref_dir).values(), _weights(tmp_path).values()))


def test_different_config_is_refused(reference_run, tiny_cfg):
    make_cfg = tiny_cfg

    run_dir, _ = reference_run
    with pytest.raises(UserError, match="different run.*train.lr"):
        train(make_cfg(train={"lr": 1e-3}), run_dir, progress=False)
    # operational fields and the name do not make a different run
    same = make_cfg(train={"keep_checkpoints": 5, "distributed": "none"})
    same.name = "renamed"
    assert train(same, run_dir, progress=False)["steps"] == 20


def test_divergence_is_reported(tmp_path, tiny_cfg):
    cfg = tiny_cfg(train={"lr": 1e8, "warmup_steps": 0, "steps": 10})
    with pytest.raises(Diverged) as info:
        train(cfg, tmp_path, progress=False)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "diverged" and status["step"] == info.value.step
    assert status["last_finite"]["step"] == info.value.step - 1
    assert not (tmp_path / "model").exists()
    with pytest.raises(Diverged):  # a diverged run is not retrained
        train(cfg, tmp_path, progress=False)


def test_grad_accum_matches_full_batch(tmp_path, tiny_cfg):
    """Two micro-batches of 4 give the same step as one batch of 8 (up to float rounding)."""
    a = train(tiny_cfg(train={"steps": 3, "grad_accum": 1}), tmp_path / "a", progress=False)
    b = train(tiny_cfg(train={"steps": 3, "grad_accum": 2}), tmp_path / "b", progress=False)
    la = [r["lm_loss"] for r in read_jsonl(tmp_path / "a" / "metrics.jsonl") if r["kind"] == "train"]
    lb = [r["lm_loss"] for r in read_jsonl(tmp_path / "b" / "metrics.jsonl") if r["kind"] == "train"]
    assert la == pytest.approx(lb, rel=1e-4)
    assert a["final_val_loss"] == pytest.approx(b["final_val_loss"], rel=1e-4)


def test_disk_full_during_checkpoint_marks_failed_and_resumes(tmp_path, tiny_cfg, monkeypatch):
    from moelab.train import checkpoint as ck

    cfg = tiny_cfg(train={"steps": 10, "checkpoint_every": 5})
    real_save = ck.torch.save
    calls = {"n": 0}

    def flaky_save(obj, path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the step-10 checkpoint's optim.pt
            raise OSError(28, "No space left on device")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(ck.torch, "save", flaky_save)
    with pytest.raises(OSError, match="No space"):
        train(cfg, tmp_path, progress=False)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["state"] == "failed" and "No space" in status["message"]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-5"]
    monkeypatch.undo()
    assert train(cfg, tmp_path, progress=True)["steps"] == 10  # resumes from step 5, with a progress bar
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "done"


def test_exact_resume_under_bf16_autocast(tmp_path, tiny_cfg):
    """The CPU bf16 fast paths (matmul attention, row-padded expert groups, clipping without the
    multiply by 1) keep a resumed run bit-identical to an uninterrupted one."""
    cfg = tiny_cfg(train={"precision": "bf16", "steps": 12})
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(cfg, whole, progress=False)
    assert train(cfg, parts, progress=False, max_steps_this_call=7)["step"] == 7
    train(cfg, parts, progress=False)
    assert _trajectory(parts) == _trajectory(whole)
    ref, got = _weights(whole), _weights(parts)
    assert ref.keys() == got.keys() and all(torch.equal(ref[n], got[n]) for n in ref)
