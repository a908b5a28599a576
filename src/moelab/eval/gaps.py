"""The three levels of evaluation for one model, and the gaps between splits.

Levels (DESIGN.md's glossary):

1. **Pretraining loss** — ``train_loss`` and ``val_loss`` as the trainer reports them (mean NLL per
   token on training batches / held-out validation text, in nats).
2. **Task loss** — NLL of each task's reference answer given its prompt (:mod:`moelab.eval.taskloss`),
   in **bits per token** (pooled over the split's items; the headline) and bits per byte.
3. **Accuracy** — greedy generation, extraction, the task's scorer (:mod:`moelab.eval.accuracy`).

Gaps (positive = worse on held-out data):

- **Pretraining generalization gap** = ``val_loss − train_loss`` (nats/token).
- **Task-loss generalization gap** = task loss on the ``heldout`` split − task loss on the
  ``train`` split (bits/token). The ``train`` split holds items of the kind seen in pretraining
  (the very QA pairs of the train people, problems from the training set); ``heldout`` holds new
  people's facts (known only from biographies) and new problems.
- **Accuracy gap** = accuracy on ``train`` − accuracy on ``heldout``.

A gap is ``None`` when either side is missing (a task file has only a ``heldout`` split).

:func:`evaluate_model` returns one flat JSON-able dict per model, with keys::

    pretrain_train_loss, pretrain_val_loss, pretrain_gap
    task_loss/<task>/<split>        bits per token, pooled (headline)
    task_loss_lo/…, task_loss_hi/…  its 95 % bootstrap interval over items
    task_loss_bpb/<task>/<split>    bits per byte, pooled
    task_loss_mean/<task>/<split>   unweighted mean of the per-item bits per token
    accuracy/<task>/<split>         mean of `correct` (task scorer, else exact match)
    accuracy_lo/…, accuracy_hi/…    its 95 % Wilson interval over items
    exact_match/<task>/<split>      extracted answer == normalised gold
    acc_norm/<task>/<split>         multiple-choice tasks only: log-likelihood per character (lm-eval's acc_norm)
    digit_accuracy/<task>/<split>   whole-number answers only: share of the gold's digits right at their place
    acc_bytes/<task>/<split>        multiple-choice tasks only: per UTF-8 byte (lm-eval's acc_bytes)
    num_items/<task>/<split>, num_truncated/<task>/<split>
    task_loss_gap/<task>, accuracy_gap/<task>

``<task>`` is the task name (``reasoning/addition`` has a slash of its own: the metric is the
first path component and the split the last), with task files as ``file:<stem>``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from moelab.config import EvalConfig

__all__ = ["generalization_gap", "assemble_levels", "evaluate_model", "SPLITS"]

SPLITS = ("train", "heldout")


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def generalization_gap(heldout_loss: float | None, train_loss: float | None) -> float | None:
    """``heldout_loss − train_loss`` (positive: held-out data is harder); ``None`` if either is missing."""
    h, t = _num(heldout_loss), _num(train_loss)
    return None if h is None or t is None else h - t


def assemble_levels(
    *,
    train_loss: float | None = None,
    val_loss: float | None = None,
    task_loss: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    accuracy: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The flat result dict (keys in the module docstring) from already computed numbers.

    ``task_loss[(task, split)]`` is a :meth:`TaskLossResult.summary` dict, ``accuracy[(task, split)]``
    an :meth:`AccuracyResult.summary` dict; ``task`` is the label used in the keys.
    """
    out: dict[str, Any] = {
        "pretrain_train_loss": _num(train_loss),
        "pretrain_val_loss": _num(val_loss),
        "pretrain_gap": generalization_gap(val_loss, train_loss),
    }
    task_loss, accuracy = task_loss or {}, accuracy or {}
    tasks = list(dict.fromkeys(t for t, _ in [*task_loss, *accuracy]))
    for (task, split), s in task_loss.items():
        out[f"task_loss/{task}/{split}"] = _num(s.get("bits_per_token"))
        out[f"task_loss_lo/{task}/{split}"] = _num(s.get("bits_per_token_lo"))
        out[f"task_loss_hi/{task}/{split}"] = _num(s.get("bits_per_token_hi"))
        out[f"task_loss_bpb/{task}/{split}"] = _num(s.get("bits_per_byte"))
        out[f"task_loss_mean/{task}/{split}"] = _num(s.get("mean_bits_per_token"))
        out[f"num_items/{task}/{split}"] = s.get("num_items")
        out[f"num_truncated/{task}/{split}"] = s.get("num_truncated")
    for (task, split), s in accuracy.items():
        out[f"accuracy/{task}/{split}"] = _num(s.get("accuracy"))
        out[f"accuracy_lo/{task}/{split}"] = _num(s.get("accuracy_lo"))
        out[f"accuracy_hi/{task}/{split}"] = _num(s.get("accuracy_hi"))
        out[f"exact_match/{task}/{split}"] = _num(s.get("exact_match"))
        for metric in ("acc_norm", "acc_bytes", "digit_accuracy"):
            if s.get(metric) is not None:
                out[f"{metric}/{task}/{split}"] = _num(s[metric])
        out.setdefault(f"num_items/{task}/{split}", s.get("num_items"))
    for task in tasks:
        if all((task, sp) in task_loss for sp in SPLITS):
            out[f"task_loss_gap/{task}"] = generalization_gap(
                task_loss[(task, "heldout")].get("bits_per_token"), task_loss[(task, "train")].get("bits_per_token")
            )
        if all((task, sp) in accuracy for sp in SPLITS):
            # Accuracy falls on harder data, so train − heldout keeps "positive = worse held out".
            out[f"accuracy_gap/{task}"] = generalization_gap(
                accuracy[(task, "train")].get("accuracy"), accuracy[(task, "heldout")].get("accuracy")
            )
    return out


def _autocast(model, dtype):
    import contextlib

    import torch

    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=dtype)


def _pretrain_losses(train_summary: Mapping[str, Any] | None) -> tuple[float | None, float | None]:
    if not train_summary:
        return None, None
    return train_summary.get("train_loss"), train_summary.get("val_loss")


def evaluate_model(
    model,
    tokenizer,
    world,
    cfg: EvalConfig,
    *,
    train_summary: Mapping[str, Any] | None = None,
    progress: bool = False,
    records_dir: str | Path | None = None,
    dtype=None,
) -> dict[str, Any]:
    """Task loss and accuracy on every split of each task in ``cfg.tasks`` and each of ``cfg.task_files``.

    ``train_summary`` (what ``train()`` returns) supplies ``train_loss`` / ``val_loss``. Each split
    is cut to its first ``cfg.limit`` items; accuracy uses ``cfg.shots`` and ``cfg.max_new_tokens``.
    With ``records_dir``, per-item accuracy records go to ``<records_dir>/<task>--<split>.jsonl``.
    ``dtype=torch.bfloat16`` runs every forward under autocast. Returns the flat dict described in
    the module docstring.
    """
    from moelab.eval.accuracy import accuracy as run_accuracy
    from moelab.eval.taskloss import task_loss as run_task_loss
    from moelab.eval.tasks import FILE_PREFIX, get_task, task_label

    names = [*cfg.tasks, *(f"{FILE_PREFIX}{p}" for p in cfg.task_files)]
    tasks = [get_task(n, world) for n in names]  # every unknown name fails before any work
    losses: dict[tuple[str, str], dict[str, Any]] = {}
    accs: dict[tuple[str, str], dict[str, Any]] = {}
    for name, task in zip(names, tasks):
        label = task_label(name)
        for split in [s for s in SPLITS if s in task.splits] + [s for s in task.splits if s not in SPLITS]:
            items = task.items(split)[: cfg.limit] if cfg.limit else task.items(split)
            losses[(label, split)] = run_task_loss(model, tokenizer, items, dtype=dtype, progress=progress).summary()
            # A task without a train split (a task file) has no exemplars to draw: its prompts
            # carry their own shots, if any.
            shots = cfg.shots if "train" in task.splits else 0
            with _autocast(model, dtype):
                result = run_accuracy(model, tokenizer, task, split=split, shots=shots, limit=cfg.limit,
                                      max_new_tokens=cfg.max_new_tokens, progress=progress)
            accs[(label, split)] = result.summary()
            if records_dir is not None:
                safe = label.replace("/", "_").replace(":", "_")
                result.write_records(Path(records_dir) / f"{safe}--{split}.jsonl")
    train_loss, val_loss = _pretrain_losses(train_summary)
    return assemble_levels(train_loss=train_loss, val_loss=val_loss, task_loss=losses, accuracy=accs)
