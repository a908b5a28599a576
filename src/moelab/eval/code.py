"""Code tasks (HumanEval+ / MBPP+ style): task loss, and pass@k by running sampled programs.

    moelab eval taskloss --model M --task-file ../shared/data/humanevalplus_test.json
    moelab eval code --model M --task-file my_humaneval.jsonl --n 20 --k 1 10 --temperature 0.8

    result = code_pass_at_k(model, tok, load_task_file("my_humaneval.jsonl"), n=20, ks=(1, 10))
    result.pass_at_k[1], result.write_records("eval/code.jsonl")

**Task loss** needs nothing special: the seed paper's ``humanevalplus_test.json`` and
``mbppplus_test.json`` are ``{prompt, answer}`` task files (the answer is the reference solution's
text after the prompt), scored by :mod:`moelab.eval.taskloss` like any other task file.

**pass@k** needs tests, which those files do not carry. An item of a task file carries them in
``test`` (a string, or a list of lines) or ``test_list`` (MBPP's list of ``assert`` lines), with an
optional ``entry_point`` (the function under test); the task-file loader keeps both in
``TaskItem.meta``::

    {"prompt": "def add(a, b):\\n    \\"\\"\\"Sum.\\"\\"\\"\\n", "answer": "    return a + b\\n",
     "test": "def check(candidate):\\n    assert candidate(1, 2) == 3\\n", "entry_point": "add"}

Pipeline (sample -> execute -> score):

1. **Sample**: ``n`` completions per item with :func:`moelab.model.generate.generate` (KV cache,
   temperature + top-p, one seeded generator), from ``BOS + prompt`` left-truncated to
   ``max_seq_len - max_new_tokens`` tokens, stopping at EOS and at the style's stop strings.
2. **Execute**: the *program* of a sample is ``prompt + completion`` when the prompt defines the
   entry point (HumanEval: the prompt is the signature and docstring), else the completion alone
   (MBPP: the prompt is prose); then the tests; then ``check(entry_point)`` when the tests define
   ``check``. Each program runs in :mod:`moelab.eval.sandbox` (own process, wall-clock and memory
   limits, throw-away directory, no network where the OS allows).
3. **Score**: ``c`` of the ``n`` samples of an item pass; the unbiased pass@k of Chen et al. (2021)
   (:func:`moelab.ttc.metrics.pass_at_k`) per item, averaged over items, for each ``k <= n``.

Stop strings: HumanEval's (``\\nclass``, ``\\ndef``, ``\\n#``, ``\\nif``, ``\\nprint``: the body ends where
top-level code starts) for HumanEval-style items; for MBPP-style items, whose completion is a whole
function, the same without ``\\ndef`` and ``\\n#`` (a solution may define helpers) plus
``\\nassert``, ``\\n\\"\\"\\"`` and ``\\n```\\``. ``stop_strings=`` overrides both.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from moelab.cli_args import device_name, nonneg_float, positive_float, positive_int, probability
from moelab.errors import UserError

if TYPE_CHECKING:  # moelab.data pulls in torch and transformers: not at CLI start-up (parser building)
    from moelab.data.world import Task, TaskItem

__all__ = [
    "CodeResult",
    "code_pass_at_k",
    "sample_code",
    "score_code",
    "code_items",
    "program_for",
    "check_references",
    "HUMANEVAL_STOPS",
    "MBPP_STOPS",
]

HUMANEVAL_STOPS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
MBPP_STOPS = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif __name__", "\n```")


@dataclass
class CodeResult:
    task: str
    n: int  # samples per item
    ks: tuple[int, ...]  # the k reported (those <= n)
    pass_at_k: dict[int, float]  # mean over items
    num_items: int
    num_truncated: int
    records: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers without the records: ``pass@k`` per k, counts and sandbox outcomes."""
        statuses = Counter(s["status"] for r in self.records for s in r["samples"])
        return {
            **{f"pass@{k}": v for k, v in self.pass_at_k.items()},
            "n": self.n,
            "num_items": self.num_items,
            "num_samples": sum(len(r["samples"]) for r in self.records),
            "num_passed_samples": statuses.get("passed", 0),
            "statuses": dict(sorted(statuses.items())),
            "num_truncated": self.num_truncated,
        }

    def write_records(self, path: str | Path) -> Path:
        """One JSON object per item (its samples, their outcome, its pass@k), written atomically."""
        from moelab.atomic import atomic_write_text

        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records)
        atomic_write_text(path, text)
        return Path(path)


# ---------------------------------------------------------------- items and programs


def _tests(item: TaskItem) -> str | None:
    meta = item.meta
    for key in ("test", "test_list"):
        value = meta.get(key)
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, list) and value and all(isinstance(x, str) for x in value):
            return "\n".join(value) + "\n"
    return None


def _entry_point(item: TaskItem) -> str | None:
    value = item.meta.get("entry_point")
    return value if isinstance(value, str) and value else None


def _where(task_name: str, item: TaskItem, k: int) -> str:
    source = task_name[len("file:"):] if task_name.startswith("file:") else task_name
    return f"{source}: item {item.meta.get('index', k)}"


def code_items(items: Sequence[TaskItem], task_name: str = "items") -> list[TaskItem]:
    """``items`` unchanged, after checking that each carries tests (a one-line ``UserError`` names
    the first that does not, and any malformed ``entry_point``)."""
    if not items:
        raise UserError(f"{task_name}: no items")
    for k, it in enumerate(items):
        if _tests(it) is None:
            raise UserError(
                f"{_where(task_name, it, k)}: no 'test' field (pass@k runs each sample against the item's tests: "
                "give 'test' and optionally 'entry_point', HumanEval style; task loss needs neither)"
            )
        if "entry_point" in it.meta and _entry_point(it) is None:
            raise UserError(f"{_where(task_name, it, k)}: field 'entry_point' must be a non-empty string")
    return list(items)


def _prompt_is_code(item: TaskItem) -> bool:
    """HumanEval style: the prompt itself defines the function under test."""
    entry = _entry_point(item)
    return entry is not None and f"def {entry}" in item.prompt


def program_for(item: TaskItem, completion: str) -> str:
    """The program that judges ``completion`` for ``item`` (see the module docstring, step 2)."""
    from moelab.eval.sandbox import build_program

    tests = _tests(item)
    assert tests is not None, "code_items() checks that every item carries tests"
    solution = item.prompt + completion if _prompt_is_code(item) else completion
    entry = _entry_point(item)
    return build_program(solution, tests, entry if entry and "def check" in tests else None)


def _stops(item: TaskItem) -> tuple[str, ...]:
    return HUMANEVAL_STOPS if _prompt_is_code(item) else MBPP_STOPS


# ---------------------------------------------------------------- sample -> execute -> score


def sample_code(
    model,
    tokenizer,
    items: Sequence[TaskItem],
    *,
    n: int,
    temperature: float = 0.8,
    top_p: float = 0.95,
    max_new_tokens: int = 256,
    stop_strings: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
) -> tuple[list[list[str]], list[bool]]:
    """``n`` sampled completions per item (``out[item][sample]``) and a prompt-truncated flag per item.

    Items are sampled in groups that share stop strings; one generator seeded with ``seed`` drives
    every draw, so a run is reproducible for a given ``seed`` and ``batch_size``.
    """
    from moelab.ttc.sampling import encode_prompts, sample_completions

    if n < 1:
        raise UserError(f"--n: need at least one sample per item, got {n}")
    if not temperature > 0:
        raise UserError(f"--temperature: must be > 0 for pass@k sampling, got {temperature:g}")
    if not 0 < top_p <= 1:
        raise UserError(f"--top-p: must be in (0, 1], got {top_p:g}")
    keep = model.cfg.max_seq_len - max_new_tokens
    if max_new_tokens < 1 or keep < 1:
        raise UserError(f"--max-new-tokens: must be in 1..{model.cfg.max_seq_len - 1} (the model's context "
                        f"is {model.cfg.max_seq_len} tokens), got {max_new_tokens}")
    groups: dict[tuple[str, ...], list[int]] = {}
    for k, it in enumerate(items):
        groups.setdefault(tuple(stop_strings) if stop_strings is not None else _stops(it), []).append(k)
    completions: list[list[str]] = [[] for _ in items]
    truncated = [False] * len(items)
    for g, (stops, rows) in enumerate(groups.items()):
        full = encode_prompts(tokenizer, [items[k].prompt for k in rows], 1 << 62)
        for k, ids in zip(rows, full):
            truncated[k] = len(ids) > keep
        out = sample_completions(
            model, tokenizer, [ids[-keep:] for ids in full], samples=n, temperature=temperature, top_p=top_p,
            max_new_tokens=max_new_tokens, stop_strings=stops, seed=seed + g, batch_size=batch_size,
            progress=progress,
        )
        for k, samples in zip(rows, out):
            completions[k] = samples
    return completions, truncated


def score_code(
    items: Sequence[TaskItem],
    completions: Sequence[Sequence[str]],
    *,
    ks: Sequence[int] = (1, 10),
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    workers: int | None = None,
    task_name: str = "items",
    truncated: Sequence[bool] | None = None,
) -> CodeResult:
    """Run every completion of every item against the item's tests and report pass@k.

    ``completions[i]`` are item i's samples (the same number for every item); ``ks`` above that
    number are left out. All programs of all items go through one sandbox worker pool.
    """
    from moelab.eval.sandbox import run_many
    from moelab.ttc.metrics import pass_at_k

    items = code_items(items, task_name)
    if len(completions) != len(items):
        raise ValueError(f"{len(completions)} completion lists for {len(items)} items")
    counts = {len(c) for c in completions}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"every item needs the same, non-zero number of samples (got {sorted(counts)})")
    n = counts.pop()
    if any(k < 1 for k in ks):
        raise UserError(f"--k: every k must be >= 1, got {list(ks)}")
    ks = tuple(sorted({k for k in ks if k <= n}))
    programs = [program_for(it, c) for it, comps in zip(items, completions) for c in comps]
    results = run_many(programs, timeout_s=timeout_s, memory_mb=memory_mb, workers=workers)
    truncated = list(truncated) if truncated is not None else [False] * len(items)

    records, per_item = [], []
    for i, (it, comps) in enumerate(zip(items, completions)):
        outcome = results[i * n : (i + 1) * n]
        c = sum(r.passed for r in outcome)
        scores = {k: pass_at_k(n, c, k) for k in ks}
        per_item.append(scores)
        records.append({
            "index": i, "item_index": it.meta.get("index", i), "entry_point": _entry_point(it), "prompt": it.prompt,
            "n": n, "c": c, "pass_at_k": {str(k): v for k, v in scores.items()}, "truncated": truncated[i],
            "samples": [{"completion": comp, "status": r.status, "passed": r.passed,
                         "error": "" if r.passed else _last_line(r.stderr_tail)} for comp, r in zip(comps, outcome)],
        })
    mean = {k: sum(s[k] for s in per_item) / len(per_item) for k in ks}
    return CodeResult(task=task_name, n=n, ks=ks, pass_at_k=mean, num_items=len(items),
                      num_truncated=sum(truncated), records=records)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def code_pass_at_k(
    model,
    tokenizer,
    task_or_items: Task | Sequence[TaskItem],
    *,
    split: str = "heldout",
    limit: int | None = None,
    n: int = 10,
    ks: Sequence[int] = (1, 10),
    temperature: float = 0.8,
    top_p: float = 0.95,
    max_new_tokens: int = 256,
    stop_strings: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    workers: int | None = None,
    progress: bool = False,
) -> CodeResult:
    """Sample ``n`` completions per item, execute them against the item's tests, report pass@k.

    See the module docstring for the pipeline; :func:`sample_code` and :func:`score_code` are its
    two halves (``score_code`` alone scores completions from anywhere).
    """
    from moelab.data.world import Task

    if isinstance(task_or_items, Task):
        if split not in task_or_items.splits:
            raise UserError(f"task '{task_or_items.name}' has no split '{split}'")
        name, items = task_or_items.name, list(task_or_items.items(split))
    else:
        name, items = "items", list(task_or_items)
    items = code_items(items[:limit] if limit else items, name)  # fail on missing tests before sampling
    completions, truncated = sample_code(
        model, tokenizer, items, n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
        stop_strings=stop_strings, seed=seed, batch_size=batch_size, progress=progress,
    )
    return score_code(items, completions, ks=ks, timeout_s=timeout_s, memory_mb=memory_mb, workers=workers,
                      task_name=name, truncated=truncated)


def check_references(items: Sequence[TaskItem], *, timeout_s: float = 5.0, memory_mb: int = 512,
                     workers: int | None = None) -> list:
    """Run each item's reference ``answer`` as its completion: a task file's tests should pass them all.

    Returns one :class:`moelab.eval.sandbox.SandboxResult` per item.
    """
    from moelab.eval.sandbox import run_many

    items = code_items(items)
    return run_many([program_for(it, it.answer) for it in items], timeout_s=timeout_s, memory_mb=memory_mb,
                    workers=workers)


# ---------------------------------------------------------------- CLI


def cmd_code(args) -> int:
    import torch

    from moelab.eval.cli import device_dtype, emit_summary
    from moelab.eval.tasks import task_from_file
    from moelab.modelio import load_model

    device, dtype = device_dtype(args)
    task = task_from_file(args.task_file)
    code_items(task.splits["heldout"][: args.limit] if args.limit else task.splits["heldout"], task.name)
    model, tok, _ = load_model(args.model, device=device)
    with torch.autocast(device.split(":")[0], dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        result = code_pass_at_k(
            model, tok, task, limit=args.limit, n=args.n, ks=args.k, temperature=args.temperature,
            top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed, timeout_s=args.timeout,
            memory_mb=args.memory_mb, workers=args.workers, progress=not args.json,
        )
    summary = {"task": task.name} | result.summary()
    emit_summary(args, summary, "code", result.write_records)
    return 0


def add_code_command(esub) -> None:
    """Register ``moelab eval code`` on the ``moelab eval`` subparsers."""
    import argparse

    s = esub.add_parser("code", help="pass@k of sampled programs against each item's tests (HumanEval/MBPP style)")
    s.add_argument("--model", required=True, help="run, checkpoint, model or Hugging Face Mixtral directory")
    s.add_argument("--task-file", required=True, help="{prompt, answer, test[, entry_point]} JSON/JSONL file")
    s.add_argument("--limit", type=positive_int, help="first N items")
    s.add_argument("--n", type=positive_int, default=10, help="samples per item (default 10)")
    s.add_argument("--k", type=positive_int, nargs="+", default=[1, 10], help="k of pass@k (those <= n; default 1 10)")
    s.add_argument("--temperature", type=nonneg_float, default=0.8)
    s.add_argument("--top-p", type=probability, default=0.95)
    s.add_argument("--max-new-tokens", type=positive_int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--timeout", type=positive_float, default=5.0, help="wall-clock seconds per program")
    s.add_argument("--memory-mb", type=positive_int, default=512, help="address-space limit per program")
    s.add_argument("--workers", type=positive_int, help="programs run at once (default: CPU count)")
    s.add_argument("--device", type=device_name, default="auto")
    s.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on for CUDA)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--out", help="directory for code.json and code.jsonl")
    s.set_defaults(func=cmd_code)
