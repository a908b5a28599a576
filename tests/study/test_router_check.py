"""Every router of every preset learns from the task; a study whose router cannot is warned about
by `moelab plan` before anything trains (moelab.study.router_check)."""

import math
import subprocess
import sys

import pytest
import torch

from moelab.config import StudyConfig, list_presets, load_study_config, validate
from moelab.model.transformer import MoETransformer
from moelab.study.plan import plan
from moelab.study.router_check import MIN_ROUTER_GRADIENT, router_task_gradient, routers_without_task_gradient
from moelab.train.objective import micro_batch_losses

MOELAB = [sys.executable, "-m", "moelab"]
BUILD_UP_TO = 5_000_000  # parameters: the CPU presets' models are built whole; the paper's are not


def _layer_router_grads(model_cfg, seq_len: int = 32) -> list[float]:
    torch.manual_seed(0)
    model = MoETransformer(model_cfg)
    ids_BT = torch.randint(0, model_cfg.vocab_size, (2, min(seq_len, model_cfg.max_seq_len) + 1))
    micro_batch_losses(model, ids_BT[:, :-1], ids_BT[:, 1:], model_cfg.top_k).total(0.0, 0.0).backward()
    return [math.sqrt(float(layer.moe.router.weight.grad.square().sum())) for layer in model.layers]


@pytest.mark.parametrize("preset", list_presets())
def test_every_router_of_every_preset_gets_a_task_gradient(preset):
    study = load_study_config(preset)
    assert routers_without_task_gradient(study) == []
    runs = [r for r in plan(study) if r.feasible and r.config is not None and r.config.model.num_experts > 1]
    assert runs, preset
    seen = set()
    for run in runs:
        m = run.config.model
        key = m.model_dump_json()
        if key in seen:
            continue
        seen.add(key)
        if run.total_params <= BUILD_UP_TO:  # the grid point's own model, every layer
            grads = _layer_router_grads(m)
            assert min(grads) > MIN_ROUTER_GRADIENT, (run.run_id, grads)
        else:  # the same E, k and gate on a small model (the gate does not depend on size)
            assert router_task_gradient(m.num_experts, m.top_k, m.router_norm) > MIN_ROUTER_GRADIENT, run.run_id


def test_the_check_separates_a_learning_router_from_a_gate_of_one_by_orders_of_magnitude():
    for experts in (4, 16, 64):
        assert router_task_gradient(experts, 1, "renormalize") < MIN_ROUTER_GRADIENT / 100
        assert router_task_gradient(experts, 1, "auto") > MIN_ROUTER_GRADIENT * 100
        assert router_task_gradient(experts, 2, "renormalize") > MIN_ROUTER_GRADIENT * 100


def test_plan_warns_about_a_router_that_cannot_learn(tmp_path):
    study = tmp_path / "old.yaml"
    study.write_text("name: old\ntokens: [1.0e+5]\ngrid: {d_model: [32], num_experts: [1, 8], top_k: [1, 2]}\n"
                     "head_dim: 16\nbase: {model: {n_layers: 1, router_norm: renormalize}, data: {seq_len: 32}}\n")
    res = subprocess.run([*MOELAB, "plan", str(study), "--no-probe"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "no gradient from the task" in ln]
    assert len(lines) == 1 and "E=8 k=1" in lines[0] and lines[0].startswith("moelab: warning:"), res.stderr
    fixed = validate(StudyConfig, {"name": "new", "tokens": [1e5], "head_dim": 16,
                                   "grid": {"d_model": [32], "num_experts": [8], "top_k": [1, 2]}}, "study")
    assert routers_without_task_gradient(fixed) == []
