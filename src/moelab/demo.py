"""`moelab demo`: the thin end-to-end path — plan a small iso-FLOP family, train each
member on the default world, evaluate it, write ``results.csv`` and ``report.html``.

Re-running on the same directory skips finished work (training resumes from its last
checkpoint; evaluations already written are reused).
"""

from __future__ import annotations

import time
from pathlib import Path

from moelab.config import load_study_config
from moelab.errors import UserError
from moelab.eval.run import evaluate_run
from moelab.study.plan import plan
from moelab.ui import console


def run_demo(preset: str, out: Path, *, progress: bool = True) -> dict:
    from moelab.atomic import atomic_write_text as write_text_atomic
    from moelab.study.results import rows_to_csv
    from moelab.train.trainer import train

    study = load_study_config(preset)
    runs = plan(study)
    feasible = [r for r in runs if r.feasible]
    if not feasible:
        raise UserError(f"study '{preset}': no feasible run ({runs[0].reason if runs else 'empty grid'})")
    from moelab.resources import check_fits
    from moelab.study.probe import ProbeUnavailable, resolve_device

    for run in feasible:  # a run that cannot fit is refused before the folder exists
        try:
            device = resolve_device(run.config.train.device)
        except ProbeUnavailable as err:
            raise UserError(f"study '{preset}': {err}") from None
        check_fits(run.config, device)
    recorded = _claim_demo_dir(out, preset)
    # Precisions fixed once, before the first run, and kept by every resume (moelab.study.precision_plan).
    from moelab.atomic import atomic_write_json
    from moelab.study.precision_plan import fix_precisions

    precisions = fix_precisions(feasible, recorded, lambda run_id: out / "runs" / run_id)
    atomic_write_json(out / DEMO_FILE, {"preset": preset, "precisions": precisions})

    rows: list[dict] = []
    started = time.time()
    for i, run in enumerate(feasible, 1):
        console.print(f"[bold]run {i}/{len(feasible)}[/bold] {run.run_id} ({run.name}, "
                      f"{run.steps} steps, {run.tokens:,} tokens, TPP {run.tpp:.2g})")
        run_dir = out / "runs" / run.run_id
        summary = train(run.config, run_dir, progress=progress)
        console.print("  evaluating (task loss and greedy accuracy, train and held-out splits)…")
        evaluation = evaluate_run(run_dir, run.config, progress=False)
        console.print("  " + _headline(summary, evaluation))
        rows.append(run.row() | {"status": "done"} | _flat_train(summary) | evaluation)
    for run in runs:
        if not run.feasible:
            rows.append(run.row() | {"status": "infeasible"})

    results_csv = out / "results.csv"
    write_text_atomic(results_csv, rows_to_csv(rows))
    from moelab.analysis.report import write_demo_report

    report_html = write_demo_report(rows, out / "report.html", title=f"moelab demo — study '{study.name}'")
    _print_seed_table([r for r in rows if r.get("status") == "done"])
    console.print(f"demo finished in {time.time() - started:.0f} s")
    return {"results_csv": str(results_csv), "report_html": str(report_html), "rows": rows}


DEMO_FILE = "demo.json"  # {"preset": name, "precisions": {run_id: …}}: marks the folder as a demo of that preset


def _claim_demo_dir(out: Path, preset: str) -> dict:
    """A new or empty folder, or a demo of the same preset (then the demo resumes); refused otherwise.
    Returns the precisions an earlier invocation fixed (``{}`` for a new demo)."""
    import json

    from moelab.atomic import atomic_write_json
    from moelab.outdir import claim_output

    recorded: dict = {}
    if claim_output(out, "demo") and (out / DEMO_FILE).is_file():
        try:
            saved = json.loads((out / DEMO_FILE).read_text(encoding="utf-8"))
            earlier, recorded = saved.get("preset"), saved.get("precisions") or {}
            recorded = {k: v for k, v in recorded.items() if isinstance(v, dict)
                        and v.get("precision") in ("fp32", "bf16")}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            raise UserError(f"{out / DEMO_FILE}: unreadable; use a new --out") from None
        if earlier != preset:
            raise UserError(f"--out {out}: holds a demo of preset '{earlier}', not '{preset}'; use a new --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / DEMO_FILE).is_file():
            atomic_write_json(out / DEMO_FILE, {"preset": preset})
    except OSError as err:
        raise UserError(f"--out {out}: not writable ({err.strerror})") from None
    return recorded


def _headline(summary: dict, evaluation: dict) -> str:
    parts = [f"val loss {summary.get('val_loss', float('nan')):.3f}"]
    for family in ("knowledge", "reasoning"):
        for split in ("train", "heldout"):
            acc = evaluation.get(f"accuracy/{family}/{split}")
            lo, hi = evaluation.get(f"accuracy_lo/{family}/{split}"), evaluation.get(f"accuracy_hi/{family}/{split}")
            if acc is not None:
                ci = f" [{lo:.0%}, {hi:.0%}]" if lo is not None and hi is not None else ""
                parts.append(f"{family} {split} {acc:.0%}{ci}")
    return " | ".join(parts) + " (accuracy, 95 % interval over items)"


SEED_TABLE = (("val_loss", "val loss", 1, ".3f"), ("accuracy/knowledge/train", "facts recalled %", 100, ".0f"),
              ("accuracy/reasoning/heldout", "held-out reasoning %", 100, ".0f"),
              ("digit_accuracy/reasoning/heldout", "per-digit %", 100, ".0f"))


def seed_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: each model's mean ± sample sd over its seeds (the README's demo table)."""
    import statistics

    by_model: dict[str, list[dict]] = {}
    for r in rows:
        by_model.setdefault(r["name"], []).append(r)
    body = []
    for name, group in by_model.items():
        line = [name, str(len(group))]
        for key, _, scale, spec in SEED_TABLE:
            values = [r[key] * scale for r in group if isinstance(r.get(key), (int, float))]
            if not values:
                line.append("–")
                continue
            sd = f" ± {statistics.stdev(values):{spec}}" if len(values) > 1 else ""
            line.append(f"{statistics.fmean(values):{spec}}{sd}")
        body.append(line)
    return ["model", "seeds", *(label for _, label, _, _ in SEED_TABLE)], body


def _print_seed_table(rows: list[dict]) -> None:
    from rich.table import Table

    header, body = seed_table(rows)
    table = Table(title="mean ± sd over seeds (accuracy: 300 items per split)")
    for col in header:
        table.add_column(col, justify="left" if col == "model" else "right")
    for line in body:
        table.add_row(*line)
    console.print(table)


def _flat_train(summary: dict) -> dict:
    keep = ("train_loss", "val_loss", "tokens_seen", "steps", "wall_s", "tokens_per_s")
    return {k: summary[k] for k in keep if k in summary}
