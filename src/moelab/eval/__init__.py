"""Evaluation: the task registry, task loss, accuracy, and the three levels with their gaps.

    from moelab.eval import get_task, task_loss, evaluate_model
    from moelab.eval.accuracy import accuracy
    task = get_task("reasoning", world)
    task_loss(model, tok, task.splits["heldout"]).bits_per_token
    accuracy(model, tok, task, split="heldout", shots=2).accuracy
    evaluate_model(model, tok, world, run_cfg.eval, train_summary=summary)   # flat dict

Modules: ``extract`` (pure answer extraction), ``taskfile`` ({prompt, answer} files), ``tasks``
(registry), ``taskloss``, ``accuracy``, ``gaps`` (levels, gaps, ``evaluate_model``).
The function ``accuracy`` is not re-exported here: it would shadow the ``moelab.eval.accuracy``
module attribute (``import moelab.eval.accuracy as m`` would then give the function).
"""

import importlib

# Lazy re-exports (PEP 562): `moelab eval …` and the CLI parser import this package, and the
# heavy modules (torch, transformers) should load only when a command actually needs them.
_EXPORTS = {
    "AccuracyResult": "accuracy", "score_multiple_choice": "accuracy",
    "assemble_levels": "gaps", "evaluate_model": "gaps", "generalization_gap": "gaps",
    "load_task_file": "taskfile", "TaskLossResult": "taskloss", "task_loss": "taskloss",
    "get_task": "tasks", "list_tasks": "tasks", "task_from_file": "tasks", "task_label": "tasks",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"moelab.eval.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'moelab.eval' has no attribute {name!r}")
