"""GRPO post-training with verifiable rewards (Shao et al. 2024, DeepSeekMath), on one process.

    moelab grpo --model runs/d128-E8-k2/model --task reasoning --out runs/d128-E8-k2/grpo --steps 100

    summary = grpo(GRPOConfig(model="runs/x/model", task="reasoning", steps=100), "runs/x/grpo")

One step:

1. ``prompts_per_step`` prompts from the task's ``train_split`` (drawn with a RNG seeded by
   ``(seed, step)``), each repeated ``group_size`` (G) times, are completed with the KV cache
   (:func:`moelab.model.generate.generate`, ``temperature`` / ``top_p``, one generator seeded by
   ``(seed, step)``) until EOS or ``max_new_tokens``.
2. Reward = the task's own verifier on the completion cut at the task's stop strings (reasoning-gym's
   ``score_answer`` for the world's reasoning tasks; exact match for knowledge) plus, optionally,
   ``format_reward`` when an answer could be extracted at all.
3. Group-normalised advantages ``(r - mean) / (std + 1e-6)`` per prompt; the token-level clipped
   policy-gradient loss with the k3 KL penalty to the frozen starting model and an optional entropy
   bonus, averaged over all completion tokens of the batch (:mod:`moelab.posttrain.advantages`).
4. ``updates_per_batch`` (μ) optimizer steps on that batch of rollouts (AdamW, constant LR,
   gradient clipping), each over the whole batch (``micro_batch_size`` only splits the
   forward/backward for memory); the first one has ratio ρ = 1 exactly.

The output directory: ``grpo_config.yaml`` (the GRPOConfig), ``reference/`` (the
starting model, so a resumed run needs nothing else), ``checkpoints/step-N/``, ``metrics.jsonl``
(``kind: grpo`` per step — mean reward, share of zero-variance groups, KL, response length, clip
fraction, …; ``kind: eval`` — held-out accuracy at step 0, every ``eval_every`` steps and at the end),
``status.json``, ``grpo_summary.json``, the final ``model/`` directory, and ``logs/`` when ``logging`` asks
for TensorBoard or W&B (the same records; :mod:`moelab.train.loggers`). Resume is exact: prompts
and samples depend only on ``(seed, step)``, and model, optimizer and step come from the checkpoint.

Deliberate departures from the seed paper's verl setup:

* one process, rollouts by moelab's own KV-cache generator in the training process (no vLLM, no
  separate rollout workers, no sequence packing);
* each of the μ updates uses the whole rollout batch (verl splits it into PPO mini-batches);
* no dual-clip (verl's ``clip_ratio_c``) — plain PPO clipping;
* the router's load-balancing and z-losses are off: the router is trained by the RL objective only;
* rewards come from the task's verifier, which extracts answers leniently (``#### N``, "the answer
  is N", last number); verl's GSM8K reward insists on ``#### N``. ``format_reward`` adds a bonus
  for any extractable answer, 0 by default;
* generation stops at EOS or ``max_new_tokens``; stop strings only cut the text that is scored;
* prompts are drawn per step with replacement across steps, not in shuffled epochs;
* defaults scaled for small models: group size 5, KL 1e-3, no entropy bonus and temperature 1.0
  follow the paper's run; ``lr``, ``steps``, ``prompts_per_step`` and ``max_new_tokens`` are small-scale.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from moelab.config import DeviceName, LoggingConfig, StrictConfig
from moelab.data.world import Task, TaskItem
from moelab.errors import UserError
from moelab.posttrain.advantages import group_advantages, grpo_loss, zero_variance_share
from moelab.train.optim import clip_grad_norm_

__all__ = ["GRPOConfig", "grpo", "Rollouts", "rollout", "reward_of", "sequence_logprobs", "load_grpo_config", "resolve_device"]

REFERENCE_DIR = "reference"
SUMMARY_FILE = "grpo_summary.json"
CONFIG_FILE = "grpo_config.yaml"  # not config.yaml: that name marks a pretraining run directory


class GRPOConfig(StrictConfig):
    """Every GRPO option; also the ``posttrain:`` section a study file may carry."""

    model: str | None = Field(None, description="model, run or checkpoint directory to start from (the CLI's --model)")
    task: str = "reasoning"
    train_split: str = "train"
    eval_split: str = "heldout"
    steps: int = Field(100, gt=0)
    prompts_per_step: int = Field(8, gt=0)
    group_size: int = Field(5, description="completions per prompt (G)")
    updates_per_batch: int = Field(2, gt=0, description="policy updates per batch of rollouts (mu)")
    micro_batch_size: int | None = Field(None, gt=0, description="rows per forward/backward; None = whole batch")
    lr: float = Field(1e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0, description="0 disables clipping")
    clip_eps: float = Field(0.2, gt=0, lt=1)
    kl_coef: float = Field(1e-3, ge=0)
    entropy_coef: float = Field(0.0, ge=0)
    format_reward: float = Field(0.0, ge=0, description="bonus when an answer can be extracted at all")
    temperature: float = 1.0
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(64, gt=0)
    shots: int = Field(0, ge=0, description="few-shot exemplars in each prompt (from the train split)")
    eval_every: int = Field(25, gt=0)
    eval_limit: int | None = Field(100, gt=0, description="held-out items per evaluation; None = all")
    checkpoint_every: int = Field(25, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    precision: Literal["fp32", "bf16"] = "fp32"
    device: DeviceName = "auto"
    seed: int = 0
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="TensorBoard / W&B (moelab.train.loggers)")

    @model_validator(mode="after")
    def _check(self) -> "GRPOConfig":
        if self.group_size < 2:
            raise ValueError(f"group_size must be at least 2 (advantages compare completions within a group), "
                             f"got {self.group_size}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0: GRPO samples its rollouts, got {self.temperature:g}")
        return self


def load_grpo_config(data: dict | None, source: str = "grpo") -> GRPOConfig:
    """Validate plain data (CLI options, a study's ``posttrain:`` section) into a GRPOConfig (one-line UserError)."""
    from moelab.config import validate

    return validate(GRPOConfig, data or {}, source)


# ---------------------------------------------------------------- rollouts


@dataclass
class Rollouts:
    """One step's rollouts, ``N = prompts × G`` rows, prompt-major (a prompt's G rows are adjacent)."""

    input_ids_BL: torch.Tensor  # left-padded prompt + right-padded completion (+ EOS when sampled)
    attention_mask_BL: torch.Tensor
    completion_mask_BC: torch.Tensor  # which of the C completion slots are real tokens
    prompt_len: int  # P: completion slot c is position P + c
    rewards_N: torch.Tensor
    texts: list[str]
    items: list[TaskItem]


def _prompt_ids(tokenizer, prompts: list[str], keep: int) -> list[list[int]]:
    from moelab.data.tokenizer import bos_eos_ids

    bos, _ = bos_eos_ids(tokenizer)
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    return [[bos, *ids][-keep:] for ids in encoded]


def _cut_at_stops(text: str, stops: tuple[str, ...]) -> str:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return text[: min(hits)] if hits else text


def reward_of(task: Task, item: TaskItem, text: str, format_reward: float = 0.0) -> float:
    """The task verifier's score of ``text`` plus ``format_reward`` when an answer can be extracted."""
    from moelab.eval.accuracy import extract_prediction

    reward = float(task.score(item, text))
    if format_reward and extract_prediction(task.family, text, item.gold) not in (None, ""):
        reward += format_reward
    return reward


@torch.no_grad()
def rollout(model, tokenizer, task: Task, items: list[TaskItem], prompts: list[str], cfg: GRPOConfig,
            generator: torch.Generator) -> Rollouts:
    """Sample G completions per prompt, score them, and lay them out for the loss."""
    from moelab.data.tokenizer import bos_eos_ids
    from moelab.eval.tasks import REASONING_STOPS
    from moelab.model.generate import generate

    G, device = cfg.group_size, next(model.parameters()).device
    _, eos = bos_eos_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    keep = max(1, model.cfg.max_seq_len - cfg.max_new_tokens - 1)  # -1: room for the EOS token
    prompt_ids = _prompt_ids(tokenizer, prompts, keep)
    rows = [p for p in prompt_ids for _ in range(G)]
    with _autocast(device, cfg.precision):
        new = generate(model, rows, max_new_tokens=cfg.max_new_tokens, eos_token_id=eos, pad_token_id=pad,
                       temperature=cfg.temperature, top_p=cfg.top_p, generator=generator)
    stops = tuple(dict.fromkeys((*REASONING_STOPS, *task.stop_strings)))
    texts, rewards, completions = [], [], []
    row_items = [it for it in items for _ in range(G)]
    for toks, item in zip(new, row_items):
        text = _cut_at_stops(tokenizer.decode(toks, skip_special_tokens=True), stops)
        texts.append(text)
        rewards.append(reward_of(task, item, text, cfg.format_reward))
        # generate() drops the EOS it sampled; a completion shorter than the limit ended with one
        completions.append(toks + [eos] if len(toks) < cfg.max_new_tokens else toks)

    N, P = len(rows), max(len(p) for p in rows)
    C = max(1, max(len(c) for c in completions))
    ids = torch.full((N, P + C), pad, dtype=torch.long)
    attn = torch.zeros(N, P + C, dtype=torch.long)
    cmask = torch.zeros(N, C, dtype=torch.bool)
    for i, (p, c) in enumerate(zip(rows, completions)):
        ids[i, P - len(p) : P] = torch.tensor(p)
        attn[i, P - len(p) : P + len(c)] = 1
        if c:
            ids[i, P : P + len(c)] = torch.tensor(c)
            cmask[i, : len(c)] = True
    return Rollouts(ids.to(device), attn.to(device), cmask.to(device), P,
                    torch.tensor(rewards, dtype=torch.float32, device=device), texts, row_items)


def sequence_logprobs(model, input_ids_BL: torch.Tensor, attention_mask_BL: torch.Tensor, prompt_len: int,
                      num_completion: int, *, with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(completion token | context) ``[B,C]`` (fp32) and optionally the policy entropy at each slot."""
    h_BLD, _ = model.hidden_states(input_ids_BL, attention_mask_BT=attention_mask_BL)
    P, C = prompt_len, num_completion
    logits_BCV = model.lm_logits(h_BLD[:, P - 1 : P - 1 + C])  # position t predicts token t+1
    logprobs_BCV = torch.log_softmax(logits_BCV.float(), dim=-1)
    targets_BC = input_ids_BL[:, P : P + C]
    logp_BC = logprobs_BCV.gather(-1, targets_BC[..., None]).squeeze(-1)
    entropy_BC = -(logprobs_BCV.exp() * logprobs_BCV).sum(-1) if with_entropy else None
    return logp_BC, entropy_BC


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


# ---------------------------------------------------------------- the run


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device: unknown device '{name}'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name!r} but no CUDA device is available")
    return device


def _step_seed(seed: int, step: int, purpose: str) -> int:
    import hashlib

    digest = hashlib.sha256(f"moelab-grpo/{seed}/{step}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _check_same_run(cfg: GRPOConfig, out_dir: Path) -> None:
    path = out_dir / CONFIG_FILE
    if not path.is_file():
        return
    from moelab.config import read_yaml

    saved = load_grpo_config(read_yaml(path), str(path)).model_dump()
    new = cfg.model_dump()
    for key in new:
        if key not in ("steps", "device", "model", "logging") and saved.get(key) != new[key]:
            raise UserError(f"{out_dir} holds a GRPO run with {key}={saved.get(key)!r}, not {new[key]!r}; "
                            f"use another --out to start a new run")


def grpo(
    cfg: GRPOConfig,
    out_dir: str | Path,
    *,
    model: torch.nn.Module | None = None,
    tokenizer: Any = None,
    task: Task | None = None,
    world: Any = None,
    progress: bool = True,
    max_steps_this_call: int | None = None,
) -> dict:
    """Run (or resume, or return the summary of a finished) GRPO run in ``out_dir``.

    The starting model is ``model``/``tokenizer`` when given, else loaded from ``cfg.model``; on a
    resume both are ignored and ``out_dir/reference`` plus the latest checkpoint are used. ``task``
    overrides ``cfg.task`` (looked up in ``world``, default: the default world). Returns the summary
    (``{"state": "running", …}`` when stopped early by ``max_steps_this_call``).
    """
    from moelab.eval.tasks import get_task
    from moelab.modelio import load_model, save_model_dir

    from moelab.resources import check_writable_dir
    from moelab.train.loggers import require_loggers

    out_dir = Path(out_dir)
    check_writable_dir(out_dir, "--out")
    require_loggers(cfg.logging)
    device = resolve_device(cfg.device)
    task = task if task is not None else get_task(cfg.task, world)
    for split in (cfg.train_split, cfg.eval_split):
        if not task.splits.get(split):
            raise UserError(f"task '{task.name}' has no items in split '{split}' (splits: {', '.join(task.splits)})")
    _check_same_run(cfg, out_dir)
    summary_path = out_dir / SUMMARY_FILE
    if summary_path.is_file():
        from moelab.jsonfile import read_json

        done = read_json(summary_path, fix="delete it and run again (GRPO resumes from its last checkpoint)")
        if done.get("steps") == cfg.steps:
            return done

    resuming = (out_dir / REFERENCE_DIR).is_dir()
    if resuming:
        ref, tokenizer, model_cfg = load_model(out_dir / REFERENCE_DIR, device)
    else:
        if model is None:
            if not cfg.model:
                raise UserError("grpo: no model given (--model)")
            model, tokenizer, model_cfg = load_model(cfg.model, device)
        else:
            if tokenizer is None:
                raise UserError("grpo: a model object needs its tokenizer")
            model_cfg = model.cfg
        ref = copy.deepcopy(model).to(device)
        from moelab.atomic import atomic_write_text
        from moelab.config import dump_yaml

        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / CONFIG_FILE, dump_yaml(cfg))
        save_model_dir(ref, model_cfg, tokenizer, out_dir / REFERENCE_DIR)
    ref.eval().requires_grad_(False)
    policy = copy.deepcopy(ref).float().to(device)
    policy.requires_grad_(True).train()
    return _Loop(cfg, out_dir, policy, ref, tokenizer, model_cfg, task, device, progress).run(max_steps_this_call)


class _Loop:
    def __init__(self, cfg, out_dir, policy, ref, tokenizer, model_cfg, task, device, progress):
        from moelab.config import TrainConfig
        from moelab.train import checkpoint as ckpt
        from moelab.train.optim import build_optimizer

        self.cfg, self.out_dir, self.policy, self.ref = cfg, out_dir, policy, ref
        self.tok, self.model_cfg, self.task, self.device = tokenizer, model_cfg, task, device
        self.progress, self.ckpt = progress, ckpt
        self.optimizer = build_optimizer(policy, TrainConfig(lr=cfg.lr, weight_decay=cfg.weight_decay,
                                                              beta1=cfg.beta1, beta2=cfg.beta2))
        self.step = 0
        self.elapsed_prev = 0.0

    # -- resume, save -----------------------------------------------------------------------

    def _resume(self) -> None:
        from moelab.train.metrics import truncate_jsonl

        latest = self.ckpt.latest_complete(self.out_dir)
        if latest is not None:
            state = self.ckpt.load_checkpoint(latest, self.policy, self.optimizer)
            self.ckpt.restore_rng_state(state["rng"])
            self.step = int(state["step"])
            self.elapsed_prev = float(state.get("elapsed_s", 0.0))
        # Records after the checkpoint will be replayed; the resumed log then equals an uninterrupted one.
        kept = truncate_jsonl(self.out_dir / "metrics.jsonl", self.step)
        self.has_initial_eval = any(r.get("kind") == "eval" and r.get("step") == 0 for r in kept)

    def _save(self) -> None:
        state = {"elapsed_s": self._elapsed(), "model_config": self.model_cfg.model_dump(mode="json"),
                 "grpo_config": self.cfg.model_dump(mode="json")}
        self.ckpt.save_checkpoint(self.out_dir, self.step, self.policy, self.optimizer, state,
                                  keep=self.cfg.keep_checkpoints)

    def _elapsed(self) -> float:
        return self.elapsed_prev + (time.perf_counter() - self.t0)

    # -- one step -----------------------------------------------------------------------------

    def _prompts(self, step: int) -> tuple[list[TaskItem], list[str]]:
        from moelab.eval.accuracy import fewshot_prompts

        pool = self.task.items(self.cfg.train_split)
        rng = random.Random(_step_seed(self.cfg.seed, step, "prompts"))
        k = self.cfg.prompts_per_step
        items = rng.sample(pool, k) if k <= len(pool) else [rng.choice(pool) for _ in range(k)]
        prompts = fewshot_prompts(items, self.task.splits.get("train") or [], self.cfg.shots,
                                  _step_seed(self.cfg.seed, step, "shots"))
        return items, prompts

    def _logprobs(self, model, r: Rollouts, rows: slice, *, with_entropy: bool = False):
        with _autocast(self.device, self.cfg.precision):
            return sequence_logprobs(model, r.input_ids_BL[rows], r.attention_mask_BL[rows], r.prompt_len,
                                     r.completion_mask_BC.shape[1], with_entropy=with_entropy)

    def _train_step(self, step: int) -> dict:
        cfg = self.cfg
        items, prompts = self._prompts(step)
        gen = torch.Generator(device=self.device).manual_seed(_step_seed(cfg.seed, step, "sample"))
        r = rollout(self.policy, self.tok, self.task, items, prompts, cfg, gen)
        adv_N = group_advantages(r.rewards_N, cfg.group_size)
        N = adv_N.shape[0]
        micro = cfg.micro_batch_size or N
        chunks = [slice(lo, min(lo + micro, N)) for lo in range(0, N, micro)]
        num_tokens = r.completion_mask_BC.sum().clamp_min(1).float()
        with torch.no_grad():
            old = [self._logprobs(self.policy, r, s)[0] for s in chunks]
            ref = [self._logprobs(self.ref, r, s)[0] for s in chunks] if cfg.kl_coef > 0 else [None] * len(chunks)

        stats = {"pg_loss": [], "kl": [], "entropy": [], "clip_frac": [], "grad_norm": []}
        for _ in range(cfg.updates_per_batch):
            sums = torch.zeros(4, device=self.device)
            for s, old_logp, ref_logp in zip(chunks, old, ref):
                logp, entropy = self._logprobs(self.policy, r, s, with_entropy=True)
                terms = grpo_loss(logp_BT=logp, old_logp_BT=old_logp, ref_logp_BT=ref_logp, advantages_B=adv_N[s],
                                  mask_BT=r.completion_mask_BC[s], clip_eps=cfg.clip_eps, kl_coef=cfg.kl_coef,
                                  entropy_BT=entropy, entropy_coef=cfg.entropy_coef, normalizer=num_tokens)
                terms.loss.backward()
                sums += torch.stack([terms.pg_loss, terms.kl, terms.entropy, terms.clip_frac]) * terms.num_tokens
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            grad_norm = clip_grad_norm_(self.policy.parameters(), max_norm)
            if not torch.isfinite(grad_norm):
                raise UserError(f"GRPO diverged at step {step + 1}: non-finite gradient norm (try a lower --lr)")
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            means = (sums / num_tokens).tolist()
            for key, value in zip(("pg_loss", "kl", "entropy", "clip_frac"), means):
                stats[key].append(value)
            stats["grad_norm"].append(grad_norm.item())

        rewards = r.rewards_N.tolist()
        lengths = r.completion_mask_BC.sum(-1).float()
        return {
            "kind": "grpo",
            "step": step + 1,
            "reward_mean": sum(rewards) / N,
            "reward_std": float(torch.tensor(rewards).std()) if N > 1 else 0.0,
            "zero_variance_groups": zero_variance_share(r.rewards_N, cfg.group_size),
            "kl": stats["kl"][0],  # the rollout policy's KL to the reference (before this step's updates)
            "response_length": lengths.mean().item(),
            "clip_frac": sum(stats["clip_frac"]) / len(stats["clip_frac"]),
            "pg_loss": stats["pg_loss"][0],
            "entropy": stats["entropy"][0],
            "grad_norm": stats["grad_norm"][-1],
            "lr": cfg.lr,
        }

    def _evaluate(self, step: int) -> dict:
        from moelab.eval.accuracy import accuracy

        result = accuracy(self.policy, self.tok, self.task, split=self.cfg.eval_split, shots=self.cfg.shots,
                          limit=self.cfg.eval_limit, max_new_tokens=self.cfg.max_new_tokens, seed=self.cfg.seed)
        return {"kind": "eval", "step": step, "split": self.cfg.eval_split, "accuracy": result.accuracy,
                "num_items": result.num_items}

    # -- main ----------------------------------------------------------------------------------

    def run(self, max_steps_this_call: int | None) -> dict:
        from moelab.train.loggers import open_metrics_log
        from moelab.train.trainer import write_status
        from moelab.ui import progress_bar

        cfg, total = self.cfg, self.cfg.steps
        self._resume()
        stop = total if max_steps_this_call is None else min(total, self.step + max_steps_this_call)
        self.t0 = time.perf_counter()
        write_status(self.out_dir, "running", self.step, total, "grpo")
        logger = open_metrics_log(self.out_dir, cfg.logging, resume_step=self.step, config=cfg.model_dump(mode="json"),
                                  quiet=not self.progress)
        try:
            if not self.has_initial_eval:
                logger.log({**self._evaluate(0), "elapsed_s": round(self._elapsed(), 3)})
            with progress_bar(self.progress, unit="steps") as bar:
                task_id = bar.add_task("grpo", total=total, completed=self.step, info="") if bar is not None else None
                while self.step < stop:
                    record = self._train_step(self.step)
                    self.step += 1
                    logger.log({**record, "elapsed_s": round(self._elapsed(), 3)})
                    if self.step % cfg.eval_every == 0 or self.step == total:
                        logger.log({**self._evaluate(self.step), "elapsed_s": round(self._elapsed(), 3)})
                    if self.step % cfg.checkpoint_every == 0 or self.step in (total, stop):
                        logger.sync()  # the log must be durable before the checkpoint that vouches for it
                        self._save()
                    write_status(self.out_dir, "running", self.step, total, "grpo")
                    if bar is not None:
                        bar.update(task_id, completed=self.step,
                                   info=f"reward {record['reward_mean']:.3f} kl {record['kl']:.4f}")
        except BaseException as err:
            write_status(self.out_dir, "failed", self.step, total, f"{type(err).__name__}: {err}")
            raise
        finally:
            logger.close()
        if self.step < total:
            write_status(self.out_dir, "running", self.step, total, f"stopped after step {self.step}; run again to resume")
            return {"state": "running", "step": self.step, "total_steps": total}
        return self._finish()

    def _finish(self) -> dict:
        from moelab.atomic import atomic_write_json
        from moelab.modelio import save_model_dir
        from moelab.train.metrics import read_jsonl
        from moelab.train.trainer import write_status

        save_model_dir(self.policy, self.model_cfg, self.tok, self.out_dir / "model")
        records = read_jsonl(self.out_dir / "metrics.jsonl")
        steps = [r for r in records if r.get("kind") == "grpo"]
        evals = [r for r in records if r.get("kind") == "eval"]
        window = max(1, math.ceil(0.1 * len(steps)))
        summary = {
            "state": "done",
            "task": self.task.name,
            "steps": self.step,
            "start_model": self.cfg.model,
            "reward_first": sum(r["reward_mean"] for r in steps[:window]) / window if steps else None,
            "reward_last": sum(r["reward_mean"] for r in steps[-window:]) / window if steps else None,
            "accuracy_before": evals[0]["accuracy"] if evals else None,
            "accuracy_after": evals[-1]["accuracy"] if evals else None,
            "eval_split": self.cfg.eval_split,
            "final_kl": steps[-1]["kl"] if steps else None,
            "wall_time_s": round(self._elapsed(), 3),
            "model_dir": "model",
        }
        atomic_write_json(self.out_dir / SUMMARY_FILE, summary)
        write_status(self.out_dir, "done", self.step, self.cfg.steps, "finished")
        return summary
