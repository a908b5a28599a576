"""The implicit-reasoning family: 2-hop composition over a synthetic knowledge graph.

After Wang et al., *Do Larger Language Models Imply Better Reasoning? A Pretraining Scaling
Law for Reasoning* (arXiv 2504.03635): a language model pretrained on the atomic facts of a
knowledge graph and on a share γ of the facts its rules imply must *compose* — infer the rest
of the implied facts without ever reading them. In that paper the loss on those held-out facts
is U-shaped in model size: past a point, larger models memorise the facts they read instead of
learning the rules, which is the mechanism the seed paper (Nakamura et al.) points to for
reasoning tasks.

The graph, all drawn from the world seed:

- ``implicit_entities`` invented names (``Tavon``), ``implicit_relations`` relation nouns.
- The last ``implicit_rules`` relations are *derived*: each is the head of exactly one rule
  ``r1 ∘ r2 → r3`` with ``r1``, ``r2`` *atomic* relations (distinct bodies per rule), so
  (a r1 b) and (b r2 c) imply (a r3 c).
- Atomic relations are functional and total: every entity has exactly one tail (never itself)
  per atomic relation. So every derived fact has exactly one true tail, and derived relations
  never appear as atomic facts — no derived fact contradicts what the corpus states.

Text: one document per fact, ``"The mentor of Tavon is Brisek"`` (prompt ``"The mentor of
Tavon is"``, answer ``" Brisek"``). The corpus holds every atomic fact and a share
``implicit_gamma`` of the derived ones; the other derived facts are held out.

Task ``implicit``: ``heldout`` — held-out derived facts; ``train`` — derived facts the corpus
holds (their gap is the train–test generalisation gap). Each item is a 10-way multiple choice
(``meta["choices"]``/``meta["label"]``: the true tail and 9 other entities, scored by
log-likelihood) and a ``{prompt, answer}`` pair for task loss.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NUM_CHOICES = 10  # Wang et al.'s evaluation: the true tail among 10 candidates (chance 10 %)

# Relation nouns read naturally in "The <relation> of <entity> is <entity>".
RELATIONS = """mentor rival neighbour partner landlord doctor lawyer tutor banker barber coach editor
agent heir guardian sponsor ally patron tailor pupil courier steward envoy deputy successor
predecessor confidant apprentice chaplain squire herald scribe""".split()

# Invented names (consonant-vowel syllables), so no fact can come from real-world knowledge.
_ONSETS = "b d f g h k l m n p r s t v z br dr gr kr st th tr".split()
_VOWELS = "a e i o u".split()
_CODAS = ["", "n", "r", "l", "s", "m", "k"]
_SYLLABLES = 2  # short names: few tokens each, as the paper's one-token entities
_NAME_SPACE = (len(_ONSETS) * len(_VOWELS)) ** _SYLLABLES * len(_CODAS)  # 77,175
MAX_ENTITIES = 20_000  # well inside the name space (a validated bound on implicit_entities)


@dataclass(frozen=True)
class Rule:
    first: str  # r1
    second: str  # r2
    head: str  # r3 = r1 ∘ r2


@dataclass(frozen=True)
class Fact:
    head: str
    relation: str
    tail: str

    @property
    def prompt(self) -> str:
        return f"The {self.relation} of {self.head} is"

    @property
    def answer(self) -> str:
        return f" {self.tail}"

    @property
    def text(self) -> str:
        return self.prompt + self.answer


@dataclass
class KnowledgeGraph:
    entities: list[str]
    atomic_relations: list[str]
    rules: list[Rule]
    atomic: list[Fact]
    derived: list[Fact]  # one per (entity, rule), in a seeded random order
    # fact -> the intermediate entity b of (a r1 b), (b r2 c): the witness of its deduction
    witness: dict[Fact, str]

    def tail(self, head: str, relation: str) -> str:
        """The tail of an atomic fact."""
        return self._atomic_index[(head, relation)]

    def __post_init__(self) -> None:
        self._atomic_index = {(f.head, f.relation): f.tail for f in self.atomic}


def _name(index: int) -> str:
    """The ``index``-th name of the name space: syllables, then a coda (unique spelling: every
    syllable ends in a vowel, so the onsets cannot be split another way)."""
    index, coda = divmod(index, len(_CODAS))
    syllables = []
    for _ in range(_SYLLABLES):
        index, k = divmod(index, len(_ONSETS) * len(_VOWELS))
        syllables.append(_ONSETS[k // len(_VOWELS)] + _VOWELS[k % len(_VOWELS)])
    return ("".join(syllables) + _CODAS[coda]).capitalize()


def make_entities(count: int, rng: random.Random) -> list[str]:
    assert count <= MAX_ENTITIES
    return [_name(i) for i in rng.sample(range(_NAME_SPACE), count)]


def make_graph(num_entities: int, num_relations: int, num_rules: int, rng: random.Random) -> KnowledgeGraph:
    """The graph (see the module docstring); ``rng`` is the only source of randomness."""
    assert NUM_CHOICES <= num_entities and num_rules < num_relations <= len(RELATIONS)  # WorldConfig checks
    entities = make_entities(num_entities, rng)
    relations = rng.sample(RELATIONS, num_relations)
    atomic_relations, derived_relations = relations[: num_relations - num_rules], relations[num_relations - num_rules :]
    bodies = rng.sample([(r1, r2) for r1 in atomic_relations for r2 in atomic_relations], num_rules)
    rules = [Rule(r1, r2, r3) for (r1, r2), r3 in zip(bodies, derived_relations)]

    atomic = []
    for head in entities:
        for relation in atomic_relations:
            tail = entities[rng.randrange(num_entities - 1)]
            if tail == head:  # the last entity stands in for the head: uniform over the others
                tail = entities[-1]
            atomic.append(Fact(head, relation, tail))
    graph = KnowledgeGraph(entities, atomic_relations, rules, atomic, [], {})
    for head in entities:
        for rule in rules:
            middle = graph.tail(head, rule.first)
            fact = Fact(head, rule.head, graph.tail(middle, rule.second))
            graph.derived.append(fact)
            graph.witness[fact] = middle
    rng.shuffle(graph.derived)
    return graph


def split_derived(graph: KnowledgeGraph, gamma: float) -> tuple[list[Fact], list[Fact]]:
    """(derived facts in the corpus, held-out ones): the first ``γ`` share of the seeded order, at
    least one held out."""
    num_in_corpus = min(round(len(graph.derived) * gamma), len(graph.derived) - 1)
    return graph.derived[:num_in_corpus], graph.derived[num_in_corpus:]


def choices(fact: Fact, entities: list[str], rng: random.Random) -> tuple[list[str], int]:
    """The true tail and ``NUM_CHOICES - 1`` other entities as continuations, in a seeded order,
    and the index of the true one."""
    others = rng.sample([e for e in entities if e != fact.tail], NUM_CHOICES - 1)
    label = rng.randrange(NUM_CHOICES)
    names = others[:label] + [fact.tail] + others[label:]
    return [f" {name}" for name in names], label


def score_first_word(gold: str, prediction: str) -> float:
    """Generation scoring (the task is meant for multiple choice): the first word is the tail."""
    words = prediction.split()
    return float(bool(words) and words[0].rstrip(".,;") == gold)
