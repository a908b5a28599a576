"""Accuracy plumbing: a scripted model whose completion we know, records, few-shot, multiple choice."""

import json

import pytest

from moelab.data.world import Task, TaskItem
from moelab.errors import UserError
from moelab.eval.accuracy import (
    accuracy,
    extract_prediction,
    fewshot_prompts,
    is_exact_match,
    score_multiple_choice,
)
from moelab.eval.tasks import get_task
from moelab.eval.taskloss import task_loss

from eval_helpers import scripted_model

RECORD_FIELDS = {"prompt", "completion", "extracted", "gold", "exact_match", "score", "correct", "truncated", "index"}


def _q(text: str, gold: str, answer: str | None = None) -> TaskItem:
    return TaskItem(prompt=f"Question: {text}\nAnswer:", answer=answer or f" {gold}", gold=gold)


@pytest.fixture(scope="module")
def says_19(tokenizer):
    """Completes every 'Answer:' prompt with ' 19\\nQuestion: 19\\nQuestion: ...'."""
    return scripted_model(tokenizer, " 19\nQuestion:")


def test_scripted_model_numeric_items(tokenizer, says_19):
    items = [_q("a", "19"), _q("b", "20"), _q("c", "19.0"), _q("d", "-19"), _q("e", "19", " 10+9=19\n#### 19")]
    r = accuracy(says_19, tokenizer, items, max_new_tokens=12)
    assert [rec["completion"] for rec in r.records] == [" 19"] * 5  # cut before "\nQuestion:"
    assert [rec["extracted"] for rec in r.records] == ["19"] * 5
    assert [rec["correct"] for rec in r.records] == [True, False, True, False, True]
    assert r.accuracy == pytest.approx(3 / 5) and r.exact_match == pytest.approx(3 / 5)
    assert r.num_items == 5 and r.num_truncated == 0 and r.acc_norm is None
    for k, rec in enumerate(r.records):
        assert RECORD_FIELDS <= set(rec) and rec["index"] == k and rec["prompt"] == items[k].prompt


def test_scripted_model_knowledge_items_stop_at_newline(tokenizer):
    model = scripted_model(tokenizer, " 19\nX:")  # knowledge stops at the first newline
    items = [_q("a", "Lisbon"), _q("b", "19"), _q("c", "The 19.")]
    r = accuracy(model, tokenizer, items, max_new_tokens=10, batch_size=2)
    assert [rec["completion"] for rec in r.records] == [" 19"] * 3
    assert [rec["correct"] for rec in r.records] == [False, True, True]


def test_task_scorer_decides_correct(tokenizer, says_19, tmp_path):
    train = [_q(f"t{i}", str(i)) for i in range(5)]
    heldout = [_q("h0", "19"), _q("h1", "7")]
    task = Task("toy", "reasoning", {"train": train, "heldout": heldout},
                score=lambda item, pred: 1.0 if item.gold == "7" else 0.0)  # a contrarian scorer
    r = accuracy(says_19, tokenizer, task, shots=2, max_new_tokens=8)
    assert [rec["exact_match"] for rec in r.records] == [True, False]
    assert [rec["correct"] for rec in r.records] == [False, True]
    assert r.accuracy == 0.5 and r.exact_match == 0.5 and r.shots == 2
    path = r.write_records(tmp_path / "out" / "records.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == r.records
    assert accuracy(says_19, tokenizer, task, split="train", limit=3).num_items == 3


def test_fewshot_prompts_are_seeded_and_never_the_item():
    pool = [_q(f"t{i}", str(i)) for i in range(6)]
    items = pool[:4]
    a = fewshot_prompts(items, pool, 3, seed=0)
    assert a == fewshot_prompts(items, pool, 3, seed=0)
    assert a != fewshot_prompts(items, pool, 3, seed=1)
    assert fewshot_prompts(items[:2], pool, 3, seed=0) == a[:2]  # a limit does not change earlier prompts
    for it, prompt in zip(items, a):
        shots, last = prompt.rsplit("\n\n", 1)[0], prompt.rsplit("\n\n", 1)[1]
        assert last == it.prompt and it.prompt not in shots
        assert shots.count("Question:") == 3
        assert all(ex.prompt + ex.answer in prompt for ex in pool if ex.prompt in shots)
    assert fewshot_prompts(items, pool, 0, seed=0) == [it.prompt for it in items]
    with pytest.raises(UserError):
        fewshot_prompts(items, pool[:2], 3, seed=0)


def test_shot_and_split_errors(tokenizer, says_19, tmp_path):
    with pytest.raises(UserError, match="no train split"):
        accuracy(says_19, tokenizer, [_q("a", "1")], shots=1)
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"prompt": "p:", "answer": " 1\n#### 1"}]))
    task = get_task(f"file:{path}")
    with pytest.raises(UserError, match="no train split"):
        accuracy(says_19, tokenizer, task, shots=2)
    with pytest.raises(UserError, match="no split 'train'"):
        accuracy(says_19, tokenizer, task, split="train")


def test_extraction_per_family():
    assert extract_prediction("reasoning", " 3 + 4 = 7\n#### 7", "7") == "7"
    assert extract_prediction("reasoning", " so it is $1,200.00", "1200") == "1200"
    assert extract_prediction("reasoning", " #### Yes, sir\nmore", "yes sir") == "yes sir"
    assert extract_prediction("knowledge", " Halden University.\nQuestion:", "Halden University") == "halden university"
    assert is_exact_match("reasoning", "1200", "1,200")
    assert is_exact_match("knowledge", "halden university", "Halden University")
    assert not is_exact_match("reasoning", None, "1")


def test_multiple_choice_arithmetic_on_given_numbers():
    logliks = [[-4.0, -6.0], [-4.0, -6.0], [-2.0, -2.0, -9.0], [-9.0, -1.0]]
    num_bytes = [[2, 6], [2, 6], [1, 1, 1], [3, 3]]
    labels = [0, 1, 1, 1]
    s = score_multiple_choice(logliks, num_bytes, labels)
    # item 0: raw -4 > -6 -> 0; per byte -2 < -1 -> 1. item 2: a tie goes to the first choice.
    assert s.pred == [0, 0, 0, 1] and s.pred_norm == [1, 1, 0, 1]
    assert s.correct == [True, False, False, True] and s.correct_norm == [False, True, False, True]
    assert s.acc == 0.5 and s.acc_norm == 0.5


def test_multiple_choice_items_use_choice_loglikelihoods(tokenizer, model):
    choices = [" Lisbon", " Oslo and more", " Porto"]
    items = [TaskItem(prompt=f"Question: Where was person {i} born?\nAnswer:", answer=choices[i % 3],
                      gold=choices[i % 3].strip(), meta={"choices": choices, "label": i % 3}) for i in range(4)]
    r = accuracy(model, tokenizer, items)
    for it, rec in zip(items, r.records):
        direct = task_loss(model, tokenizer, [TaskItem(it.prompt, c, "") for c in choices])
        assert rec["logliks"] == pytest.approx([-x for x in direct.nll], rel=1e-5)
        assert rec["pred"] == max(range(3), key=lambda j: rec["logliks"][j])
        assert rec["correct"] == (rec["pred"] == it.meta["label"])
    assert r.accuracy == sum(rec["correct"] for rec in r.records) / 4
    assert r.acc_norm == sum(rec["correct_norm"] for rec in r.records) / 4
    assert r.exact_match is None


def test_world_task_records(small_world, tokenizer, model):
    task = get_task("reasoning", small_world)
    r = accuracy(model, tokenizer, task, limit=3, max_new_tokens=4, shots=1)
    assert r.num_items == 3 and len(r.records) == 3
    for rec, it in zip(r.records, task.splits["heldout"]):
        assert RECORD_FIELDS <= set(rec) and rec["gold"] == it.gold
        assert rec["score"] == task.score(it, rec["completion"])
    r = accuracy(model, tokenizer, get_task("knowledge", small_world), split="train", limit=2, max_new_tokens=3)
    assert all("\n" not in rec["completion"] for rec in r.records)
