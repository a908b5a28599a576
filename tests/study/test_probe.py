"""The throughput probe: a real (short) measurement, its cache, and the plan's wall-time estimate."""

import json
import math

import pytest

from moelab.config import StudyConfig, validate
from moelab.study import probe
from moelab.study.plan import plan


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _study() -> StudyConfig:
    return validate(StudyConfig, {
        "name": "p", "budgets": [1e12], "head_dim": 16,
        "grid": {"d_model": [64], "num_experts": [1, 4], "top_k": [1, 2]},
        "base": {"data": {"seq_len": 32}, "train": {"batch_size": 4, "device": "cpu", "precision": "fp32"}},
    }, "study")


def test_measures_training_flops_per_second_on_cpu(monkeypatch):
    from moelab.config import ModelConfig

    tiny = ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=2, num_experts=4, top_k=2, max_seq_len=16)
    monkeypatch.setattr(probe, "probe_model_config", lambda device: (tiny, 2, 16))  # the real model, made small
    fps = probe.measure_flops_per_second("cpu", seconds=0.2, precision="fp32", min_steps=2)
    assert math.isfinite(fps) and 1e6 < fps < 1e14


def test_cache_is_keyed_and_reused(monkeypatch):
    calls = []

    def fake(device, seconds, *, precision):
        calls.append((device, precision))
        return 2e9 if precision == "fp32" else 3e9

    monkeypatch.setattr(probe, "measure_flops_per_second", fake)
    assert probe.cached_flops_per_second("cpu", precision="fp32") == 2e9
    assert probe.cached_flops_per_second("cpu", precision="fp32") == 2e9
    assert probe.cached_flops_per_second("cpu", precision="bf16") == 3e9
    assert calls == [("cpu", "fp32"), ("cpu", "bf16")]
    assert probe.cached_flops_per_second("cpu", precision="auto") == 2e9 and len(calls) == 2  # auto = fp32 on CPU
    cache = json.loads(probe.cache_path().read_text())
    assert len(cache) == 2 and all("cpu" in k and "torch" in k and "cores" in k for k in cache)
    assert probe.cached_flops_per_second("cpu", precision="fp32", refresh=True) == 2e9 and len(calls) == 3
    probe.cache_path().write_text("not json")  # a corrupt cache is just a miss
    assert probe.cached_flops_per_second("cpu", precision="fp32") == 2e9 and len(calls) == 4


def test_plan_estimates_wall_time_per_feasible_run(monkeypatch):
    monkeypatch.setattr(probe, "measure_flops_per_second", lambda device, seconds, *, precision: 1e9)
    study = _study()
    runs = plan(study)
    assert probe.estimate_plan(study, runs, probe=False) is None
    assert all(getattr(r, "est_seconds", None) is None for r in runs)
    assert probe.estimate_plan(study, runs) == 1e9
    for r in runs:
        if r.feasible:
            assert r.est_seconds == pytest.approx(r.train_flops / 1e9)
        else:
            assert getattr(r, "est_seconds", None) is None


def test_a_device_this_machine_lacks_gives_no_estimate():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    study = _study()
    study.base.train.device = "cuda"
    with pytest.raises(probe.ProbeUnavailable, match="not available"):
        probe.estimate_plan(study, plan(study))
