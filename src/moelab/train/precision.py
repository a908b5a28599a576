"""What ``precision: auto`` trains in, on this device and at this model size.

    choice = resolve_precision("auto", "cpu", model_cfg, batch=16, seq=128)
    choice.precision   # "fp32" or "bf16"
    choice.rule        # one line saying why, logged in metrics.jsonl and train_summary.json

* ``fp32`` / ``bf16``: as asked.
* ``auto`` on CUDA: bf16 autocast.
* ``auto`` on CPU: the faster of fp32 and bf16 autocast *for this model, batch and sequence on
  this CPU*: both training steps are timed, alternated in this process (the real step:
  ``moelab.bench.train_step_fn``), and bf16 is chosen when it is at least ``MIN_GAIN`` faster.
  Whether bf16 wins depends on the CPU (native bf16 matmul support, kernel overheads) and on
  the size (measured 2026-12-02 on a Zen 5 EPYC, one core: bf16 ×1.3–1.6 faster at the
  presets' d64 models and ×2.2 at d128, but ×0.7 at d32 with 64 experts before the batched
  expert path; on a Zen 4 EPYC ×1.0–1.4 at d ≤ 64 and ×1.4–1.9 at d128), so it is measured,
  not assumed. Before the steps are timed, one bf16 and one fp32 matrix product are
  (:func:`bf16_matmul_speedup`, 0.4 s on a Zen 3 EPYC, once per CPU): a CPU without a fast bf16 kernel path
  (no AVX512_BF16 or AMX, e.g. a Zen 3 EPYC, where torch's bf16 product ran ×0.02–0.05 of fp32,
  and the step ×0.09–0.13, measured 2026-12-02) is fp32 without timing any step: autocast puts every
  product of the step in bf16, and where those run at a quarter of fp32's rate or less, the
  step is far from ×1.10 faster.
  The results are cached in
  ``~/.cache/moelab/precision.json`` (``$XDG_CACHE_HOME`` respected), keyed by CPU (model name,
  family, model, bf16 instruction sets), torch version, threads and the model's shape, batch and
  sequence, so each size is timed once per machine.
* ``MOELAB_AUTO_PRECISION=fp32`` in the environment makes CPU ``auto`` fp32 without measuring:
  the rule before 2026-12-02, under which the world was calibrated and docs/reproduction.md's
  studies trained (set it to retrain those models bit for bit). ``measure`` (the default) is
  also accepted; any other value is an error.

Both precisions pass the same parity tests (HF logits, dispatch vs loop reference, exact resume
in fp32 and bf16). A resumed run keeps the precision it started with (the trainer records it in
the run directory), whatever the cache says later.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import NamedTuple

ENV = "MOELAB_AUTO_PRECISION"
MIN_GAIN = 1.10  # bf16 must be this much faster to be chosen: below it, keep fp32's numerics
# Below this bf16/fp32 matmul-rate ratio the CPU has no fast bf16 path and the step is not timed.
# A wide margin on both sides: with native bf16 the products run well above fp32 (Zen 4: ≈ 220
# against ≈ 90 GFLOP/s at [2048, 256] × [256, 256]; Zen 5: bf16 peaks of 438–465 GFLOP/s), without
# it ×0.02–0.05 of fp32 (Zen 3); the step measurement decides everything in between.
# At the check's own shape (bf16_matmul_speedup) it read ×3.5–4.0 on a Zen 5 EPYC (2026-12-02);
# not yet timed on Zen 4.
MIN_MATMUL_GAIN = 0.25
CACHE_VERSION = 1


class PrecisionChoice(NamedTuple):
    precision: str  # "fp32" or "bf16"
    rule: str  # why, in one line
    bf16_speedup: float | None = None  # measured bf16 / fp32 training throughput, when measured


def measuring() -> bool:
    """Whether CPU 'auto' is chosen by measurement (the default) rather than fixed to fp32."""
    value = os.environ.get(ENV, "").strip().lower()
    if value not in ("", "measure", "fp32"):
        from moelab.errors import UserError

        raise UserError(f"{ENV}={os.environ[ENV]!r}: use 'measure' (the default) or 'fp32'")
    return value != "fp32"


def resolve_precision(precision: str, device_type: str, model_cfg=None, *, batch: int | None = None,
                      seq: int | None = None) -> PrecisionChoice:
    """The precision a run trains in (see the module docstring). ``model_cfg``, ``batch`` and
    ``seq`` are needed for the measured CPU choice; without them CPU 'auto' is fp32."""
    if precision != "auto":
        return PrecisionChoice(precision, f"precision: {precision} (as configured)")
    if device_type == "cuda":
        return PrecisionChoice("bf16", "auto: bf16 autocast on CUDA")
    if not measuring():
        return PrecisionChoice("fp32", f"auto: fp32 on CPU ({ENV}=fp32, the rule of the calibration)")
    if model_cfg is None or not batch or not seq:
        return PrecisionChoice("fp32", "auto: fp32 on CPU (not measured: several ranks, an older checkpoint, or no model size given)")
    short = measurement_shortfall(model_cfg, batch, seq)
    if short:
        return PrecisionChoice("fp32", f"auto: fp32 on CPU (not measured: timing both precisions at this size {short})")
    matmul = cached_bf16_matmul_speedup()
    if matmul < MIN_MATMUL_GAIN:
        return PrecisionChoice("fp32", f"auto: fp32 on CPU, bf16 matmul measured x{matmul:.2f} of fp32 on this "
                                       f"CPU (below x{MIN_MATMUL_GAIN}: no fast bf16 path; the step is not timed)")
    speedup = cached_bf16_speedup(model_cfg, batch, seq)
    chosen = "bf16" if speedup >= MIN_GAIN else "fp32"
    return PrecisionChoice(chosen, f"auto: {chosen} on CPU, bf16 measured x{speedup:.2f} "
                                   f"of fp32 at this size (bf16 needs >= x{MIN_GAIN:.2f})", round(speedup, 3))


def measurement_shortfall(model_cfg, batch: int, seq: int) -> str | None:
    """Why the bf16/fp32 step timing cannot run here, or None: it builds two models of this size
    (one per precision) and trains each a step, so it needs twice the training estimate of
    :mod:`moelab.resources`; a planned model far larger than the machine must not be built."""
    from moelab.resources import shortfall, step_memory

    return shortfall(2 * step_memory(model_cfg, batch, seq).total, "cpu")


def cpu_id() -> str:
    """The CPU's model name, family, model and bf16 instruction sets from /proc/cpuinfo: VMs
    often report only "AMD EPYC", and Zen 4 (family 25) and Zen 5 (family 26) differ here."""
    from moelab.bench import cpu_model

    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("cpu family", "model", "flags") and key not in fields:
                    fields[key] = value.strip()
                if not line.strip() and fields:
                    break  # the first processor is enough
    except OSError:
        pass
    flags = [f for f in ("avx512_bf16", "amx_bf16") if f in fields.get("flags", "").split()]
    family, model = fields.get("cpu family", "?"), fields.get("model", "?")
    return " ".join([cpu_model(), f"family {family}", f"model {model}", *flags])


def machine_key() -> str:
    """What a measurement depends on besides the model: CPU, torch version, threads."""
    import torch

    return f"v{CACHE_VERSION}|{cpu_id()}|torch {torch.__version__}|{torch.get_num_threads()} threads"


def matmul_cache_key() -> str:
    return f"{machine_key()}|matmul"


def cache_key(model_cfg, batch: int, seq: int) -> str:
    m = model_cfg
    shape = (f"d{m.d_model} L{m.n_layers} H{m.n_heads}/{m.kv_heads} E{m.num_experts} k{m.top_k} "
             f"F{m.ffn_hidden} V{m.vocab_size} tied{int(m.tie_embeddings)} B{batch} T{seq}")
    return f"{machine_key()}|{shape}"


def cache_file():
    from moelab.study.probe import cache_path

    return cache_path().with_name("precision.json")


def cached_bf16_speedup(model_cfg, batch: int, seq: int, *, refresh: bool = False) -> float:
    """:func:`measure_bf16_speedup`, cached per machine and size (a damaged cache is re-measured)."""
    return _cached(cache_key(model_cfg, batch, seq), lambda: measure_bf16_speedup(model_cfg, batch, seq), refresh)


def cached_bf16_matmul_speedup(*, refresh: bool = False) -> float:
    """:func:`bf16_matmul_speedup`, cached per machine."""
    return _cached(matmul_cache_key(), bf16_matmul_speedup, refresh)


def _cached(key: str, measure, refresh: bool) -> float:
    from moelab.atomic import atomic_write_json

    path = cache_file()
    try:
        cache = json.loads(path.read_text())
        assert isinstance(cache, dict)
    except (OSError, ValueError, AssertionError):
        cache = {}
    hit = cache.get(key)
    if isinstance(hit, dict) and isinstance(hit.get("bf16_speedup"), (int, float)) and not refresh:
        return float(hit["bf16_speedup"])
    speedup = measure()
    cache[key] = {"bf16_speedup": speedup, "measured": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, cache)
    except OSError:
        pass  # a read-only home: the choice still holds for this run
    return speedup


def measure_bf16_speedup(model_cfg, batch: int, seq: int, *, repeats: int = 5, warmup: int = 3,
                         max_seconds: float = 20.0) -> float:
    """bf16-autocast over fp32 training-step throughput of ``model_cfg`` at ``batch × seq`` on
    CPU: the real step on random tokens, the two precisions alternated so machine load hits
    both, medians of ``repeats`` after ``warmup`` untimed steps each (fewer repeats when one
    pair of steps is slow, so the measurement stays under about ``max_seconds``)."""
    import torch

    from moelab import bench

    device = torch.device("cpu")
    cfg = model_cfg if model_cfg.max_seq_len >= seq else model_cfg.model_copy(update={"max_seq_len": seq})
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=gen)
    steps = {}
    for prec in ("fp32", "bf16"):
        model = bench.build_model(cfg, device, seed=0)
        steps[prec] = bench.train_step_fn(model, (ids[:, :-1], ids[:, 1:]), device, prec)
    t0 = time.perf_counter()
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    per_pair = (time.perf_counter() - t0) / max(warmup, 1)
    repeats = max(2, min(repeats, int(max_seconds / max(per_pair, 1e-6))))
    seconds = {prec: [] for prec in steps}
    for _ in range(repeats):
        for prec, fn in steps.items():
            t = time.perf_counter()
            fn()
            seconds[prec].append(time.perf_counter() - t)
    return statistics.median(seconds["fp32"]) / statistics.median(seconds["bf16"])


def bf16_matmul_speedup(*, rows: int = 512, width: int = 256, seconds: float = 0.05) -> float:
    """bf16 over fp32 rate of one ``[rows, width] × [width, width]`` product on CPU, the two
    alternated after a warm-up, medians (≈ 0.1 s in all; ≈ 0.5 s where bf16 is slow). Large
    enough that the kernels' rate, not their per-call cost, is timed. It tells whether the CPU
    has a fast bf16 kernel path at all, not how a model's step compares."""
    import torch

    gen = torch.Generator().manual_seed(0)
    x = {"fp32": torch.randn(rows, width, generator=gen)}
    w = {"fp32": torch.randn(width, width, generator=gen)}
    x["bf16"], w["bf16"] = x["fp32"].bfloat16(), w["fp32"].bfloat16()
    seconds_per: dict[str, list[float]] = {prec: [] for prec in x}
    for _ in range(2):  # warm-up: the kernels' first calls (oneDNN compiles them)
        for prec in x:
            x[prec] @ w[prec]
    deadline = time.perf_counter() + seconds
    while len(seconds_per["fp32"]) < 5 or (time.perf_counter() < deadline and len(seconds_per["fp32"]) < 50):
        for prec in x:
            t = time.perf_counter()
            x[prec] @ w[prec]
            seconds_per[prec].append(time.perf_counter() - t)
    return statistics.median(seconds_per["fp32"]) / statistics.median(seconds_per["bf16"])
