"""Pretraining loss on the world's memorisable tokens, apart from the rest of the text.

    losses = memorisable_losses(model, tokenizer, world)
    losses["pretrain_loss_memorisable"], losses["pretrain_loss_other"]   # nats per token

The seed paper's first claim is that memorisation improves with total parameters. On the default
world most of the pretraining loss is the entropy of random draws (names, addition operands) that no
capacity can lower, and the facts are a few per cent of it (docs/reproduction.md, "The recipe sanity
study"), so a flat total loss says little about memorisation. This measures the loss where capacity
binds: the **memorisable tokens** are the fact values in biographies and the answers of knowledge QA
pairs; every other token of the same documents and of the rest of the corpus is "other".

The documents are a fixed sample (``num_docs``, seeded) of the world's pretraining corpus, each read
whole as training read it (BOS, text, EOS; cut to the model's context). A token is memorisable when its
characters overlap a fact value's (BPE tokens carry the value's leading space). Biographies are told
apart from other text by the person's name that opens them.
"""

from __future__ import annotations

import random
import re
from typing import Any

import torch

__all__ = ["memorisable_spans", "memorisable_losses"]

_QA = re.compile(r"^Question: (?!What is ).*\nAnswer:", re.S)  # knowledge QA (addition asks "What is …")


def memorisable_spans(doc: str, people: dict[str, Any]) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of ``doc``'s memorisable text (module docstring); ``people``
    maps a full name to its :class:`moelab.data.people.Person`."""
    qa = _QA.match(doc)
    if qa:
        return [(qa.end(), len(doc))]
    name = " ".join(doc.split(" ", 2)[:2]).removesuffix("'s")
    person = people.get(name)
    if person is None:  # not a biography: an addition problem, an implicit fact, other text
        return []
    spans = []
    for value in person.facts.values():
        spans += [(m.start(), m.end()) for m in re.finditer(re.escape(value), doc)]
    return spans


@torch.no_grad()
def memorisable_losses(model, tokenizer, world, *, num_docs: int = 400, seed: int = 0,
                       batch_size: int = 32) -> dict[str, float | None]:
    """Mean next-token loss (nats) on memorisable and on other tokens of ``num_docs`` corpus documents."""
    from moelab.data.tokenizer import bos_eos_ids

    people = {p.name: p for p in [*world.train_people, *world.heldout_people]}
    docs = world.documents()
    docs = random.Random(f"moelab-memorisable/{seed}").sample(docs, min(num_docs, len(docs)))
    bos, eos = bos_eos_ids(tokenizer)
    context = int(getattr(getattr(model, "cfg", None), "max_seq_len", 0) or 1024)
    rows: list[tuple[list[int], list[bool]]] = []
    for doc in docs:
        enc = tokenizer(doc, add_special_tokens=False, return_offsets_mapping=True)
        spans = memorisable_spans(doc, people)
        marks = [any(s < b and e > a for a, b in spans) for s, e in enc["offset_mapping"]]
        ids = [bos, *enc["input_ids"], eos][: context + 1]
        rows.append((ids, ([*marks, False])[: len(ids) - 1]))  # mark k: is target ids[k+1] memorisable
    totals = {True: [0.0, 0], False: [0.0, 0]}
    model.eval()
    device = next(model.parameters()).device
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        # Right padding is harmless to a causal model: a padded position never feeds an earlier one.
        ids_BT = torch.full((len(chunk), width), eos, dtype=torch.long)
        valid_BT = torch.zeros((len(chunk), width - 1), dtype=torch.bool)
        memo_BT = torch.zeros((len(chunk), width - 1), dtype=torch.bool)
        for row, (ids, marks) in enumerate(chunk):
            ids_BT[row, : len(ids)] = torch.tensor(ids)
            valid_BT[row, : len(ids) - 1] = True
            memo_BT[row, : len(marks)] = torch.tensor(marks, dtype=torch.bool)
        ids_BT = ids_BT.to(device)
        logits_BTV = model(ids_BT[:, :-1]).logits.float()
        nll_BT = torch.nn.functional.cross_entropy(logits_BTV.transpose(1, 2), ids_BT[:, 1:], reduction="none").cpu()
        for memorisable in (True, False):
            mask_BT = valid_BT & (memo_BT if memorisable else ~memo_BT)
            totals[memorisable][0] += float(nll_BT[mask_BT].sum())
            totals[memorisable][1] += int(mask_BT.sum())
    (memo_nll, memo_n), (other_nll, other_n) = totals[True], totals[False]
    return {
        "pretrain_loss_memorisable": memo_nll / memo_n if memo_n else None,
        "pretrain_loss_other": other_nll / other_n if other_n else None,
        "memorisable_token_share": memo_n / (memo_n + other_n) if memo_n + other_n else None,
    }
