"""The `moelab` command line. Thin: parse arguments, call library functions, print.

A ``UserError`` anywhere becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from moelab.cli_args import nonneg_float, positive_float, positive_int, probability
from moelab.errors import UserError, one_line, raised_in


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UserError(f"{self.prog}: {message}")


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# ---------------------------------------------------------------- commands


def cmd_params(args) -> int:
    from moelab import accounting
    from moelab.config import ModelConfig, validate

    fields: dict = {}
    if args.preset == "paper":
        fields |= accounting.PAPER_ARCH
        fields["n_heads"] = accounting.paper_heads(args.d_model or 512)
    elif args.preset is not None:
        raise UserError(f"--preset: unknown architecture preset '{args.preset}' (known: paper)")
    for key, value in (("d_model", args.d_model), ("num_experts", args.experts), ("top_k", args.top_k),
                       ("n_layers", args.layers), ("vocab_size", args.vocab), ("n_heads", args.heads),
                       ("n_kv_heads", args.kv_heads), ("expert_hidden", args.expert_hidden)):
        if value is not None:
            fields[key] = value
    cfg = validate(ModelConfig, fields, "params")
    tokens = args.tokens if args.tokens is not None else (accounting.PAPER_TOKENS if args.preset == "paper" else None)
    if tokens is not None and tokens <= 0:
        raise UserError(f"--tokens: must be positive, got {tokens:g}")
    info = accounting.summary(cfg, tokens)
    if args.json:
        _print_json(info)
    else:
        from moelab.ui import print_kv

        print_kv(info, title=info["name"])
    return 0


def cmd_train(args) -> int:
    from moelab.config import load_run_config

    from moelab.outdir import claim_output

    cfg = load_run_config(args.config)  # a bad config fails before torch is imported
    claim_output(args.out, "run")
    from moelab.train.trainer import train

    summary = train(cfg, Path(args.out), progress=not args.quiet, max_steps_this_call=args.stop_after)
    if args.json:
        _print_json(summary)
    return 0


def cmd_export_hf(args) -> int:
    from moelab.interop.hf import export_hf
    from moelab.modelio import load_model
    from moelab.outdir import claim_output

    claim_output(args.out, "hf-export", flag="OUT", sources=[args.model])
    model, tokenizer, cfg = load_model(args.model)
    from moelab.interop.hf import mixtral_can_represent

    export_hf(model, cfg, Path(args.out), tokenizer=tokenizer)
    arch = "Mixtral" if mixtral_can_represent(cfg) else "Qwen2-MoE (norm_topk_prob false: its gate is the probability)"
    print(f"wrote Hugging Face {arch} checkpoint to {args.out}")
    return 0


def cmd_import_hf(args) -> int:
    from moelab.modelio import load_model, save_model_dir
    from moelab.outdir import claim_output

    claim_output(args.out, "model", flag="OUT", sources=[args.hf_dir])
    model, tokenizer, cfg = load_model(args.hf_dir)
    save_model_dir(model, cfg, tokenizer, Path(args.out))
    print(f"wrote moelab model directory to {args.out}")
    return 0


def cmd_generate(args) -> int:
    import torch

    from moelab.data.tokenizer import encode_prompt
    from moelab.model.generate import generate
    from moelab.modelio import load_model

    model, tok, cfg = load_model(args.model)
    prompts = [encode_prompt(tok, p) for p in args.prompt]
    longest = max(len(ids) for ids in prompts)
    if longest + args.max_new_tokens > cfg.max_seq_len:  # past the trained context the output is noise
        raise UserError(f"a prompt of {longest} tokens plus --max-new-tokens {args.max_new_tokens} exceeds the "
                        f"model's context of {cfg.max_seq_len} tokens; shorten the prompt or ask for fewer tokens")
    gen = torch.Generator().manual_seed(args.seed)
    out = generate(model, prompts, max_new_tokens=args.max_new_tokens,
                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, temperature=args.temperature,
                   top_p=args.top_p, stop_strings=tuple(args.stop or ()), decode=tok.decode, generator=gen)
    for prompt, ids in zip(args.prompt, out):
        print(prompt + tok.decode(ids))
    return 0


def cmd_plan(args) -> int:
    from moelab.config import load_study_config
    from moelab.study.plan import plan

    runs = plan(load_study_config(args.study))
    if args.json:
        _print_json([r.row() for r in runs])
    else:
        from moelab.ui import print_plan

        print_plan(runs)
    return 0


def cmd_demo(args) -> int:
    from moelab.demo import run_demo

    result = run_demo(args.preset, Path(args.out), progress=not args.quiet)
    print(f"results: {result['results_csv']}\nreport:  {result['report_html']}")
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="moelab", description="Mixture-of-Experts sparsity studies.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("params", help="parameter, FLOP and TPP accounting for one architecture")
    s.add_argument("--preset", help="architecture preset (paper: the seed paper's released models)")
    s.add_argument("--d-model", type=positive_int)
    s.add_argument("--experts", type=positive_int)
    s.add_argument("--top-k", type=positive_int)
    s.add_argument("--layers", type=positive_int)
    s.add_argument("--heads", type=positive_int)
    s.add_argument("--kv-heads", type=positive_int)
    s.add_argument("--vocab", type=positive_int)
    s.add_argument("--expert-hidden", type=positive_int)
    s.add_argument("--tokens", type=positive_float, help="training tokens (paper preset: 125B)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_params)

    s = sub.add_parser("train", help="train one model (resumes when --out holds a checkpoint)")
    s.add_argument("config", help="RUN.yaml")
    s.add_argument("--out", required=True)
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--json", action="store_true")
    s.add_argument("--stop-after", type=positive_int, metavar="N",
                   help="train at most N more steps in this call, checkpoint, and exit (resume later)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("export-hf", help="write a transformers Mixtral checkpoint")
    s.add_argument("model", help="run, checkpoint or model directory")
    s.add_argument("out")
    s.set_defaults(func=cmd_export_hf)

    s = sub.add_parser("import-hf", help="turn a Hugging Face Mixtral or Qwen2-MoE checkpoint into a moelab model directory")
    s.add_argument("hf_dir")
    s.add_argument("out")
    s.set_defaults(func=cmd_import_hf)

    s = sub.add_parser("generate", help="complete prompts with a model")
    s.add_argument("--model", required=True)
    s.add_argument("--prompt", action="append", required=True)
    s.add_argument("--max-new-tokens", type=positive_int, default=64)
    s.add_argument("--temperature", type=nonneg_float, default=0.0, help="0: greedy")
    s.add_argument("--top-p", type=probability, default=1.0)
    s.add_argument("--stop", action="append")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("plan", help="plan a study: one row per run, infeasible points with the reason")
    s.add_argument("study", help="STUDY.yaml or a bundled preset name")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("demo", help="plan, train, evaluate and report a small iso-FLOP family")
    s.add_argument("--out", required=True)
    s.add_argument("--preset", default="demo", help="demo (default, ~15 min on 2 cores) or smoke (~2 min)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_demo)

    import importlib

    for module, name in (("moelab.eval.cli", "add_eval_commands"), ("moelab.posttrain.cli", "add_posttrain_commands"),
                         ("moelab.study.cli", "add_study_commands"), ("moelab.analysis.cli", "add_analysis_commands"),
                         ("moelab.bench_cli", "add_bench_command"),
                         ("moelab.data.cli", "add_data_commands")):
        getattr(importlib.import_module(module), name)(sub)
    return p


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as one line (``moelab: warning: …``), like errors, without the source location."""
    return f"moelab: warning: {str(message).strip().splitlines()[0] if str(message).strip() else category.__name__}\n"


def main(argv: list[str] | None = None) -> int:
    import errno
    import warnings

    warnings.formatwarning = _one_line_warning
    try:
        args = build_parser().parse_args(argv)
        from moelab.cpu_alloc import keep_freed_memory

        keep_freed_memory()  # before any tensor: no page-fault churn in training loops (see cpu_alloc)
        return args.func(args) or 0
    except UserError as err:
        print(f"moelab: error: {one_line(err)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `moelab … | head`: the reader left; not an error (before OSError: it is one)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            if err.filename is not None and err.strerror:  # unreadable, missing or busy: not a bug
                print(f"moelab: error: {err.filename}: {err.strerror}", file=sys.stderr)
                return 2
            return _report_unexpected(err)
        # A full disk is not a bug: every write is atomic, so the last complete checkpoint and the
        # finished files are intact, and the same command resumes once there is space.
        from moelab.atomic import disk_full_message

        print(f"moelab: error: {disk_full_message(err.filename, getattr(err, 'free', None))}; finished work and "
              "the last complete checkpoint are kept: free some space and run the same command again",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("moelab: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the one catch at the top (docs/reliability.md)
        return _report_unexpected(err)


def _report_unexpected(err: Exception) -> int:
    """A training run that diverged, or an error raised inside a library a user drives with their
    own input (lm-eval's task checks, safetensors on a damaged file): one line, exit 2. Anything
    else is a bug in moelab: the traceback, then one line saying so, exit 1."""
    import traceback

    if type(err).__name__ == "Diverged":  # moelab.train.trainer.Diverged, not imported for every command
        print(f"moelab: error: {one_line(err)}; the run's status.json records it (lower train.lr or raise "
              "train.warmup_steps, then train into a new --out)", file=sys.stderr)
        return 2
    package = raised_in(err)
    if package is not None:
        print(f"moelab: error: {package}: {type(err).__name__}: {one_line(err)}", file=sys.stderr)
        return 2
    traceback.print_exc()
    print(f"moelab: internal error: {type(err).__name__}: {one_line(err)} — this is a bug in moelab, not in "
          "your input; please report it with the traceback above", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
