"""Study commands for the `moelab` CLI: ``sweep``, ``query``, ``status`` (and ``plan --no-probe``).

    moelab sweep STUDY.yaml|PRESET --out DIR [--executor local|ray] [--workers N] [--retry-failed] [--address ADDR]
                 [--task-file PATH ...]
    moelab query DIR "SELECT run_id, status, final_val_loss FROM runs" [--json] [--rebuild]
    moelab status DIR [--json]

Wiring (in ``moelab/cli.py``'s ``build_parser``)::

    from moelab.study.cli import add_study_commands
    add_study_commands(sub)   # also gives an existing `plan` command --no-probe and the wall-time estimate
"""

from __future__ import annotations

import json
from pathlib import Path

from moelab.cli_args import positive_int


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# ---------------------------------------------------------------- commands


def with_task_files(study, paths: list[str] | None):
    """``study`` with ``paths`` added to ``base.eval.task_files`` (absolute, so runs on other
    workers find them); every file is parsed first, so a bad one is a one-line error before
    anything is written."""
    if not paths:
        return study
    from moelab.eval.taskfile import load_task_file

    files = list(study.base.eval.task_files)
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        load_task_file(path)
        if str(path) not in files:
            files.append(str(path))
    ev = study.base.eval.model_copy(update={"task_files": files})
    return study.model_copy(update={"base": study.base.model_copy(update={"eval": ev})})


def cmd_sweep(args) -> int:
    from moelab.config import load_study_config
    from moelab.study.sweep import sweep

    study = with_task_files(load_study_config(args.study), args.task_file)
    result = sweep(study, Path(args.out), executor=args.executor, workers=args.workers,
                   retry_failed=args.retry_failed, address=args.address, progress=not args.quiet)
    if args.json:
        _print_json(result.to_dict())
    if result.failed:  # said on stderr too, so that --quiet and --json runs do not fail without a word
        import sys

        print(f"moelab: {len(result.failed)} of {result.feasible} runs failed ({', '.join(result.failed[:3])}"
              f"{', …' if len(result.failed) > 3 else ''}); `moelab status {args.out}` shows why, "
              f"runs/<id>/error.txt the traceback; re-run with --retry-failed", file=sys.stderr)
        return 1
    return 0


def cmd_query(args) -> int:
    from moelab.study.store import jsonable, query

    columns, rows = query(Path(args.dir), args.sql, rebuild=args.rebuild)
    if args.json:
        _print_json([{c: jsonable(v) for c, v in zip(columns, row)} for row in rows])
        return 0
    from rich.table import Table

    from moelab.ui import stdout

    table = Table(title=f"{len(rows)} row{'s' if len(rows) != 1 else ''}")
    for c in columns:
        table.add_column(c, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    stdout.print(table)
    return 0


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return str(value)


_STATE_STYLE = {"done": "green", "running": "cyan", "pending": "white", "failed": "red", "diverged": "yellow",
                "corrupt": "bold red",
                "infeasible": "dim"}


def cmd_status(args) -> int:
    from moelab.study.lock import lock_holder
    from moelab.study.sweep import sweep_status

    out = Path(args.dir)
    rows = sweep_status(out)
    holder = lock_holder(out)
    if args.json:
        _print_json({"sweep_pid": holder, "runs": rows})
        return 0
    from collections import Counter

    from rich.table import Table

    from moelab.ui import stdout

    counts = Counter(r["state"] for r in rows)
    title = ", ".join(f"{n} {s}" for s, n in counts.most_common())
    title += f" — sweep running (pid {holder})" if holder else ""
    table = Table(title=title)
    for col in ("run_id", "name", "state", "step", "message"):
        table.add_column(col, overflow="fold")
    for r in rows:
        style = _STATE_STYLE.get(r["state"], "white")
        shown = r["state"] not in ("infeasible", "pending") and r["total_steps"]  # imported models have no steps
        step = f"{r['step'] or 0}/{r['total_steps']}" if shown else "-"
        table.add_row(r["run_id"], r["name"] or "-", f"[{style}]{r['state']}[/{style}]", step, r["message"] or "")
    stdout.print(table)
    return 0


def cmd_plan(args) -> int:
    """`moelab plan` with an estimated wall time per run from the throughput probe."""
    from moelab.config import load_study_config
    from moelab.study.plan import plan
    from moelab.study.probe import ProbeUnavailable, estimate_plan

    from moelab.errors import UserError

    emit, out = getattr(args, "emit", None), getattr(args, "out", None)
    if bool(emit) != bool(out):
        raise UserError("--emit and --out go together: `moelab plan STUDY --emit megatron --out DIR`")
    study = with_task_files(load_study_config(args.study), getattr(args, "task_file", None))
    from moelab.study.validate import check_study

    check_study(study)  # exactly what `sweep` would refuse
    runs = plan(study)
    if emit:
        return _emit_megatron(args, study, runs)
    note = ""
    try:
        fps = estimate_plan(study, runs, probe=not getattr(args, "no_probe", False),
                            refresh=getattr(args, "refresh_probe", False))
    except ProbeUnavailable as err:
        fps, note = None, f"no time estimates: {err}"
    if args.json:
        rows = []
        for r in runs:
            row = r.row()
            if getattr(r, "est_seconds", None) is not None:
                row["est_seconds"] = r.est_seconds
            if getattr(r, "est_note", None):
                row["est_note"] = r.est_note
            rows.append(row)
        _print_json(rows)
    else:
        from moelab.ui import console, print_plan

        print_plan(runs)
        for r in runs:
            if getattr(r, "est_note", None):  # too large for this machine: nothing of its size was built
                console.print(f"{r.run_id}: {r.est_note}")
        if fps:
            from moelab.study.probe import resolve_device, resolve_precision

            device = resolve_device(study.base.train.device)
            chosen = [r.est_precision for r in runs if getattr(r, "est_precision", None)]
            if chosen:  # CPU 'auto': each run at the precision measured faster for its size
                counts = ", ".join(f"{chosen.count(p)} in {p}" for p in ("bf16", "fp32") if p in chosen)
                rate = (f"the probe's measured GFLOP/s in each run's precision, the one measured faster "
                        f"for its size ({device}: {counts})")
            else:
                rate = f"a measured {fps / 1e9:.3g} GFLOP/s ({device}, {resolve_precision(study.base.train.precision, device)})"
            console.print(f"estimated times from {rate}; training only; rough (cached; --refresh-probe measures again)")
        elif note:
            console.print(note)
    return 0


def _emit_megatron(args, study, runs) -> int:
    """``plan --emit megatron --out DIR``: one Megatron-LM launch script per feasible run."""
    from moelab.study.megatron import MegatronOptions, write_scripts

    data_path = args.data_path or ""
    if data_path and (Path(data_path).expanduser() / "moelab-prepared.json").is_file():
        from moelab.data.prepared import read_prepared  # a `moelab data prepare` folder: its shards, weighted

        data_path = read_prepared(Path(data_path).expanduser())["megatron_data_path"]
    options = MegatronOptions(data_path=data_path, tokenizer_type=args.tokenizer_type,
                              tokenizer_model=args.tokenizer_model, micro_batch_size=args.micro_batch_size,
                              megatron_lm=args.megatron_lm, tensor_parallel=args.tensor_parallel)
    trained = [r for r in runs if not getattr(r, "imported", False)]  # a study's imported models train elsewhere
    paths = write_scripts(trained, Path(args.out), study.name, options)
    skipped = [r for r in runs if not r.feasible]
    if args.json:
        _print_json({"out": str(args.out), "scripts": [str(p) for p in paths],
                     "infeasible": {r.run_id: r.reason for r in skipped}})
    else:
        print(f"wrote {len(paths)} Megatron-LM launch scripts to {args.out}"
              + (f" ({len(skipped)} infeasible points skipped: {skipped[0].run_id}: {skipped[0].reason}"
                 + (", …" if len(skipped) > 1 else "") + ")" if skipped else ""))
    return 0


# ---------------------------------------------------------------- parser


def extend_plan_command(plan_parser) -> None:
    """Give the existing ``plan`` subcommand ``--no-probe`` and the estimated wall time."""
    plan_parser.add_argument("--no-probe", action="store_true",
                             help="skip the throughput probe (no estimated wall time)")
    plan_parser.add_argument("--refresh-probe", action="store_true",
                             help="measure the throughput again instead of using the cached figure (run it idle)")
    plan_parser.add_argument("--task-file", action="append", metavar="PATH",
                             help="also evaluate this {prompt, answer} task file (repeatable; checked here)")
    plan_parser.add_argument("--emit", choices=("megatron",),
                             help="write a launch script per feasible run for another engine (megatron: "
                                  "Megatron-LM pretrain_gpt.py) into --out instead of printing the plan")
    plan_parser.add_argument("--out", metavar="DIR", help="--emit: a new or empty folder (or earlier scripts')")
    plan_parser.add_argument("--data-path", help="--emit megatron: default DATA_PATH (Megatron indexed data)")
    plan_parser.add_argument("--tokenizer-type", default="HuggingFaceTokenizer",
                             help="--emit megatron: default TOKENIZER_TYPE (default HuggingFaceTokenizer)")
    plan_parser.add_argument("--tokenizer-model",
                             help="--emit megatron: default TOKENIZER_MODEL (default: the study's data.tokenizer)")
    plan_parser.add_argument("--micro-batch-size", type=positive_int,
                             help="--emit megatron: sequences per GPU and forward pass (default batch_size // "
                                  "grad_accum)")
    plan_parser.add_argument("--tensor-parallel", type=positive_int, default=1, metavar="TP",
                             help="--emit megatron: default TP; refused unless it divides the heads; the header's "
                                  "counts use the vocabulary Megatron pads to 128 x TP")
    plan_parser.add_argument("--megatron-lm", default="Megatron-LM", metavar="DIR",
                             help="--emit megatron: default MEGATRON_LM, a Megatron-LM checkout")
    plan_parser.set_defaults(func=cmd_plan)


def add_study_commands(subparsers) -> None:
    """Register ``sweep``, ``query`` and ``status``; also extend an existing ``plan`` command."""
    plan_parser = subparsers.choices.get("plan")
    if plan_parser is not None and not any("--no-probe" in a.option_strings for a in plan_parser._actions):
        extend_plan_command(plan_parser)
    s = subparsers.add_parser("sweep", help="train and evaluate every run of a study (restartable)")
    s.add_argument("study", help="STUDY.yaml or a bundled preset name")
    s.add_argument("--out", required=True, help="sweep directory (re-running resumes it)")
    s.add_argument("--executor", default="local", choices=("local", "ray"))
    s.add_argument("--workers", type=positive_int, help="concurrent runs (default: one per GPU, or cores // 4 on CPU)")
    s.add_argument("--retry-failed", action="store_true", help="run again the runs that failed")
    s.add_argument("--task-file", action="append", metavar="PATH",
                   help="also evaluate every run on this {prompt, answer} task file, e.g. GSM8K (repeatable; "
                        "part of the study, so a re-run must pass the same files)")
    s.add_argument("--address", help="ray executor: address of an existing Ray cluster")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--json", action="store_true", help="print the sweep's outcome as JSON")
    s.set_defaults(func=cmd_sweep)

    s = subparsers.add_parser("query", help="run SQL on a sweep's results store (tables: runs, train_metrics, "
                                            "evaluations, study)")
    s.add_argument("dir", help="sweep directory (or a study.duckdb file)")
    s.add_argument("sql")
    s.add_argument("--json", action="store_true")
    s.add_argument("--rebuild", action="store_true", help="rebuild the store from the per-run files first")
    s.set_defaults(func=cmd_query)

    s = subparsers.add_parser("status", help="the state of every run of a sweep directory")
    s.add_argument("dir")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
