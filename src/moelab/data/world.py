"""The default world: embedded, deterministic pretraining text plus knowledge and reasoning tasks.

``build_world(cfg)`` draws everything from ``cfg.seed``; nothing is downloaded.

Knowledge (memorization). ``cfg.num_people`` synthetic people, each with six facts and
``cfg.bio_paraphrases`` biographies in the pretraining documents. The "train" share of the
people (``cfg.train_people_fraction``) also has its QA pairs in the documents; the
"heldout" people have their facts only in biographies, so answering their questions needs
knowledge extraction — the gap between the two splits is the generalization gap::

    prompt  "Question: Where was Ada Merrow born?\\nAnswer:"
    answer  " Lisbon"                      gold "Lisbon"

Reasoning. Problems from ``reasoning_gym`` generators (``cfg.reasoning_tasks``). The
``cfg.reasoning_train_items`` training problems (split evenly over the generators) are in the
documents with worked solutions; evaluation "train" items are drawn from them, "heldout"
items come from another seed and never repeat a training question::

    prompt  "Question: Calculate 7 + 4 * 3.\\nAnswer:"
    answer  " 7 + 4 * 3 = 7 + 12 = 19\\n#### 19"      gold "19"

Implicit reasoning (``cfg.implicit_reasoning``, off by default). Facts of a synthetic knowledge
graph and a share of those its 2-hop rules imply; task ``implicit`` holds the other implied
facts out, as 10-way multiple choice (:mod:`moelab.data.implicit`)::

    prompt  "The mentor of Tavon is"
    answer  " Brisek"                       choices [" Kelur", ..., " Brisek", ...]

Every document is exactly ``prompt + answer`` (QA, problems, facts) or one biography.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Callable, Literal

from moelab.config import WorldConfig
from moelab.data import implicit as imp
from moelab.data import people as ppl
from moelab.data import reasoning as rsn


@dataclass
class TaskItem:
    """One evaluation item. ``answer`` is the full reference continuation of ``prompt`` (for
    task loss); ``gold`` the short final answer (for accuracy)."""

    prompt: str
    answer: str
    gold: str
    meta: dict = field(default_factory=dict)


@dataclass
class Task:
    """A named family of items with a scorer: ``task.score(item, prediction_text) -> float``.

    ``stop_strings`` tell a generator where an answer ends (besides EOS).
    """

    name: str
    family: Literal["knowledge", "reasoning"]
    splits: dict[str, list[TaskItem]]
    score: Callable[[TaskItem, str], float]
    stop_strings: tuple[str, ...] = ()

    def items(self, split: str) -> list[TaskItem]:
        """The items of ``split``; an unknown split is a one-line ``UserError`` naming the known ones."""
        if split not in self.splits:
            from moelab.errors import UserError

            raise UserError(f"task '{self.name}' has no split '{split}' (splits: {', '.join(self.splits)})")
        return self.splits[split]


@dataclass
class World:
    config: WorldConfig
    train_people: list[ppl.Person]
    heldout_people: list[ppl.Person]
    problems: dict[str, list[rsn.Problem]]  # training problems per generator
    _documents: list[str]
    _tasks: dict[str, Task]
    graph: imp.KnowledgeGraph | None = None  # the implicit-reasoning family's, when enabled

    def documents(self) -> list[str]:
        """Pretraining documents in a fixed shuffled order (a fresh list each call)."""
        return list(self._documents)

    def tasks(self) -> dict[str, Task]:
        """``knowledge``, ``reasoning`` (all generators), ``reasoning/<generator>`` and, when
        enabled, ``implicit``."""
        return dict(self._tasks)


def _rng(seed: int, *purpose: str) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, so each purpose gets an
    # independent stream that is stable across Python versions and platforms.
    return random.Random("/".join(["moelab-world", str(seed), *purpose]))


def _int_seed(seed: int, *purpose: str) -> int:
    digest = hashlib.sha256("/".join(["moelab-world", str(seed), *purpose]).encode()).digest()
    return int.from_bytes(digest[:4], "little")


# ------------------------------------------------------------------ knowledge


def _qa_item(person: ppl.Person, attribute: str, question: str, value: str, split: str) -> TaskItem:
    meta = {"person": person.name, "attribute": attribute, "split": split}
    return TaskItem(prompt=f"Question: {question}\nAnswer:", answer=f" {value}", gold=value, meta=meta)


def _score_knowledge(item: TaskItem, prediction: str) -> float:
    return ppl.score_exact_match(prediction, item.gold)


def _knowledge(cfg: WorldConfig) -> tuple[list[ppl.Person], list[ppl.Person], list[str], Task]:
    """People split into train/heldout, knowledge documents, and the knowledge task."""
    people = ppl.make_people(cfg.num_people, _rng(cfg.seed, "people"))
    num_train = min(max(round(cfg.num_people * cfg.train_people_fraction), 1), cfg.num_people - 1)
    train_people, heldout_people = people[:num_train], people[num_train:]  # already in random order

    attributes = tuple(cfg.knowledge_attributes)
    bio_rng = _rng(cfg.seed, "biographies")
    documents = [bio for person in people
                 for bio in ppl.biographies(person, cfg.bio_paraphrases, bio_rng, attributes)]
    splits: dict[str, list[TaskItem]] = {}
    for split, group in (("train", train_people), ("heldout", heldout_people)):
        items = [_qa_item(p, *qa, split) for p in group for qa in ppl.qa_pairs(p, attributes)]
        if split == "train":  # only the train people's QA pairs are pretraining text
            documents += [item.prompt + item.answer for item in items] * cfg.qa_repeats
        _rng(cfg.seed, "knowledge-eval", split).shuffle(items)
        splits[split] = items[: cfg.knowledge_eval_items]
    task = Task("knowledge", "knowledge", splits, _score_knowledge, stop_strings=("\n",))
    return train_people, heldout_people, documents, task


# ------------------------------------------------------------------ reasoning


def _problem_item(problem: rsn.Problem, split: str) -> TaskItem:
    meta = {"generator": problem.generator, "index": problem.index, "split": split, "entry": problem.entry}
    return TaskItem(prompt=problem.prompt, answer=problem.answer, gold=problem.final, meta=meta)


def _reasoning(cfg: WorldConfig) -> tuple[dict[str, list[rsn.Problem]], list[str], dict[str, Task]]:
    """Training problems per generator, their documents, and the reasoning tasks."""
    names = list(dict.fromkeys(cfg.reasoning_tasks))  # drop repeats, keep order
    if not names:
        return {}, [], {}
    problems: dict[str, list[rsn.Problem]] = {}
    tasks: dict[str, Task] = {}
    documents: list[str] = []
    for i, name in enumerate(names):
        count = cfg.reasoning_train_items // len(names) + (i < cfg.reasoning_train_items % len(names))
        options = _generator_options(cfg, name)
        train = rsn.generate_problems(name, seed=_int_seed(cfg.seed, name, "train"), count=count, options=options)
        heldout = rsn.generate_problems(
            name,
            seed=_int_seed(cfg.seed, name, "heldout"),
            count=cfg.reasoning_eval_items,
            exclude={p.question for p in train},  # heldout questions never appear in training
            options=options,
        )
        problems[name] = train
        documents += [p.prompt + p.answer for p in train]
        eval_train = _rng(cfg.seed, name, "eval-train").sample(train, min(cfg.reasoning_eval_items, len(train)))
        splits = {"train": [_problem_item(p, "train") for p in eval_train],
                  "heldout": [_problem_item(p, "heldout") for p in heldout]}
        scorer = rsn.load_generator(name, seed=0, size=1, options=options).score_answer
        tasks[f"reasoning/{name}"] = Task(
            f"reasoning/{name}", "reasoning", splits, _reasoning_scorer(scorer), stop_strings=("\nQuestion:",)
        )

    # The mixed task takes the generators' items in turn, up to reasoning_eval_items per split.
    per_gen = list(tasks.values())
    mixed = {}
    for split in ("train", "heldout"):
        longest = max(len(t.splits[split]) for t in per_gen)
        turns = [t.splits[split][j] for j in range(longest) for t in per_gen if j < len(t.splits[split])]
        mixed[split] = turns[: cfg.reasoning_eval_items]
    by_generator = {name: tasks[f"reasoning/{name}"].score for name in names}
    tasks = {"reasoning": Task(
        "reasoning", "reasoning", mixed, _dispatch_scorer(by_generator), stop_strings=("\nQuestion:",)
    ), **tasks}
    return problems, documents, tasks


def _generator_options(cfg: WorldConfig, name: str) -> dict | None:
    if name == "addition":
        return {"digits": cfg.addition_digits, "terms": cfg.addition_terms, "min_digits": cfg.addition_min_digits}
    return None


def _reasoning_scorer(scorer: Callable[[str, dict], float]) -> Callable[[TaskItem, str], float]:
    def score(item: TaskItem, prediction: str) -> float:
        return rsn.score_with_generator(scorer, item.meta["entry"], prediction, item.gold)

    return score


def _dispatch_scorer(by_generator: dict[str, Callable[[TaskItem, str], float]]) -> Callable[[TaskItem, str], float]:
    def score(item: TaskItem, prediction: str) -> float:
        return by_generator[item.meta["generator"]](item, prediction)

    return score


# ------------------------------------------------------------------ implicit reasoning


def _fact_item(fact: imp.Fact, graph: imp.KnowledgeGraph, split: str, rng: random.Random) -> TaskItem:
    choices, label = imp.choices(fact, graph.entities, rng)
    meta = {"relation": fact.relation, "witness": graph.witness[fact], "split": split,
            "choices": choices, "label": label}
    return TaskItem(prompt=fact.prompt, answer=fact.answer, gold=fact.tail, meta=meta)


def _score_implicit(item: TaskItem, prediction: str) -> float:
    return imp.score_first_word(item.gold, prediction)


def _implicit(cfg: WorldConfig) -> tuple[imp.KnowledgeGraph | None, list[str], dict[str, Task]]:
    """The knowledge graph, its documents (atomic facts, the γ share of derived ones) and task ``implicit``."""
    if not cfg.implicit_reasoning:
        return None, [], {}
    graph = imp.make_graph(cfg.implicit_entities, cfg.implicit_relations, cfg.implicit_rules,
                           _rng(cfg.seed, "implicit-graph"))
    in_corpus, heldout = imp.split_derived(graph, cfg.implicit_gamma)
    documents = [fact.text for fact in graph.atomic + in_corpus]
    splits = {}
    for split, facts in (("train", in_corpus), ("heldout", heldout)):
        chosen = _rng(cfg.seed, "implicit-eval", split).sample(facts, min(cfg.implicit_eval_items, len(facts)))
        choice_rng = _rng(cfg.seed, "implicit-choices", split)
        splits[split] = [_fact_item(fact, graph, split, choice_rng) for fact in chosen]
    task = Task("implicit", "reasoning", splits, _score_implicit, stop_strings=("\n",))
    return graph, documents, {"implicit": task}


# ------------------------------------------------------------------ the world


def build_world(cfg: WorldConfig) -> World:
    """Build the default world from ``cfg`` (deterministic in ``cfg.seed``)."""
    train_people, heldout_people, knowledge_docs, knowledge = _knowledge(cfg)
    problems, reasoning_docs, reasoning_tasks = _reasoning(cfg)
    graph, implicit_docs, implicit_tasks = _implicit(cfg)
    documents = knowledge_docs + reasoning_docs + implicit_docs
    _rng(cfg.seed, "documents").shuffle(documents)
    tasks = {"knowledge": knowledge, **reasoning_tasks, **implicit_tasks}
    return World(cfg, train_people, heldout_people, problems, documents, tasks, graph)
