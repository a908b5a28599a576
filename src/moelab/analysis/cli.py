"""``moelab report`` and ``moelab advise``: thin wrappers over :func:`moelab.analysis.report.build_report`
and :func:`moelab.analysis.advise.advise`. Wire them in with ``add_analysis_commands(subparsers)``.

    moelab report runs/smoke [--open] [--bootstrap 1000]
    moelab advise runs/smoke --budget 2e13 --task-family reasoning [--metric accuracy] [--json]
"""

from __future__ import annotations

import json
from pathlib import Path

from moelab.cli_args import at_least
from moelab.errors import UserError

__all__ = ["add_analysis_commands"]


def cmd_report(args) -> int:
    from moelab.analysis.report import build_report

    if args.bootstrap < 50:
        raise UserError(f"--bootstrap: need at least 50 resamples, got {args.bootstrap}")
    path = build_report(Path(args.dir), n_boot=args.bootstrap)
    print(f"report: {path}")
    if args.open:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            print("(no browser could be opened here; open the file above)")
    return 0


def cmd_advise(args) -> int:
    from moelab.analysis.advise import advise, format_advice, parse_budget

    result = advise(Path(args.dir), parse_budget(args.budget), args.task_family, metric=args.metric,
                    n_boot=args.bootstrap)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(format_advice(result))
    return 0


def add_analysis_commands(subparsers) -> None:
    """Add ``report`` and ``advise`` to the ``moelab`` sub-command parsers."""
    s = subparsers.add_parser("report", help="build DIR/report/index.html: the study's figures, gaps and optimum")
    s.add_argument("dir", help="a sweep directory (study.duckdb or results.csv)")
    s.add_argument("--open", action="store_true", help="open the report in a browser")
    s.add_argument("--bootstrap", type=at_least(50), default=1000, help="bootstrap resamples per fit (default 1000)")
    s.set_defaults(func=cmd_report)

    s = subparsers.add_parser("advise", help="recommend d, E, k for a FLOP budget and task family from a study")
    s.add_argument("dir", help="a sweep directory")
    s.add_argument("--budget", required=True, help="training FLOPs, e.g. 2e13 or 20T")
    s.add_argument("--task-family", required=True, help="knowledge, reasoning or another task of the study")
    s.add_argument("--metric", choices=["accuracy", "task_loss"], help="default: accuracy unless it is constant")
    s.add_argument("--bootstrap", type=at_least(50), default=1000)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_advise)
