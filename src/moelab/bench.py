"""Throughput benchmarks: ``moelab bench train|score|generate``.

    moelab bench train --json                       # the reference configuration (below), fp32
    moelab bench generate --dtype bf16 --threads 1  # batch 8 x 128 new tokens, KV cache
    moelab bench score --d-model 128 --experts 8 --seq 128

Defaults are the issue-7 reference configuration: d_model 256, 4 layers, 4 heads, 16 experts,
top-2, expert width 512, vocabulary 8192, sequence 256, batch 8 (random weights and tokens:
throughput does not depend on what the model has learned, only on how balanced routing is).

What is timed (each a median of ``--repeats`` runs after ``--warmup`` untimed ones):

* ``train``: one optimizer step exactly as ``moelab.train.trainer`` takes it — autocast forward,
  cross-entropy + load-balancing + z-loss, backward, gradient clipping, fused AdamW.
* ``score``: task-loss scoring through ``moelab.eval.taskloss.sequence_nll`` on ``batch`` items
  whose prompt and answer each take half of ``seq`` (one forward, answer logits only).
* ``generate``: ``moelab.model.generate`` greedy decoding of ``batch`` prompts of ``--prompt-len``
  tokens for ``--new-tokens`` tokens (no EOS, so every row runs to the end).

Figures (conventions of :mod:`moelab.accounting`, attention-score FLOPs not counted):

* ``tokens_per_s``: trained / scored (input) / generated (new) tokens per second.
* ``model_flops_per_s``: 6·N_active per trained token, 2·N_active per token run through the
  model when scoring or generating (prompt tokens included; only decode work counts as
  ``tokens_per_s`` for generation).
* ``mfu``: model FLOP/s over the peak matmul rate measured on the spot: the best of 5 square
  matmuls (2048 on CPU, 8192 on CUDA) of the same dtype, device and thread count, timed in this
  process just before the benchmark.
* ``peak_memory_bytes``: CUDA: ``torch.cuda.max_memory_allocated`` during the timed runs.
  CPU: the process's resident high-water mark (``ru_maxrss``, everything the process ever held,
  Python and torch included) and ``memory_delta_bytes``, its rise over the resident size before
  the model was built (a lower bound of the benchmark's own peak if the process peaked earlier).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass, replace
from typing import Callable

import torch

from moelab import accounting
from moelab.config import ModelConfig, TrainConfig, validate
from moelab.errors import UserError

from moelab.bench_cli import MODES, REFERENCE  # noqa: F401  (re-exported)


@dataclass
class BenchSpec:
    mode: str
    cfg: ModelConfig
    batch: int = 8
    seq: int = 256
    new_tokens: int = 128
    prompt_len: int = 32
    dtype: str = "fp32"  # "fp32" or "bf16" (autocast over fp32 master weights)
    compile: bool = False
    threads: int | None = None
    repeats: int = 3
    warmup: int | None = None  # None: default_warmup(mode)
    device: str = "auto"
    seed: int = 0


# ---------------------------------------------------------------- measuring


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here")
    return dev


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: str):
    """bf16: autocast over fp32 weights (the trainer's ``precision: bf16``); fp32: nothing."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def default_warmup(mode: str) -> int:
    """Untimed runs before timing. Training needs several: on CPU under bf16, oneDNN compiles a
    kernel for each new expert group size it meets (see ``moelab.model.moe.dispatch``), so the
    first steps of a run are slower than the steady state a long training run sees."""
    return 10 if mode == "train" else 1


def time_runs(fn: Callable[[], object], device: torch.device, *, repeats: int, warmup: int) -> list[float]:
    """Wall seconds of ``repeats`` calls after ``warmup`` untimed ones, synchronising around each."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - t0)
    return seconds


def peak_matmul_flops(device: torch.device, dtype: str, *, size: int | None = None, repeats: int = 5) -> float:
    """Best FLOP/s of ``repeats`` ``size``-square matmuls in ``dtype`` (2·size³ FLOPs each).

    The best, not the median: a peak is what the machine can do, and on a shared machine a
    median would count other processes' load against the peak and inflate MFU. The same thread
    count as the benchmark is in force, so MFU compares like with like.
    """
    size = size or (8192 if device.type == "cuda" else 2048)
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=torch_dtype, generator=gen)
    b = torch.randn(size, size, device=device, dtype=torch_dtype, generator=gen)
    seconds = time_runs(lambda: torch.mm(a, b), device, repeats=repeats, warmup=2)
    return 2.0 * size**3 / min(seconds)


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


def _maxrss_bytes() -> int:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib if sys.platform == "darwin" else kib * 1024  # Linux reports KiB, macOS bytes


# ---------------------------------------------------------------- the three workloads


def build_model(cfg: ModelConfig, device: torch.device, *, seed: int = 0, compile: bool = False):
    from moelab.model.transformer import MoETransformer, maybe_compile

    torch.manual_seed(seed)
    model = MoETransformer(cfg).to(device)
    return maybe_compile(model, compile)


def train_step_fn(model, batch_BT: tuple[torch.Tensor, torch.Tensor], device: torch.device, dtype: str,
                  train_cfg: TrainConfig | None = None) -> Callable[[], float]:
    """One trainer-identical optimizer step on a fixed batch; returns the loss (one host sync)."""
    from moelab.train.objective import micro_batch_losses
    from moelab.train.optim import build_optimizer, clip_grad_norm_

    t = train_cfg or TrainConfig(lr=1e-5)
    opt = build_optimizer(model, t)
    x_BT, y_BT = batch_BT
    top_k = model.cfg.top_k
    model.train()

    def step() -> float:
        with autocast(device, dtype):
            loss = micro_batch_losses(model, x_BT, y_BT, top_k).total(t.aux_loss_coef, t.z_loss_coef, t.router_loss_layers)
        loss.backward()
        gn = clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return torch.stack([loss.detach(), gn]).tolist()[0]

    return step


def score_items(spec: BenchSpec, vocab: int) -> tuple[list[list[int]], list[list[int]]]:
    """``batch`` (prompt, answer) id lists whose inputs are ``seq`` tokens, split half and half."""
    gen = torch.Generator().manual_seed(spec.seed + 1)
    ids = torch.randint(3, vocab, (spec.batch, spec.seq + 1), generator=gen).tolist()
    cut = (spec.seq + 1) // 2
    return [row[:cut] for row in ids], [row[cut:] for row in ids]


def generate_prompts(spec: BenchSpec, vocab: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(spec.seed + 2)
    return torch.randint(3, vocab, (spec.batch, spec.prompt_len), generator=gen).tolist()


def run_bench(spec: BenchSpec) -> dict:
    """Time one workload; returns the JSON-able result (see the module docstring)."""
    if spec.mode not in MODES:
        raise UserError(f"bench: unknown mode '{spec.mode}' (known: {', '.join(MODES)})")
    if spec.dtype not in ("fp32", "bf16"):
        raise UserError(f"--dtype: must be fp32 or bf16, got '{spec.dtype}'")
    for name in ("batch", "seq", "new_tokens", "prompt_len", "repeats"):
        if getattr(spec, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')}: must be positive, got {getattr(spec, name)}")
    if spec.warmup is None:
        spec = replace(spec, warmup=default_warmup(spec.mode))
    if spec.warmup < 0:
        raise UserError(f"--warmup: must be >= 0, got {spec.warmup}")
    device = resolve_device(spec.device)
    if spec.threads is not None:
        if spec.threads <= 0:
            raise UserError(f"--threads: must be positive, got {spec.threads}")
        torch.set_num_threads(spec.threads)
    cfg = spec.cfg
    context = spec.prompt_len + spec.new_tokens if spec.mode == "generate" else spec.seq
    if cfg.max_seq_len < context:
        cfg = cfg.model_copy(update={"max_seq_len": context})

    peak = peak_matmul_flops(device, spec.dtype)
    rss_before = _rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = build_model(cfg, device, seed=spec.seed, compile=spec.compile)
    n_active = accounting.active_params(cfg)

    if spec.mode == "train":
        gen = torch.Generator().manual_seed(spec.seed + 1)
        ids = torch.randint(0, cfg.vocab_size, (spec.batch, spec.seq + 1), generator=gen).to(device)
        fn = train_step_fn(model, (ids[:, :-1], ids[:, 1:]), device, spec.dtype)
        tokens = spec.batch * spec.seq
        flops = 6.0 * n_active * tokens
    elif spec.mode == "score":
        from moelab.eval.taskloss import sequence_nll

        prompts, answers = score_items(spec, cfg.vocab_size)
        torch_dtype = torch.bfloat16 if spec.dtype == "bf16" else None
        fn = lambda: sequence_nll(model, prompts, answers, batch_size=spec.batch, device=device,  # noqa: E731
                                  dtype=torch_dtype, max_len=spec.seq)
        tokens = spec.batch * spec.seq
        flops = 2.0 * n_active * tokens
    else:
        from moelab.model.generate import generate

        prompts = generate_prompts(spec, cfg.vocab_size)

        def fn():
            with autocast(device, spec.dtype):
                return generate(model, prompts, max_new_tokens=spec.new_tokens, eos_token_id=None, pad_token_id=0)

        tokens = spec.batch * spec.new_tokens
        flops = 2.0 * n_active * spec.batch * (spec.prompt_len + spec.new_tokens)

    seconds = time_runs(fn, device, repeats=spec.repeats, warmup=spec.warmup)
    median = statistics.median(seconds)
    if device.type == "cuda":
        peak_mem, delta = torch.cuda.max_memory_allocated(device), None
    else:
        peak_mem = _maxrss_bytes()
        delta = max(0, peak_mem - rss_before)
    achieved = flops / median
    return {
        "mode": spec.mode,
        "device": device_name(device),
        "dtype": spec.dtype,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "compile": spec.compile,
        "model": model_summary(cfg),
        "batch": spec.batch,
        "seq": spec.seq if spec.mode != "generate" else None,
        "prompt_len": spec.prompt_len if spec.mode == "generate" else None,
        "new_tokens": spec.new_tokens if spec.mode == "generate" else None,
        "warmup_runs": spec.warmup,
        "tokens_per_run": tokens,
        "seconds": seconds,
        "median_seconds": median,
        "tokens_per_s": tokens / median,
        "model_flops_per_s": achieved,
        "peak_matmul_flops_per_s": peak,
        "mfu": achieved / peak,
        "peak_memory_bytes": peak_mem,
        "memory_delta_bytes": delta,
        "torch": torch.__version__,
    }


def model_summary(cfg: ModelConfig) -> dict:
    return {
        "name": accounting.model_name(cfg),
        "d_model": cfg.d_model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "n_kv_heads": cfg.kv_heads,
        "num_experts": cfg.num_experts, "top_k": cfg.top_k, "expert_hidden": cfg.ffn_hidden,
        "vocab_size": cfg.vocab_size, "total_params": accounting.total_params(cfg),
        "active_params": accounting.active_params(cfg),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# ---------------------------------------------------------------- command line


def model_config_from_args(args, source: str = "bench") -> ModelConfig:
    fields = dict(d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, n_kv_heads=args.kv_heads,
                  num_experts=args.experts, top_k=args.top_k, expert_hidden=args.expert_hidden,
                  vocab_size=args.vocab)
    return validate(ModelConfig, {k: v for k, v in fields.items() if v is not None}, source)


def cmd_bench(args) -> int:
    spec = BenchSpec(mode=args.mode, cfg=model_config_from_args(args), batch=args.batch, seq=args.seq,
                     new_tokens=args.new_tokens, prompt_len=args.prompt_len, dtype=args.dtype,
                     compile=args.compile, threads=args.threads, repeats=args.repeats, warmup=args.warmup,
                     device=args.device)
    _check_fits(spec)
    result = run_bench(spec)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from moelab.ui import print_kv

        shown = {k: v for k, v in result.items() if k not in ("model", "seconds")}
        shown["mfu"] = f"{result['mfu']:.1%}"
        print_kv(shown, title=f"bench {args.mode}: {result['model']['name']}")
    return 0


def _check_fits(spec: BenchSpec) -> None:
    """Refuse a benchmark that cannot fit before allocating it (one line, like ``train``)."""
    from moelab import accounting
    from moelab.config import RunConfig
    from moelab.errors import UserError
    from moelab.resources import available_memory, check_fits, human_bytes

    device = resolve_device(spec.device)
    if spec.mode == "train":
        run = RunConfig.model_validate({"model": spec.cfg.model_dump(), "data": {"seq_len": spec.seq},
                                        "train": {"batch_size": spec.batch,
                                                  "precision": "bf16" if spec.dtype == "bf16" else "fp32"}})
        check_fits(run, device)
        return
    seq = spec.seq if spec.mode == "score" else spec.prompt_len + spec.new_tokens
    # fp32 weights, one fp32 logits tensor and the hidden states of one layer: a floor, not a promise
    need = 4 * (accounting.total_params(spec.cfg) + spec.batch * seq * (spec.cfg.vocab_size + 8 * spec.cfg.d_model))
    have = available_memory(device)
    if have is not None and need > have:
        raise UserError(f"bench {spec.mode}: needs at least {human_bytes(need)} of memory, {human_bytes(have)} is "
                        f"available on {device.type}; use a smaller model, --batch or --seq")


def _cmd_bench_defaults(args) -> int:
    if args.dtype is None:
        args.dtype = "bf16" if resolve_device(args.device).type == "cuda" else "fp32"
    return cmd_bench(args)


# The parser half lives in moelab.bench_cli so that building the CLI never imports torch.
from moelab.bench_cli import add_bench_command, add_model_options  # noqa: E402,F401
