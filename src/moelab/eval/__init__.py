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

from moelab.eval.accuracy import AccuracyResult, score_multiple_choice
from moelab.eval.gaps import assemble_levels, evaluate_model, generalization_gap
from moelab.eval.taskfile import load_task_file
from moelab.eval.taskloss import TaskLossResult, task_loss
from moelab.eval.tasks import get_task, list_tasks, task_from_file, task_label

__all__ = [
    "AccuracyResult",
    "TaskLossResult",
    "assemble_levels",
    "evaluate_model",
    "generalization_gap",
    "get_task",
    "list_tasks",
    "load_task_file",
    "score_multiple_choice",
    "task_from_file",
    "task_label",
    "task_loss",
]
