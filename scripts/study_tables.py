#!/usr/bin/env python
"""Markdown tables of a finished study, copied from its store and report data (for docs/reproduction.md).

    .venv/bin/python scripts/study_tables.py runs/paper-cpu [--seeds] [--summary]

Prints one row per finished model: d, E, k, total, TPP, val loss, and for each task family the
accuracy on every split with its 95 % interval and the held-out task loss with its interval; with
``--summary`` the report's verdicts (``report/data/summary.csv``), with ``--seeds`` the seed-spread
table (``report/data/seed-spread.csv``). Nothing is computed here that the report does not hold.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def _pct(q, r) -> str:
    v, ci = q.get(r), q.ci(r)
    if v is None:
        return "–"
    return f"{v:.0%} [{ci[0]:.0%}, {ci[1]:.0%}]" if ci else f"{v:.0%}"


def _loss(q, r) -> str:
    v, ci = q.get(r), q.ci(r)
    if v is None:
        return "–"
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{v:.3f}"


def _splits(rows, task) -> list[str]:
    from moelab.analysis import data as D

    return sorted(D.splits_of(rows, task), key=lambda s: (s != "train", s))


def model_table(study: Path) -> str:
    from moelab.accounting import human_count
    from moelab.analysis import data as D

    rows, _ = D.load_study_rows(study, write_store=False)
    fams = D.families(rows)
    header = ["d", "E", "k", "lr", "init std", "seed", "post", "total", "TPP", "val loss"]
    for f in fams:
        header += [f"{f} acc. {sp}" for sp in _splits(rows, f)] + [f"{f} task loss held-out"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    done = [r for r in rows if r["status"] == "done"]
    done.sort(key=lambda r: (r.get("posttrain") or "", D.num(r.get("d_model")) or 0, D.num(r.get("top_k")) or 0,
                             D.num(r.get("num_experts")) or 0, D.num(r.get("lr")) or 0, D.num(r.get("init_std")) or 0,
                             D.num(r.get("seed")) or 0))
    for r in done:
        cells = [r.get("d_model"), r.get("num_experts"), r.get("top_k"), f"{D.num(r.get('lr')) or 0:g}",
                 f"{D.num(r.get('init_std')) or 0:g}", r.get("seed"), r.get("posttrain") or "–", human_count(D.num(r.get("total_params")) or 0),
                 f"{D.num(r.get('tpp')) or 0:.3g}", f"{D.num(r.get('val_loss')) or float('nan'):.3f}"]
        for f in fams:
            cells += [_pct(D.accuracy_of(f, rows, sp), r) for sp in _splits(rows, f)]
            cells.append(_loss(D.task_loss_of(f, rows, "heldout"), r))
        lines.append([str(c) for c in cells])
    # lr, seed and post-training columns only where they vary
    keep = [i for i, h in enumerate(header) if h not in ("lr", "init std", "seed", "post") or len({r[i] for r in lines[2:]}) > 1]
    table = [[header[i] for i in keep]] + [[r[i] for i in keep] for r in lines[2:]]
    return "\n".join(["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(keep)]
                     + ["| " + " | ".join(r) + " |" for r in table[1:]])


def csv_table(path: Path) -> str:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return ""
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    for r in rows[1:]:
        out.append("| " + " | ".join(c.replace("|", "/") for c in r) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study")
    p.add_argument("--summary", action="store_true")
    p.add_argument("--seeds", action="store_true")
    args = p.parse_args(argv)
    study = Path(args.study)
    print(model_table(study))
    if args.summary:
        print()
        print(csv_table(study / "report" / "data" / "summary.csv"))
    if args.seeds and (study / "report" / "data" / "seed-spread.csv").is_file():
        print()
        print(csv_table(study / "report" / "data" / "seed-spread.csv"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
