"""Resources: a run that cannot fit in memory is refused with the estimate before anything is written
or allocated; a full disk during checkpointing fails the run cleanly and keeps the last checkpoint."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import pytest
import torch
import yaml

from moelab import accounting
from moelab.config import RunConfig
from moelab.errors import UserError
from moelab.resources import (available_memory, check_fits, effective_model, estimate_training_memory, human_bytes,
                              memory_breakdown)

from rel_helpers import ENV, moelab, tiny_run

HUGE = tiny_run(model={"d_model": 65536, "n_heads": 512, "n_layers": 16, "num_experts": 64, "top_k": 2,
                       "max_seq_len": 4096},
                data={"seq_len": 4096}, train={"batch_size": 64, "device": "cpu"})


def test_the_estimate_counts_parameters_grads_adam_and_logits_exactly():
    cfg = RunConfig.model_validate(tiny_run(train={"batch_size": 8, "grad_accum": 2}))
    est = memory_breakdown(cfg)
    n = accounting.total_params(effective_model(cfg))
    assert (est.weights, est.grads, est.optimizer) == (4 * n, 4 * n, 8 * n)
    micro_tokens = 4 * cfg.data.seq_len  # batch 8 / grad_accum 2
    m = effective_model(cfg)  # fp32 fused head: grads of hidden states and head, one chunk of logits
    assert est.logits == 4 * (micro_tokens * m.d_model + m.vocab_size * m.d_model
                              + min(1 << 21, micro_tokens * m.vocab_size))
    assert estimate_training_memory(cfg) == est.total
    # FSDP shards the parameter-sized states; DDP does not
    fsdp = RunConfig.model_validate(tiny_run(train={"batch_size": 8, "distributed": "fsdp"}))
    assert memory_breakdown(fsdp, world=4).weights == -(-4 * n // 4)
    assert memory_breakdown(cfg, world=4).weights == 4 * n


@pytest.mark.parametrize("model", [
    {"num_experts": 1, "top_k": 1},  # dense
    {"num_experts": 8, "top_k": 2},
    {"d_model": 64, "num_experts": 16, "top_k": 4},
])
def test_the_activation_estimate_bounds_what_autograd_saves(model):
    """Oracle: the bytes autograd actually saves for the backward of one micro-batch of the trainer's
    objective (every tensor a ``saved_tensors_hooks`` pack sees, parameters excluded, storages
    counted once, the fused head's stored gradients included) plus one chunk of fp32 logits, the
    fused head's transient peak in fp32."""
    from moelab.model.transformer import MoETransformer
    from moelab.train.linear_ce import CHUNK_ELEMENTS
    from moelab.train.objective import micro_batch_losses

    cfg = RunConfig.model_validate(tiny_run(model=model))
    net = MoETransformer(effective_model(cfg)).train()
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    x_BT = torch.randint(0, net.cfg.vocab_size, (cfg.train.batch_size, cfg.data.seq_len))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        micro_batch_losses(net, x_BT, x_BT, net.cfg.top_k)
    measured = sum(saved.values()) + 4 * min(CHUNK_ELEMENTS, x_BT.numel() * net.cfg.vocab_size)
    est = memory_breakdown(cfg)
    assert 0.8 * measured <= est.activations + est.logits <= 2.5 * measured, (est, measured)


def test_check_fits_names_the_estimate():
    cfg = RunConfig.model_validate(tiny_run())
    need = estimate_training_memory(cfg)
    assert check_fits(cfg, torch.device("cpu"), available=need) == need
    with pytest.raises(UserError, match=r"needs an estimated .* \(weights .*, grads .*, Adam .*, activations .*, "
                                        r"logits .*\).* but only 1\.0 KiB is available on cpu"):
        check_fits(cfg, torch.device("cpu"), available=1024)
    have = available_memory(torch.device("cpu"))
    assert have is None or 0 < have < 2**50


def test_an_absurdly_large_model_is_refused_before_anything_is_written_or_allocated(tmp_path):
    cfg, out = tmp_path / "huge.yaml", tmp_path / "out"
    cfg.write_text(yaml.safe_dump(HUGE))
    started = time.monotonic()
    res = moelab("train", cfg, "--out", out, "--quiet")
    took = time.monotonic() - started
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    need = estimate_training_memory(RunConfig.model_validate(HUGE))
    assert f"needs an estimated {human_bytes(need)} of memory" in lines[0] and "available on cpu" in lines[0], lines[0]
    assert need > 100 * 2**40
    assert not out.exists()  # nothing written
    # nothing allocated: the child's peak resident memory stayed far below even one layer's experts
    peak_bytes = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    assert peak_bytes < 4 * 2**30, peak_bytes
    assert took < 120


DISK_FULL_AT_SECOND_CHECKPOINT = r"""
import errno, sys
import torch
from moelab.train import checkpoint
real_save, calls = torch.save, {"n": 0}
def save(obj, path, *a, **k):  # optim.pt of the second checkpoint hits a full disk
    calls["n"] += 1
    if calls["n"] == 2:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return real_save(obj, path, *a, **k)
checkpoint.torch.save = save
from moelab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_while_checkpointing_fails_cleanly_and_keeps_the_previous_checkpoint(tmp_path):
    cfg, run = tmp_path / "run.yaml", tmp_path / "run"
    cfg.write_text(yaml.safe_dump(tiny_run(train={"steps": 10, "checkpoint_every": 5, "eval_every": 10})))
    res = subprocess.run([sys.executable, "-c", DISK_FULL_AT_SECOND_CHECKPOINT, "train", str(cfg), "--out", str(run),
                          "--quiet"], capture_output=True, text=True, env=ENV, timeout=300)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "No space left on device" in lines[0] and "run the same command again" in lines[0]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "No space left" in status["message"] and status["step"] == 10
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-5"]  # no half-written step-10
    res = moelab("train", cfg, "--out", run, "--quiet")  # space is back: resume from step 5
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((run / "status.json").read_text())["state"] == "done"
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 10


def _limit_address_space(limit: int):
    def apply():  # in the child, before it execs: the limit is the child's alone
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def test_plan_paper_builds_nothing_that_does_not_fit_and_plans_within_1_gib(tmp_path):
    """The paper's grid (up to 100B-parameter models) plans under a 1 GiB address-space limit, in
    seconds: the throughput probe and the precision measurement are skipped for every run the
    trainer's estimate says cannot fit, and each such run says so. Before the check, the precision
    measurement built the paper's models (24 GB resident, then the OOM killer)."""
    # no cached probe (it really runs) and the precision measured as users get it (the suite fixes fp32)
    env = {**ENV, "XDG_CACHE_HOME": str(tmp_path / "cache"), "MOELAB_AUTO_PRECISION": "measure"}
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "moelab", "plan", "paper"], capture_output=True, text=True,
                         env=env, timeout=120, preexec_fn=_limit_address_space(2**30))
    took = time.monotonic() - started
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    notes = [ln for ln in res.stderr.splitlines() if "no time estimate: needs " in ln]
    assert len(notes) == 69, res.stderr[-2000:]  # every feasible run of the grid (72 points, 3 with k > E)
    assert all(" available" in ln for ln in notes) and "D1.25e11-d2048-E256-k16: no time estimate" in res.stderr
    assert took < 60, took


def test_the_precision_measurement_and_the_probe_check_memory_first(monkeypatch):
    from moelab.config import ModelConfig
    from moelab.resources import shortfall, step_memory
    from moelab.train.precision import resolve_precision

    big = ModelConfig(vocab_size=99584, d_model=2048, n_layers=16, n_heads=16, num_experts=256, top_k=2,
                      max_seq_len=4096)
    monkeypatch.setenv("MOELAB_AUTO_PRECISION", "measure")  # the suite fixes fp32; measure as users do
    choice = resolve_precision("auto", "cpu", big, batch=16, seq=4096)  # would build two 100B models
    assert choice.precision == "fp32" and "not measured" in choice.rule and "available" in choice.rule
    assert shortfall(step_memory(big, 16, 4096).total, "cpu").startswith("needs ")
    assert shortfall(1, "cpu") is None
    # The probe, with 1 MiB left under the process's address-space limit: refused before its model is built.
    code = ("import resource, sys\n"
            "from moelab.study.probe import ProbeUnavailable, measure_flops_per_second\n"
            # everything the probe imports, imported (and compiled: a fresh clone has no .pyc) before the limit
            "import torch, moelab.model.transformer, moelab.train.objective, moelab.train.optim\n"
            "import moelab.accounting, moelab.config, moelab.resources, moelab.train.precision\n"
            "vm = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:'))\n"
            "resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 20), resource.RLIM_INFINITY))\n"
            "try:\n"
            "    measure_flops_per_second('cpu', seconds=0.1)\n"
            "except ProbeUnavailable as err:\n"
            "    print(err); sys.exit(3)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert res.returncode == 3 and res.stdout.startswith("the throughput probe needs "), (res.stdout, res.stderr[-2000:])
