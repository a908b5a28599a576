"""AdamW with weight-decay parameter groups, and the learning-rate schedules.

Weight decay applies to every parameter with ``ndim >= 2``: attention projections, the
router ``[E,D]``, the stacked expert weights ``[E,D,F]``/``[E,F,D]``, the output head and
the input embedding ``[V,D]``. Norm gains (1-D) are not decayed: decaying them pulls the
scale towards 0, which only fights the norm.

Decaying the embedding is a deliberate choice: the seed paper trains with plain Megatron
AdamW (weight decay 0.1 on all matrices), and a tied embedding is also the output head,
which is decayed everywhere else. Untied or tied, the rule stays "matrices decay".
"""

from __future__ import annotations

import math

import torch

from moelab.config import TrainConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups in ``named_parameters`` order: ``decay`` (ndim >= 2) then ``no_decay``.

    Params are given as ``(name, tensor)`` pairs, so torch records ``param_names`` in each
    group and in the state dict. Order matters: optimizer state dicts index parameters by
    position, and the checkpoint code relies on this order being a pure function of the model.
    """
    decay: list[tuple[str, torch.Tensor]] = []
    no_decay: list[tuple[str, torch.Tensor]] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append((name, p))
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _fused_ok(params: list[torch.Tensor]) -> bool:
    """Fused AdamW needs plain (non-DTensor) floating tensors on CPU or CUDA."""
    for p in params:
        if type(p) is not torch.nn.Parameter and type(p) is not torch.Tensor:
            return False  # e.g. DTensor under FSDP2: the foreach path supports it
        if p.device.type not in ("cpu", "cuda") or not p.is_floating_point():
            return False
    return True


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW(lr, betas=(beta1, beta2), weight decay on >= 2-D weights); fused where available.

    Each group keeps ``param_names`` (FQNs, same order as ``params``) so a state dict can be
    translated between positional and name-keyed forms.
    """
    groups = param_groups(model, cfg.weight_decay)
    params = [p for g in groups for _, p in g["params"]]
    assert params, "model has no trainable parameters"
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)
    if _fused_ok(params):
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError):
            pass  # an older build or an unsupported device: fall back to foreach
    return torch.optim.AdamW(groups, foreach=True, **kwargs)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``.

    * warmup: linear from ``lr/warmup`` at step 0 to ``lr`` at step ``warmup-1``;
    * ``cosine``: from ``lr`` right after warmup down to ``min_lr_ratio·lr`` at the last step;
    * ``wsd`` (warmup-stable-decay): constant ``lr``, then a linear decay to ``min_lr_ratio·lr``
      over the last ``decay_fraction`` of all steps (ending exactly on the last step);
    * ``constant``: ``lr`` after warmup.
    """
    assert total_steps > 0 and 0 <= step, (step, total_steps)
    peak = cfg.lr
    floor = cfg.min_lr_ratio * peak
    last = total_steps - 1
    warmup = min(cfg.warmup_steps, total_steps)
    if step < warmup:
        return peak * (step + 1) / warmup
    if cfg.schedule == "constant":
        return peak
    if cfg.schedule == "cosine":
        span = last - warmup
        progress = 1.0 if span <= 0 else min(1.0, (step - warmup) / span)
        return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    assert cfg.schedule == "wsd", cfg.schedule
    decay_steps = max(1, math.ceil(cfg.decay_fraction * total_steps))
    decay_start = max(warmup, total_steps - decay_steps)  # first step below peak is decay_start+1
    if step <= decay_start:
        return peak
    span = last - decay_start
    progress = min(1.0, (step - decay_start) / span)
    return peak + (floor - peak) * progress


def clip_grad_norm_(parameters, max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_``, bit for bit, without its no-op multiply on CPU.

    torch multiplies every gradient by the clamped coefficient even when that is exactly 1, to
    spare GPUs a host sync. On CPU reading the coefficient is free, and skipping the multiply
    saves a read and a write of every gradient: ≈5 ms of the issue-7 reference training step,
    whose norm falls below the clip after its first step. Returns the pre-clip total norm.
    """
    params = [p for p in parameters if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if type(norm) is torch.Tensor and norm.device.type == "cpu":  # not a DTensor, not on a GPU
        if torch.clamp(max_norm / (norm + 1e-6), max=1.0).item() == 1.0:
            return norm
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm
