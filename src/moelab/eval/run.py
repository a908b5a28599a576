"""Evaluate a finished training run (or a study's imported model) once: ``evaluate_run(run_dir, cfg)``.

The whole suite of :func:`moelab.eval.gaps.evaluate_model` (task loss with its bootstrap interval,
greedy accuracy with its Wilson interval, both splits of every task, the gaps) on the run's final
model, against the world its config describes; the result is cached in ``run_dir/eval/summary.json``
so a resumed sweep or demo never evaluates a model twice. Used by the sweep's executors and the demo.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["evaluate_run"]


def evaluate_run(run_dir: Path, cfg, *, progress: bool = True) -> dict:
    """Evaluate a trained run once; cached in ``run_dir/eval/summary.json``."""
    from moelab.atomic import atomic_write_json
    from moelab.data.world import build_world
    from moelab.eval.gaps import evaluate_model
    from moelab.modelio import load_model

    from moelab.jsonfile import json_problem, read_json

    cached = Path(run_dir) / "eval" / "summary.json"
    problem = json_problem(cached)
    if cached.is_file() and not problem:
        return json.loads(cached.read_text())
    if problem:  # the cache is moelab's own: name it, then evaluate again
        import warnings

        warnings.warn(f"{cached}: damaged ({problem}); evaluating the run again")
    train_summary = read_json(Path(run_dir) / "train_summary.json",
                              fix="delete it and run again (training resumes from its last checkpoint)")
    model, tokenizer, _ = load_model(run_dir)
    world = build_world(cfg.data.world)
    result = evaluate_model(model, tokenizer, world, cfg.eval, train_summary=train_summary, progress=progress)
    atomic_write_json(cached, result)
    return result
