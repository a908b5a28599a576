"""`moelab eval …` subcommands: list, taskloss, accuracy, all, code (pass@k) and lm-eval (harness bridge)."""

from __future__ import annotations

import argparse

from moelab.cli_args import device_name, nonneg_int, positive_int
import json
from pathlib import Path


def _world_for(model_path: str):
    """The world a model was trained on: its run's config (a damaged one is an error naming the
    file, never a silent fallback), else the default world."""
    from moelab.config import WorldConfig
    from moelab.data.world import build_world
    from moelab.modelio import world_for_model

    return world_for_model(model_path) or build_world(WorldConfig())


def _task(args, world):
    from moelab.errors import UserError
    from moelab.eval.tasks import FILE_PREFIX, get_task

    if bool(args.task) == bool(args.task_file):
        raise UserError("give exactly one of --task NAME or --task-file F")
    return get_task(args.task or f"{FILE_PREFIX}{args.task_file}", world)


def device_dtype(args):
    """(device, autocast dtype or None): ``auto`` picks CUDA when there is one; bf16 autocast (fp32
    weights, fp32 log-probs) is the default on CUDA and opt-in elsewhere (``--bf16`` / ``--no-bf16``)."""
    import torch

    from moelab.errors import UserError

    if getattr(args, "out", None):  # every command that evaluates calls this first: fail before the work
        from moelab.outdir import claim_output

        claim_output(args.out, "eval", sources=[args.model])
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available (use --device cpu or auto)")
    dtype = torch.bfloat16 if args.bf16 or (args.bf16 is None and device.startswith("cuda")) else None
    return device, dtype


def emit_summary(args, summary: dict, name: str, records=None) -> None:
    from moelab.atomic import atomic_write_json

    if args.out:
        out = Path(args.out)
        atomic_write_json(out / f"{name}.json", summary)
        if records is not None:
            records(out / f"{name}.jsonl")
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        from moelab.ui import print_kv

        print_kv({k: v for k, v in summary.items() if not isinstance(v, (list, dict))}, title=name)


def cmd_list(args) -> int:
    from moelab.config import WorldConfig
    from moelab.data.world import build_world
    from moelab.eval.tasks import list_tasks

    for name in list_tasks(build_world(WorldConfig())):
        print(name)
    print("file:<path>   any {prompt, answer} JSON/JSONL task file")
    return 0


def _task_and_model(args):
    """What `taskloss` and `accuracy` share: device and dtype, the task (checked before the model
    loads, so a bad task fails fast), then the model."""
    from moelab.modelio import load_model

    device, dtype = device_dtype(args)
    world = _world_for(args.model) if args.task else None  # a task file needs no world
    task = _task(args, world)
    model, tok, _ = load_model(args.model, device=device)
    return device, dtype, task, model, tok


def cmd_taskloss(args) -> int:
    from moelab.eval.taskloss import task_loss

    device, dtype, task, model, tok = _task_and_model(args)
    items = task.items(args.split)[: args.limit] if args.limit else task.items(args.split)
    result = task_loss(model, tok, items, dtype=dtype, progress=not args.json)
    summary = {"task": task.name, "split": args.split} | result.summary()
    emit_summary(args, summary, "taskloss", None)
    if args.out:
        from moelab.atomic import atomic_write_text

        atomic_write_text(Path(args.out) / "taskloss.jsonl", "".join(json.dumps(r) + "\n" for r in result.records()))
    return 0


def cmd_accuracy(args) -> int:
    import torch

    from moelab.eval.accuracy import accuracy

    device, dtype, task, model, tok = _task_and_model(args)
    with torch.autocast(device.split(":")[0], dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        result = accuracy(model, tok, task, split=args.split, shots=args.shots, limit=args.limit,
                          max_new_tokens=args.max_new_tokens, progress=not args.json)
    summary = {"task": task.name, "split": args.split} | result.summary()
    emit_summary(args, summary, "accuracy", result.write_records)
    return 0


def cmd_all(args) -> int:
    from moelab.atomic import atomic_write_json
    from moelab.config import EvalConfig
    from moelab.eval.gaps import evaluate_model
    from moelab.modelio import load_model

    device, dtype = device_dtype(args)
    world = _world_for(args.model)
    cfg = EvalConfig(tasks=args.task or ["knowledge", "reasoning"], task_files=args.task_file or [],
                     limit=args.limit, shots=args.shots, max_new_tokens=args.max_new_tokens)
    model, tok, _ = load_model(args.model, device=device)
    train_summary = None
    for cand in (Path(args.model) / "train_summary.json", Path(args.model).parent / "train_summary.json"):
        if cand.is_file():
            from moelab.jsonfile import read_json

            train_summary = read_json(cand)
            break
    records = Path(args.out) / "records" if args.out else None
    result = evaluate_model(model, tok, world, cfg, train_summary=train_summary, progress=not args.json,
                            records_dir=records, dtype=dtype)
    if args.out:
        atomic_write_json(Path(args.out) / "summary.json", result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from moelab.ui import print_kv

        print_kv(result, title=f"evaluation of {args.model}")
    return 0


def _common(p, *, task_required: bool = True) -> None:
    p.add_argument("--model", required=True, help="run, checkpoint, model or Hugging Face Mixtral directory")
    p.add_argument("--limit", type=positive_int, help="first N items of each split")
    p.add_argument("--device", type=device_name, default="auto")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast with fp32 weights (default: on for CUDA)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="directory for the summary and per-item records")


def add_eval_commands(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate a model: task loss, accuracy, the three levels and the gaps")
    esub = ev.add_subparsers(dest="eval_command", required=True, parser_class=type(ev))

    s = esub.add_parser("list", help="the built-in tasks")
    s.set_defaults(func=cmd_list)

    s = esub.add_parser("taskloss", help="NLL of reference answers in bits per token and per byte")
    _common(s)
    s.add_argument("--task")
    s.add_argument("--task-file")
    s.add_argument("--split", default="heldout")
    s.set_defaults(func=cmd_taskloss)

    s = esub.add_parser("accuracy", help="greedy generation, answer extraction and scoring")
    _common(s)
    s.add_argument("--task")
    s.add_argument("--task-file")
    s.add_argument("--split", default="heldout")
    s.add_argument("--shots", type=nonneg_int, default=0)
    s.add_argument("--max-new-tokens", type=positive_int, default=48)
    s.set_defaults(func=cmd_accuracy)

    s = esub.add_parser("all", help="the three levels (pretraining loss, task loss, accuracy) and both gaps")
    _common(s)
    s.add_argument("--task", action="append", help="built-in task (repeatable; default knowledge, reasoning)")
    s.add_argument("--task-file", action="append", help="task file (repeatable)")
    s.add_argument("--shots", type=nonneg_int, default=0)
    s.add_argument("--max-new-tokens", type=positive_int, default=48)
    s.set_defaults(func=cmd_all)

    from moelab.eval.code import add_code_command
    from moelab.eval.lmeval import add_lmeval_command

    add_code_command(esub)
    add_lmeval_command(esub)  # registered without lm-eval too: the command then names the extra to install
