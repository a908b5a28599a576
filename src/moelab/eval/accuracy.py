"""Accuracy: greedy generation, answer extraction, exact match and the task's own scorer.

    result = accuracy(model, tok, get_task("reasoning", world), split="heldout", shots=2)
    result.accuracy, result.exact_match, result.write_records("eval/reasoning-heldout.jsonl")

Pipeline per item (generation items):

1. Prompt = few-shot exemplars (``shots`` train-split items drawn with ``random.Random(seed)``,
   never the item itself, each written ``prompt + answer + "\\n\\n"``) + the item's prompt,
   encoded as ``BOS + ids``. A prompt longer than ``max_seq_len - max_new_tokens`` keeps its
   last tokens (``num_truncated`` counts them) — but never fewer than half the context: when
   ``max_new_tokens`` is more than half of it, such a prompt keeps ``max_seq_len // 2`` tokens and
   generates fewer new ones, with a one-line warning (:func:`generation_budgets`; each record's
   ``max_new_tokens`` says how many it had). 48 new tokens on a 64-token model would otherwise leave
   every long prompt 16 tokens; prompts that fit beside ``max_new_tokens`` are untouched.
2. Greedy decoding (:func:`moelab.model.generate.generate`: batched, KV cache, prompts sorted by
   length), stopping at EOS, ``"\\n\\nQuestion:"`` / ``"\\nQuestion:"`` (the next few-shot question)
   and the task's own stop strings (``"\\n"`` for knowledge).
3. Extraction by family: knowledge — normalised first line; reasoning with a numeric gold —
   ``#### N``, else "the answer is N", else the last number (normalised); reasoning with a
   non-numeric gold — the first line after ``####`` (or the first line), normalised.
4. ``exact_match``: extracted answer equals the normalised gold. ``digit_accuracy`` (whole-number
   golds only): the share of the gold's digits that the extracted answer has at the same place,
   counted from the units, over the longer of the two (a missing answer scores 0). Exact match on
   a many-digit answer turns smooth per-digit gains into one jump (Schaeffer et al., arXiv
   2304.15004); this continuous metric, reported beside it, does not. ``correct``: the task's own
   scorer gives full credit (``Task.score(item, completion)``: reasoning-gym's ``score_answer`` for
   the world's reasoning tasks) — or exact match when there is no task scorer. The headline
   ``accuracy`` is the mean of ``correct``.

Multiple-choice items (``meta["choices"]``: list of continuations, ``meta["label"]``: the right
index) are scored by log-likelihood instead, with lm-evaluation-harness's names and definitions
(:func:`score_multiple_choice`): ``acc`` picks the choice with the highest summed log-probability,
``acc_norm`` the highest log-probability per character of the choice, ``acc_bytes`` per UTF-8 byte.
Their ``acc`` counts towards ``accuracy``.
"""

from __future__ import annotations

import json
import math
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from moelab.data.world import Task, TaskItem
from moelab.errors import UserError
from moelab.eval.extract import extract_knowledge, extract_numeric, first_line, normalize_number, normalize_text
from moelab.eval.tasks import REASONING_STOPS
from moelab.eval.taskloss import encode_pairs, sequence_nll

__all__ = [
    "AccuracyResult",
    "MultipleChoiceScores",
    "accuracy",
    "generation_budgets",
    "score_multiple_choice",
    "extract_prediction",
    "is_exact_match",
    "digit_accuracy",
    "fewshot_prompts",
]

_GEN_TOKEN_BUDGET = {"cpu": 8192, "cuda": 131072}
_MAX_GEN_BATCH = 256


@dataclass
class AccuracyResult:
    task: str
    split: str
    shots: int
    accuracy: float  # headline: mean of `correct` over all items (nan when there are none)
    exact_match: float | None  # mean exact match over generation items (None when there are none)
    acc_norm: float | None  # multiple-choice items only (None when there are none): per character
    num_items: int
    num_truncated: int
    records: list[dict[str, Any]] = field(default_factory=list)
    acc_bytes: float | None = None  # multiple-choice items only: per UTF-8 byte
    digit_accuracy: float | None = None  # generation items with a whole-number gold only

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers without the records."""
        from moelab.stats import wilson_interval

        acc = None if math.isnan(self.accuracy) else self.accuracy
        ci = wilson_interval(acc, self.num_items)  # 95 % over items
        return {
            "accuracy": acc,
            "accuracy_lo": ci[0] if ci else None,
            "accuracy_hi": ci[1] if ci else None,
            "exact_match": self.exact_match,
            "acc_norm": self.acc_norm,
            "acc_bytes": self.acc_bytes,
            "digit_accuracy": self.digit_accuracy,
            "num_items": self.num_items,
            "num_truncated": self.num_truncated,
            "shots": self.shots,
        }

    def write_records(self, path: str | Path) -> Path:
        """Write one JSON object per item (atomically) and return the path."""
        from moelab.atomic import atomic_write_text

        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records)
        atomic_write_text(path, text)
        return Path(path)


# ---------------------------------------------------------------- extraction and matching


def _numeric_gold(gold: str) -> bool:
    return normalize_number(gold) is not None


def extract_prediction(family: str, completion: str, gold: str) -> str | None:
    """The short answer in ``completion`` for a task of ``family`` (see module docstring, step 3)."""
    if family == "knowledge":
        return extract_knowledge(completion)
    if _numeric_gold(gold):
        value = extract_numeric(completion)
        return None if value is None else (normalize_number(value) or value)
    if "####" in completion:
        return normalize_text(first_line(completion.split("####", 1)[1]))
    return normalize_text(first_line(completion))


def is_exact_match(family: str, extracted: str | None, gold: str) -> bool:
    if extracted is None:
        return False
    if family != "knowledge" and _numeric_gold(gold):
        return extracted == normalize_number(gold)
    return extracted == normalize_text(gold)


def digit_accuracy(extracted: str | None, gold: str) -> float | None:
    """Share of ``gold``'s digits matched at their place (units first) by ``extracted``, over the
    longer of the two; ``None`` when the gold is not a whole number (module docstring, step 4)."""
    gold_digits = normalize_number(gold)
    if gold_digits is None or not gold_digits.lstrip("-").isdigit():
        return None
    pred = extracted if extracted is not None and extracted.lstrip("-").isdigit() else ""
    if pred.startswith("-") != gold_digits.startswith("-"):
        return 0.0
    pred, gold_digits = pred.lstrip("-"), gold_digits.lstrip("-")
    hits = sum(p == g for p, g in zip(reversed(pred), reversed(gold_digits)))
    return hits / max(len(gold_digits), len(pred))


def _infer_family(items: Sequence[TaskItem]) -> str:
    numeric = any("####" in it.answer for it in items) or (items and all(_numeric_gold(it.gold) for it in items))
    return "reasoning" if numeric else "knowledge"


# ---------------------------------------------------------------- multiple choice


@dataclass
class MultipleChoiceScores:
    pred: list[int]  # argmax of summed log-likelihood
    pred_norm: list[int]  # argmax of log-likelihood per character
    pred_bytes: list[int]  # argmax of log-likelihood per UTF-8 byte
    correct: list[bool]
    correct_norm: list[bool]
    correct_bytes: list[bool]

    @staticmethod
    def _mean(flags: list[bool]) -> float:
        return sum(flags) / len(flags) if flags else math.nan

    @property
    def acc(self) -> float:
        return self._mean(self.correct)

    @property
    def acc_norm(self) -> float:
        return self._mean(self.correct_norm)

    @property
    def acc_bytes(self) -> float:
        return self._mean(self.correct_bytes)


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # ties go to the first choice, as np.argmax


def score_multiple_choice(
    logliks: Sequence[Sequence[float]], choices: Sequence[Sequence[str]], labels: Sequence[int]
) -> MultipleChoiceScores:
    """acc / acc_norm / acc_bytes from per-choice log-likelihoods (nats, summed over the choice's tokens),
    as lm-evaluation-harness defines them for ``multiple_choice`` tasks.

    ``acc_norm`` divides each log-likelihood by the choice's length in characters before the argmax,
    ``acc_bytes`` by its length in UTF-8 bytes, so long choices are not penalised for having more tokens.
    """
    pred, pred_norm, pred_bytes = [], [], []
    for ll, texts in zip(logliks, choices, strict=True):
        assert len(ll) == len(texts) and ll, "one log-likelihood per choice"
        pred.append(_argmax(ll))
        pred_norm.append(_argmax([x / max(len(t), 1) for x, t in zip(ll, texts)]))
        pred_bytes.append(_argmax([x / max(len(t.encode("utf-8")), 1) for x, t in zip(ll, texts)]))

    def hits(preds: list[int]) -> list[bool]:
        return [p == y for p, y in zip(preds, labels, strict=True)]

    return MultipleChoiceScores(pred=pred, pred_norm=pred_norm, pred_bytes=pred_bytes, correct=hits(pred),
                                correct_norm=hits(pred_norm), correct_bytes=hits(pred_bytes))


# ---------------------------------------------------------------- generation length


def generation_budgets(prompt_lengths: Sequence[int], max_new_tokens: int,
                       max_seq_len: int) -> tuple[list[int], list[int]]:
    """(prompt tokens kept, new tokens allowed) per prompt, within a ``max_seq_len`` context.

    A prompt that fits beside ``max_new_tokens`` is kept whole and gets them all. A longer one is cut
    from the left — but never below half the context (nor below what ``max_new_tokens`` leaves): when
    ``max_new_tokens`` is more than half the context, such a prompt keeps ``max_seq_len // 2`` tokens
    (or all of its own, if fewer) and generates into the rest. 48 new tokens on a 64-token model would
    otherwise leave every long prompt 16 tokens. A one-line warning says how many prompts that touched.
    """
    keep_max = max(max_seq_len - max_new_tokens, max_seq_len // 2, 1)
    keeps = [min(n, keep_max) for n in prompt_lengths]
    budgets = [min(max_new_tokens, max_seq_len - k) for k in keeps]
    short = [b for b in budgets if b < max_new_tokens]
    if short:
        warnings.warn(f"max_new_tokens={max_new_tokens} would leave a {max_seq_len}-token model "
                      f"{max(max_seq_len - max_new_tokens, 0)} tokens of prompt: {len(short)} of {len(budgets)} "
                      f"prompts keep up to {keep_max} (half the context) and generate as few as {min(short)} "
                      f"new tokens", stacklevel=3)
    return keeps, budgets


# ---------------------------------------------------------------- few-shot prompts


def fewshot_prompts(items: Sequence[TaskItem], pool: Sequence[TaskItem], shots: int, seed: int) -> list[str]:
    """Each item's prompt with ``shots`` exemplars from ``pool`` prepended (never the item itself).

    Exemplars are drawn per item, in item order, from one ``random.Random(seed)``, so the first n
    items get the same exemplars whatever ``limit`` is.
    """
    if shots == 0:
        return [it.prompt for it in items]
    rng = random.Random(seed)
    out = []
    for it in items:
        draw = rng.sample(range(len(pool)), min(shots + 1, len(pool)))
        chosen = [pool[j] for j in draw if pool[j].prompt != it.prompt][:shots]
        if len(chosen) < shots:
            raise UserError(f"shots={shots}: the train split has only {len(pool)} items to draw exemplars from")
        out.append("".join(ex.prompt + ex.answer + "\n\n" for ex in chosen) + it.prompt)
    return out


# ---------------------------------------------------------------- the evaluation


def _generate_all(
    model, tokenizer, prompts: list[str], *, max_new_tokens: int, stop_strings: tuple[str, ...],
    batch_size: int | None, progress: bool,
) -> tuple[list[str], list[bool], list[int]]:
    from moelab.data.tokenizer import bos_eos_ids
    from moelab.model.generate import generate
    from moelab.ui import progress_bar

    device = next(model.parameters()).device
    bos, eos = bos_eos_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"] if prompts else []
    ids = [[bos, *e] for e in encoded]
    keeps, budgets = generation_budgets([len(x) for x in ids], max_new_tokens, model.cfg.max_seq_len)
    truncated = [len(x) > k for x, k in zip(ids, keeps)]
    ids = [x[-k:] for x, k in zip(ids, keeps)]
    # Longest first; a prompt's budget only grows as prompts get shorter, so equal budgets are adjacent.
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    if batch_size is None and ids:
        budget = _GEN_TOKEN_BUDGET.get(device.type, _GEN_TOKEN_BUDGET["cuda"])
        batch_size = max(1, min(_MAX_GEN_BATCH, budget // (len(ids[order[0]]) + max_new_tokens)))

    def decode(toks: list[int]) -> str:
        return tokenizer.decode(toks, skip_special_tokens=True)

    completions = [""] * len(ids)
    with progress_bar(progress, unit="items") as bar:
        task_id = bar.add_task("accuracy", total=len(ids), info="") if bar is not None else None
        lo = 0
        while lo < len(order):
            rows = [i for i in order[lo : lo + (batch_size or 1)] if budgets[i] == budgets[order[lo]]]
            new = generate(model, [ids[i] for i in rows], max_new_tokens=budgets[rows[0]], eos_token_id=eos,
                           pad_token_id=pad, stop_strings=stop_strings, decode=decode)
            for i, toks in zip(rows, new):
                completions[i] = decode(toks)
            lo += len(rows)
            if bar is not None:
                bar.update(task_id, advance=len(rows))
    return completions, truncated, budgets


def _multiple_choice(model, tokenizer, items, prompts, *, batch_size, progress) -> tuple[list[dict], MultipleChoiceScores, int]:
    pairs, owner = [], []
    for k, (it, prompt) in enumerate(zip(items, prompts)):
        for choice in it.meta["choices"]:
            pairs.append((prompt, choice))
            owner.append(k)
    enc_prompts, enc_choices = encode_pairs(tokenizer, pairs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    nll, _, truncated = sequence_nll(model, enc_prompts, enc_choices, batch_size=batch_size, pad_token_id=pad,
                                     progress=progress, description="choices")
    logliks: list[list[float]] = [[] for _ in items]
    trunc = [False] * len(items)
    for k, x, tr in zip(owner, nll, truncated):
        logliks[k].append(-x)
        trunc[k] |= tr
    labels = [it.meta["label"] for it in items]
    s = score_multiple_choice(logliks, [it.meta["choices"] for it in items], labels)
    records = [
        {"prompt": it.prompt, "choices": it.meta["choices"], "logliks": logliks[k], "label": labels[k],
         "pred": s.pred[k], "pred_norm": s.pred_norm[k], "pred_bytes": s.pred_bytes[k], "gold": it.gold,
         "correct": s.correct[k], "correct_norm": s.correct_norm[k], "correct_bytes": s.correct_bytes[k],
         "score": float(s.correct[k]), "truncated": trunc[k]}
        for k, it in enumerate(items)
    ]
    return records, s, sum(trunc)


@torch.no_grad()
def accuracy(
    model: torch.nn.Module,
    tokenizer,
    task_or_items: Task | Sequence[TaskItem],
    *,
    split: str = "heldout",
    shots: int = 0,
    limit: int | None = None,
    max_new_tokens: int = 48,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> AccuracyResult:
    """Accuracy of ``model`` on the first ``limit`` items of a task split (or a list of items).

    See the module docstring for the pipeline. ``batch_size=None`` picks prompts per generation
    batch from a token budget.
    """
    if isinstance(task_or_items, Task):
        task = task_or_items
        if split not in task.splits:
            raise UserError(f"task '{task.name}' has no split '{split}' (splits: {', '.join(task.splits)})")
        items = list(task.items(split))
        name, family = task.name, task.family
        scorer: Callable[[TaskItem, str], float] | None = task.score
        stops = tuple(dict.fromkeys((*REASONING_STOPS, *task.stop_strings)))
        pool = task.splits.get("train")
    else:
        task, items = None, list(task_or_items)
        name, family, scorer, pool = "items", _infer_family(items), None, None
        stops = REASONING_STOPS + (("\n",) if family == "knowledge" else ())
    if limit is not None:
        items = items[:limit]
    if shots and not pool:
        raise UserError(f"shots={shots}: task '{name}' has no train split to draw exemplars from")
    prompts = fewshot_prompts(items, pool or [], shots, seed)

    mc = [k for k, it in enumerate(items) if "choices" in it.meta]
    gen = [k for k, it in enumerate(items) if "choices" not in it.meta]
    records: list[dict[str, Any]] = [{} for _ in items]
    num_truncated = 0
    exact: list[bool] = []
    scores = None

    if gen:
        completions, truncated, budgets = _generate_all(
            model, tokenizer, [prompts[k] for k in gen], max_new_tokens=max_new_tokens, stop_strings=stops,
            batch_size=batch_size, progress=progress,
        )
        num_truncated += sum(truncated)
        for k, completion, tr, new_tokens in zip(gen, completions, truncated, budgets):
            it = items[k]
            extracted = extract_prediction(family, completion, it.gold)
            em = is_exact_match(family, extracted, it.gold)
            score = float(scorer(it, completion)) if scorer is not None else float(em)
            exact.append(em)
            per_digit = digit_accuracy(extracted, it.gold) if family != "knowledge" else None
            records[k] = {"prompt": it.prompt, "completion": completion, "extracted": extracted, "gold": it.gold,
                          "exact_match": em, "digit_accuracy": per_digit, "score": score, "correct": score >= 1.0, "truncated": tr,
                          "max_new_tokens": new_tokens}
    if mc:
        mc_records, scores, tr = _multiple_choice(
            model, tokenizer, [items[k] for k in mc], [prompts[k] for k in mc], batch_size=batch_size, progress=progress
        )
        num_truncated += tr
        for k, rec in zip(mc, mc_records):
            records[k] = rec
    for k, rec in enumerate(records):
        rec["index"] = k
        if "index" in items[k].meta:
            rec["item_index"] = items[k].meta["index"]

    correct = [bool(r["correct"]) for r in records]
    per_digit = [r["digit_accuracy"] for r in records if r.get("digit_accuracy") is not None]
    return AccuracyResult(
        task=name,
        split=split,
        shots=shots,
        accuracy=sum(correct) / len(correct) if correct else math.nan,
        exact_match=sum(exact) / len(exact) if exact else None,
        acc_norm=scores.acc_norm if scores is not None else None,
        num_items=len(items),
        num_truncated=num_truncated,
        records=records,
        acc_bytes=scores.acc_bytes if scores is not None else None,
        digit_accuracy=sum(per_digit) / len(per_digit) if per_digit else None,
    )
