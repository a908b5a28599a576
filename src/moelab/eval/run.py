"""Evaluate a finished training run (or a study's imported model) once: ``evaluate_run(run_dir, cfg)``.

The whole suite of :func:`moelab.eval.gaps.evaluate_model` (task loss with its bootstrap interval,
greedy accuracy with its Wilson interval, both splits of every task, the gaps) on the run's final
model, against the world its config describes, the pretraining loss on the world's memorisable tokens
apart from the rest (:mod:`moelab.eval.memorisable`; runs trained on the world), plus the lm-evaluation-harness tasks of ``eval.lm_eval``; the result is cached in ``run_dir/eval/summary.json``
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
    from moelab.jsonfile import json_problem, read_json
    from moelab.modelio import load_model

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
    if any(source.kind == "world" for source in cfg.data.sources):  # claim 1's premise, where capacity binds
        from moelab.eval.memorisable import memorisable_losses

        result.update(memorisable_losses(model, tokenizer, world))
    del model
    if cfg.eval.lm_eval:  # the harness's own tasks, on the same model: results under lm_eval/<task>/<metric>
        from moelab.eval.lmeval import run_lm_eval, summarize

        harness = run_lm_eval(run_dir, cfg.eval.lm_eval, include_path=cfg.eval.lm_eval_include,
                              limit=cfg.eval.lm_eval_limit, num_fewshot=cfg.eval.lm_eval_fewshot,
                              output=Path(run_dir) / "eval" / "lm-eval")
        result["lm_eval"] = summarize(harness)
    atomic_write_json(cached, result)
    return result
