"""Task files: JSON list or JSONL of {prompt, answer}; every problem is one UserError line naming file and item."""

import json

import pytest

from moelab.errors import UserError
from moelab.eval.extract import normalize_number
from moelab.eval.taskfile import load_task_file

from eval_helpers import shared_file


def _write(tmp_path, text, name="task.json"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text if isinstance(text, str) else json.dumps(text), encoding="utf-8")
    return path


def _error(path) -> str:
    with pytest.raises(UserError) as info:
        load_task_file(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_json_list_loads_with_gold_and_meta(tmp_path):
    path = _write(tmp_path, [
        {"prompt": "Q: 2+2?\nA:", "answer": " 2+2=4\n#### 4"},
        {"prompt": "Capital of France?", "answer": " Paris\n"},
        {"prompt": "p", "answer": "a", "gold": "custom", "source": "x"},
    ])
    items = load_task_file(path)
    assert [it.gold for it in items] == ["4", "Paris", "custom"]
    assert items[0].answer == " 2+2=4\n#### 4"  # the answer is kept whole for task loss
    assert items[2].meta == {"source": "x", "index": 2}


def test_jsonl_by_suffix_and_by_content(tmp_path):
    lines = "\n".join(json.dumps({"prompt": f"p{i}", "answer": f" {i}"}) for i in range(3)) + "\n\n"
    for name in ("t.jsonl", "t.json"):
        items = load_task_file(_write(tmp_path, lines, name))
        assert [it.prompt for it in items] == ["p0", "p1", "p2"]


def test_multiple_choice_fields(tmp_path):
    items = load_task_file(_write(tmp_path, [{"prompt": "p", "answer": " b", "choices": [" a", " b"], "label": 1}]))
    assert items[0].meta["choices"] == [" a", " b"] and items[0].meta["label"] == 1
    for bad in ({"choices": [" a"], "label": 3}, {"choices": "ab", "label": 0}, {"choices": [" a"], "label": True},
                {"label": 0}):
        msg = _error(_write(tmp_path, [{"prompt": "p", "answer": " a", **bad}]))
        assert "item 0" in msg


@pytest.mark.parametrize(
    "content, needle",
    [
        ([{"prompt": "p", "answer": "a"}, {"prompt": "p"}], "item 1: missing field 'answer'"),
        ([{"answer": "a"}], "item 0: missing field 'prompt'"),
        ([{"prompt": "p", "answer": 4}], "item 0: field 'answer' must be a string"),
        ([{"prompt": None, "answer": "a"}], "item 0: field 'prompt' must be a string"),
        ([{"prompt": "p", "answer": ""}], "item 0: field 'answer' is empty"),
        ([{"prompt": "p", "answer": "a", "gold": 3}], "item 0: field 'gold' must be a string"),
        ([{"prompt": "p", "answer": "a"}, ["p", "a"]], "item 1: expected an object"),
        ([], "no items"),
        ("", "no items"),
        ({"prompt": "p", "answer": "a"}, "expected a JSON list"),
        ('[{"prompt": "p",\n "answer": }]', "invalid JSON at line 2"),
    ],
)
def test_errors_name_file_and_item(tmp_path, content, needle):
    assert needle in _error(_write(tmp_path, content))


def test_jsonl_error_names_line(tmp_path):
    text = json.dumps({"prompt": "p", "answer": "a"}) + "\n{broken\n"
    assert "invalid JSON at line 2" in _error(_write(tmp_path, text, "t.jsonl"))
    text = json.dumps({"prompt": "p", "answer": "a"}) + "\n" + json.dumps({"prompt": "p"}) + "\n"
    assert "item 1: missing field 'answer'" in _error(_write(tmp_path, text, "t.jsonl"))


def test_missing_and_non_utf8_files(tmp_path):
    assert "no such task file" in _error(tmp_path / "absent.json")
    assert "not a file" in _error(tmp_path)
    assert "not UTF-8" in _error(_write(tmp_path, b'[{"prompt": "\xff\xfe", "answer": "a"}]'))


def test_gsm8k_file_loads_with_numeric_golds():
    items = load_task_file(shared_file("gsm8k_4shot.json"))
    assert len(items) == 1319
    assert all(normalize_number(it.gold) == it.gold for it in items)
    assert items[0].gold == "18"
    assert items[0].prompt.endswith("\nAnswer:")


def test_code_files_load():
    assert len(load_task_file(shared_file("humanevalplus_test.json"))) == 164
    assert len(load_task_file(shared_file("mbppplus_test.json"))) == 378
