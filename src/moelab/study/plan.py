"""The planner: a pure function from a study (budgets × grid) to run configs.

Each member of an iso-FLOP family trains on D = C / (6 · N_active) tokens
(see :mod:`moelab.accounting` for the convention), in D / (batch · seq_len) optimizer steps
rounded down, or up with ``steps_rounding: ceil`` (the ``paper`` preset). Points that cannot run are kept
with the reason (k > E, budget below one optimizer step, memory over the limit),
never silently dropped.

A study's ``models:`` (checkpoints trained elsewhere, :mod:`moelab.study.imported`) become runs
with ``source`` set and no steps: d, E, k and the parameter counts come from each ``config.json``
(the only files read: the planner writes nothing), FLOPs = 6 · N_active · tokens, and the budget
is the study's kind: the tokens for an iso-token study or one without a grid, the FLOPs for an
iso-FLOP one. A bad entry is a ``UserError``, not an infeasible run: there is nothing to plan around.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from dataclasses import dataclass, field

from pydantic import ValidationError

from moelab import accounting
from moelab.config import ModelConfig, RunConfig, StudyConfig


@dataclass
class PlannedRun:
    run_id: str
    name: str  # the seed paper's model name, d{d}-E{E}-k{k}-{total}-A{active}
    budget: float
    d_model: int
    num_experts: int
    top_k: int
    lr: float | None  # None for an imported model (not known here)
    init_std: float
    seed: int | None
    feasible: bool
    reason: str = ""
    total_params: int = 0
    active_params: int = 0  # exact: the router's d·E weights included
    active_params_without_router: int = 0  # the count the name's A… uses
    tokens: int = 0
    tpp: float = 0.0
    train_flops: float = 0.0
    steps: int = 0
    memory_gb: float = 0.0  # training memory; for an imported model its fp32 weights (evaluation)
    config: RunConfig | None = field(default=None, repr=False)
    source: str = ""  # an imported model's Hugging Face directory; "" for a run trained here
    train_log: str | None = None  # an imported model's pretraining-loss CSV, if given

    @property
    def imported(self) -> bool:
        return bool(self.source)

    @property
    def sparsity(self) -> float:
        return accounting.sparsity(self.num_experts, self.top_k)

    def row(self) -> dict:
        """A flat, JSON-able row (for tables, --json and the results store)."""
        return {
            "run_id": self.run_id, "name": self.name, "budget": self.budget, "d_model": self.d_model,
            "num_experts": self.num_experts, "top_k": self.top_k,
            "sparsity": self.sparsity if self.top_k <= self.num_experts else None,
            "lr": self.lr, "init_std": self.init_std, "seed": self.seed,
            "total_params": self.total_params, "active_params": self.active_params,
            "active_params_without_router": self.active_params_without_router, "tokens": self.tokens,
            "tpp": self.tpp, "train_flops": self.train_flops, "steps": self.steps,
            "memory_gb": round(self.memory_gb, 3), "feasible": self.feasible, "reason": self.reason,
            "origin": "imported" if self.imported else "trained", "source": self.source or None,
            "train_log": self.train_log,
        }


def memory_estimate_gb(model: ModelConfig, batch_size: int, seq_len: int, grad_accum: int = 1) -> float:
    """Rough peak training memory: fp32 weights, grads and two Adam moments (16 B/param),
    plus activations kept for backward (~34·B·T·D·L bytes in bf16, the Megatron estimate
    without recomputation, scaled up for the k-fold expert activations) and fp32 logits."""
    n = accounting.total_params(model)
    micro = batch_size // grad_accum
    tokens = micro * seq_len
    acts = 34 * tokens * model.d_model * model.n_layers * (1 + model.top_k * model.ffn_hidden / (4 * model.d_model))
    logits = 3 * 4 * tokens * model.vocab_size
    return (16 * n + acts + logits) / 2**30


def _run_id(budget: float, by_tokens: bool, d: int, e: int, k: int, lr: float | None, std: float | None,
            seed: int | None) -> str:
    parts = [f"{'D' if by_tokens else 'C'}{budget:.3g}".replace("+", ""), f"d{d}", f"E{e}", f"k{k}"]
    if lr is not None:
        parts.append(f"lr{lr:g}")
    if std is not None:
        parts.append(f"std{std:g}")
    if seed is not None:
        parts.append(f"s{seed}")
    return "-".join(parts)


def plan(study: StudyConfig) -> list[PlannedRun]:
    """Every point of budgets × d × E × k × lr × init_std × seed, feasible or not, then every
    imported model (see the module docstring)."""
    runs = _grid(study) if study.budgets or study.tokens else []
    imported = _imported(study)
    assert not {r.run_id for r in runs} & {r.run_id for r in imported}, "imported ids start with 'hf-', grid ids not"
    return runs + imported


def _imported(study: StudyConfig) -> list[PlannedRun]:
    from moelab.study.imported import inspect_model, run_ids

    runs = []
    for i, (entry, run_id) in enumerate(zip(study.models, run_ids([m.path for m in study.models]))):
        model = inspect_model(entry, i)
        counts = accounting.param_counts(model)
        tokens = int(entry.tokens)
        flops = accounting.training_flops(model, tokens)
        train = study.base.train.model_copy(update={"tokens": tokens, "steps": None})
        config = study.base.model_copy(update={"name": run_id, "model": model, "train": train})
        runs.append(PlannedRun(
            run_id=run_id, name=accounting.model_name(model), budget=flops if study.budgets else float(tokens),
            d_model=model.d_model, num_experts=model.num_experts, top_k=model.top_k, lr=None,
            init_std=model.init_std, seed=None, feasible=True, total_params=counts.total,
            active_params=counts.active, active_params_without_router=counts.active_without_router, tokens=tokens, tpp=tokens / counts.total, train_flops=flops,
            memory_gb=4 * counts.total / 2**30, config=config, source=entry.path, train_log=entry.train_log))
    return runs


def tokenizer_vocab_size(path: str | None) -> int | None:
    """The size of the Hugging Face tokenizer at ``path`` (added tokens included, as ``len(tok)``),
    read from its ``tokenizer.json`` alone; None when there is no such file here (a placeholder name
    such as the ``paper`` preset's ``llm-jp-tokenizer``: the config's vocab_size then stands)."""
    if path is None:
        return None
    file = Path(path).expanduser() / "tokenizer.json"
    if not file.is_file():
        return None
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(file)).get_vocab_size(with_added_tokens=True)
    except Exception:  # tokenizers raises its own exception type for a damaged file; training names it
        return None


def _grid(study: StudyConfig) -> list[PlannedRun]:
    g, base = study.grid, study.base
    # A real tokenizer sets the vocabulary as the trainer will: padded as Megatron pads (a multiple of
    # 128) when it is larger than the config's (moelab.train.trainer); the counts, FLOPs and memory use it.
    tok_vocab = tokenizer_vocab_size(base.data.tokenizer)
    model_vocab = accounting.model_vocab_size(base.model.vocab_size, tok_vocab)
    lrs = g.lr or [None]
    stds = g.init_std or [None]
    seeds = g.seed or [None]
    tokens_per_step = base.train.batch_size * base.data.seq_len
    runs: list[PlannedRun] = []
    by_tokens = bool(study.tokens)
    for budget, d, e, k, lr, std, seed in itertools.product(
        study.tokens or study.budgets, g.d_model, g.num_experts, g.top_k, lrs, stds, seeds
    ):
        run = PlannedRun(
            run_id=_run_id(budget, by_tokens, d, e, k, lr, std, seed), name="", budget=budget, d_model=d,
            num_experts=e, top_k=k, lr=lr if lr is not None else base.train.lr,
            init_std=std if std is not None else base.model.init_std,
            seed=seed if seed is not None else base.train.seed, feasible=False,
        )
        runs.append(run)
        if k > e:
            run.reason = f"top_k={k} exceeds num_experts={e}"
            continue
        heads = max(1, d // study.head_dim) if study.heads_rule == "head_dim" else base.model.n_heads
        model_fields = base.model.model_dump() | {
            "d_model": d, "num_experts": e, "top_k": k, "n_heads": heads, "init_std": run.init_std,
            "vocab_size": base.data.vocab_size if base.data.tokenizer is None else model_vocab,
            "max_seq_len": max(base.model.max_seq_len, base.data.seq_len),
        }
        if study.expert_width_rule == "per_k":
            # fine-grained experts: k experts of width F/k touch as many weights as one of width F
            model_fields["expert_hidden"] = max(1, int(round(base.model.ffn_mult * d / k)))
        if model_fields["n_kv_heads"] and heads % model_fields["n_kv_heads"]:
            model_fields["n_kv_heads"] = None
        try:
            model = ModelConfig(**model_fields)
        except ValidationError as err:
            run.reason = err.errors()[0]["msg"].removeprefix("Value error, ")
            continue
        counts = accounting.param_counts(model)
        run.name = accounting.model_name(model)
        run.total_params, run.active_params = counts.total, counts.active
        run.active_params_without_router = counts.active_without_router
        run.tokens = int(budget) if by_tokens else accounting.tokens_for_budget(model, budget)
        run.tpp = run.tokens / counts.total
        run.steps = (-(-run.tokens // tokens_per_step) if study.steps_rounding == "ceil"
                     else run.tokens // tokens_per_step)
        run.train_flops = accounting.train_flops_per_token(model) * run.steps * tokens_per_step
        run.memory_gb = memory_estimate_gb(model, base.train.batch_size, base.data.seq_len, base.train.grad_accum)
        if run.tokens < tokens_per_step:
            run.reason = f"budget {budget:.3g} {'tokens' if by_tokens else 'FLOPs'} is below one step ({tokens_per_step} tokens)"
            continue
        if run.memory_gb > study.max_memory_gb:
            run.reason = f"memory estimate {run.memory_gb:.1f} GB exceeds max_memory_gb={study.max_memory_gb:g}"
            continue
        train = base.train.model_copy(update={"lr": run.lr, "seed": run.seed, "steps": run.steps, "tokens": None})
        run.config = base.model_copy(update={"name": run.run_id, "model": model, "train": train})
        run.feasible = True
    return runs


def estimated_seconds(run: PlannedRun, flops_per_second: float) -> float:
    """Wall time from a measured training FLOP/s (see :mod:`moelab.study.probe`)."""
    return run.train_flops / flops_per_second if flops_per_second > 0 else math.nan
