"""Throughput probe: this machine's achieved training FLOP/s, for the planner's wall-time estimate.

    fps = measure_flops_per_second("cpu", seconds=3)       # 6·N_active·tokens / s
    add_estimates(runs, fps)                                # run.est_seconds = run.train_flops / fps

The probe trains a small MoE (the real ``MoETransformer``, the real AdamW from
``build_optimizer``, CE + the router aux losses) on random tokens for a few seconds and
counts FLOPs with the same convention as the planner (``accounting.train_flops_per_token``),
so ``train_flops / fps`` is a wall-time estimate. It is rough: small models reach a lower
FLOP/s than large ones, and evaluation time is not included. The result is cached in
``~/.cache/moelab/probe.json`` (``$XDG_CACHE_HOME`` respected) keyed by device, torch
version, core count and precision.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

CACHE_VERSION = 1


def cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "moelab" / "probe.json"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cache_key(device: str, precision: str) -> str:
    import torch

    name = device
    if device.startswith("cuda") and torch.cuda.is_available():
        name = f"{device}:{torch.cuda.get_device_name(torch.device(device))}"
    return f"v{CACHE_VERSION}|{name}|torch {torch.__version__}|{_cores()} cores|{torch.get_num_threads()} threads|{precision}"


def probe_model_config(device: str):
    """The probe's model: small on CPU, Mixtral-like proportions on a GPU."""
    from moelab.config import ModelConfig

    if device.startswith("cuda"):
        return ModelConfig(vocab_size=32768, d_model=512, n_layers=8, n_heads=8, num_experts=8, top_k=2,
                           max_seq_len=512), 16, 512
    return ModelConfig(vocab_size=2048, d_model=128, n_layers=4, n_heads=4, num_experts=8, top_k=2,
                       max_seq_len=128), 4, 128


class ProbeUnavailable(Exception):
    """The probe cannot run here (e.g. the study asks for CUDA on a machine without it)."""


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ProbeUnavailable(f"device {device!r} is not available on this machine")
    return device


def resolve_precision(precision: str, device: str, model_cfg=None, *, batch: int | None = None,
                      seq: int | None = None) -> str:
    """The trainer's rule (:func:`moelab.train.precision.resolve_precision`): 'auto' is bf16
    autocast on CUDA; on CPU, with a model given, whichever trains that model faster here
    (measured, cached), else fp32 (and always fp32 with ``MOELAB_AUTO_PRECISION=fp32``)."""
    from moelab.train.precision import resolve_precision as rule

    device_type = "cuda" if device.startswith("cuda") else device
    return rule(precision, device_type, model_cfg, batch=batch, seq=seq).precision


def measure_flops_per_second(device: str = "cpu", seconds: float = 3.0, *, precision: str = "auto",
                             min_steps: int = 3, warmup_steps: int = 3) -> float:
    """Train the probe model on random tokens for about ``seconds``; return 6·N_active·tokens/s."""
    import torch

    from moelab import accounting
    from moelab.config import TrainConfig
    from moelab.model.transformer import MoETransformer
    from moelab.resources import shortfall, step_memory
    from moelab.train.objective import micro_batch_losses
    from moelab.train.optim import build_optimizer

    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    cfg, batch, seq = probe_model_config(device)
    short = shortfall(step_memory(cfg, batch, seq).total, device)  # before the probe model exists
    if short:
        raise ProbeUnavailable(f"the throughput probe {short}")
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    model = MoETransformer(cfg).to(dev)
    model.train()
    opt = build_optimizer(model, TrainConfig(lr=1e-3, precision=precision))
    tokens_BT = torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=gen).to(dev)
    x_BT, y_BT = tokens_BT[:, :-1], tokens_BT[:, 1:]
    bf16 = precision == "bf16"

    def step() -> None:
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16):
            losses = micro_batch_losses(model, x_BT, y_BT, cfg.top_k)
        losses.total(1e-2, 1e-3).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    # Warm-up: allocations and kernel selection (oneDNN JIT-compiles CPU kernels per shape; the
    # first few steps can be 100x slower than the rest, even for a tiny model).
    for _ in range(warmup_steps):
        step()
    sync()
    steps, t0 = 0, time.perf_counter()
    while steps < min_steps or time.perf_counter() - t0 < seconds:
        step()
        steps += 1
        if steps % 4 == 0:
            sync()
    sync()
    elapsed = time.perf_counter() - t0
    return accounting.train_flops_per_token(cfg) * batch * seq * steps / elapsed


def cached_flops_per_second(device: str = "cpu", *, precision: str = "auto", seconds: float = 3.0,
                            refresh: bool = False) -> float:
    """``measure_flops_per_second`` through the on-disk cache."""
    from moelab.atomic import atomic_write_json

    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    key = cache_key(device, precision)
    path = cache_path()
    try:
        cache = json.loads(path.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    hit = cache.get(key)
    if not refresh and isinstance(hit, dict) and isinstance(hit.get("flops_per_s"), (int, float)) \
            and hit["flops_per_s"] > 0:
        return float(hit["flops_per_s"])
    fps = measure_flops_per_second(device, seconds, precision=precision)
    cache[key] = {"flops_per_s": fps, "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": seconds}
    try:
        atomic_write_json(path, cache)
    except OSError:
        pass  # a read-only home is no reason to fail a plan
    return fps


def add_estimates(runs, flops_per_s: float) -> None:
    """Set ``est_seconds`` (training wall time) on every feasible planned run trained here."""
    from moelab.study.plan import estimated_seconds

    for run in runs:
        if run.feasible and not getattr(run, "imported", False):  # imported models are not trained
            run.est_seconds = estimated_seconds(run, flops_per_s)


def _too_big_here(run, device: str) -> bool:
    """Whether ``run`` cannot train on this machine by the trainer's own memory estimate
    (:func:`moelab.resources.check_fits`); such a run gets ``est_note`` instead of a time, and
    nothing of its size is built (the precision measurement would build it twice)."""
    from moelab.resources import estimate_training_memory, shortfall

    if not run.feasible or getattr(run, "imported", False) or run.config is None:
        return False
    short = shortfall(estimate_training_memory(run.config, device_type=device.split(":")[0]), device)
    if short:
        run.est_seconds, run.est_note = None, f"no time estimate: {short}"
    return bool(short)


def estimate_plan(study, runs, *, probe: bool = True, refresh: bool = False) -> float | None:
    """Probe (or read the cache; ``refresh`` measures again) for the study's device and precision
    and annotate ``runs``; returns the FLOP/s used, or None when ``probe`` is off. Raises
    :class:`ProbeUnavailable` when the study's device is not on this machine."""
    if not probe or not any(r.feasible and not getattr(r, "imported", False) for r in runs):
        return None  # nothing to train here: no probe
    t = study.base.train
    fps = cached_flops_per_second(t.device, precision=t.precision, refresh=refresh)
    device = resolve_device(t.device)
    runs = [r for r in runs if not _too_big_here(r, device)]  # the rest get no estimate, and say why
    add_estimates(runs, fps)
    from moelab.resources import effective_model
    from moelab.train.precision import measuring

    if t.precision == "auto" and device == "cpu" and measuring():
        # The trainer picks each run's precision by measurement: estimate each run at its own.
        by_precision = {"fp32": [], "bf16": []}
        for run in runs:
            if run.feasible and not getattr(run, "imported", False) and run.config is not None:
                c = run.config
                micro_batch = c.train.batch_size // c.train.grad_accum
                chosen = resolve_precision("auto", device, effective_model(c), batch=micro_batch, seq=c.data.seq_len)
                run.est_precision = chosen
                by_precision[chosen].append(run)
        for prec, chosen_runs in by_precision.items():
            if chosen_runs:
                add_estimates(chosen_runs, cached_flops_per_second(t.device, precision=prec, refresh=refresh))
    return fps
