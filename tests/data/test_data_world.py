"""The default world: determinism, split hygiene, formats and scorers."""

import hashlib
import os
import subprocess
import sys
import time

import pytest

from moelab.config import WorldConfig
from moelab.data import people as ppl
from moelab.data import reasoning as rsn
from moelab.data.world import build_world
from moelab.errors import UserError


def _snapshot(world):
    tasks = {name: {s: [(i.prompt, i.answer, i.gold) for i in items] for s, items in t.splits.items()}
             for name, t in world.tasks().items()}
    return world.documents(), tasks


def test_default_world_is_fast_and_has_the_contract_tasks():
    start = time.perf_counter()
    world = build_world(WorldConfig())
    assert time.perf_counter() - start < 10
    tasks = world.tasks()
    assert {"knowledge", "reasoning", "reasoning/addition"} == set(tasks)
    assert tasks["knowledge"].family == "knowledge" and tasks["reasoning"].family == "reasoning"
    for task in tasks.values():
        assert set(task.splits) == {"train", "heldout"}
        assert all(len(items) == 300 for items in task.splits.values())
    # 1200 people x 2 biographies + 600 train people x 3 QA pairs x 4 copies + 3000 problems
    assert len(world.documents()) == 2400 + 7200 + 3000


def test_world_is_deterministic_in_the_seed(small_world):
    cfg = small_world.config
    assert _snapshot(build_world(cfg)) == _snapshot(small_world)
    other = build_world(cfg.model_copy(update={"seed": 1}))
    assert other.documents() != small_world.documents()


def test_documents_are_shuffled_not_grouped(world):
    docs = world.documents()
    kinds = ["Q" if d.startswith("Question:") else "B" for d in docs]
    assert kinds[:200].count("Q") not in (0, 200)


def test_people_have_unique_names_and_disjoint_splits(world):
    train = {p.name for p in world.train_people}
    heldout = {p.name for p in world.heldout_people}
    assert len(train) == len(world.train_people) == 600
    assert len(heldout) == len(world.heldout_people) == 600
    assert not train & heldout


def test_heldout_knowledge_only_in_biographies(world):
    docs = world.documents()
    qa_docs = [d for d in docs if d.startswith("Question:")]
    heldout = {p.name for p in world.heldout_people}
    assert not any(name in d for d in qa_docs for name in heldout)
    knowledge = world.tasks()["knowledge"]
    doc_set = set(docs)
    for item in knowledge.splits["heldout"]:
        assert item.prompt + item.answer not in doc_set
        assert item.meta["person"] in heldout
        # the fact itself is in the person's biographies
        assert any(item.meta["person"] in d and item.gold in d for d in docs if not d.startswith("Question:"))
    for item in knowledge.splits["train"]:
        assert item.prompt + item.answer in doc_set


def test_each_person_has_distinct_paraphrases(rg_world):
    person = rg_world.train_people[0]
    bios = [d for d in rg_world.documents() if d.startswith(person.name) and not d.startswith("Question:")]
    assert len(bios) == 4 and len(set(bios)) == 4
    for bio in bios:
        assert all(person.facts[a] in bio for a in rg_world.config.knowledge_attributes)


@pytest.mark.parametrize("which", ["world", "rg_world"])
def test_reasoning_heldout_is_disjoint_from_training(which, request):
    world = request.getfixturevalue(which)
    for name, problems in world.problems.items():
        train_questions = {p.question for p in problems}
        task = world.tasks()[f"reasoning/{name}"]
        heldout_prompts = [i.prompt for i in task.splits["heldout"]]
        assert len(set(heldout_prompts)) == len(heldout_prompts)
        assert not {p.removeprefix("Question: ").removesuffix("\nAnswer:") for p in heldout_prompts} & train_questions
        doc_set = set(world.documents())
        assert all(i.prompt + i.answer in doc_set for i in task.splits["train"])
        assert not any(i.prompt + i.answer in doc_set for i in task.splits["heldout"])


def test_reasoning_format_and_worked_solutions(rg_world, world):
    for p in world.problems["addition"]:
        assert p.answer == f" {p.solution}\n#### {p.final}"
        assert p.final == str(sum(p.entry["metadata"]["operands"])) and p.solution.count("carry") == 3
    world = rg_world
    for problems in world.problems.values():
        for p in problems:
            assert p.solution, p.question  # every default problem gets worked steps
            assert p.answer.endswith(f"\n#### {p.final}")
            assert p.solution.split(" = ")[-1] == p.final
            assert len(p.prompt + p.answer) < 200  # fits a short context
    item = world.tasks()["reasoning"].splits["heldout"][0]
    assert item.prompt.startswith("Question: ") and item.prompt.endswith("\nAnswer:")


def test_mixed_reasoning_task_takes_generators_in_turn(rg_world):
    items = rg_world.tasks()["reasoning"].splits["heldout"]
    assert {i.meta["generator"] for i in items} == {"basic_arithmetic", "chain_sum"}
    assert [i.meta["generator"] for i in items[:4]] == ["basic_arithmetic", "chain_sum"] * 2


@pytest.mark.parametrize("which", ["world", "rg_world"])
def test_scorers_accept_gold_and_reject_wrong_answers(which, request):
    for task in request.getfixturevalue(which).tasks().values():
        for split in ("train", "heldout"):
            for item in task.splits[split][:10]:
                assert task.score(item, item.answer) == 1.0
                assert task.score(item, " " + item.gold) == 1.0
                assert task.score(item, " Nowhere 999999") == 0.0


def test_knowledge_scoring_normalises():
    assert ppl.score_exact_match("  march 4 1987.\nQuestion: more", "March 4, 1987") == 1.0
    assert ppl.score_exact_match("\nLisbon!", "Lisbon") == 1.0
    assert ppl.score_exact_match("Lisbon Portugal", "Lisbon") == 0.0
    assert ppl.score_exact_match("", "Lisbon") == 0.0


def test_reasoning_extraction_and_partial_credit(rg_world):
    task = rg_world.tasks()["reasoning/basic_arithmetic"]
    item = next(i for i in task.splits["heldout"] if len(i.gold) == 1 and i.gold != "0")
    assert task.score(item, f" so the result is {item.gold}") == 1.0  # last-number fallback
    assert task.score(item, f" 1 + 1 = 2\n#### {item.gold}\nQuestion: x") == 1.0
    assert task.score(item, f" 1{item.gold}1") == 0.0  # substring partial credit counts as wrong
    assert rsn.extract_answer("blah\n####  -12 \nmore", "3") == "-12"
    assert rsn.extract_answer(" no numbers here\nsecond", "3") == "no numbers here"
    assert rsn.extract_answer(" yes\n", "yes") == "yes"


def test_worked_solution_follows_precedence():
    assert rsn.worked_solution("2 + 3 * 4", "14") == "2 + 3 * 4 = 2 + 12 = 14"
    assert rsn.worked_solution("( ( 5 - -4 ) ) * 2", "18") == "( 5 - -4 ) * 2 = 9 * 2 = 18"
    assert rsn.worked_solution("8 - ( 3 - 1 )", "6") == "8 - ( 3 - 1 ) = 8 - 2 = 6"
    assert rsn.worked_solution("7 / 2", "3") == "7 / 2 = 3"  # reasoning_gym's floor division
    assert rsn.worked_solution("2 + 2", "5") == ""  # disagrees with the generator: no steps
    assert rsn.worked_solution("x + 1", "2") == ""


def test_user_errors():
    with pytest.raises(UserError, match="unknown generator 'chain_summ'.*chain_sum"):
        build_world(WorldConfig(num_people=4, reasoning_tasks=["chain_summ"]))
    with pytest.raises(UserError, match="num_people"):
        build_world(WorldConfig(num_people=10**6, reasoning_train_items=0))


def test_world_without_reasoning():
    world = build_world(WorldConfig(num_people=4, reasoning_tasks=[], knowledge_eval_items=3))
    assert set(world.tasks()) == {"knowledge"}
    assert len(world.tasks()["knowledge"].splits["heldout"]) == 3


def test_world_does_not_depend_on_python_hash_seed(small_world):
    code = (
        "import hashlib; from moelab.config import WorldConfig; from moelab.data.world import build_world; "
        f"w = build_world(WorldConfig(**{small_world.config.model_dump()!r})); "
        "print(hashlib.sha256('\\x00'.join(w.documents()).encode()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": "12345"}, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == hashlib.sha256("\x00".join(small_world.documents()).encode()).hexdigest()


# ---------------------------------------------------------------- the calibrated task families


def test_addition_problems_are_worked_column_by_column():
    from moelab.data import arithmetic

    solution, total = arithmetic.column_steps([984, 456])
    assert total == 1440
    assert solution == "4 + 6 + 0 = 10, carry 1. 8 + 5 + 1 = 14, carry 1. 9 + 4 + 1 = 14, carry 1."
    solution, total = arithmetic.column_steps([12, 30, 7])  # three terms, the short one padded
    assert total == 49 and solution.startswith("2 + 0 + 7 + 0 = 9, carry 0. 1 + 3 + 0 + 0 = 4, carry 0.")
    ds = arithmetic.AdditionDataset(seed=5, size=50, digits=4, terms=3)
    for i in range(50):
        entry = ds[i]
        ops = entry["metadata"]["operands"]
        assert len(ops) == 3 and all(1000 <= v <= 9999 for v in ops)
        assert entry["answer"] == str(sum(ops)) and entry == ds[i]  # a pure function of (seed, index)
        assert ds.score_answer(str(sum(ops)), entry) == 1.0 and ds.score_answer(str(sum(ops) + 1), entry) == 0.0
    from moelab.config import addition_problem_space

    assert addition_problem_space(3, 2) == 900**2 and addition_problem_space(1, 2) == 100


def test_reasoning_splits_are_disjoint_from_pretraining_and_scored_by_the_sum():
    world = build_world(WorldConfig(num_people=10, reasoning_train_items=400, reasoning_eval_items=150,
                                    knowledge_eval_items=5, addition_digits=2))
    docs = set(world.documents())
    task = world.tasks()["reasoning"]
    train_questions = {p.question for p in world.problems["addition"]}
    for item in task.splits["heldout"]:
        assert item.meta["entry"]["question"] not in train_questions
        assert not any(item.prompt in d for d in docs)  # not even as a prefix of a document
        assert task.score(item, item.answer) == 1.0  # the reference answer scores
        assert task.score(item, " 1 + 1 + 0 = 2, carry 0.\n#### -1") == 0.0
    for item in task.splits["train"]:
        assert item.prompt + item.answer in docs


def test_knowledge_dials_set_the_facts_and_their_exposures():
    cfg = WorldConfig(num_people=20, knowledge_attributes=["employer", "birth_city"], qa_repeats=3,
                      bio_paraphrases=2, reasoning_tasks=[], knowledge_eval_items=100)
    world = build_world(cfg)
    docs = world.documents()
    qa = [d for d in docs if d.startswith("Question:")]
    assert len(qa) == 10 * 2 * 3 and len(set(qa)) == 10 * 2  # each train QA pair three times
    assert len(docs) - len(qa) == 20 * 2  # two biographies each
    items = world.tasks()["knowledge"].splits["train"]
    assert {i.meta["attribute"] for i in items} == {"employer", "birth_city"}
    bio = next(d for d in docs if not d.startswith("Question:"))
    assert "studied" not in bio and "born on" not in bio  # the other attributes are not written


@pytest.mark.parametrize("bad, message", [
    ({"knowledge_attributes": ["birth_cty"]}, "unknown knowledge attribute 'birth_cty'.*birth_city"),
    ({"knowledge_attributes": ["major", "major"]}, "twice"),
    ({"knowledge_attributes": []}, "knowledge_attributes"),
    ({"qa_repeats": 0}, "qa_repeats"),
    ({"addition_digits": 9}, "addition_digits"),
    ({"addition_terms": 1}, "addition_terms"),
    ({"addition_digits": 1, "reasoning_train_items": 60}, "distinct problems"),
])
def test_calibration_dials_are_validated(bad, message):
    from moelab.config import validate

    with pytest.raises(UserError, match=message):
        validate(WorldConfig, bad, "data.world")


def test_a_difficulty_mixture_draws_every_length_and_keeps_splits_apart():
    from moelab.config import WorldConfig
    from moelab.data.arithmetic import AdditionDataset
    from moelab.data.world import build_world

    mixed = AdditionDataset(seed=3, size=300, digits=4, min_digits=2)
    lengths = [mixed[i]["metadata"]["digits"] for i in range(300)]
    assert set(lengths) == {2, 3, 4} and min(lengths.count(n) for n in (2, 3, 4)) > 60  # uniform per problem
    for i in range(30):
        entry = mixed[i]
        assert all(len(str(v)) == entry["metadata"]["digits"] for v in entry["metadata"]["operands"])
        assert entry == AdditionDataset(seed=3, size=300, digits=4, min_digits=2)[i]  # a pure function of (seed, index)
    # a fixed difficulty draws exactly the items it drew before the mixture existed
    assert AdditionDataset(seed=3, size=5, digits=3)[2]["question"] == AdditionDataset(seed=3, size=5, digits=3,
                                                                                        min_digits=None)[2]["question"]
    world = build_world(WorldConfig(num_people=20, reasoning_train_items=200, reasoning_eval_items=60,
                                    knowledge_eval_items=10, addition_digits=4, addition_min_digits=2))
    docs = set(world.documents())
    heldout = world.tasks()["reasoning"].items("heldout")
    assert heldout and not any(it.prompt + it.answer in docs for it in heldout)
    assert {len(it.meta["entry"]["metadata"]["operands"][0].__str__()) for it in heldout} == {2, 3, 4}


def test_a_bad_mixture_knob_stops_with_one_line(tmp_path):
    study = tmp_path / "bad.yaml"
    study.write_text("name: bad\ntokens: [1.0e+5]\ngrid: {d_model: [32], num_experts: [1], top_k: [1]}\nhead_dim: 16\n"
                     "base: {data: {world: {addition_digits: 3, addition_min_digits: 5}}}\n")
    res = subprocess.run([sys.executable, "-m", "moelab", "plan", str(study), "--no-probe"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "addition_min_digits=5 is above addition_digits=3" in lines[0]
