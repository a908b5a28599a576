"""Training throughput of two moelab checkouts side by side, at the CPU presets' sizes.

    git worktree add /tmp/moelab-b37a2d9 b37a2d9
    .venv/bin/python benchmarks/compare_commits.py --old /tmp/moelab-b37a2d9 --threads 1
    .venv/bin/python benchmarks/compare_commits.py --old . --quick     # format check, seconds

Each measurement is one ``moelab bench train --json`` subprocess, run with this checkout's
Python and ``PYTHONPATH`` set to the checkout's ``src`` (so both sides use the same torch). The
two checkouts alternate (old, new, old, new, ...) at every size and precision, so a change of
machine load hits both; each figure is the median tokens/s over ``--rounds`` alternations, and
each bench call is itself the median of ``--repeats`` steps after warm-up.

Per size it prints fp32 and bf16 tokens/s for both sides, then ``old default`` (fp32: what
``precision: auto`` meant on CPU before the measured rule), ``old best``, ``new default`` (the
precision the new checkout's measured rule picks here, :mod:`moelab.train.precision`) and the
ratios. The last line is ``ratio vs-old-default=X.XX vs-old-best=X.XX`` (medians over sizes).
On a CPU without fast bf16 kernels bf16 is not run (as in ``compare_hf.py``; printed as ``-``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_hf import PRESET_SIZES, QUICK, default_precisions  # noqa: E402  (the same sizes as --preset-sizes)

NEW = Path(__file__).resolve().parents[1]


def bench_train(checkout: Path, size: dict, dtype: str, threads: int, repeats: int) -> float:
    """Tokens/s of one ``moelab bench train`` run of ``checkout`` at ``size`` in ``dtype``."""
    args = [sys.executable, "-m", "moelab", "bench", "train", "--json", "--dtype", dtype, "--device", "cpu",
            "--threads", str(threads), "--repeats", str(repeats),
            "--d-model", str(size["d_model"]), "--layers", str(size["layers"]), "--heads", str(size["heads"]),
            "--experts", str(size["experts"]), "--top-k", str(size["top_k"]),
            "--expert-hidden", str(size["expert_hidden"]), "--vocab", str(size["vocab"]),
            "--seq", str(size["seq"]), "--batch", str(size["batch"])]
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{checkout}: moelab bench train failed: {out.stderr.strip().splitlines()[-1:]}")
    return float(json.loads(out.stdout)["tokens_per_s"])


def new_default(size: dict, threads: int) -> str:
    """What the new checkout's ``precision: auto`` trains this size in on this CPU (measured, cached)."""
    import torch

    from moelab.bench import model_config_from_args
    from moelab.train.precision import resolve_precision

    torch.set_num_threads(threads)
    ns = argparse.Namespace(**{k: size[k] for k in ("d_model", "layers", "heads", "experts", "top_k",
                                                    "expert_hidden", "vocab")}, kv_heads=None, seq=size["seq"])
    cfg = model_config_from_args(ns, "compare_commits")  # the rule itself widens max_seq_len to seq if needed
    return resolve_precision("auto", "cpu", cfg, batch=size["batch"], seq=size["seq"]).precision


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, type=Path, help="the other checkout (a git worktree)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="alternations per size and precision")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per bench call")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--quick", action="store_true", help="one tiny size, one round (format check, seconds)")
    args = p.parse_args(argv)
    sizes = PRESET_SIZES
    if args.quick:
        sizes, args.rounds, args.repeats = [QUICK], 1, 2
    if not (args.old / "src" / "moelab").is_dir():
        raise SystemExit(f"--old {args.old}: not a moelab checkout (no src/moelab)")
    sys.path.insert(0, str(NEW / "src"))
    from moelab.train.precision import cpu_id

    load = os.getloadavg()[0]
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  {cpu_id()}  load={load:.2f}  "
          f"threads={args.threads}  old={args.old}  new={NEW}")
    import torch

    dtypes, why = default_precisions(torch.device("cpu"))
    if why:
        print(f"# {why}")
    rows, vs_default, vs_best = [], [], []
    for size in sizes:
        tps = {(side, dtype): [] for side in ("old", "new") for dtype in dtypes}
        for _ in range(args.rounds):
            for dtype in dtypes:
                for side, checkout in (("old", args.old), ("new", NEW)):
                    tps[side, dtype].append(bench_train(checkout, size, dtype, args.threads, args.repeats))
        med = {key: statistics.median(v) for key, v in tps.items()}
        chosen = new_default(size, args.threads)
        old_best = max(v for (side, _), v in med.items() if side == "old")
        new_at_default = med["new", chosen]
        vs_default.append(new_at_default / med["old", "fp32"])
        vs_best.append(new_at_default / old_best)
        name = f"d{size['d_model']}-E{size['experts']}-k{size['top_k']}"
        fig = lambda side, dtype: f"{med[side, dtype]:8.0f}" if (side, dtype) in med else f"{'-':>8s}"  # noqa: E731
        print(f"size {name:12s} old fp32 {fig('old', 'fp32')} bf16 {fig('old', 'bf16')} | "
              f"new fp32 {fig('new', 'fp32')} bf16 {fig('new', 'bf16')} tok/s | new default {chosen}: "
              f"x{vs_default[-1]:.2f} vs old default (fp32), x{vs_best[-1]:.2f} vs old best", flush=True)
        rows.append({"size": size, "tokens_per_s": {f"{s}/{d}": v for (s, d), v in tps.items()},
                     "new_default": chosen, "vs_old_default": vs_default[-1], "vs_old_best": vs_best[-1]})
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                              indent=2))
    print(f"ratio vs-old-default={statistics.median(vs_default):.2f} vs-old-best={statistics.median(vs_best):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
