"""Typed, validated configs — the single source of truth for a run.

Every config is a pydantic model with ``extra="forbid"``, so an unknown key is an error
(with a "did you mean" hint). ``load_run_config(path)`` reads YAML; any validation
problem becomes one ``UserError`` line naming the field.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

# Reading and checking configs lives in config_io; these names are re-exported for the callers.
from moelab.config_io import (DeviceName, StrictConfig, check_device_name, dump_yaml,  # noqa: F401
                              format_validation_error, parse_yaml, read_yaml, validate)
from moelab.errors import UserError


class ModelConfig(StrictConfig):
    """Architecture of a Mixtral-style decoder-only MoE Transformer.

    ``num_experts=1, top_k=1`` is the dense SwiGLU model.
    """

    vocab_size: int = Field(2048, gt=0)
    d_model: int = Field(128, gt=0)
    n_layers: int = Field(4, gt=0)
    n_heads: int = Field(4, gt=0)
    n_kv_heads: int | None = Field(None, gt=0, description="None means n_heads (full multi-head attention)")
    num_experts: int = Field(8, gt=0)
    top_k: int = Field(2, gt=0)
    expert_hidden: int | None = Field(None, gt=0, description="None means ffn_mult * d_model")
    ffn_mult: float = Field(2.0, gt=0)
    max_seq_len: int = Field(512, gt=0)
    rope_theta: float = Field(1_000_000.0, gt=0)
    rms_eps: float = Field(1e-5, gt=0)
    tie_embeddings: bool = False
    init_std: float = Field(0.02, gt=0)
    router_norm: Literal["auto", "renormalize", "none"] = Field(
        "auto", description="the gate of the k chosen experts: 'renormalize' their probabilities to sum to 1 "
                            "(Mixtral; at k = 1 the gate is then always 1 and the router gets no task gradient), "
                            "'none' the softmax probabilities themselves (Switch, Qwen-MoE, OLMoE, Megatron's "
                            "--moe-router-pre-softmax), 'auto' renormalize for k >= 2 and none for k = 1")
    depth_scaled_init: bool = Field(
        True, description="output projections (attention o_proj, expert down-projections) drawn with "
                          "init_std / sqrt(2 n_layers), as Megatron-Core does; false: init_std everywhere")

    @model_validator(mode="before")
    @classmethod
    def _saved_before_gate_rule(cls, data: Any) -> Any:
        return _legacy_defaults(data, cls, {"router_norm": "renormalize", "depth_scaled_init": False})

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k={self.top_k} exceeds num_experts={self.num_experts}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
        return self

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_hidden(self) -> int:
        return self.expert_hidden or int(round(self.ffn_mult * self.d_model))

    @property
    def sparsity(self) -> float:
        return 1.0 - self.top_k / self.num_experts

    @property
    def renormalize_gate(self) -> bool:
        """Whether the k chosen probabilities are renormalised to sum to 1 (see ``router_norm``)."""
        return self.router_norm == "renormalize" or (self.router_norm == "auto" and self.top_k >= 2)


# Fields added on 2026-12-07 (the recipe of the paper's engine; the per-epoch document order) and what configs saved before then
# meant by their absence. A saved config holds every field (``model_dump``); one that holds every
# field of its day but not these was written before they existed, and is read with the values it
# was trained with, so old runs resume, evaluate and export as they trained. A config a person
# writes lists a few fields and gets today's defaults.
_FIELDS_BEFORE_2026_12_07 = {
    "ModelConfig": {"vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "num_experts", "top_k",
                    "expert_hidden", "ffn_mult", "max_seq_len", "rope_theta", "rms_eps", "tie_embeddings",
                    "init_std"},
    "TrainConfig": {"seed", "batch_size", "grad_accum", "steps", "tokens", "lr", "min_lr_ratio", "warmup_steps",
                    "schedule", "decay_fraction", "weight_decay", "beta1", "beta2", "adam_eps", "grad_clip",
                    "aux_loss_coef", "z_loss_coef", "precision", "device", "eval_every", "eval_batches",
                    "checkpoint_every", "keep_checkpoints", "log_every", "distributed"},
    "DataConfig": {"world", "sources", "tokenizer", "vocab_size", "seq_len", "val_fraction"},
}


def _legacy_defaults(data: Any, cls: type, legacy: dict[str, Any]) -> Any:
    if not isinstance(data, dict) or not _FIELDS_BEFORE_2026_12_07[cls.__name__] <= set(data):
        return data
    return {**{k: v for k, v in legacy.items() if k not in data}, **data}


class DataSourceConfig(StrictConfig):
    """One source of pretraining text. ``kind='world'`` is the embedded default world."""

    kind: Literal["world", "text", "jsonl", "parquet", "hf", "prepared"] = "world"
    path: str | None = None
    text_field: str = "text"
    split: str = "train"
    weight: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "DataSourceConfig":
        if self.kind != "world" and not self.path:
            raise ValueError(f"data source of kind '{self.kind}' needs a path")
        return self


KNOWLEDGE_ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "employer", "work_city")
# One-token-to-three-token categorical facts; dates (≈15 bits in ten digit tokens) are left out by default.
DEFAULT_ATTRIBUTES = ("birth_city", "major", "employer")


def addition_problem_space(digits: int, terms: int) -> int:
    """How many distinct ``addition`` questions one difficulty has (ordered operands, no leading zero)."""
    per_operand = 10 if digits == 1 else 9 * 10 ** (digits - 1)
    return per_operand**terms


class WorldConfig(StrictConfig):
    """The embedded synthetic knowledge-and-reasoning world (moelab.data.world).

    The dials of its two task families (calibration and chosen defaults: docs/reproduction.md):

    - memorisation (``knowledge``): how many facts — ``num_people`` × ``train_people_fraction``
      people × ``len(knowledge_attributes)`` facts each; how often each is seen — the corpus
      holds every train person's QA pairs ``qa_repeats`` times and ``bio_paraphrases``
      biographies of everyone; the facts' share of the corpus follows from both.
    - reasoning: the generators ``reasoning_tasks`` (moelab's ``addition`` or reasoning_gym
      names), ``reasoning_train_items`` worked problems in the corpus, and for ``addition`` the
      difficulty ``addition_digits`` (digits per operand) and ``addition_terms``.
    - implicit reasoning (off unless ``implicit_reasoning``; not yet calibrated): a knowledge graph of
      ``implicit_entities`` entities and ``implicit_relations`` relations, ``implicit_rules`` of them
      derived by 2-hop rules; the corpus holds the atomic facts and a share ``implicit_gamma`` of the
      derived ones, task ``implicit`` the rest (moelab.data.implicit).
    """

    seed: int = 0
    # Defaults: the calibration of 2026-12-01 (docs/reproduction.md, "Calibration"), fixed before any study.
    num_people: int = Field(1200, gt=1)
    train_people_fraction: float = Field(0.5, gt=0, lt=1)
    bio_paraphrases: int = Field(2, gt=0, le=64)
    knowledge_attributes: list[str] = Field(default_factory=lambda: list(DEFAULT_ATTRIBUTES), min_length=1)
    qa_repeats: int = Field(4, ge=1, le=1000, description="copies of each train person's QA pairs in the corpus")
    reasoning_tasks: list[str] = Field(default_factory=lambda: ["addition"])
    reasoning_train_items: int = Field(3000, ge=0)
    reasoning_eval_items: int = Field(300, gt=0)
    knowledge_eval_items: int = Field(300, gt=0)
    addition_digits: int = Field(3, ge=1, le=8, description="addition: digits of every operand")
    addition_terms: int = Field(2, ge=2, le=4, description="addition: operands per problem")
    addition_min_digits: int | None = Field(
        None, ge=1, le=8, description="addition: a difficulty mixture, digits drawn per problem from "
                                      "addition_min_digits..addition_digits (None: every problem has addition_digits)")
    # The implicit-reasoning family (moelab.data.implicit; not yet calibrated): off, the world is unchanged.
    implicit_reasoning: bool = Field(False, description="add the 2-hop knowledge-graph family and its task 'implicit'")
    implicit_entities: int = Field(200, ge=10, le=20_000, description="implicit: entities (>= 10: 10-way choices)")
    implicit_relations: int = Field(10, ge=2, le=32, description="implicit: relations, atomic and derived")
    implicit_rules: int = Field(4, ge=1, description="implicit: 2-hop rules r1 o r2 -> r3, one per derived relation")
    implicit_gamma: float = Field(0.5, ge=0, lt=1, description="implicit: share of the derived facts in the corpus")
    implicit_eval_items: int = Field(300, gt=0, description="implicit: items per split (at most)")

    @model_validator(mode="after")
    def _check(self) -> "WorldConfig":
        bad = [a for a in self.knowledge_attributes if a not in KNOWLEDGE_ATTRIBUTES]
        if bad:
            close = difflib.get_close_matches(bad[0], KNOWLEDGE_ATTRIBUTES, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(KNOWLEDGE_ATTRIBUTES)})"
            raise ValueError(f"unknown knowledge attribute '{bad[0]}'{hint}")
        if len(set(self.knowledge_attributes)) != len(self.knowledge_attributes):
            raise ValueError("knowledge_attributes lists an attribute twice")
        if self.addition_min_digits is not None and self.addition_min_digits > self.addition_digits:
            raise ValueError(f"addition_min_digits={self.addition_min_digits} is above addition_digits="
                             f"{self.addition_digits} (the mixture draws from min..max digits)")
        if "addition" in self.reasoning_tasks:
            # A mixture's smallest length bounds it: its problems are the first to run out.
            space = addition_problem_space(self.addition_min_digits or self.addition_digits, self.addition_terms)
            space *= 1 + self.addition_digits - (self.addition_min_digits or self.addition_digits)
            share = self.reasoning_train_items // len(set(self.reasoning_tasks)) + 1
            if share + self.reasoning_eval_items > space // 2:
                raise ValueError(
                    f"addition with {self.addition_digits}-digit operands has {space} distinct problems: too few "
                    f"for {share} training and {self.reasoning_eval_items} held-out ones (at most half the space; "
                    f"raise addition_digits or lower reasoning_train_items)")
        num_atomic = self.implicit_relations - self.implicit_rules
        if num_atomic < 1:
            raise ValueError(f"implicit_rules={self.implicit_rules} needs more than {self.implicit_rules} "
                             f"implicit_relations (each rule derives its own relation from atomic ones)")
        if self.implicit_rules > num_atomic**2:
            raise ValueError(f"implicit_rules={self.implicit_rules}: {num_atomic} atomic relations make only "
                             f"{num_atomic**2} distinct rule bodies r1 o r2; raise implicit_relations")
        return self


class DataConfig(StrictConfig):
    world: WorldConfig = Field(default_factory=WorldConfig)
    sources: list[DataSourceConfig] = Field(default_factory=lambda: [DataSourceConfig()])
    tokenizer: str | None = Field(None, description="path to a Hugging Face tokenizer; None trains a BPE on the data")
    vocab_size: int = Field(2048, gt=255)
    seq_len: int = Field(128, gt=1)
    val_fraction: float = Field(0.05, gt=0, lt=1)
    # A small corpus is read many times. In one fixed order, every epoch shows the same windows with
    # the same neighbours, and a model can learn the stream ("what follows this context") instead of
    # each document: a d64 model reached training loss 0.03 on the implicit-reasoning world yet gave
    # its atomic facts 14 nats when asked alone (docs/reproduction.md, calibration of 2026-12-07).
    document_order: Literal["per_epoch", "fixed"] = Field(
        "per_epoch", description="per_epoch: the training documents are re-shuffled and re-packed every epoch; "
                                 "fixed: one order for all epochs (moelab before 2026-12-07)")

    @model_validator(mode="before")
    @classmethod
    def _saved_before_document_order(cls, data: Any) -> Any:
        return _legacy_defaults(data, cls, {"document_order": "fixed"})


def router_loss_scale(layers: str, num_layers: int) -> int:
    """What multiplies the layer *means* of the router losses in the objective (``router_loss_layers``):
    the number of MoE layers for 'sum' (Megatron-Core: each layer adds coef × its own losses), 1 for
    'mean' (moelab before 2026-12-07)."""
    assert layers in ("sum", "mean"), layers
    return num_layers if layers == "sum" else 1


class TrainConfig(StrictConfig):
    seed: int = 0
    batch_size: int = Field(16, gt=0, description="global batch in sequences")
    grad_accum: int = Field(1, gt=0)
    steps: int | None = Field(None, gt=0, description="None derives steps from tokens")
    tokens: int | None = Field(None, gt=0)
    lr: float = Field(3e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(20, ge=0)
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    decay_fraction: float = Field(0.2, gt=0, le=1, description="wsd: share of steps spent decaying")
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    adam_eps: float = Field(1e-8, gt=0)
    grad_clip: float = Field(1.0, ge=0)
    aux_loss_coef: float = Field(1e-2, ge=0, description="load-balancing loss coefficient, per MoE layer")
    z_loss_coef: float = Field(1e-3, ge=0, description="router z-loss coefficient, per MoE layer")
    router_loss_layers: Literal["sum", "mean"] = Field(
        "sum", description="'sum': every MoE layer adds coef x its own balance and z loss, as Megatron-Core "
                           "(the paper's 1e-2 over 16 layers weighs 16 x 1e-2 in all); 'mean': coef x their "
                           "layer mean (moelab before 2026-12-07: L times weaker)")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA; on CPU the faster of fp32 and bf16 for this model, measured (moelab.train.precision)")
    device: DeviceName = "auto"
    eval_every: int = Field(50, gt=0)
    eval_batches: int = Field(4, gt=0)
    checkpoint_every: int = Field(100, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    log_every: int = Field(10, gt=0)
    distributed: Literal["none", "ddp", "fsdp"] = "ddp"

    @model_validator(mode="before")
    @classmethod
    def _saved_before_layer_sum(cls, data: Any) -> Any:
        return _legacy_defaults(data, cls, {"router_loss_layers": "mean"})

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size={self.batch_size} is not divisible by grad_accum={self.grad_accum}")
        return self


class EvalConfig(StrictConfig):
    tasks: list[str] = Field(default_factory=lambda: ["knowledge", "reasoning"])
    task_files: list[str] = Field(default_factory=list)
    limit: int | None = Field(None, gt=0)
    max_new_tokens: int = Field(48, gt=0)
    shots: int = Field(0, ge=0)
    lm_eval: list[str] = Field(default_factory=list, description="lm-evaluation-harness tasks (moelab[lm-eval])")
    lm_eval_include: str | None = Field(None, description="a folder of lm-eval task YAMLs (lm_eval --include_path)")
    lm_eval_fewshot: int | None = Field(None, ge=0, description="lm-eval few-shot count; None: each task's own")
    lm_eval_limit: int | None = Field(None, gt=0, description="lm-eval documents per task; None: all")


class WandbConfig(StrictConfig):
    """Weights & Biases options (``logging.wandb``); the run's name and id come from the moelab run."""

    project: str = "moelab"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = Field(default_factory=list)
    mode: Literal["offline", "online"] = Field(
        "offline", description="offline needs no network: `wandb sync RUN/logs/wandb/offline-run-*` uploads later")


class LoggingConfig(StrictConfig):
    """Experiment loggers fed the same records as ``metrics.jsonl`` (optional extra ``moelab[logging]``;
    see moelab.train.loggers). Operational: changing it does not make a run or a study a different one."""

    tensorboard: bool = Field(False, description="event files in RUN/logs/tensorboard")
    wandb: WandbConfig | None = Field(None, description="a W&B run per moelab run (true: the defaults)")

    @field_validator("wandb", mode="before")
    @classmethod
    def _wandb_flag(cls, value: Any) -> Any:
        return {} if value is True else None if value is False else value


class RunConfig(StrictConfig):
    """Everything one training run needs: the file ``moelab train RUN.yaml`` reads."""

    name: str = "run"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)


# ---------------------------------------------------------------- loading and errors

def load_run_config(path: str | Path) -> RunConfig:
    data = read_yaml(path)
    if data is None:  # an empty or comment-only file is a mistake, not "train the default model"
        raise UserError(f"{path}: the run config is empty (give at least one section: model, data, train, eval)")
    return validate(RunConfig, data, str(path))



# ---------------------------------------------------------------- studies


class GridConfig(StrictConfig):
    """The family's axes; the planner takes their cartesian product."""

    d_model: list[int] = Field(default_factory=lambda: [128], min_length=1)
    num_experts: list[int] = Field(default_factory=lambda: [1, 8], min_length=1)
    top_k: list[int] = Field(default_factory=lambda: [1, 2], min_length=1)
    lr: list[float] = Field(default_factory=list, description="learning-rate axis; empty means base.train.lr")
    init_std: list[float] = Field(default_factory=list, description="init-std axis; empty means base.model.init_std")
    seed: list[int] = Field(default_factory=list, description="seed axis; empty means base.train.seed")

    @model_validator(mode="after")
    def _check(self) -> "GridConfig":
        for name in ("d_model", "num_experts", "top_k"):
            bad = [v for v in getattr(self, name) if v <= 0]
            if bad:
                raise ValueError(f"{name} values must be positive, got {bad[0]}")
        for name in ("lr", "init_std"):
            bad = [v for v in getattr(self, name) if v <= 0]
            if bad:
                raise ValueError(f"{name} values must be positive, got {bad[0]}")
        return self


class TTCSection(StrictConfig):
    """A study's ``ttc:`` section: repeated sampling of every trained model on one task."""

    task: str = "reasoning"
    samples: int = Field(16, gt=0)
    split: str = "heldout"
    limit: int | None = Field(None, gt=0)
    temperature: float = Field(0.6, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(48, gt=0)
    seed: int = 0


class ImportedModel(StrictConfig):
    """A checkpoint a study evaluates without training it (``models:``): a Hugging Face Mixtral
    directory (``config.json``, safetensors weights, tokenizer files) trained elsewhere on ``tokens``
    tokens (training FLOPs and TPP follow). ``train_log`` is an optional CSV of its pretraining
    losses (columns ``step``, ``tokens``, ``train_loss``, ``val_loss``; see moelab.study.imported).
    Relative paths are taken from the current directory and kept absolute."""

    path: str = Field(min_length=1, description="Hugging Face Mixtral directory")
    tokens: float = Field(gt=0, description="training tokens the checkpoint saw")
    train_log: str | None = Field(None, min_length=1, description="CSV: step, tokens, train_loss, val_loss")

    @field_validator("path", "train_log")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return None if value is None else os.path.abspath(os.path.expanduser(value))


class EquivalenceMargins(StrictConfig):
    """Margins δ within which a "little effect" claim counts as shown (two one-sided tests).

    Declared in the study file before it runs, so no margin can be chosen after seeing the result.
    """

    accuracy: float | None = Field(None, gt=0, description="fraction correct (0.05 = 5 points)")
    task_loss_bits: float | None = Field(None, gt=0, description="task loss, bits per token")


class AnalysisSection(StrictConfig):
    equivalence: EquivalenceMargins = Field(default_factory=EquivalenceMargins)


class StudyConfig(StrictConfig):
    """An iso-FLOP family: budgets × grid, each member trained on C / (6·N_active) tokens; and/or
    ``models``, existing checkpoints evaluated with the same suite (no grid needed then).

    A top-level ``eval:`` section is short for ``base.eval:`` (the suite every run is evaluated with).
    """

    name: str = "study"
    budgets: list[float] = Field(default_factory=list, description="training FLOPs per run (iso-FLOP families)")
    tokens: list[float] = Field(default_factory=list, description="or: training tokens per run (iso-token families)")
    grid: GridConfig = Field(default_factory=GridConfig)
    heads_rule: Literal["fixed", "head_dim"] = Field(
        "head_dim", description="'head_dim': n_heads = d_model / head_dim; 'fixed': base.model.n_heads")
    head_dim: int = Field(32, gt=0)
    expert_width_rule: Literal["fixed", "per_k"] = Field(
        "fixed", description="'per_k': expert width = ffn_mult·d / k, so top-k varies at fixed active parameters")
    steps_rounding: Literal["floor", "ceil"] = Field(
        "floor", description="optimizer steps = tokens / (batch · seq_len), rounded down (at most the budget) or "
                             "up (at least the budget, as the seed paper's ⌈125e9 / 4096 / 1024⌉ = 29803)")
    max_memory_gb: float = Field(16.0, gt=0, description="runs whose memory estimate exceeds this are infeasible")
    base: RunConfig = Field(default_factory=RunConfig)
    posttrain: dict | None = Field(
        None, description="GRPO options (moelab.posttrain.grpo.GRPOConfig) applied to every trained model")
    ttc: TTCSection | None = None
    models: list[ImportedModel] = Field(
        default_factory=list, description="checkpoints to evaluate without training, beside or instead of the grid")
    analysis: AnalysisSection = Field(
        default_factory=AnalysisSection, description="how the report judges the study (equivalence margins)")

    @model_validator(mode="before")
    @classmethod
    def _eval_shorthand(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "eval" not in data:
            return data
        data = dict(data)
        suite = data.pop("eval")
        base = data.get("base")
        if base is None:
            base = {}
        if not isinstance(base, dict):
            raise ValueError("give the evaluation suite as 'base.eval' when 'base' is not a mapping")
        if "eval" in base:
            raise ValueError("give the evaluation suite once: 'eval' or 'base.eval', not both")
        data["base"] = {**base, "eval": suite}
        return data

    @model_validator(mode="after")
    def _check(self) -> "StudyConfig":
        if self.budgets and self.tokens:
            raise ValueError("give exactly one of 'budgets' (FLOPs) or 'tokens'")
        if not (self.budgets or self.tokens):
            if not self.models:
                raise ValueError("give exactly one of 'budgets' (FLOPs) or 'tokens' for a grid, "
                                 "or 'models' to evaluate existing checkpoints")
            if "grid" in self.model_fields_set and self.grid != GridConfig():  # a saved study holds the default
                raise ValueError("'grid' needs 'budgets' (FLOPs) or 'tokens'")
        seen: dict[str, int] = {}
        for i, m in enumerate(self.models):
            if m.path in seen:
                raise ValueError(f"models[{i}]: the same checkpoint as models[{seen[m.path]}] ({m.path})")
            seen[m.path] = i
        bad = [b for b in self.budgets + self.tokens if not b > 0]
        if bad:
            raise ValueError(f"budget must be positive, got {bad[0]:g}")
        return self


def load_study_config(path_or_preset: str | Path) -> StudyConfig:
    """A study file path, or the name of a bundled preset (``smoke``, ``demo``, ``paper``…)."""
    path = Path(path_or_preset)
    # A bare name is a preset unless a file of that name exists (a folder called `smoke` is not a study)
    if not path.is_file() and not str(path_or_preset).endswith((".yaml", ".yml")):
        preset = preset_path(str(path_or_preset))
        if preset is None:
            known = ", ".join(list_presets())
            what = "is a directory, not a study file or preset" if path.is_dir() else "unknown study preset or file"
            raise UserError(f"{what} '{path_or_preset}' (presets: {known})")
        path = preset
    return validate(StudyConfig, read_yaml(path), str(path_or_preset))


def preset_path(name: str) -> Path | None:
    p = Path(__file__).parent / "presets" / f"{name}.yaml"
    return p if p.is_file() else None


def list_presets() -> list[str]:
    return sorted(p.stem for p in (Path(__file__).parent / "presets").glob("*.yaml"))
