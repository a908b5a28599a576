"""The task registry: world tasks, file tasks, unknown names."""

import json

import pytest

from moelab.errors import UserError
from moelab.eval.tasks import get_task, list_tasks, task_label

from eval_helpers import shared_file


def test_world_tasks(small_world):
    names = list_tasks(small_world)
    assert {"knowledge", "reasoning", "reasoning/addition"} <= set(names)
    for name in names:
        task = get_task(name, small_world)
        assert task.name == name and set(task.splits) == {"train", "heldout"}
    assert get_task("knowledge", small_world).family == "knowledge"


def test_unknown_task_lists_known_names_with_hint(small_world):
    with pytest.raises(UserError) as info:
        get_task("reasoning/additon", small_world)
    msg = str(info.value)
    assert "did you mean 'reasoning/addition'" in msg and "knowledge" in msg and "file:<path>" in msg
    assert "\n" not in msg
    with pytest.raises(UserError, match="file:<path"):
        get_task("file:", small_world)


def test_file_tasks(tmp_path):
    numeric = tmp_path / "math.json"
    numeric.write_text(json.dumps([{"prompt": "Question: 1+1?\nAnswer:", "answer": " 1+1=2\n#### 2"}]))
    task = get_task(f"file:{numeric}")
    assert task.family == "reasoning" and list(task.splits) == ["heldout"]
    item = task.splits["heldout"][0]
    assert task.score(item, " it is 2.0\nQuestion:") == 1.0 and task.score(item, " 3") == 0.0
    facts = tmp_path / "facts.jsonl"
    facts.write_text(json.dumps({"prompt": "Capital of France?", "answer": " Paris"}) + "\n")
    task = get_task(f"file:{facts}")
    assert task.family == "knowledge" and "\n" in task.stop_strings
    assert task.score(task.splits["heldout"][0], " paris.\nmore") == 1.0
    with pytest.raises(UserError, match="no such task file"):
        get_task(f"file:{tmp_path / 'absent.json'}")


def test_gsm8k_file_task():
    task = get_task(f"file:{shared_file('gsm8k_4shot.json')}")
    assert task.family == "reasoning" and len(task.splits["heldout"]) == 1319


def test_task_label():
    assert task_label("file:/a/b/gsm8k_4shot.json") == "file:gsm8k_4shot"
    assert task_label("reasoning/addition") == "reasoning/addition"
