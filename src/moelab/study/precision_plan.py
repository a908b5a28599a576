"""Each run's precision, fixed when its study is planned and kept for every re-run and resume.

    recorded = fix_precisions(feasible_runs, previous, run_dir_of)   # {run_id: {"precision", "precision_rule"}}

``precision: auto`` on a CPU trains in the faster of fp32 and bf16, measured on this machine
(:mod:`moelab.train.precision`). Left to the trainer, the same study file trained fp32 on one CPU
and bf16 on another, and the two gave different models: on a Zen 4 clone E4-k2 solved 95 % of the
held-out problems against 54 % in the README's fp32 table (issue 25). So the choice is made once, when
the sweep (or the demo) plans its runs, written next to the plan (``plan.json``'s ``precision`` and
``precision_rule`` per run; the demo's ``demo.json``), and every later invocation on that folder — a
re-run after a crash, a resume on another machine with the folder copied — reads it back instead of
measuring again. Each run's config then names the precision, so the trainer does not re-decide.

A run that has checkpoints but no recorded choice (a folder swept before this rule, 2026-12-07) keeps
``auto``: the trainer resumes it in the precision its checkpoint recorded. For the same numbers from a
fresh folder on another machine, a study names its precision (the bundled CPU presets do).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Mapping

__all__ = ["fix_precisions", "recorded_precisions"]


def recorded_precisions(rows: Iterable[Mapping]) -> dict[str, dict]:
    """``{run_id: {"precision", "precision_rule"}}`` from earlier plan rows that recorded a choice."""
    return {r["run_id"]: {"precision": r["precision"], "precision_rule": r.get("precision_rule") or ""}
            for r in rows if isinstance(r, Mapping) and r.get("precision") in ("fp32", "bf16") and r.get("run_id")}


def _has_checkpoint(run_dir: Path) -> bool:
    ckpt = run_dir / "checkpoints"
    return ckpt.is_dir() and any(ckpt.iterdir())


def fix_precisions(runs: list, recorded: Mapping[str, Mapping], run_dir_of: Callable[[str], Path]) -> dict[str, dict]:
    """Give every trained run of ``runs`` (``PlannedRun`` with a config) a fixed precision: the one
    ``recorded`` for it, else the configured one, else 'auto' resolved now (measured once per model
    size and cached per CPU). Sets ``run.config.train.precision``; returns what to record."""
    from moelab.study.probe import resolve_device
    from moelab.train.precision import resolve_precision

    chosen: dict[str, dict] = {}
    for run in runs:
        if run.config is None or getattr(run, "imported", False):
            continue
        train = run.config.train
        if run.run_id in recorded:
            choice = dict(recorded[run.run_id])
        elif train.precision != "auto":
            choice = {"precision": train.precision, "precision_rule": f"precision: {train.precision} (as configured)"}
        elif _has_checkpoint(run_dir_of(run.run_id)):
            chosen[run.run_id] = {"precision": "auto", "precision_rule": "auto: the precision its checkpoint recorded "
                                                                         "(started before precisions were planned)"}
            continue
        else:
            device = resolve_device(train.device)
            picked = resolve_precision("auto", "cuda" if device.startswith("cuda") else "cpu", run.config.model,
                                       batch=train.batch_size // train.grad_accum, seq=run.config.data.seq_len)
            choice = {"precision": picked.precision, "precision_rule": f"planned: {picked.rule}"}
        run.config = run.config.model_copy(update={"train": train.model_copy(update={"precision": choice["precision"]})})
        chosen[run.run_id] = choice
    return chosen
