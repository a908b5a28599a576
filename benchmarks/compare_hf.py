"""moelab vs transformers' ``MixtralForCausalLM``: training step, task-loss scoring, generation.

    python benchmarks/compare_hf.py              # issue-7 reference configuration, < 5 min on 2 CPU cores
    python benchmarks/compare_hf.py --quick      # tiny configuration, seconds (format check)
    python benchmarks/compare_hf.py --threads 1 --repeats 5 --json out.json
    python benchmarks/compare_hf.py --preset-sizes --threads 1   # the CPU presets' model sizes, < 5 min

Protocol (public tools only: torch, transformers, moelab):

* Same configuration, same weights (moelab's random init converted with ``state_dict_to_hf``
  into a ``MixtralForCausalLM``), same fp32 master weights, same inputs, same thread count.
* HF runs with its best settings: ``experts_implementation="grouped_mm"``,
  ``attn_implementation="sdpa"``, fused AdamW (moelab's optimizer builder, used for both).
* Each workload runs under every precision in ``--precisions`` — ``fp32``, and ``bf16``
  autocast over the fp32 weights — and each side keeps its faster one (median tokens/s). By
  default bf16 is left out on a CPU without fast bf16 kernels (the check of ``precision: auto``,
  :func:`moelab.train.precision.bf16_matmul_speedup`): on a Zen 3 EPYC bf16 ran ×0.02–0.11 of
  fp32 for both sides, so it was nobody's best and took 12 of the reference run's 16 minutes.
* The two sides alternate in one process (moelab, HF, moelab, HF, ...), so a change of machine
  load hits both; ratios are medians of the alternated runs.

Workloads (reference configuration: d_model 256, 4 layers, 4 heads, 16 experts, top-2, expert
width 512, vocabulary 8192; sequence 256, batch 8):

* ``train``: fwd + bwd + clip + AdamW step on one batch; moelab's loss adds its load-balancing
  and z-losses (the trainer's), HF's is the plain cross-entropy (``output_router_logits=False``).
* ``score``: task-loss scoring of ``batch`` items of ``seq`` input tokens, half prompt and half
  answer: moelab through ``sequence_nll``; HF a forward with ``logits_to_keep`` = answer length,
  then the same log-softmax gather.
* ``generate``: greedy decoding with KV cache, batch 8 x 128 new tokens from 32-token prompts:
  ``moelab.model.generate`` vs ``model.generate(do_sample=False)`` (EOS disabled both sides).

Before timing, parity is checked on the same inputs in fp32: scored NLLs agree and greedy
generations are identical. The last line is ``ratio train=X.XX score=X.XX generate=X.XX``
(moelab tokens/s over HF tokens/s, each side at its best precision).

``--preset-sizes`` runs the same comparison at each of ``PRESET_SIZES`` — the model sizes the
CPU presets train (d32–d128, 2–4 layers, E 1–64, k 1–4, vocabulary 512–2048; sequence 128,
batch 16) — with fewer repeats, prints one ``size NAME train=… score=… generate=…`` line per
size, and ends with ``ratio train=… score=… generate=…``, the medians over the sizes. HF runs
eagerly here: ``torch.compile`` of HF's model was not measured at these sizes (its compilation
alone would exceed this mode's 5-minute budget).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from datetime import datetime, timezone

import torch
import torch.nn.functional as F

from moelab import bench
from moelab.config import ModelConfig, TrainConfig
from moelab.eval.taskloss import sequence_nll
from moelab.interop.hf import config_to_hf, state_dict_to_hf
from moelab.model.generate import generate

QUICK = dict(d_model=64, layers=2, heads=4, experts=4, top_k=2, expert_hidden=96, vocab=512, seq=32, batch=4,
             new_tokens=8, prompt_len=8, repeats=2)

# The CPU presets' sizes (demo.yaml, paper-cpu*.yaml, the planner's CPU probe): head dim 16,
# expert width 2d/k (per_k), sequence 128, batch 16.
_PRESET = dict(seq=128, batch=16)
PRESET_SIZES = [
    dict(d_model=64, layers=2, heads=4, experts=1, top_k=1, expert_hidden=128, vocab=512, **_PRESET),
    dict(d_model=64, layers=2, heads=4, experts=4, top_k=2, expert_hidden=64, vocab=512, **_PRESET),
    dict(d_model=64, layers=2, heads=4, experts=16, top_k=1, expert_hidden=128, vocab=512, **_PRESET),
    dict(d_model=48, layers=2, heads=3, experts=64, top_k=4, expert_hidden=24, vocab=512, **_PRESET),
    dict(d_model=32, layers=2, heads=2, experts=16, top_k=2, expert_hidden=32, vocab=512, **_PRESET),
    dict(d_model=128, layers=4, heads=8, experts=8, top_k=2, expert_hidden=128, vocab=2048, **_PRESET),
]


def default_precisions(device: torch.device) -> tuple[list[str], str | None]:
    """fp32 and bf16, without bf16 on a CPU whose bf16 products are measured slow (see above)."""
    if device.type != "cpu":
        return ["fp32", "bf16"], None
    from moelab.train.precision import MIN_MATMUL_GAIN, cached_bf16_matmul_speedup

    matmul = cached_bf16_matmul_speedup()
    if matmul >= MIN_MATMUL_GAIN:
        return ["fp32", "bf16"], None
    return ["fp32"], f"bf16 not run: its matmul measured x{matmul:.2f} of fp32 on this CPU (no fast bf16 kernels)"


def build_pair(cfg: ModelConfig, seed: int, device: torch.device):
    from transformers import AutoModelForCausalLM

    moe = bench.build_model(cfg, torch.device("cpu"), seed=seed)
    hf_cfg = config_to_hf(cfg)  # Mixtral, or Qwen2-MoE for a gate Mixtral cannot represent (top-1 under auto)
    hf = AutoModelForCausalLM.from_config(hf_cfg, attn_implementation="sdpa", experts_implementation="grouped_mm")
    sd = state_dict_to_hf(moe.state_dict(), layout="fused", model_type=hf_cfg.model_type)
    missing, unexpected = hf.load_state_dict(sd, strict=True)
    assert not missing and not unexpected
    assert hf.config._experts_implementation == "grouped_mm" and hf.config._attn_implementation == "sdpa"
    return moe.to(device), hf.to(device)


# ---------------------------------------------------------------- workloads, one callable per side


def hf_train_step(hf, x_BT, y_BT, dtype: str):
    from moelab.train.optim import build_optimizer

    t = TrainConfig(lr=1e-5)
    opt = build_optimizer(hf, t)
    hf.train()
    dev = x_BT.device

    def step():
        with bench.autocast(dev, dtype):
            logits = hf(input_ids=x_BT).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), y_BT.flatten())
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(hf.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return torch.stack([loss.detach(), gn]).tolist()[0]

    return step


def hf_score(hf, prompts, answers, dtype: str):
    """Summed answer NLL per item, HF forward keeping only the answer positions' logits."""
    ids_BT = torch.tensor([[*p, *a] for p, a in zip(prompts, answers)], device=hf.device)
    num_answer = len(answers[0])
    assert all(len(a) == num_answer for a in answers)
    inputs_BT, targets_BA = ids_BT[:, :-1], ids_BT[:, -num_answer:]

    @torch.no_grad()
    def score():
        hf.eval()
        with bench.autocast(inputs_BT.device, dtype):
            logits_BAV = hf(input_ids=inputs_BT, logits_to_keep=num_answer).logits.float()
        nll_BA = torch.logsumexp(logits_BAV, -1) - logits_BAV.gather(-1, targets_BA[..., None]).squeeze(-1)
        return nll_BA.sum(-1).tolist()

    return score


def hf_generate(hf, prompts, new_tokens: int, dtype: str):
    ids_BP = torch.tensor(prompts, device=hf.device)
    kw = dict(attention_mask=torch.ones_like(ids_BP), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
              do_sample=False, eos_token_id=None, pad_token_id=0)

    @torch.no_grad()
    def gen():
        hf.eval()
        with bench.autocast(ids_BP.device, dtype):
            return hf.generate(ids_BP, **kw)[:, ids_BP.shape[1]:].tolist()

    return gen


def moelab_score(model, prompts, answers, seq: int, dtype: str):
    torch_dtype = torch.bfloat16 if dtype == "bf16" else None
    return lambda: sequence_nll(model, prompts, answers, batch_size=len(prompts), dtype=torch_dtype, max_len=seq)[0]


def moelab_generate(model, prompts, new_tokens: int, dtype: str):
    dev = model.embed.weight.device

    def gen():
        with bench.autocast(dev, dtype):
            return generate(model, prompts, max_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0)

    return gen


# ---------------------------------------------------------------- the comparison


def alternate(fns: dict[str, callable], device: torch.device, *, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each function, calling them in turn (warm-up calls first, untimed)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            bench.synchronize(device)
            t0 = time.perf_counter()
            fn()
            bench.synchronize(device)
            seconds[name].append(time.perf_counter() - t0)
    return seconds


def check_parity(moe, hf, spec_args, prompts_s, answers_s, prompts_g) -> dict:
    """fp32: scored NLLs agree, greedy generations identical (a speed-up must not change results)."""
    ours = moelab_score(moe, prompts_s, answers_s, spec_args.seq, "fp32")()
    theirs = hf_score(hf, prompts_s, answers_s, "fp32")()
    nll_diff = max(abs(a - b) for a, b in zip(ours, theirs))
    n = min(spec_args.new_tokens, 16)
    same = moelab_generate(moe, prompts_g, n, "fp32")() == hf_generate(hf, prompts_g, n, "fp32")()
    return {"score_nll_max_abs_diff": nll_diff, "greedy_tokens_identical": same}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_model_options(p)
    p.add_argument("--quick", action="store_true", help="tiny configuration (overrides the model options)")
    p.add_argument("--precisions", help="comma list of fp32, bf16 (autocast); default both, "
                                        "less bf16 on a CPU without fast bf16 kernels")
    p.add_argument("--workloads", default="train,score,generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the full results to this file")
    p.add_argument("--preset-sizes", action="store_true",
                   help="compare at each of the CPU presets' model sizes (PRESET_SIZES) and print the medians")
    p.set_defaults(repeats=None)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.preset_sizes else 5
    from moelab.cpu_alloc import keep_freed_memory

    keep_freed_memory()  # as the moelab CLI does; process-wide, so HF's runs get it too
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k.replace("-", "_"), v)
    if args.threads:
        torch.set_num_threads(args.threads)
    workloads = [s for s in args.workloads.split(",") if s]
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()

    device = bench.resolve_device(args.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  {bench.device_name(device)}"
          f"  load={load:.2f}  torch {torch.__version__}")
    if args.precisions:
        precisions = [s for s in args.precisions.split(",") if s]
    else:
        precisions, why = default_precisions(device)
        if why:
            print(f"# {why}; --precisions fp32,bf16 runs it anyway")
    if not args.preset_sizes:
        ratios, results = compare(args, workloads, precisions, device)
    else:
        per_size, results = {}, {"sizes": {}}
        for size in PRESET_SIZES:
            size_args = argparse.Namespace(**{**vars(args), **size})
            r, res = compare(size_args, workloads, precisions, device, quiet=True)
            name = res["model"]
            per_size[name], results["sizes"][name] = r, res
            print(f"size {name:22s} " + " ".join(f"{w}={r[w]:.2f}" for w in ("train", "score", "generate") if w in r)
                  + "   (best: " + ", ".join(f"{w} {v['best']['moelab']}/{v['best']['hf']}"
                                           for w, v in res["workloads"].items()) + ")", flush=True)
        print(f"# load average after: {os.getloadavg()[0]:.2f}")
        ratios = {w: statistics.median(r[w] for r in per_size.values())
                  for w in ("train", "score", "generate") if w in workloads}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), **results}, f, indent=2)
    print("ratio " + " ".join(f"{w}={ratios[w]:.2f}" for w in ("train", "score", "generate") if w in ratios))
    return 0


def compare(args, workloads: list[str], precisions: list[str], device: torch.device, *,
            quiet: bool = False) -> tuple[dict, dict]:
    """moelab vs HF at the configuration in ``args``: best-vs-best ratio per workload, and details."""
    say = (lambda *a, **k: None) if quiet else print
    cfg = bench.model_config_from_args(args, "compare_hf")
    cfg = cfg.model_copy(update={"max_seq_len": max(args.seq, args.prompt_len + args.new_tokens)})
    spec = bench.BenchSpec(mode="score", cfg=cfg, batch=args.batch, seq=args.seq, new_tokens=args.new_tokens,
                           prompt_len=args.prompt_len, seed=args.seed)
    moe, hf = build_pair(cfg, args.seed, device)
    gen = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq + 1), generator=gen).to(device)
    x_BT, y_BT = ids[:, :-1], ids[:, 1:]
    prompts_s, answers_s = bench.score_items(spec, cfg.vocab_size)
    prompts_g = bench.generate_prompts(spec, cfg.vocab_size)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    say(f"# {bench.model_summary(cfg)['name']}  seq={args.seq} batch={args.batch}  "
        f"generate: prompt {args.prompt_len} + {args.new_tokens} new")
    parity = check_parity(moe, hf, args, prompts_s, answers_s, prompts_g)
    print(f"# {'parity (fp32)' if not quiet else bench.model_summary(cfg)['name'] + ' parity (fp32)'}: "
          f"score NLL max |diff| {parity['score_nll_max_abs_diff']:.2e}, "
          f"greedy tokens identical: {parity['greedy_tokens_identical']}")

    tokens = {"train": args.batch * args.seq, "score": args.batch * args.seq, "generate": args.batch * args.new_tokens}
    results: dict = {"model": bench.model_summary(cfg)["name"], "parity": parity, "load_before": load, "workloads": {}}
    ratios = {}
    for work in ("train", "score", "generate"):
        if work not in workloads:
            continue
        per = {}
        for prec in precisions:
            if work == "train":
                # Fresh copies per precision, so both sides start from the same weights.
                moe, hf = build_pair(cfg, args.seed, device)
                fns = {"moelab": bench.train_step_fn(moe, (x_BT, y_BT), device, prec),
                       "hf": hf_train_step(hf, x_BT, y_BT, prec)}
            elif work == "score":
                fns = {"moelab": moelab_score(moe, prompts_s, answers_s, args.seq, prec),
                       "hf": hf_score(hf, prompts_s, answers_s, prec)}
            else:
                fns = {"moelab": moelab_generate(moe, prompts_g, args.new_tokens, prec),
                       "hf": hf_generate(hf, prompts_g, args.new_tokens, prec)}
            warmup = bench.default_warmup(work) if args.warmup is None else args.warmup
            secs = alternate(fns, device, repeats=args.repeats, warmup=warmup)
            per[prec] = {side: {"seconds": s, "tokens_per_s": tokens[work] / statistics.median(s)}
                         for side, s in secs.items()}
            say(f"{work:9s} {prec:5s} moelab {per[prec]['moelab']['tokens_per_s']:9.0f} tok/s   "
                  f"hf {per[prec]['hf']['tokens_per_s']:9.0f} tok/s   "
                  f"x{per[prec]['moelab']['tokens_per_s'] / per[prec]['hf']['tokens_per_s']:.2f}", flush=True)
        best = {side: max(precisions, key=lambda q: per[q][side]["tokens_per_s"]) for side in ("moelab", "hf")}
        ratio = per[best["moelab"]]["moelab"]["tokens_per_s"] / per[best["hf"]]["hf"]["tokens_per_s"]
        ratios[work] = ratio
        results["workloads"][work] = {"per_precision": per, "best": best, "ratio": ratio}
        say(f"{work:9s} best  moelab {best['moelab']} vs hf {best['hf']}: x{ratio:.2f}", flush=True)

    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results["load_after"] = load_after
    say(f"# load average after: {load_after:.2f}")
    return ratios, results


if __name__ == "__main__":
    sys.exit(main())
