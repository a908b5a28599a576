"""Code tasks: task loss on the seed paper's HumanEval+/MBPP+ files, pass@k on a hand-made file with tests.

pass@k is checked where the answer is known: given completions (hand-computed pass@k), the reference
solutions (all pass), and a scripted model that writes one fixed line, which solves exactly one of
the three items.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from moelab.errors import UserError
from moelab.eval.code import check_references, code_pass_at_k, program_for, score_code
from moelab.eval.taskfile import load_task_file

from eval_helpers import scripted_model, shared_file, tiny_model

# HumanEval style (the prompt is the signature; tests define check), and MBPP style (a prose prompt,
# the completion is the whole function; tests are assert lines).
ITEMS = [
    {"prompt": 'def add(a, b):\n    """Return a + b."""\n', "answer": "    return a + b\n",
     "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
     "entry_point": "add"},
    {"prompt": 'def sub(a, b):\n    """Return a - b."""\n', "answer": "    return a - b\n",
     "test": "def check(candidate):\n    assert candidate(5, 3) == 2\n", "entry_point": "sub"},
    {"prompt": "Write a function plus(x, y) that returns the sum of x and y.\n",
     "answer": "def plus(x, y):\n    return x + y\n", "test_list": ["assert plus(2, 3) == 5", "assert plus(0, 0) == 0"]},
]
SCRIPT = "    return a + b\n"  # right for add, wrong for sub, not a program on its own (plus)


@pytest.fixture(scope="module")
def code_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("code") / "code.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in ITEMS))
    return path


@pytest.fixture(scope="module")
def code_tokenizer():
    """A tokenizer that knows this code, so the scripted line is a handful of distinct tokens."""
    from moelab.data.tokenizer import train_tokenizer

    return train_tokenizer([d["prompt"] + d["answer"] for d in ITEMS] * 20, vocab_size=300)


def test_given_completions_give_hand_computed_pass_at_k(code_file):
    items = load_task_file(code_file)
    completions = [
        ["    return a + b\n", "    return a - b\n", "    return b + a\n", "    return (\n"],  # c=2
        ["    while True:\n        pass\n", "    return a - b\n", "    return 0\n", "    raise ValueError('no')\n"],  # c=1
        ["def plus(x, y):\n    return x + y\n", "def plus(x, y):\n    return x * y\n",
         "def plus(x, y):\n    return y + x\n",
         "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\n"],  # c=2
    ]
    r = score_code(items, completions, ks=(1, 2, 4, 10), timeout_s=2.0, task_name=f"file:{code_file}")
    assert r.n == 4 and r.ks == (1, 2, 4) and r.num_items == 3  # k=10 > n is left out
    assert [rec["c"] for rec in r.records] == [2, 1, 2]
    # pass@k = 1 - C(n-c, k) / C(n, k), by hand: c=2 -> 1/2, 5/6, 1; c=1 -> 1/4, 1/2, 1.
    assert r.pass_at_k[1] == pytest.approx((0.5 + 0.25 + 0.5) / 3)
    assert r.pass_at_k[2] == pytest.approx((5 / 6 + 0.5 + 5 / 6) / 3)
    assert r.pass_at_k[4] == pytest.approx(1.0)
    assert [s["status"] for s in r.records[0]["samples"]] == ["passed", "failed", "passed", "error"]
    assert [s["status"] for s in r.records[1]["samples"]] == ["timeout", "passed", "failed", "error"]
    assert r.records[2]["samples"][3]["status"] == "error"  # the connection fails: an error, not a pass
    s = r.summary()
    assert s["pass@1"] == r.pass_at_k[1] and s["num_samples"] == 12 and s["num_passed_samples"] == 5
    assert s["statuses"] == {"error": 3, "failed": 3, "passed": 5, "timeout": 1}


def test_programs_follow_the_item_style(code_file):
    add, _, plus = load_task_file(code_file)
    program = program_for(add, "    return a + b\n")
    assert program.startswith(add.prompt + "    return a + b\n") and program.rstrip().endswith("check(add)")
    program = program_for(plus, "def plus(x, y):\n    return x + y\n")
    assert plus.prompt not in program and "check(" not in program and "assert plus(2, 3) == 5" in program


def test_reference_solutions_pass(code_file):
    assert [r.status for r in check_references(load_task_file(code_file))] == ["passed"] * 3


def test_scripted_model_samples_score_as_expected(code_file, code_tokenizer):
    ids = code_tokenizer.encode(SCRIPT, add_special_tokens=False)
    model = scripted_model(code_tokenizer, SCRIPT)
    items = load_task_file(code_file)
    r = code_pass_at_k(model, code_tokenizer, items, n=3, ks=(1, 3), max_new_tokens=2 * len(ids), timeout_s=3.0)
    for rec in r.records:
        assert [s["completion"] for s in rec["samples"]] == [SCRIPT * 2] * 3
    assert [rec["c"] for rec in r.records] == [3, 0, 0]
    assert [s["status"] for s in r.records[1]["samples"]] == ["failed"] * 3  # a + b is not a - b
    assert [s["status"] for s in r.records[2]["samples"]] == ["error"] * 3  # an indented line alone
    assert r.pass_at_k == {1: pytest.approx(1 / 3), 3: pytest.approx(1 / 3)}
    assert r.num_truncated == 0


def test_sampling_is_seeded(code_file, code_tokenizer):
    from moelab.eval.code import sample_code

    model = tiny_model(len(code_tokenizer))
    items = load_task_file(code_file)
    a, _ = sample_code(model, code_tokenizer, items, n=3, max_new_tokens=8, temperature=1.0, seed=3)
    b, _ = sample_code(model, code_tokenizer, items, n=3, max_new_tokens=8, temperature=1.0, seed=3)
    assert a == b and len(a) == 3 and all(len(x) == 3 for x in a)
    assert len({c for x in a for c in x}) > 1  # temperature sampling, not one repeated greedy answer


def test_items_without_tests_are_user_errors(code_file, tmp_path):
    humaneval = shared_file("humanevalplus_test.json")
    with pytest.raises(UserError, match=r"humanevalplus_test\.json: item 0: no 'test' field"):
        score_code(load_task_file(humaneval)[:2], [["x"], ["y"]], task_name=f"file:{humaneval}")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**ITEMS[0], "entry_point": 3}) + "\n")
    with pytest.raises(UserError, match="item 0: field 'entry_point'"):
        check_references(load_task_file(bad))


@pytest.mark.parametrize("name", ["humanevalplus_test.json", "mbppplus_test.json"])
def test_task_loss_on_the_seed_paper_code_files(name, tokenizer, model):
    from moelab.eval.taskloss import task_loss
    from moelab.eval.tasks import get_task

    path = shared_file(name)
    task = get_task(f"file:{path}")
    items = task.splits["heldout"][:6]
    r = task_loss(model, tokenizer, items)
    assert r.num_items == 6 and math.isfinite(r.bits_per_token) and math.isfinite(r.bits_per_byte)
    for it, ntok, trunc in zip(items, r.num_tokens, r.truncated):
        full = len(tokenizer.encode(it.answer, add_special_tokens=False))
        assert ntok == full or (trunc and ntok == model.cfg.max_seq_len)
    import moelab

    package = Path(moelab.__file__).parent  # the package never carries a copy of the data
    assert not [p for p in package.rglob("*.json*") if "humaneval" in p.name or "mbpp" in p.name]


def test_cli_code_command(code_file, code_tokenizer, tmp_path, capsys):
    from moelab.cli import main
    from moelab.modelio import save_model_dir

    model = scripted_model(code_tokenizer, SCRIPT)
    model_dir = save_model_dir(model, model.cfg, code_tokenizer, tmp_path / "model")
    steps = 2 * len(code_tokenizer.encode(SCRIPT, add_special_tokens=False))
    argv = ["eval", "code", "--model", str(model_dir), "--task-file", str(code_file), "--n", "2", "--k", "1", "2",
            "--max-new-tokens", str(steps), "--timeout", "3", "--device", "cpu", "--json", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pass@1"] == pytest.approx(1 / 3) and summary["pass@2"] == pytest.approx(1 / 3)
    assert json.loads((tmp_path / "out" / "code.json").read_text()) == summary
    rows = [json.loads(line) for line in (tmp_path / "out" / "code.jsonl").read_text().splitlines()]
    assert [row["c"] for row in rows] == [2, 0, 0]

    humaneval = shared_file("humanevalplus_test.json")
    argv[argv.index(str(code_file))] = str(humaneval)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "humanevalplus_test.json: item 0: no 'test' field" in err
