"""The `moelab bench` parser, kept free of torch so that every CLI call starts fast;
the benchmark itself is :mod:`moelab.bench`."""

from __future__ import annotations

import argparse

from moelab.cli_args import device_name, nonneg_int, positive_int

MODES = ("train", "score", "generate")

# The issue-7 reference configuration (also benchmarks/compare_hf.py's).
REFERENCE = dict(d_model=256, n_layers=4, n_heads=4, num_experts=16, top_k=2, expert_hidden=512, vocab_size=8192)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Model and workload options shared by ``moelab bench`` and ``benchmarks/compare_hf.py``."""
    r = REFERENCE
    p.add_argument("--d-model", type=positive_int, default=r["d_model"])
    p.add_argument("--layers", type=positive_int, default=r["n_layers"])
    p.add_argument("--heads", type=positive_int, default=r["n_heads"])
    p.add_argument("--kv-heads", type=positive_int, default=None, help="default: --heads (full multi-head attention)")
    p.add_argument("--experts", type=positive_int, default=r["num_experts"])
    p.add_argument("--top-k", type=positive_int, default=r["top_k"])
    p.add_argument("--expert-hidden", type=positive_int, default=r["expert_hidden"])
    p.add_argument("--vocab", type=positive_int, default=r["vocab_size"])
    p.add_argument("--seq", type=positive_int, default=256, help="train/score sequence length")
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--new-tokens", type=positive_int, default=128, help="generate: new tokens per row")
    p.add_argument("--prompt-len", type=positive_int, default=32, help="generate: prompt tokens per row")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: torch's choice)")
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--warmup", type=nonneg_int, default=None,
                   help="untimed runs first (default: 10 for train, where CPU bf16 kernels are compiled for each "
                        "new expert group size during the first steps; 1 otherwise)")


def add_bench_command(subparsers) -> None:
    """Register ``moelab bench train|score|generate`` on the CLI's subparsers."""
    s = subparsers.add_parser("bench", help="throughput, model FLOP/s, MFU and peak memory of train/score/generate")
    s.add_argument("mode", choices=MODES)
    add_model_options(s)
    s.add_argument("--dtype", choices=("fp32", "bf16"), default=None,
                   help="bf16 = autocast over fp32 weights (default: bf16 on CUDA, fp32 on CPU)")
    s.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks")
    s.add_argument("--device", type=device_name, default="auto")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_run)




def _run(args) -> int:
    from moelab.bench import _cmd_bench_defaults

    return _cmd_bench_defaults(args)
