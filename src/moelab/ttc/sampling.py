"""Test-time compute: N samples per question, then coverage (pass@k) and majority vote at n = 1, 2, 4, …, N.

    result = sample_task(model, tok, get_task("reasoning", world), samples=16, limit=50)
    result.curves          # {"n": [1, 2, 4, 8, 16], "pass_at_k": [...], "majority": [...], "greedy": 0.31, ...}
    result.write(out_dir)  # samples.jsonl (one record per sample) + ttc.json (settings and curves)
    recompute_from_jsonl(out_dir / "samples.jsonl")   # the same curves, from the records alone

Pipeline (a small sample → extract → vote/score pipeline, like lm-evaluation-harness's self-consistency):

1. Prompts exactly as :func:`moelab.eval.accuracy.accuracy` builds them (``BOS`` + optional few-shot
   exemplars + the item's prompt, left-truncated to ``max_seq_len - max_new_tokens`` tokens).
2. Every prompt repeated N times; rows are batched across questions and samples and decoded with
   the KV cache (:func:`moelab.model.generate.generate`) at ``temperature`` / ``top_p``, stopping at
   EOS and the task's stop strings. One ``torch.Generator`` seeded with ``seed`` drives all draws, so a
   run is reproducible for a given ``seed`` and ``batch_size``.
3. Each completion's short answer comes from the evaluation suite's extractor for the task family
   (:func:`moelab.eval.accuracy.extract_prediction`; ``None`` when nothing — or only an empty line —
   could be extracted: an invalid answer, which does not vote), and a
   sample is correct when the task's own scorer gives it full credit — the same rule as accuracy.
4. The greedy baseline is :func:`moelab.eval.accuracy.accuracy` on the same items, so it equals the
   accuracy the evaluation suite reports.
5. Metrics from :mod:`moelab.ttc.metrics` (see there for the pass@k estimator and the vote's tie rule).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from moelab.data.world import Task
from moelab.errors import UserError
from moelab.ttc.metrics import QuestionSamples, ttc_curves

__all__ = ["TTCResult", "sample_task", "recompute_from_jsonl", "curves_from_records", "SAMPLES_FILE", "SUMMARY_FILE"]

SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "ttc.json"
_GEN_TOKEN_BUDGET = {"cpu": 8192, "cuda": 131072}  # tokens (prompt + new) per generation batch
_MAX_GEN_BATCH = 512


@dataclass
class TTCResult:
    settings: dict[str, Any]
    curves: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Settings and curves, JSON-able, without the records."""
        return {**self.settings, **self.curves}

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """``out_dir/samples.jsonl`` (a header line, then one record per sample and per greedy answer)
        and ``out_dir/ttc.json``, both written atomically."""
        from moelab.atomic import atomic_write_json, atomic_write_text

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        lines = [{"kind": "header", **self.settings}, *self.records]
        samples = out_dir / SAMPLES_FILE
        atomic_write_text(samples, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
        summary = out_dir / SUMMARY_FILE
        atomic_write_json(summary, self.summary())
        return {"samples": samples, "summary": summary}


def _check_options(task: Task, split: str, samples: int, temperature: float, top_p: float, max_new_tokens: int) -> None:
    if samples < 1:
        raise UserError(f"--samples must be at least 1, got {samples}")
    if not temperature > 0:
        raise UserError(f"--temperature must be > 0 for sampling, got {temperature:g} (the greedy baseline is always computed)")
    if not 0 < top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {top_p:g}")
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be positive, got {max_new_tokens}")
    if split not in task.splits:
        raise UserError(f"task '{task.name}' has no split '{split}' (splits: {', '.join(task.splits)})")


def encode_prompts(tokenizer, prompts: list[str], keep: int) -> list[list[int]]:
    from moelab.data.tokenizer import bos_eos_ids

    bos, _ = bos_eos_ids(tokenizer)
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"] if prompts else []
    return [[bos, *ids][-keep:] for ids in encoded]


@torch.no_grad()
def sample_completions(
    model, tokenizer, prompt_ids: list[list[int]], *, samples: int, temperature: float, top_p: float,
    max_new_tokens: int, stop_strings: tuple[str, ...], seed: int, batch_size: int | None, progress: bool,
) -> list[list[str]]:
    """``samples`` completions for each prompt: ``out[question][sample]``."""
    from moelab.data.tokenizer import bos_eos_ids
    from moelab.model.generate import generate
    from moelab.ui import progress_bar

    device = next(model.parameters()).device
    _, eos = bos_eos_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows = [(q, s) for q in range(len(prompt_ids)) for s in range(samples)]  # a prompt's samples side by side
    if batch_size is None:
        longest = max((len(p) for p in prompt_ids), default=1)
        budget = _GEN_TOKEN_BUDGET.get(device.type, _GEN_TOKEN_BUDGET["cuda"])
        batch_size = max(1, min(_MAX_GEN_BATCH, budget // (longest + max_new_tokens)))
    generator = torch.Generator(device=device).manual_seed(seed)

    def decode(toks: list[int]) -> str:
        return tokenizer.decode(toks, skip_special_tokens=True)

    out: list[list[str]] = [[""] * samples for _ in prompt_ids]
    with progress_bar(progress, unit="samples") as bar:
        task_id = bar.add_task("sampling", total=len(rows), info="") if bar is not None else None
        for lo in range(0, len(rows), batch_size):
            chunk = rows[lo : lo + batch_size]
            new = generate(model, [prompt_ids[q] for q, _ in chunk], max_new_tokens=max_new_tokens,
                           eos_token_id=eos, pad_token_id=pad, temperature=temperature, top_p=top_p,
                           stop_strings=stop_strings, decode=decode, generator=generator)
            for (q, s), toks in zip(chunk, new):
                out[q][s] = decode(toks)
            if bar is not None:
                bar.update(task_id, advance=len(chunk))
    return out


def sample_task(
    model: torch.nn.Module,
    tokenizer,
    task: Task,
    *,
    samples: int,
    split: str = "heldout",
    limit: int | None = None,
    temperature: float = 0.6,
    top_p: float = 0.95,
    max_new_tokens: int = 48,
    seed: int = 0,
    shots: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
) -> TTCResult:
    """Sample ``samples`` completions per question of ``task.splits[split][:limit]``; score, vote, curve.

    See the module docstring. Bad options are a ``UserError``.
    """
    from moelab.eval.accuracy import accuracy, extract_prediction, fewshot_prompts
    from moelab.eval.tasks import REASONING_STOPS

    _check_options(task, split, samples, temperature, top_p, max_new_tokens)
    items = list(task.items(split))[:limit] if limit is not None else list(task.items(split))
    if not items:
        raise UserError(f"task '{task.name}' split '{split}' has no items")
    if any("choices" in it.meta for it in items):
        raise UserError(f"task '{task.name}' has multiple-choice items; test-time sampling needs generative items")
    prompts = fewshot_prompts(items, task.splits.get("train") or [], shots, seed)
    keep = max(1, model.cfg.max_seq_len - max_new_tokens)
    stops = tuple(dict.fromkeys((*REASONING_STOPS, *task.stop_strings)))
    completions = sample_completions(
        model, tokenizer, encode_prompts(tokenizer, prompts, keep), samples=samples, temperature=temperature, top_p=top_p,
        max_new_tokens=max_new_tokens, stop_strings=stops, seed=seed, batch_size=batch_size, progress=progress,
    )
    greedy = accuracy(model, tokenizer, task, split=split, shots=shots, limit=len(items),
                      max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, progress=progress)

    records: list[dict[str, Any]] = []
    for q, (item, outs, g) in enumerate(zip(items, completions, greedy.records)):
        base = {"question": q, "item_index": item.meta.get("index", q), "gold": item.gold}
        records.append({"kind": "greedy", **base, "prompt": item.prompt, "completion": g["completion"],
                        "extracted": g["extracted"], "score": g["score"], "correct": bool(g["correct"])})
        for s, completion in enumerate(outs):
            score = float(task.score(item, completion))
            extracted = extract_prediction(task.family, completion, item.gold) or None  # "" is no answer
            records.append({"kind": "sample", **base, "sample": s, "completion": completion,
                            "extracted": extracted, "score": score, "correct": score >= 1.0})
    settings = {"task": task.name, "split": split, "samples": samples, "limit": limit, "temperature": temperature,
                "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed, "shots": shots}
    return TTCResult(settings, curves_from_records(records), records)


def curves_from_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The curves of :func:`moelab.ttc.metrics.ttc_curves` from per-sample (and greedy) records."""
    by_question: dict[int, dict[str, Any]] = {}
    for r in records:
        q = by_question.setdefault(int(r["question"]), {"samples": {}, "greedy": None})
        if r.get("kind") == "greedy":
            q["greedy"] = bool(r["correct"])
        elif r.get("kind") == "sample":
            q["samples"][int(r["sample"])] = r
    questions = []
    for qid in sorted(by_question):
        q = by_question[qid]
        if not q["samples"]:
            raise ValueError(f"question {qid} has no sample records")
        ordered = [q["samples"][s] for s in sorted(q["samples"])]
        questions.append(QuestionSamples(answers=[r["extracted"] for r in ordered],
                                         correct=[bool(r["correct"]) for r in ordered], greedy_correct=q["greedy"]))
    return ttc_curves(questions)


def recompute_from_jsonl(path: str | Path) -> dict[str, Any]:
    """Settings (from the header line) and curves recomputed from a ``samples.jsonl``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such samples file")
    header: dict[str, Any] = {}
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: invalid JSON at line {lineno}: {err.msg}") from None
        if r.get("kind") == "header":
            header = {k: v for k, v in r.items() if k != "kind"}
        else:
            records.append(r)
    if not records:
        raise UserError(f"{path}: no sample records")
    try:
        return {**header, **curves_from_records(records)}
    except (KeyError, ValueError, TypeError) as err:
        raise UserError(f"{path}: malformed sample records ({err})") from None
