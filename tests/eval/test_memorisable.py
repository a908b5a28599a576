"""Pretraining loss on the world's memorisable tokens (issue 25 item 5): which tokens count, and the
two losses against a hand computation with the model's own logits."""

import math

import torch

from moelab.data.tokenizer import bos_eos_ids
from moelab.eval.accuracy import digit_accuracy
from moelab.eval.memorisable import memorisable_losses, memorisable_spans


def _people(world):
    return {p.name: p for p in [*world.train_people, *world.heldout_people]}


def test_spans_are_the_fact_values_of_biographies_and_the_answers_of_qa(small_world):
    people = _people(small_world)
    docs = small_world.documents()
    bios = [d for d in docs if " ".join(d.split(" ", 2)[:2]).removesuffix("'s") in people]
    qa = [d for d in docs if d.startswith("Question: ") and not d.startswith("Question: What is ")]
    sums = [d for d in docs if d.startswith("Question: What is ")]
    assert bios and qa and sums
    for doc in bios[:20]:
        person = people[" ".join(doc.split(" ", 2)[:2]).removesuffix("'s")]
        marked = {doc[a:b] for a, b in memorisable_spans(doc, people)}
        assert marked == {v for v in person.facts.values() if v in doc} and marked  # every fact value, nothing else
    for doc in qa[:20]:
        [(a, b)] = memorisable_spans(doc, people)
        assert doc[:a].endswith("\nAnswer:") and b == len(doc)
    assert all(memorisable_spans(d, people) == [] for d in sums[:20])  # addition: a procedure, not a fact


def test_losses_match_a_hand_computation(small_world, tokenizer, model):
    out = memorisable_losses(model, tokenizer, small_world, num_docs=12, batch_size=5)
    people, bos, eos = _people(small_world), *bos_eos_ids(tokenizer)
    import random

    docs = small_world.documents()
    docs = random.Random("moelab-memorisable/0").sample(docs, 12)
    sums = {True: [0.0, 0], False: [0.0, 0]}
    with torch.no_grad():
        for doc in docs:  # one document at a time, no padding
            enc = tokenizer(doc, add_special_tokens=False, return_offsets_mapping=True)
            ids = torch.tensor([[bos, *enc["input_ids"], eos]])
            logp = torch.log_softmax(model(ids[:, :-1]).logits.float()[0], -1)
            nll = -logp.gather(-1, ids[0, 1:, None])[:, 0]
            spans = memorisable_spans(doc, people)
            marks = [any(s < b and e > a for a, b in spans) for s, e in enc["offset_mapping"]] + [False]
            for value, mark in zip(nll.tolist(), marks):
                sums[mark][0] += value
                sums[mark][1] += 1
    assert sums[True][1] > 0 and sums[False][1] > 0
    assert math.isclose(out["pretrain_loss_memorisable"], sums[True][0] / sums[True][1], rel_tol=1e-4)
    assert math.isclose(out["pretrain_loss_other"], sums[False][0] / sums[False][1], rel_tol=1e-4)
    assert math.isclose(out["memorisable_token_share"], sums[True][1] / (sums[True][1] + sums[False][1]))


def test_digit_accuracy_counts_places_from_the_units():
    assert digit_accuracy("132", "132") == 1.0
    assert digit_accuracy("122", "132") == 2 / 3
    assert digit_accuracy("32", "132") == 2 / 3  # a missing leading digit
    assert digit_accuracy("1132", "132") == 3 / 4  # an extra digit counts against
    assert digit_accuracy(None, "132") == 0.0 and digit_accuracy("abc", "132") == 0.0
    assert digit_accuracy("-5", "5") == 0.0 and digit_accuracy("-5", "-5") == 1.0
    assert digit_accuracy("Lisbon", "Lisbon") is None  # not a whole-number answer
