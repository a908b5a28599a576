"""The training loop: ``train(cfg, run_dir)`` — restartable, bitwise-reproducible on CPU.

    from moelab.train.trainer import train
    summary = train(cfg, "runs/r1")   # resumes when runs/r1 holds checkpoints

Under ``torchrun`` (``WORLD_SIZE > 1``) the same call trains with DDP or FSDP2
(``train.distributed``); see ``moelab.train.distributed``.

Run directory: ``config.yaml`` (the effective config), ``tokenizer/``, ``metrics.jsonl``,
``status.json``, ``checkpoints/step-N/``, and on completion ``model/`` (a model directory)
and ``train_summary.json``.

Decisions worth knowing:

* ``model.vocab_size`` stays as configured when the tokenizer fits in it (the spare rows are
  never used, like Megatron's padded vocabulary; it keeps the run's parameter count equal to
  the planner's) and grows to ``len(tokenizer)`` when the tokenizer is larger. The effective
  value is what ``config.yaml`` records.
* A run is "the same run" when ``model`` (except ``vocab_size``), ``data`` and ``train``
  agree, ignoring the operational fields ``device``, ``distributed``, ``checkpoint_every``
  and ``keep_checkpoints``; ``name`` and ``eval`` do not matter either.
* Exact resume: the batch of step s is a pure function of (seed, s), the LR a pure function
  of s, weights/optimizer state are saved losslessly, RNG states are restored, and log
  records after the resumed checkpoint are dropped before they are replayed.
* Loss per step: ``CE + Σ_L (aux_loss_coef·balance + z_loss_coef·z)`` (Megatron-Core's sum over
  MoE layers; ``train.router_loss_layers: mean`` takes the layer mean instead), aux losses in
  fp32 outside autocast; none for a dense model; the backward runs on ``loss / grad_accum`` per micro-batch.
* Neither ``train.steps`` nor ``train.tokens`` given: one epoch over the training tokens.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from moelab import accounting
from moelab.atomic import atomic_dir, atomic_write_json, atomic_write_text
from moelab.config import RunConfig, dump_yaml, router_loss_scale
from moelab.errors import UserError
from moelab.model.transformer import MoETransformer
from moelab.train import checkpoint as ckpt
from moelab.train.distributed import Dist, init_distributed
from moelab.train.linear_ce import linear_cross_entropy
from moelab.train.loggers import MetricsLog, open_metrics_log, require_loggers
from moelab.train.metrics import RouterStatsAccumulator, read_jsonl, smoothed, truncate_jsonl
from moelab.train.objective import micro_batch_losses
from moelab.train.optim import build_optimizer, lr_at, set_lr
from moelab.train.rundir import check_same_run, read_status, write_status  # noqa: F401 - re-exported


class Diverged(RuntimeError):
    """Loss or gradient norm became non-finite; ``status.json`` already says so."""

    def __init__(self, step: int, last_finite: dict | None):
        self.step = step
        self.last_finite = last_finite
        super().__init__(f"training diverged at step {step} (non-finite loss or gradient norm)")


# ---------------------------------------------------------------- setup: data, tokenizer, model


@dataclass
class _Setup:
    cfg: RunConfig  # effective: model.vocab_size == len(tokenizer)
    tokenizer: Any
    batches: Any  # PackedBatches over the train stream, or PreparedBatches
    val_batches: list[tuple[torch.Tensor, torch.Tensor]]
    total_steps: int
    tokens_per_step: int


def _tokenizer(cfg: RunConfig, run_dir: Path, world, dist: Dist):
    """The run's tokenizer: ``run_dir/tokenizer`` if present (resume), else built and saved there."""
    from moelab.data.corpus import build_tokenizer
    from moelab.data.tokenizer import load_tokenizer, save_tokenizer

    tok_dir = run_dir / "tokenizer"
    failure: Exception | None = None
    if not tok_dir.is_dir() and dist.is_main:
        try:
            # data.tokenizer from disk, or a BPE trained on the sources' training documents
            tok = build_tokenizer(cfg.data, world)
            with atomic_dir(tok_dir) as tmp:
                save_tokenizer(tok, tmp)
        except Exception as err:  # noqa: BLE001 — re-raised below, after telling the other ranks
            failure = err
    if not dist.all_ok(failure is None):
        if failure is not None:
            raise failure
        raise UserError("rank 0 could not build the tokenizer (its error is in its output); this rank stops too")
    # Always use the reloaded copy, so a fresh run and a resumed run tokenise identically.
    return load_tokenizer(tok_dir)


def _prepare(cfg: RunConfig, run_dir: Path, saved: RunConfig | None, dist: Dist) -> _Setup:
    from moelab.data.cache import cached_streams
    from moelab.data.corpus import PackedBatches
    from moelab.data.world import build_world

    if cfg.data.tokenizer and not Path(cfg.data.tokenizer).exists():
        raise UserError(f"data.tokenizer: {cfg.data.tokenizer}: no such directory")
    if cfg.data.seq_len > cfg.model.max_seq_len:
        raise UserError(f"data.seq_len={cfg.data.seq_len} exceeds model.max_seq_len={cfg.model.max_seq_len}")
    t = cfg.train
    if t.batch_size % (dist.world * t.grad_accum):
        raise UserError(
            f"train.batch_size={t.batch_size} is not divisible by world size {dist.world} × grad_accum {t.grad_accum}"
        )
    kinds = {src.kind for src in cfg.data.sources}
    prepared = "prepared" in kinds
    if prepared and kinds != {"prepared"}:
        raise UserError("data.sources: mix 'prepared' sources only with other prepared ones "
                        "(prepare the others with `moelab data prepare`)")
    world = build_world(cfg.data.world) if "world" in kinds else None
    run_dir.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(cfg, run_dir, world, dist)
    eff = cfg.model_copy(deep=True)
    # A tokenizer larger than the configured vocabulary: Megatron's padding (a multiple of 128);
    # one that fits keeps the configured size (the planner's rule too: moelab.study.plan).
    eff.model.vocab_size = accounting.model_vocab_size(cfg.model.vocab_size, len(tok))
    if saved is not None and saved.model.vocab_size < len(tok):
        raise UserError(f"{run_dir}/tokenizer has {len(tok)} tokens but config.yaml says {saved.model.vocab_size}")
    if saved is None and dist.is_main:
        atomic_write_text(run_dir / "config.yaml", dump_yaml(eff))

    seq_len, batch = cfg.data.seq_len, t.batch_size
    tokens_per_step = seq_len * batch
    if prepared:  # memory-mapped Megatron shards (moelab.data.prepared): nothing is tokenized
        from moelab.data.prepared import PreparedData

        data = PreparedData(cfg.data, tok)
        total = _total_steps(t, tokens_per_step, data.train_tokens)
        batches = data.batches(batch, t.seed, total)
        val_batches = data.val_batches(t.eval_batches, batch)
        return _Setup(eff, tok, batches, val_batches, total, tokens_per_step)
    # Tokenized once per (data config, tokenizer) and cached: the runs of a sweep share it (moelab.data.cache)
    streams = cached_streams(cfg.data, tok, world)
    total = _total_steps(t, tokens_per_step, len(streams.train))
    # data.document_order per_epoch: documents re-laid out every epoch (moelab.data.corpus.PackedBatches)
    starts = streams.train_doc_starts if cfg.data.document_order == "per_epoch" else None
    batches = PackedBatches(streams.train, seq_len, batch, t.seed, doc_starts=starts)
    # Fixed windows spread over the validation stream: comparable across steps and runs.
    val_batches = streams.val_batches(t.eval_batches, batch)
    return _Setup(eff, tok, batches, val_batches, total, tokens_per_step)


def _total_steps(t, tokens_per_step: int, train_tokens: int) -> int:
    if t.steps:
        return t.steps
    if t.tokens:
        return math.ceil(t.tokens / tokens_per_step)
    return max(1, math.ceil(train_tokens / tokens_per_step))  # one epoch


def resolve_device(name: str, dist: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"train.device={name!r} but no CUDA device is available")
        if dist.world > 1:
            device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device


# ---------------------------------------------------------------- one step


def _autocast(device: torch.device, precision: str):
    # 'auto' here (callers that did not resolve it): bf16 on CUDA, fp32 on CPU. The loop resolves
    # 'auto' once per run with moelab.train.precision (which may measure) and passes the result.
    enabled = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def evaluate(model, val_batches, dist: Dist, device: torch.device, precision: str) -> float:
    """Mean token cross-entropy over the fixed validation batches (each rank takes its rows)."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # [sum of CE, tokens]
    for inputs_BT, targets_BT in val_batches:
        # val batches may be uneven (the last one is smaller): split rows as evenly as possible
        x_BT = inputs_BT.tensor_split(dist.world)[dist.rank].to(device)
        y_BT = targets_BT.tensor_split(dist.world)[dist.rank].to(device)
        with _autocast(device, precision):
            ce = model(x_BT, head_fn=partial(linear_cross_entropy, targets_BT=y_BT, reduction="sum")).head
        total += torch.stack([ce.double(), torch.tensor(float(y_BT.numel()), dtype=torch.float64, device=device)])
    dist.all_reduce_sum(total)
    model.train(was_training)
    return (total[0] / total[1]).item()


# ---------------------------------------------------------------- the loop


def train(cfg: RunConfig, run_dir: str | Path, *, progress: bool = True, max_steps_this_call: int | None = None) -> dict:
    """Train (or resume, or return the summary of a finished run in) ``run_dir``.

    Returns ``train_summary.json`` once the run is done; when stopped early by
    ``max_steps_this_call`` returns ``{"state": "running", "step", "total_steps"}``.
    Raises ``Diverged`` (after writing ``status.json``) on a non-finite loss or gradient, and
    again, without training, when called on a run that diverged (delete ``status.json`` to retry).
    """
    from moelab.resources import check_fits, check_writable_dir

    run_dir = Path(run_dir)
    check_writable_dir(run_dir, "--out")
    require_loggers(cfg.logging)  # a missing optional logger: one line, before anything is written
    saved = check_same_run(cfg, run_dir)
    status = read_status(run_dir)
    if saved is not None and status and status.get("state") == "done" and (run_dir / "train_summary.json").is_file():
        from moelab.jsonfile import read_json

        return read_json(run_dir / "train_summary.json",
                         fix="delete it and run again (training resumes from its last checkpoint)")
    if saved is not None and status and status.get("state") == "diverged":
        # Resuming would replay the same steps into the same blow-up (CPU runs are deterministic).
        raise Diverged(int(status.get("step", 0)), status.get("last_finite"))
    dist = init_distributed(cfg.train)
    try:
        device = resolve_device(cfg.train.device, dist)
        check_fits(cfg, device, world=dist.world)  # before anything is written or allocated
        setup = _prepare_or_clean_up(cfg, run_dir, saved, dist)
        return _Loop(setup, run_dir, dist, device, progress).run(max_steps_this_call)
    finally:
        dist.close()


def _prepare_or_clean_up(cfg: RunConfig, run_dir: Path, saved: RunConfig | None, dist: Dist) -> _Setup:
    """``_prepare``; when a fresh run's data turns out unusable (a ``UserError`` after the tokenizer
    and ``config.yaml`` were written), remove what this call created: bad input leaves nothing behind."""
    created = [p for p in (run_dir, run_dir / "tokenizer", run_dir / "config.yaml") if not p.exists()]
    try:
        return _prepare(cfg, run_dir, saved, dist)
    except UserError:
        if saved is None and dist.is_main:
            import shutil

            for p in created:  # run_dir first: when this call made it, everything inside goes with it
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        raise


class _Loop:
    def __init__(self, setup: _Setup, run_dir: Path, dist: Dist, device: torch.device, progress: bool):
        self.s, self.run_dir, self.dist, self.device = setup, run_dir, dist, device
        self.cfg = setup.cfg
        self.t = setup.cfg.train
        self.show_progress = progress and dist.is_main
        self.step = 0
        self.elapsed_prev = 0.0
        self.last_finite: dict | None = None

    # -- model, optimizer, resume ---------------------------------------------------------

    def _build(self) -> None:
        torch.manual_seed(self.t.seed)  # init is a pure function of the seed
        model = MoETransformer(self.cfg.model).to(self.device)
        model.train()
        latest = ckpt.latest_complete(self.run_dir)
        state = None
        if latest is not None:
            state = ckpt.read_state(latest)
            model.load_state_dict(ckpt.read_model_state(latest, self.device), strict=True)
        self.model = self.dist.wrap(model)  # DDP / FSDP2 / identity
        self.optimizer = build_optimizer(model, self.t)
        if state is not None:
            osd = ckpt.read_optim_state(latest)
            if osd is None:
                raise UserError(f"{latest}: has no optim.pt to resume from")
            self.dist.load_optimizer_state(self.model, self.optimizer, osd)
            ckpt.restore_rng_state(state["rng"])
            self.step = int(state["step"])
            self.elapsed_prev = float(state.get("elapsed_s", 0.0))
            self.last_finite = state.get("last_finite")
        self._resolve_precision(state)
        if self.dist.is_main:
            # Records after the checkpoint will be replayed; a fresh start drops stale ones.
            truncate_jsonl(self.run_dir / "metrics.jsonl", self.step)

    def _resolve_precision(self, state: dict | None) -> None:
        """What 'auto' trains in (moelab.train.precision). A resumed run keeps the precision its
        checkpoint was trained in, so a changed cache or machine cannot switch it mid-run."""
        from moelab.train.precision import PrecisionChoice, resolve_precision

        state = state or {}
        saved = state.get("precision")
        if saved in ("fp32", "bf16") and self.t.precision == "auto":
            rule = state.get("precision_rule") or f"auto: {saved}"
            self.precision = PrecisionChoice(saved, f"{rule} (kept from the checkpoint resumed)",
                                             state.get("bf16_speedup"))
            return
        # No measuring when ranks could disagree, nor when resuming a checkpoint that predates the
        # record (it was trained under the unmeasured rule, which this then repeats).
        measurable = self.dist.world == 1 and (not state or "precision" in state)
        self.precision = resolve_precision(self.t.precision, self.device.type, self.cfg.model if measurable else None,
                                           batch=self.t.batch_size // self.t.grad_accum, seq=self.cfg.data.seq_len)

    def _save(self) -> None:
        model_state, optim_state = self.dist.full_state(self.model, self.optimizer)
        if self.dist.is_main:
            state = {
                "tokens": self.step * self.s.tokens_per_step,
                "data_position": self.step,  # PackedBatches.batch(step) — the position is the step
                "total_steps": self.s.total_steps,
                "schedule": self.t.schedule,
                "lr": lr_at(min(self.step, self.s.total_steps - 1), self.s.total_steps, self.t),
                "elapsed_s": self._elapsed(),
                "last_finite": self.last_finite,
                "world_size": self.dist.world,
                "model_config": self.cfg.model.model_dump(mode="json"),
                "precision": self.precision.precision,
                "precision_rule": self.precision.rule,
                "bf16_speedup": self.precision.bf16_speedup,
            }
            ckpt.save_checkpoint(self.run_dir, self.step, model_state, optim_state, state, keep=self.t.keep_checkpoints)
        self.dist.barrier()

    def _elapsed(self) -> float:
        return self.elapsed_prev + (time.perf_counter() - self.t0)

    # -- one optimizer step -----------------------------------------------------------------

    def _train_step(self, step: int, collect: RouterStatsAccumulator | None) -> list[float]:
        """Forward/backward over the micro-batches of ``step``; returns [loss, lm, aux, z, grad_norm]."""
        t, dev = self.t, self.device
        # int64 [B/world, T]: this rank's contiguous share of global batch `step` (disjoint across ranks)
        x_BT, y_BT = self.s.batches.batch(step, self.dist.rank, self.dist.world)
        micro = x_BT.shape[0] // t.grad_accum
        sums = torch.zeros(3, device=dev)  # lm, aux, z averaged over micro-batches
        for m in range(t.grad_accum):
            xb_BT = x_BT[m * micro:(m + 1) * micro].to(dev, non_blocking=True)
            yb_BT = y_BT[m * micro:(m + 1) * micro].to(dev, non_blocking=True)
            sync = self.dist.no_sync(self.model) if m < t.grad_accum - 1 else contextlib.nullcontext()
            with sync:
                with _autocast(dev, self.precision.precision):
                    losses = micro_batch_losses(self.model, xb_BT, yb_BT, self.cfg.model.top_k)
                (losses.total(t.aux_loss_coef, t.z_loss_coef, t.router_loss_layers) / t.grad_accum).backward()
            sums += torch.stack([losses.lm, losses.aux, losses.z]).detach() / t.grad_accum
            if collect is not None:
                collect.add(losses.router)
        max_norm = t.grad_clip if t.grad_clip > 0 else float("inf")
        grad_norm = self.dist.clip_grad_norm(self.model, max_norm)  # pre-clip total norm
        self.dist.all_reduce_mean(sums)
        lm, aux, z, gn = torch.cat([sums, grad_norm.reshape(1).to(sums)]).tolist()  # one host sync
        scale = router_loss_scale(t.router_loss_layers, self.cfg.model.n_layers)  # aux, z are layer means
        return [lm + scale * (t.aux_loss_coef * aux + t.z_loss_coef * z), lm, aux, z, gn]

    # -- main --------------------------------------------------------------------------------

    def run(self, max_steps_this_call: int | None) -> dict:
        total = self.s.total_steps
        self._build()
        stop = total if max_steps_this_call is None else min(total, self.step + max_steps_this_call)
        main = self.dist.is_main
        logger = open_metrics_log(self.run_dir, self.cfg.logging, resume_step=self.step, quiet=not self.show_progress,
                                  config=self.cfg.model_dump(mode="json")) if main else None
        if main:
            write_status(self.run_dir, "running", self.step, total, "training")
        self.t0 = time.perf_counter()
        try:
            with _progress_bar(self.show_progress, total, self.step) as bar:
                self._loop(stop, logger, bar)
        except Diverged:
            raise
        except BaseException as err:
            if main:
                try:
                    write_status(self.run_dir, "failed", self.step, total, f"{type(err).__name__}: {err}")
                except OSError:
                    pass  # a full disk can refuse this too: the error being raised says more
            raise
        finally:
            if logger is not None:
                logger.close()
        if self.step < total:
            if main:
                write_status(self.run_dir, "running", self.step, total, f"stopped after step {self.step}; train again to resume")
            return {"state": "running", "step": self.step, "total_steps": total}
        return self._finish()

    def _loop(self, stop: int, logger: MetricsLog | None, bar) -> None:
        t, total, main = self.t, self.s.total_steps, self.dist.is_main
        last_log_time, last_log_tokens = time.perf_counter(), self.step * self.s.tokens_per_step
        router_acc = RouterStatsAccumulator()
        tps = 0.0
        while self.step < stop:
            step = self.step  # 0-based index of the step being taken
            done = step + 1
            lr = lr_at(step, total, t)
            set_lr(self.optimizer, lr)
            log_now = done % t.log_every == 0 or done == total
            loss, lm, aux, z, gn = self._train_step(step, router_acc if log_now else None)
            if not (math.isfinite(loss) and math.isfinite(gn)):
                self._diverged(done, dict(loss=loss, lm_loss=lm, aux_loss=aux, z_loss=z, grad_norm=gn, lr=lr))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step = done
            tokens = done * self.s.tokens_per_step
            self.last_finite = dict(step=done, loss=loss, lm_loss=lm, aux_loss=aux, z_loss=z, lr=lr, grad_norm=gn)
            now = time.perf_counter()
            if log_now:
                router_acc.all_reduce()
                tps = (tokens - last_log_tokens) / max(now - last_log_time, 1e-9)
                if main:
                    logger.log({"kind": "train", **self.last_finite, "tokens": tokens, "tokens_per_s": round(tps, 1),
                                "elapsed_s": round(self._elapsed(), 3), **router_acc.result(),
                                "precision": self.precision.precision})
                    write_status(self.run_dir, "running", done, total, "training")
                router_acc.reset()
                last_log_time, last_log_tokens = now, tokens
            if done % t.eval_every == 0 or done == total:
                val = evaluate(self.model, self.s.val_batches, self.dist, self.device, self.precision.precision)
                if main:
                    logger.log({"kind": "val", "step": done, "val_loss": val, "tokens": tokens,
                                "elapsed_s": round(self._elapsed(), 3)})
            if done % t.checkpoint_every == 0 or done == total or done == stop:
                if logger is not None:
                    logger.sync()  # the log must be durable before the checkpoint that vouches for it
                self._save()
            bar.update(done, tokens_per_s=tps, loss=loss)

    def _diverged(self, step: int, bad: dict) -> None:
        if self.dist.is_main:
            write_status(self.run_dir, "diverged", step, self.s.total_steps,
                         f"non-finite loss or gradient norm at step {step}", last_finite=self.last_finite,
                         at_divergence={k: (v if math.isfinite(v) else str(v)) for k, v in bad.items()})
        raise Diverged(step, self.last_finite)

    def _finish(self) -> dict:
        from moelab.modelio import save_model_dir

        model_state, _ = self.dist.full_state(self.model, None)
        summary = None
        if self.dist.is_main:
            save_model_dir(model_state, self.cfg.model, self.s.tokenizer, self.run_dir / "model")
            records = read_jsonl(self.run_dir / "metrics.jsonl")
            train_losses = [r["loss"] for r in records if r.get("kind") == "train"]
            val_losses = [r["val_loss"] for r in records if r.get("kind") == "val"]
            m = self.cfg.model
            summary = {
                "name": self.cfg.name,
                "state": "done",
                "model_name": accounting.model_name(m),
                "steps": self.step,
                "tokens": self.step * self.s.tokens_per_step,
                "final_train_loss": smoothed(train_losses),
                "final_val_loss": val_losses[-1] if val_losses else None,
                # the names the evaluation and the results store read
                "train_loss": smoothed(train_losses),
                "val_loss": val_losses[-1] if val_losses else None,
                "wall_time_s": round(self._elapsed(), 3),
                "tokens_per_s": round(self.step * self.s.tokens_per_step / max(self._elapsed(), 1e-9), 1),
                "total_params": accounting.total_params(m),
                "active_params": accounting.active_params(m),
                "num_experts": m.num_experts,
                "top_k": m.top_k,
                "d_model": m.d_model,
                "precision": self.precision.precision,
                "precision_rule": self.precision.rule,
                "bf16_speedup": self.precision.bf16_speedup,
                "model_dir": "model",
            }
            atomic_write_json(self.run_dir / "train_summary.json", summary)
            write_status(self.run_dir, "done", self.step, self.s.total_steps, "finished")
        self.dist.barrier()
        return summary if summary is not None else {"state": "done", "step": self.step}


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, start: int):
    """A rich bar with tokens/s and ETA; a no-op object when disabled."""
    if not enabled:
        class _Null:
            def update(self, *a, **k):
                pass

        yield _Null()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("{task.fields[tps]:,.0f} tok/s"),
        TextColumn("ETA"), TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as prog:
        task = prog.add_task("train", total=total, completed=start, loss=float("nan"), tps=0.0)

        class _Bar:
            def update(self, done: int, *, tokens_per_s: float, loss: float) -> None:
                prog.update(task, completed=done, tps=tokens_per_s, loss=loss)

        yield _Bar()
