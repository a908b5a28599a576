"""The implicit-reasoning family: a seeded knowledge graph, its split, its 10-way items, its dials."""

import hashlib
import json
import re
import subprocess
import sys

import pytest

from moelab.config import WorldConfig
from moelab.data import implicit as imp
from moelab.data.world import build_world
from moelab.errors import UserError

# sha256 of the default world's documents (joined by NUL) and of its tasks' items, computed at
# commit 4e4991f before the family existed: the family off must leave the world as it was, bit for bit.
DEFAULT_DOCUMENTS_SHA256 = "2601477700a4320cbcd2b287088a7dbf4a95d11c7b43d4379bb58ac0d5db2072"
DEFAULT_TASKS_SHA256 = "38c7b3976e71504c921b50cb8a930712fc60248680b854ebd801967b7ff7907c"

FACT = re.compile(r"The (\w+) of (\w+) is (\w+)")
SMALL = dict(num_people=10, reasoning_train_items=20, reasoning_eval_items=5, knowledge_eval_items=5,
             implicit_reasoning=True, implicit_entities=60, implicit_relations=7, implicit_rules=3,
             implicit_gamma=0.4, implicit_eval_items=1000)


@pytest.fixture(scope="module")
def kg_world():
    return build_world(WorldConfig(**SMALL))


def _snapshot(world):
    task = world.tasks()["implicit"]
    return world.documents(), {s: [(i.prompt, i.answer, i.gold, i.meta) for i in items]
                               for s, items in task.splits.items()}


def _corpus_facts(world):
    """(head, relation) -> tail, parsed from the pretraining documents themselves."""
    facts = {}
    for doc in world.documents():
        m = FACT.fullmatch(doc)
        if m:
            assert facts.setdefault((m[2], m[1]), m[3]) == m[3], f"two tails for one (head, relation): {doc}"
    return facts


def test_default_world_is_unchanged(world):
    assert not world.config.implicit_reasoning and "implicit" not in world.tasks() and world.graph is None
    docs = hashlib.sha256("\x00".join(world.documents()).encode()).hexdigest()
    items = repr([(name, split, [(i.prompt, i.answer, i.gold) for i in its])
                  for name, task in world.tasks().items() for split, its in task.splits.items()])
    assert docs == DEFAULT_DOCUMENTS_SHA256
    assert hashlib.sha256(items.encode()).hexdigest() == DEFAULT_TASKS_SHA256


def test_the_family_adds_its_documents_and_leaves_the_others(kg_world):
    base = build_world(WorldConfig(**{**SMALL, "implicit_reasoning": False}))
    graph = kg_world.graph
    atomic_relations, rules = len(graph.atomic_relations), len(graph.rules)
    assert (atomic_relations, rules, len(graph.entities)) == (4, 3, 60)
    assert len(graph.atomic) == 60 * 4 and len(graph.derived) == 60 * 3
    added = sorted(set(kg_world.documents()) - set(base.documents()))
    assert len(added) == 60 * 4 + round(0.4 * 60 * 3)  # every atomic fact, the γ share of derived ones
    assert len(kg_world.documents()) == len(base.documents()) + len(added)  # each fact once
    assert {n: t.splits for n, t in base.tasks().items()}.keys() == set(kg_world.tasks()) - {"implicit"}
    assert base.tasks()["knowledge"].splits["heldout"][0].prompt == kg_world.tasks()["knowledge"].splits["heldout"][0].prompt


def test_deterministic_in_the_seed(kg_world):
    assert _snapshot(build_world(WorldConfig(**SMALL))) == _snapshot(kg_world)
    other = build_world(WorldConfig(**{**SMALL, "seed": 1}))
    assert set(other.graph.entities) != set(kg_world.graph.entities)
    assert [i.prompt for i in other.tasks()["implicit"].splits["heldout"]] != \
        [i.prompt for i in kg_world.tasks()["implicit"].splits["heldout"]]


def test_heldout_facts_are_not_in_the_corpus_and_train_facts_are(kg_world):
    docs = kg_world.documents()
    doc_set = set(docs)
    task = kg_world.tasks()["implicit"]
    heldout, train = task.splits["heldout"], task.splits["train"]
    assert len(heldout) == 60 * 3 - 72 and len(train) == 72  # all of them: implicit_eval_items is larger
    for item in heldout:
        assert item.prompt + item.answer not in doc_set
        assert not any(item.prompt in d for d in docs)  # not even the question with another tail
    for item in train:
        assert item.prompt + item.answer in doc_set
    assert not {i.prompt for i in heldout} & {i.prompt for i in train}


def test_every_heldout_fact_is_deducible_from_the_corpus(kg_world):
    corpus = _corpus_facts(kg_world)
    rules = {rule.head: rule for rule in kg_world.graph.rules}
    for item in kg_world.tasks()["implicit"].splits["heldout"]:
        head = FACT.fullmatch(item.prompt + item.answer)[2]
        rule = rules[item.meta["relation"]]
        middle = corpus[(head, rule.first)]  # (a r1 b) is a document ...
        assert middle == item.meta["witness"]
        assert corpus[(middle, rule.second)] == item.gold  # ... and so is (b r2 c)
    # the corpus shows every rule at work: its derived relation appears, always agreeing with the rule
    for rule in kg_world.graph.rules:
        shown = [(h, t) for (h, r), t in corpus.items() if r == rule.head]
        assert shown and all(corpus[(corpus[(h, rule.first)], rule.second)] == t for h, t in shown)
        assert rule.first != rule.head != rule.second and rule.first in kg_world.graph.atomic_relations


def test_items_are_ten_way_choices_with_the_answer_once(kg_world):
    entities = set(kg_world.graph.entities)
    task = kg_world.tasks()["implicit"]
    labels = []
    for split in ("train", "heldout"):
        for item in task.splits[split]:
            choices, label = item.meta["choices"], item.meta["label"]
            assert len(choices) == imp.NUM_CHOICES == 10 and len(set(choices)) == 10
            assert choices.count(item.answer) == 1 and choices[label] == item.answer == f" {item.gold}"
            assert {c.strip() for c in choices} <= entities
            labels.append(label)
            assert task.score(item, item.answer) == 1.0 and task.score(item, choices[label - 1]) == 0.0
    assert len(set(labels)) == 10  # the answer's position is drawn, not always the same


def test_gamma_zero_keeps_every_derived_fact_out():
    world = build_world(WorldConfig(**{**SMALL, "implicit_gamma": 0.0, "implicit_eval_items": 50}))
    task = world.tasks()["implicit"]
    assert task.splits["train"] == [] and len(task.splits["heldout"]) == 50
    derived = {rule.head for rule in world.graph.rules}
    assert not any(r in derived for (_, r) in _corpus_facts(world))


@pytest.mark.parametrize("bad, message", [
    ({"implicit_gamma": 1.0}, "implicit_gamma"),
    ({"implicit_gamma": -0.1}, "implicit_gamma"),
    ({"implicit_entities": 9}, "implicit_entities"),
    ({"implicit_relations": 33}, "implicit_relations"),
    ({"implicit_rules": 0}, "implicit_rules"),
    ({"implicit_relations": 4, "implicit_rules": 4}, "needs more than 4 implicit_relations"),
    ({"implicit_relations": 5, "implicit_rules": 4}, "only 1 distinct rule bodies"),
    ({"implicit_reasoning": "maybe"}, "implicit_reasoning"),
])
def test_bad_dials_are_one_line_user_errors(bad, message):
    from moelab.config import validate

    with pytest.raises(UserError, match=message) as err:
        validate(WorldConfig, bad, "data.world")
    assert "\n" not in str(err.value)


def test_a_study_with_a_bad_dial_stops_with_one_line_exit_2(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text("name: bad-implicit\nbudgets: [6.0e+10]\ngrid:\n  d_model: [64]\n  num_experts: [1]\n"
                     "  top_k: [1]\nbase:\n  data:\n    world:\n      implicit_reasoning: true\n"
                     "      implicit_gamma: 1.5\n")
    res = subprocess.run([sys.executable, "-m", "moelab", "plan", str(study), "--no-probe"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "implicit_gamma" in lines[0], res.stderr
    assert "Traceback" not in res.stderr and sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_a_tiny_run_trains_and_reports_the_implicit_task(tmp_path):
    """End to end: train a few steps on a world with the family, then `moelab eval all` scores it."""
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(
        "model: {d_model: 32, n_layers: 1, n_heads: 2, num_experts: 2, top_k: 1, max_seq_len: 32}\n"
        "data:\n  vocab_size: 512\n  seq_len: 32\n  world:\n"
        + "".join(f"    {k}: {json.dumps(v)}\n" for k, v in {**SMALL, "implicit_eval_items": 20}.items())
        + "train: {batch_size: 4, steps: 4, warmup_steps: 1, eval_every: 4, eval_batches: 1, "
          "checkpoint_every: 4, log_every: 2, device: cpu, precision: fp32}\n")
    moelab = [sys.executable, "-m", "moelab"]
    res = subprocess.run([*moelab, "train", str(run_yaml), "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    res = subprocess.run([*moelab, "eval", "all", "--model", str(tmp_path / "run"), "--task", "implicit",
                          "--json", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout)
    for split in ("train", "heldout"):
        assert summary[f"num_items/implicit/{split}"] == 20
        assert 0 < summary[f"task_loss/implicit/{split}"] < 30  # bits of the true tail: finite, not zero
        correct = summary[f"accuracy/implicit/{split}"] * 20  # a share of 20 items
        assert 0 <= correct <= 20 and correct == pytest.approx(round(correct))
        assert summary[f"exact_match/implicit/{split}"] is None  # every item was scored as a choice
    assert "task_loss_gap/implicit" in summary and "accuracy_gap/implicit" in summary
