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


def _flat_train(summary: dict) -> dict:
    keep = ("train_loss", "val_loss", "tokens_seen", "steps", "wall_s", "tokens_per_s")
    return {k: summary[k] for k in keep if k in summary}
