"""The task registry: every evaluation task by name.

Names:

- ``knowledge``, ``reasoning``, ``reasoning/<generator>``: the world's own tasks
  (``World.tasks()``), each with a ``train`` split (items like those in pretraining) and a
  ``heldout`` split; ``world=None`` means the default world (``WorldConfig()``, built once).
- ``file:<path>``: a task file (see :mod:`moelab.eval.taskfile`), one split, ``heldout``.
  Its family is ``reasoning`` when the answers carry ``#### N`` (numeric extraction and
  scoring), else ``knowledge`` (first-line exact match).

    task = get_task("reasoning/addition", world)
    task = get_task("file:../shared/data/gsm8k_4shot.json")
"""

from __future__ import annotations

import difflib
from pathlib import Path

from moelab.data.world import Task, TaskItem, World
from moelab.errors import UserError
from moelab.eval.extract import extract_knowledge, extract_numeric, normalize_text, numbers_match
from moelab.eval.taskfile import load_task_file

__all__ = ["get_task", "list_tasks", "task_from_file", "task_label", "FILE_PREFIX", "REASONING_STOPS"]

FILE_PREFIX = "file:"
# Where a few-shot "Question: ...\nAnswer: ..." completion ends: the model starts the next question.
REASONING_STOPS = ("\n\nQuestion:", "\nQuestion:")

_default_world: World | None = None


def _world(world: World | None) -> World:
    global _default_world
    if world is not None:
        return world
    if _default_world is None:
        from moelab.config import WorldConfig
        from moelab.data.world import build_world

        _default_world = build_world(WorldConfig())
    return _default_world


def list_tasks(world: World | None = None) -> list[str]:
    """Names of the world's tasks (``file:<path>`` tasks are open-ended and not listed)."""
    return list(_world(world).tasks())


def _score_numeric(item: TaskItem, prediction: str) -> float:
    return float(numbers_match(extract_numeric(prediction), item.gold))


def _score_first_line(item: TaskItem, prediction: str) -> float:
    return float(extract_knowledge(prediction) == normalize_text(item.gold))


def task_from_file(path: str | Path) -> Task:
    """A one-split (``heldout``) task from a task file; raises ``UserError`` on a bad file."""
    items = load_task_file(path)
    numeric = any("####" in item.answer for item in items)
    if numeric:
        return Task(f"{FILE_PREFIX}{path}", "reasoning", {"heldout": items}, _score_numeric, REASONING_STOPS)
    return Task(f"{FILE_PREFIX}{path}", "knowledge", {"heldout": items}, _score_first_line, ("\n",))


def get_task(name: str, world: World | None = None) -> Task:
    """The task called ``name``; an unknown name is a ``UserError`` listing the known ones."""
    if name.startswith(FILE_PREFIX):
        path = name[len(FILE_PREFIX):]
        if not path:
            raise UserError(f"task '{name}': expected file:<path to a task file>")
        return task_from_file(path)
    tasks = _world(world).tasks()
    if name in tasks:
        return tasks[name]
    close = difflib.get_close_matches(name, list(tasks), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    known = ", ".join([*tasks, f"{FILE_PREFIX}<path>"])
    raise UserError(f"unknown task '{name}'{hint}; known tasks: {known}")


def task_label(name: str) -> str:
    """A short, path-free label for result keys: ``file:/a/b/gsm8k_4shot.json`` -> ``file:gsm8k_4shot``."""
    if name.startswith(FILE_PREFIX):
        return FILE_PREFIX + Path(name[len(FILE_PREFIX):]).stem
    return name
