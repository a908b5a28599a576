"""Megatron-LM launch scripts for a planned family — hand the plan to the seed paper's own engine.

    moelab plan paper --emit megatron --out megatron/ [--data-path "1.0 /data/corpus_text_document"]
                [--tokenizer-model PATH] [--tokenizer-type HuggingFaceTokenizer] [--micro-batch-size N]
                [--megatron-lm /opt/Megatron-LM]
    NNODES=4 NODE_RANK=0 MASTER_ADDR=node0 GPUS_PER_NODE=8 EP=8 bash megatron/<run_id>.sh [extra flags]

One bash script per feasible run, ``DIR/<run_id>.sh``, that launches Megatron-LM's
``pretrain_gpt.py`` (Megatron-Core MoE) with ``torchrun``. Everything that defines the model
or its schedule is a literal value, taken from the run's config — the very config moelab's own
trainer would read — so the two engines train the same model on the same schedule:
:func:`megatron_args`. What depends on the cluster (Megatron checkout, data, tokenizer, node and
GPU counts, parallel sizes, checkpoint folder) is an environment variable with a default at the
top of each script, marked as a placeholder; the options above set those defaults. Extra
arguments after the script name go to ``pretrain_gpt.py`` (e.g. ``--wandb-project``).

For the ``paper`` preset the scripts carry the values of the paper's release scripts
(rioyokotalab/optimal-sparsity, ``optimal-sparsity-math-d{d}-E{E}-k{k}-….sh``).

How moelab's settings map (and why where it is not one to one):

* query groups = ``n_kv_heads`` (``--group-query-attention`` only when fewer than the heads:
  Megatron ignores the groups without it, which is full multi-head attention, as moelab's default);
* dropout 0 (moelab has none; Megatron's default is 0.1); biases off; RMSNorm; SwiGLU; RoPE;
  ``--untie-embeddings-and-output-weights`` unless the config ties them;
* min lr = ``lr · min_lr_ratio``; the decay spans all train iterations, as moelab's cosine ends on
  the last step; ``wsd`` becomes Megatron's ``WSD`` with a linear decay over the same steps;
  Megatron's warmup starts from 0 where moelab's starts at ``lr / warmup`` (one step apart);
* load balancing ``aux_loss`` with moelab's coefficients, which Megatron adds per MoE layer (moelab's
  ``router_loss_layers: sum``; a ``mean`` run gets them divided by the layers, the same objective);
  grouped GEMM; bf16 (moelab's ``auto`` precision is bf16 on GPUs too);
* the gate: Megatron's default softmax over the top-k logits is moelab's renormalised gate; a run
  whose gate is the probability itself (``router_norm`` none, or auto at k = 1) gets
  ``--moe-router-pre-softmax`` (Megatron refuses top-1 without it); Megatron always draws output
  projections with std / sqrt(2 L), so a run with ``depth_scaled_init: false`` is refused;
* Megatron-Core models are Megatron-LM's default (no ``--use-mcore-models``); the vocabulary is the
  tokenizer's, so point ``TOKENIZER_MODEL`` at the one the config names.
"""

from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from moelab.atomic import atomic_path, atomic_write_json
from moelab.config import router_loss_scale
from moelab.errors import UserError
from moelab.study.plan import PlannedRun

MANIFEST = "moelab-megatron.json"  # marks a folder as this command's own (it may write there again)
KIND = "moelab megatron scripts"


@dataclass(frozen=True)
class MegatronOptions:
    """Defaults of the scripts' placeholders, and the one literal that is a memory choice."""

    data_path: str = ""  # Megatron indexed data: "PREFIX" or "W1 PREFIX1 W2 PREFIX2 …"
    tokenizer_type: str = "HuggingFaceTokenizer"
    tokenizer_model: str | None = None  # None: the config's data.tokenizer
    micro_batch_size: int | None = None  # None: the config's batch_size // grad_accum
    megatron_lm: str = "Megatron-LM"  # a checkout holding pretrain_gpt.py
    tensor_parallel: int = 1  # the TP placeholder's default; the header's counts use its padded vocabulary


def _lit(x: float | int) -> str:
    """A number as Megatron's argparse reads it: short text (0.0004, 1e-08, 16, 1), exact to 15
    significant digits (so lr · min_lr_ratio prints 4e-05, not its binary rounding noise)."""
    assert not isinstance(x, bool), x
    if isinstance(x, int):
        return str(x)
    short = f"{x:g}"
    return short if float(short) == float(f"{x:.15g}") else f"{x:.15g}"


def micro_batch_size(run: PlannedRun, override: int | None = None) -> int:
    train = run.config.train
    micro = override if override is not None else train.batch_size // train.grad_accum
    if micro < 1 or train.batch_size % micro:
        raise UserError(f"--micro-batch-size {micro}: must divide the global batch of {train.batch_size} sequences")
    return micro


def megatron_args(run: PlannedRun, micro_batch: int | None = None) -> dict[str, list[tuple[str, str | None]]]:
    """The literal ``pretrain_gpt.py`` arguments of one planned run, in three groups
    (model, MoE, training), each a list of ``(flag, value)``; ``value`` is None for a switch."""
    assert run.feasible and run.config is not None, run.run_id
    m, t, data = run.config.model, run.config.train, run.config.data
    if not float(m.rope_theta).is_integer():
        raise UserError(f"{run.run_id}: model.rope_theta={m.rope_theta:g}: Megatron's --rotary-base takes an integer")
    model: list[tuple[str, str | None]] = [
        ("--num-layers", _lit(m.n_layers)),
        ("--hidden-size", _lit(m.d_model)),
        ("--ffn-hidden-size", _lit(m.ffn_hidden)),
        ("--num-attention-heads", _lit(m.n_heads)),
        ("--num-query-groups", _lit(m.kv_heads)),
    ]
    if m.kv_heads < m.n_heads:
        model.append(("--group-query-attention", None))
    model += [
        ("--seq-length", _lit(data.seq_len)),
        ("--max-position-embeddings", _lit(m.max_seq_len)),
        ("--position-embedding-type", "rope"),
        ("--rotary-base", _lit(int(m.rope_theta))),
        ("--normalization", "RMSNorm"),
        ("--norm-epsilon", _lit(m.rms_eps)),
        ("--swiglu", None),
        ("--disable-bias-linear", None),
        ("--init-method-std", _lit(m.init_std)),
        ("--attention-dropout", "0.0"),
        ("--hidden-dropout", "0.0"),
    ]
    if not m.tie_embeddings:
        model.append(("--untie-embeddings-and-output-weights", None))
    if not m.depth_scaled_init:
        raise UserError(f"{run.run_id}: model.depth_scaled_init is false, but Megatron-LM always draws output "
                        "projections with init_method_std / sqrt(2 num_layers); set it to true for a Megatron run")
    if m.top_k == 1 and m.num_experts > 1 and m.renormalize_gate:
        raise UserError(f"{run.run_id}: model.router_norm 'renormalize' at top-1 is a renormalised top-1 gate "
                        "(always 1, no task gradient); Megatron-LM refuses it: use router_norm 'auto'")
    # Megatron adds coef × each layer's losses; moelab's objective is scale × coef × their layer mean
    per_layer = m.n_layers / router_loss_scale(t.router_loss_layers, m.n_layers)
    moe: list[tuple[str, str | None]] = [
        ("--num-experts", _lit(m.num_experts)),
        ("--moe-ffn-hidden-size", _lit(m.ffn_hidden)),  # explicit: Megatron warns when it derives it
        ("--moe-router-topk", _lit(m.top_k)),
    ]
    if not m.renormalize_gate:
        moe.append(("--moe-router-pre-softmax", None))
    moe += [
        ("--moe-router-load-balancing-type", "aux_loss"),
        ("--moe-aux-loss-coeff", _lit(t.aux_loss_coef / per_layer)),
        ("--moe-z-loss-coeff", _lit(t.z_loss_coef / per_layer)),
        ("--moe-grouped-gemm", None),
        ("--moe-token-dispatcher-type", "alltoall"),
    ]
    style = {"cosine": "cosine", "constant": "constant", "wsd": "WSD"}[t.schedule]
    train: list[tuple[str, str | None]] = [
        ("--micro-batch-size", _lit(micro_batch_size(run, micro_batch))),
        ("--global-batch-size", _lit(t.batch_size)),
        ("--train-iters", _lit(run.steps)),
        ("--lr", _lit(t.lr)),
        ("--min-lr", _lit(t.lr * t.min_lr_ratio)),
        ("--lr-warmup-iters", _lit(min(t.warmup_steps, run.steps))),
        ("--lr-decay-iters", _lit(run.steps)),
        ("--lr-decay-style", style),
    ]
    if style == "WSD":
        decay = max(1, math.ceil(t.decay_fraction * run.steps))  # as moelab.train.optim.lr_at
        train += [("--lr-wsd-decay-style", "linear"), ("--lr-wsd-decay-iters", _lit(decay))]
    valid = round(1000 * data.val_fraction)
    train += [
        ("--weight-decay", _lit(t.weight_decay)),
        ("--clip-grad", _lit(t.grad_clip)),
        ("--optimizer", "adam"),
        ("--adam-beta1", _lit(t.beta1)),
        ("--adam-beta2", _lit(t.beta2)),
        ("--adam-eps", _lit(t.adam_eps)),
        ("--seed", _lit(t.seed)),
        ("--bf16", None),
        ("--split", f"{1000 - valid},{valid},0"),
        ("--log-interval", _lit(t.log_every)),
        ("--eval-interval", _lit(t.eval_every)),
        ("--eval-iters", _lit(t.eval_batches)),
        ("--save-interval", _lit(t.checkpoint_every)),
    ]
    return {"MODEL_ARGS": model, "MOE_ARGS": moe, "TRAINING_ARGS": train}


def _array(name: str, args: list[tuple[str, str | None]]) -> str:
    lines = [f"    {flag}" if value is None else f"    {flag} {shlex.quote(value)}" for flag, value in args]
    return f"{name}=(\n" + "\n".join(lines) + "\n)\n"


def _default(var: str, value: str, note: str) -> str:
    """``VAR`` from the environment, else ``value`` (quoted: a path with spaces or ``$`` stays literal)."""
    if value == shlex.quote(value) or not value:
        return f'{var}="${{{var}:-{value}}}"  # {note}\n'
    return f'[[ -n "${{{var}:-}}" ]] || {var}={shlex.quote(value)}  # {note}\n'


def render_script(run: PlannedRun, study_name: str, options: MegatronOptions = MegatronOptions()) -> str:
    """The whole bash script of one run (see the module docstring)."""
    groups = megatron_args(run, options.micro_batch_size)
    cfg = run.config
    tp = options.tensor_parallel
    if cfg.model.n_heads % tp or (cfg.model.kv_heads % tp):
        raise UserError(f"{run.run_id}: tensor-parallel size {tp} does not divide the {cfg.model.n_heads} attention "
                        f"heads (d{cfg.model.d_model}); Megatron would fail late on it")
    total, active = run.total_params, run.active_params
    if tp > 1:  # Megatron pads the vocabulary to 128 x TP: the embedding and head grow
        from moelab import accounting

        padded = cfg.model.model_copy(update={"vocab_size": accounting.padded_vocab_size(cfg.model.vocab_size, tp)})
        total, active = accounting.total_params(padded), accounting.active_params(padded)
    tokenizer = options.tokenizer_model if options.tokenizer_model is not None else (cfg.data.tokenizer or "")
    tokens_per_step = cfg.train.batch_size * cfg.data.seq_len
    head = (
        "#!/usr/bin/env bash\n"
        f"# {run.name}: run {run.run_id} of study '{study_name}', written by "
        f"`moelab plan {study_name} --emit megatron`.\n"
        f"# {total:,} parameters, {active:,} active (router included"
        f"{f'; vocabulary padded for TP {tp}' if tp > 1 else ''}); "
        f"{run.steps:,} steps x {tokens_per_step:,} tokens = {run.steps * tokens_per_step:,} tokens "
        f"(planned {run.tokens:,}; {run.tpp:.3g} per parameter).\n"
        "# Megatron-LM pretrain_gpt.py with Megatron-Core MoE. The model and its schedule are the literal\n"
        "# values of MODEL_ARGS, MOE_ARGS and TRAINING_ARGS; edit the placeholders below instead.\n"
        "# Arguments after the script name go to pretrain_gpt.py.\n"
        "set -euo pipefail\n\n"
        "# ---- placeholders: set them here or in the environment ----\n"
    )
    places = (
        _default("MEGATRON_LM", options.megatron_lm, "a Megatron-LM checkout (holds pretrain_gpt.py)")
        + _default("DATA_PATH", options.data_path, 'Megatron indexed data: "PREFIX" or "W1 PREFIX1 W2 PREFIX2 ..."')
        + _default("TOKENIZER_TYPE", options.tokenizer_type, "Megatron --tokenizer-type")
        + _default("TOKENIZER_MODEL", tokenizer, f"its vocabulary must be {cfg.model.vocab_size:,} tokens")
        + _default("CHECKPOINT_DIR", f"checkpoints/{run.run_id}", "--save and --load (resumes)")
        + _default("NNODES", "1", "nodes")
        + _default("NODE_RANK", "0", "this node's rank")
        + _default("GPUS_PER_NODE", "8", "GPUs per node")
        + _default("MASTER_ADDR", "localhost", "rank 0's host")
        + _default("MASTER_PORT", "6000", "rank 0's port")
        + _default("TP", str(tp), "tensor-parallel size")
        + _default("PP", "1", "pipeline-parallel size")
        + _default("EP", "1", "expert-parallel size")
        + _default("CP", "1", "context-parallel size")
        + ': "${DATA_PATH:?set DATA_PATH to Megatron indexed data (the _text_document prefixes)}"\n'
        + ': "${TOKENIZER_MODEL:?set TOKENIZER_MODEL to the tokenizer the run was planned with}"\n\n'
    )
    body = "# ---- the model and its schedule: literal values from the plan ----\n"
    body += "".join(_array(name, args) for name, args in groups.items())
    launch = (
        "\n# ---- launch ----\n"
        "read -r -a DATA_WORDS <<< \"$DATA_PATH\"  # weights and prefixes are separate words\n"
        "PARALLEL_ARGS=(\n"
        "    --tensor-model-parallel-size \"$TP\"\n"
        "    --pipeline-model-parallel-size \"$PP\"\n"
        "    --expert-model-parallel-size \"$EP\"\n"
        "    --context-parallel-size \"$CP\"\n"
        "    --use-distributed-optimizer\n"
        ")\n"
        "if (( TP > 1 )); then PARALLEL_ARGS+=(--sequence-parallel); fi\n"
        "export CUDA_DEVICE_MAX_CONNECTIONS=1\n"
        "exec torchrun --nnodes \"$NNODES\" --node-rank \"$NODE_RANK\" --nproc-per-node \"$GPUS_PER_NODE\" \\\n"
        "    --master-addr \"$MASTER_ADDR\" --master-port \"$MASTER_PORT\" \\\n"
        "    \"$MEGATRON_LM/pretrain_gpt.py\" \\\n"
        "    \"${MODEL_ARGS[@]}\" \"${MOE_ARGS[@]}\" \"${TRAINING_ARGS[@]}\" \"${PARALLEL_ARGS[@]}\" \\\n"
        "    --data-path \"${DATA_WORDS[@]}\" \\\n"
        "    --tokenizer-type \"$TOKENIZER_TYPE\" --tokenizer-model \"$TOKENIZER_MODEL\" \\\n"
        "    --save \"$CHECKPOINT_DIR\" --load \"$CHECKPOINT_DIR\" \\\n"
        "    \"$@\"\n"
    )
    return head + places + body + launch


def check_out_dir(out: Path) -> dict | None:
    """``UserError`` unless ``out`` is new, empty or holds earlier scripts of this command (their
    manifest is returned then). Writes nothing."""
    from moelab.resources import check_writable_dir

    check_writable_dir(out, "--out")
    from moelab.outdir import read_own_manifest

    return read_own_manifest(out, MANIFEST, KIND, "Megatron scripts")


def trainable(runs: list[PlannedRun]) -> list[PlannedRun]:
    """The runs a script is written for: feasible ones planned here (not imported checkpoints)."""
    return [r for r in runs if r.feasible and not getattr(r, "imported", False)]


def write_scripts(runs: list[PlannedRun], out: str | Path, study_name: str,
                  options: MegatronOptions = MegatronOptions()) -> list[Path]:
    """Write ``out/<run_id>.sh`` (executable, each atomically) for every feasible run, and the
    manifest; returns the scripts' paths. Every check runs before the first write."""
    out = Path(out)
    feasible = trainable(runs)
    if not feasible:
        reason = next((r.reason for r in runs if r.reason), "no grid: imported models are trained already")
        raise UserError(f"study '{study_name}': no feasible run to write a script for ({reason})")
    previous = check_out_dir(out)
    texts = {r.run_id: render_script(r, study_name, options) for r in feasible}  # every UserError happens here
    manifest = {
        "kind": KIND, "study": study_name,
        "scripts": {r.run_id: {"file": f"{r.run_id}.sh", "name": r.name} for r in feasible},
        "infeasible": {r.run_id: r.reason for r in runs if not r.feasible},
    }
    atomic_write_json(out / MANIFEST, manifest)  # first: the folder is this command's from now on
    paths = []
    for run_id, text in texts.items():
        path = out / f"{run_id}.sh"
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
            os.chmod(tmp, 0o755)  # before the rename: the script appears executable or not at all
        paths.append(path)
    for old in (previous or {}).get("scripts", {}).values():  # scripts of an earlier plan, no longer planned
        name = str(old.get("file", "")) if isinstance(old, dict) else ""
        if name.endswith(".sh") and "/" not in name and name.removesuffix(".sh") not in texts:
            (out / name).unlink(missing_ok=True)
    return paths

