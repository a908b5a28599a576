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
    logliks = [[-4.0, -6.0], [-4.0, -6.0], [-2.0, -2.0, -9.0], [-9.0, -1.0], [-3.0, -4.0]]
    choices = [["ab", "abcdef"], ["ab", "abcdef"], ["a", "b", "c"], ["abc", "def"], ["éé", "abc"]]
    labels = [0, 1, 1, 1, 0]
    s = score_multiple_choice(logliks, choices, labels)
    # item 0: raw -4 > -6 -> 0; per character (and byte) -2 < -1 -> 1. item 2: a tie goes to the first choice.
    # item 4: "éé" is 2 characters but 4 bytes: per character -1.5 < -1.33 -> 1, per byte -0.75 > -1.33 -> 0.
    assert s.pred == [0, 0, 0, 1, 0] and s.pred_norm == [1, 1, 0, 1, 1] and s.pred_bytes == [1, 1, 0, 1, 0]
    assert s.correct == [True, False, False, True, True]
    assert s.correct_norm == [False, True, False, True, False]
    assert s.correct_bytes == [False, True, False, True, True]
    assert (s.acc, s.acc_norm, s.acc_bytes) == (3 / 5, 2 / 5, 3 / 5)


def test_multiple_choice_metrics_are_lm_evals():
    """acc / acc_norm / acc_bytes as lm-evaluation-harness computes them (its formulas, numpy argmax)."""
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    words = [" Zürich", " Oslo", " São Paulo", " Kraków", " Rome", " Ōsaka-fu"]
    logliks, choices, labels = [], [], []
    for _ in range(200):
        texts = list(rng.choice(words, size=3, replace=False))
        logliks.append(list(rng.normal(-8, 3, size=3)))
        choices.append(texts)
        labels.append(int(rng.integers(3)))
    s = score_multiple_choice(logliks, choices, labels)
    for ll, texts, y, c, cn, cb in zip(logliks, choices, labels, s.correct, s.correct_norm, s.correct_bytes):
        lls = np.array(ll)
        assert c == (np.argmax(lls) == y)
        assert cn == (np.argmax(lls / np.array([float(len(t)) for t in texts])) == y)  # lm-eval's acc_norm
        assert cb == (np.argmax(lls / np.array([float(len(t.encode("utf-8"))) for t in texts])) == y)  # acc_bytes
    assert s.correct_norm != s.correct_bytes  # the two normalisations do disagree on these choices


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
    assert r.acc_bytes == sum(rec["correct_bytes"] for rec in r.records) / 4
    assert r.summary()["acc_norm"] == r.acc_norm and r.summary()["acc_bytes"] == r.acc_bytes
    for rec in r.records:
        per_char = [ll / len(c) for ll, c in zip(rec["logliks"], choices)]
        assert rec["pred_norm"] == max(range(3), key=lambda j: per_char[j])
        per_byte = [ll / len(c.encode("utf-8")) for ll, c in zip(rec["logliks"], choices)]
        assert rec["pred_bytes"] == max(range(3), key=lambda j: per_byte[j])
    assert r.exact_match is None


def test_generation_budgets_keep_half_the_context_for_the_prompt():
    import warnings

    from moelab.eval.accuracy import generation_budgets

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # prompts that fit, or max_new_tokens within half the context: as before
        assert generation_budgets([10, 16], 48, 64) == ([10, 16], [48, 48])
        assert generation_budgets([100, 20], 16, 64) == ([48, 20], [16, 16])  # cut to what 16 new tokens leave
    with pytest.warns(UserWarning, match=r"^max_new_tokens=48 would leave a 64-token model 16 tokens of prompt: "
                                         r"3 of 4 prompts keep up to 32 \(half the context\) and generate as few "
                                         r"as 32 new tokens$"):
        assert generation_budgets([10, 20, 40, 64], 48, 64) == ([10, 20, 32, 32], [48, 44, 32, 32])
    with pytest.warns(UserWarning, match="2 of 3 prompts"):  # the presets' 72 of 128: prompts up to 56 untouched
        assert generation_budgets([56, 60, 80], 72, 128) == ([56, 60, 64], [72, 68, 64])


def test_long_prompts_keep_half_the_context(tokenizer):
    """48 new tokens on a 64-token model: a prompt of 16 < n <= 32 tokens is kept whole (not cut to 16) and
    generates 64 - n tokens; a short prompt still gets all 48."""
    model = scripted_model(tokenizer, " 19\nX:", max_seq_len=64)  # never stops before the token limit
    items = [_q(" ".join(f"w{i}" for i in range(8)) + "?", "19"), _q("a", "19")]
    n_long, n_short = (1 + len(tokenizer.encode(it.prompt, add_special_tokens=False)) for it in items)
    assert 16 < n_long <= 32 and n_short <= 16, (n_long, n_short)
    with pytest.warns(UserWarning, match=r"max_new_tokens=48 would leave a 64-token model 16 tokens of prompt: "
                                         r"1 of 2 prompts"):
        r = accuracy(model, tokenizer, items, max_new_tokens=48)
    assert r.num_truncated == 0 and [rec["truncated"] for rec in r.records] == [False, False]
    assert [rec["max_new_tokens"] for rec in r.records] == [64 - n_long, 48]
    cycle = tokenizer.encode(" 19\nX:", add_special_tokens=False)  # what the scripted model writes, in a loop
    for rec in r.records:
        assert rec["completion"] == tokenizer.decode([cycle[i % len(cycle)] for i in range(rec["max_new_tokens"])])


def test_world_task_records(small_world, tokenizer, model):
    task = get_task("reasoning", small_world)
    r = accuracy(model, tokenizer, task, limit=3, max_new_tokens=4, shots=1)
    assert r.num_items == 3 and len(r.records) == 3
    for rec, it in zip(r.records, task.splits["heldout"]):
        assert RECORD_FIELDS <= set(rec) and rec["gold"] == it.gold
        assert rec["score"] == task.score(it, rec["completion"])
    r = accuracy(model, tokenizer, get_task("knowledge", small_world), split="train", limit=2, max_new_tokens=3)
    assert all("\n" not in rec["completion"] for rec in r.records)
