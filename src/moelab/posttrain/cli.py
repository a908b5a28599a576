"""``moelab grpo`` and ``moelab ttc``: thin wrappers over :func:`moelab.posttrain.grpo.grpo` and
:func:`moelab.ttc.sampling.sample_task`. Wire them in with ``add_posttrain_commands(subparsers)``.

    moelab grpo --model runs/a/model --task reasoning --out runs/a/grpo --steps 100 [--group-size 5 ...]
    moelab ttc --model runs/a/model --task reasoning --samples 16 [--limit 50] [--json]
    moelab ttc --recompute runs/a/eval/ttc-reasoning-n16/samples.jsonl

Task names are looked up in the world the model was trained on (the ``data.world`` of the run
directory the model belongs to, followed through a GRPO output's ``grpo_config.yaml``), else in the
default world. ``--world RUN.yaml`` names the run config to take the world from.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from moelab.cli_args import device_name, finite_float, nonneg_int, positive_float, positive_int, probability
from moelab.errors import UserError

__all__ = ["add_posttrain_commands", "world_for_model"]


# ---------------------------------------------------------------- helpers


def world_for_model(model_path: str | Path | None, world_config: str | None = None):
    """The world whose tasks a model should be evaluated on (``moelab.modelio.world_for_model``;
    imported here lazily: building the parser must not import torch)."""
    from moelab.modelio import world_for_model as find

    return find(model_path, world_config)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)


# ---------------------------------------------------------------- grpo

_GRPO_OPTIONS = {  # flag -> (GRPOConfig field, type)
    "--steps": ("steps", int),
    "--group-size": ("group_size", int),
    "--prompts-per-step": ("prompts_per_step", int),
    "--updates-per-batch": ("updates_per_batch", int),
    "--micro-batch-size": ("micro_batch_size", int),
    "--lr": ("lr", finite_float),
    "--weight-decay": ("weight_decay", finite_float),
    "--grad-clip": ("grad_clip", finite_float),
    "--clip-eps": ("clip_eps", finite_float),
    "--kl-coef": ("kl_coef", finite_float),
    "--entropy-coef": ("entropy_coef", finite_float),
    "--format-reward": ("format_reward", finite_float),
    "--temperature": ("temperature", finite_float),
    "--top-p": ("top_p", finite_float),
    "--max-new-tokens": ("max_new_tokens", int),
    "--shots": ("shots", int),
    "--train-split": ("train_split", str),
    "--eval-split": ("eval_split", str),
    "--eval-every": ("eval_every", int),
    "--eval-limit": ("eval_limit", int),
    "--checkpoint-every": ("checkpoint_every", int),
    "--precision": ("precision", str),
    "--device": ("device", device_name),
    "--seed": ("seed", int),
}


def cmd_grpo(args) -> int:
    from moelab.config import read_yaml
    from moelab.eval.tasks import get_task
    from moelab.posttrain.grpo import grpo, load_grpo_config

    data = (read_yaml(args.config) or {}) if args.config else {}
    if not isinstance(data, dict):  # a list or a scalar at the top level
        raise UserError(f"{args.config}: expected a mapping of GRPO options, got a {type(data).__name__}")
    data = dict(data)
    data["model"] = str(Path(args.model).expanduser().resolve())
    data["task"] = args.task
    for flag, (field, _) in _GRPO_OPTIONS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            data[field] = value
    cfg = load_grpo_config(data, "grpo")
    from moelab.outdir import claim_output

    claim_output(args.out, "grpo", sources=[args.model])
    task = get_task(cfg.task, world_for_model(cfg.model, args.world))
    summary = grpo(cfg, Path(args.out), task=task, progress=not args.quiet)
    if args.json:
        _print_json(summary)
    else:
        print(f"GRPO {summary.get('state')}: step {summary.get('steps', summary.get('step'))}; "
              f"reward {_fmt(summary.get('reward_first'))} -> {_fmt(summary.get('reward_last'))}; "
              f"{cfg.eval_split} accuracy {_fmt(summary.get('accuracy_before'))} -> "
              f"{_fmt(summary.get('accuracy_after'))}; model: {Path(args.out) / 'model'}")
    return 0


# ---------------------------------------------------------------- ttc


def _default_ttc_dir(model: str, label: str, samples: int) -> Path:
    name = f"ttc-{label.replace('/', '-').replace(':', '-')}-n{samples}"
    path = Path(model).expanduser().resolve()
    for d in (path, path.parent):
        if (d / "config.yaml").is_file() or (d / "grpo_config.yaml").is_file():
            return d / "eval" / name
    return Path(name)


def _print_curves(curves: dict) -> None:
    print(f"{'n':>6}  {'pass@n':>8}  {'majority@n':>10}")
    for n, cov, maj in zip(curves["n"], curves["pass_at_k"], curves["majority"]):
        print(f"{n:>6}  {cov:>8.4f}  {maj:>10.4f}")
    print(f"greedy accuracy: {_fmt(curves.get('greedy'))}   questions: {curves['num_questions']}   "
          f"invalid answers: {curves['invalid_rate']:.1%}")


def cmd_ttc(args) -> int:
    from moelab.ttc.sampling import recompute_from_jsonl

    if args.recompute:
        curves = recompute_from_jsonl(args.recompute)
        _print_json(curves) if args.json else _print_curves(curves)
        return 0
    if not args.model or not args.task or args.samples is None:
        raise UserError("ttc: --model, --task and --samples are required (or --recompute FILE)")
    from moelab.eval.tasks import get_task, task_label
    from moelab.modelio import load_model
    from moelab.posttrain.grpo import resolve_device
    from moelab.ttc.sampling import sample_task

    task = get_task(args.task, world_for_model(args.model, args.world))  # unknown task: fail before loading
    if args.samples < 1:
        raise UserError(f"--samples must be at least 1, got {args.samples}")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be positive, got {args.limit}")
    out = Path(args.out) if args.out else _default_ttc_dir(args.model, task_label(task.name), args.samples)
    from moelab.outdir import claim_output

    claim_output(out, "ttc", sources=[args.model])  # before the sampling, not after it
    model, tok, _ = load_model(args.model, resolve_device(args.device))
    result = sample_task(model, tok, task, samples=args.samples, split=args.split, limit=args.limit,
                         temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                         seed=args.seed, shots=args.shots, batch_size=args.batch_size, progress=not args.quiet)
    paths = result.write(out)
    if args.json:
        _print_json({**result.summary(), "samples_file": str(paths["samples"])})
    else:
        _print_curves(result.curves)
        print(f"records: {paths['samples']}")
    return 0


# ---------------------------------------------------------------- parser


def add_posttrain_commands(subparsers) -> None:
    """Add ``grpo`` and ``ttc`` to the ``moelab`` sub-command parsers."""
    s = subparsers.add_parser("grpo", help="GRPO post-training with the task's verifier as reward (resumable)")
    s.add_argument("--model", required=True, help="model, run or checkpoint directory to start from")
    s.add_argument("--task", required=True, help="task name (knowledge, reasoning, reasoning/<gen>, file:PATH)")
    s.add_argument("--out", required=True, help="output directory (resumes when it holds a checkpoint)")
    s.add_argument("--config", help="YAML file of GRPO options (command-line flags override it)")
    s.add_argument("--world", help="RUN.yaml whose data.world defines the tasks (default: the model's run)")
    for flag, (_, typ) in _GRPO_OPTIONS.items():
        kwargs: dict = {"type": typ}
        if flag == "--precision":
            kwargs["choices"] = ["fp32", "bf16"]
        s.add_argument(flag, **kwargs)
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_grpo)

    s = subparsers.add_parser("ttc", help="test-time compute: N samples per question, pass@k and majority vote")
    s.add_argument("--model", help="model, run or checkpoint directory")
    s.add_argument("--task", help="task name")
    s.add_argument("--samples", type=positive_int, help="samples per question (N)")
    s.add_argument("--limit", type=positive_int, help="first N questions of the split")
    s.add_argument("--split", default="heldout")
    s.add_argument("--temperature", type=positive_float, default=0.6)
    s.add_argument("--top-p", type=probability, default=0.95)
    s.add_argument("--max-new-tokens", type=positive_int, default=48)
    s.add_argument("--shots", type=nonneg_int, default=0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=positive_int, help="rows per generation batch (default: from a token budget)")
    s.add_argument("--device", type=device_name, default="auto")
    s.add_argument("--world", help="RUN.yaml whose data.world defines the tasks (default: the model's run)")
    s.add_argument("--out", help="output directory (default: RUN/eval/ttc-<task>-n<N> or ./ttc-<task>-n<N>)")
    s.add_argument("--recompute", metavar="SAMPLES_JSONL", help="recompute the curves from saved records")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_ttc)


def _standalone_parser() -> argparse.ArgumentParser:
    """A parser with just these commands (for tests before the lead wires them into ``moelab``)."""
    from moelab.cli import _Parser

    p = _Parser(prog="moelab")
    add_posttrain_commands(p.add_subparsers(dest="command", required=True, parser_class=_Parser))
    return p
