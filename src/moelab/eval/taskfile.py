"""Task files: user-supplied ``{prompt, answer}`` items for task loss and accuracy.

Format (the seed paper's task-loss format): a JSON list of objects, or JSONL (one object per line;
chosen by a ``.jsonl`` suffix or by content). Each object needs string fields ``prompt`` and
``answer``; ``answer`` is the reference continuation whose NLL is the task loss. Optional fields:

- ``gold`` (string): the short final answer for accuracy. Default: the number after ``#### `` when
  ``answer`` has one (GSM8K format), else the stripped ``answer``.
- ``choices`` (list of strings) and ``label`` (index into it): a multiple-choice item.
- anything else is kept in ``TaskItem.meta``.

Every problem is a one-line :class:`~moelab.errors.UserError` naming the file and, where it applies,
the item index (0-based) or line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moelab.data.world import TaskItem
from moelab.errors import UserError
from moelab.eval.extract import extract_gold

__all__ = ["load_task_file"]

_REQUIRED = ("prompt", "answer")


def _read_text(path: Path) -> str:
    if not path.exists():
        raise UserError(f"{path}: no such task file")
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{path}: not UTF-8 text (bad byte at line {line}, offset {err.start})") from None


def _parse_jsonl(path: Path, text: str) -> list[Any]:
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: invalid JSON at line {lineno} column {err.colno}: {err.msg}") from None
    return rows


def _parse(path: Path, text: str) -> list[Any]:
    if not text.strip():
        raise UserError(f"{path}: no items (the task file is empty)")
    if path.suffix.lower() == ".jsonl":
        return _parse_jsonl(path, text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        # Several objects one per line in a .json file: read it as JSONL.
        if err.msg == "Extra data" and text.lstrip().startswith("{"):
            return _parse_jsonl(path, text)
        raise UserError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of {{prompt, answer}} objects, got {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _item(path: Path, index: int, raw: Any) -> TaskItem:
    where = f"{path}: item {index}"
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected an object with 'prompt' and 'answer', got {_kind(raw)}")
    for field in _REQUIRED:
        if field not in raw:
            raise UserError(f"{where}: missing field '{field}'")
        if not isinstance(raw[field], str):
            raise UserError(f"{where}: field '{field}' must be a string, got {_kind(raw[field])}")
    if not raw["answer"]:
        raise UserError(f"{where}: field 'answer' is empty")
    gold = raw.get("gold")
    if gold is None:
        gold = extract_gold(raw["answer"])
    elif not isinstance(gold, str):
        raise UserError(f"{where}: field 'gold' must be a string, got {_kind(gold)}")
    meta = {k: v for k, v in raw.items() if k not in ("prompt", "answer", "gold")}
    if "choices" in meta or "label" in meta:
        choices, label = meta.get("choices"), meta.get("label")
        if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
            raise UserError(f"{where}: field 'choices' must be a non-empty list of non-empty strings")
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices):
            raise UserError(f"{where}: field 'label' must be an index into 'choices' (0..{len(choices) - 1})")
    meta.setdefault("index", index)
    return TaskItem(prompt=raw["prompt"], answer=raw["answer"], gold=gold, meta=meta)


def load_task_file(path: str | Path) -> list[TaskItem]:
    """Read a task file (JSON list or JSONL) into ``TaskItem``s; raise ``UserError`` on any problem."""
    path = Path(path)
    rows = _parse(path, _read_text(path))
    if not rows:
        raise UserError(f"{path}: no items (the task file is empty)")
    return [_item(path, i, raw) for i, raw in enumerate(rows)]
