"""The pretraining objective of one micro-batch: next-token cross-entropy plus the router losses.

One function used by the trainer, ``moelab bench train`` and the planner's throughput probe, so
what is benchmarked and timed is exactly what is trained. Call it inside the caller's autocast
region; the router losses are computed in fp32 with autocast off.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch

from moelab.config import router_loss_scale
from moelab.model.losses import load_balancing_loss, router_z_loss
from moelab.train.linear_ce import linear_cross_entropy

__all__ = ["MicroBatchLosses", "micro_batch_losses", "router_losses"]


class MicroBatchLosses(NamedTuple):
    lm: torch.Tensor  # mean next-token cross-entropy, nats, fp32 scalar
    aux: torch.Tensor  # layer mean of the load-balancing loss (1.0: uniform routing; 0 when dense)
    z: torch.Tensor  # layer mean of the router z-loss (0 when dense)
    router: list  # per-layer RouterStats, for load statistics

    def total(self, aux_coef: float, z_coef: float, layers: str = "sum") -> torch.Tensor:
        """``lm + Σ_layers (aux_coef·balance + z_coef·z)`` for ``layers='sum'`` (Megatron-Core: each
        MoE layer adds its own losses times the coefficients), or the same with the layer mean
        for ``'mean'`` (moelab before 2026-12-07, L times weaker)."""
        scale = router_loss_scale(layers, len(self.router))
        return self.lm + scale * (aux_coef * self.aux + z_coef * self.z)


def router_losses(router, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer means of the balance loss and the z-loss, in fp32 with autocast off.

    A dense model (one expert) has none: its gate is exactly 1 whatever the router does, and a
    z-loss on its single logit would train a weight that changes nothing (Megatron builds no
    router for a dense model)."""
    if router[0].probs_NE.shape[-1] == 1:
        zero = torch.zeros((), device=router[0].probs_NE.device)
        return zero, zero
    with torch.autocast(device_type=router[0].probs_NE.device.type, enabled=False):
        balance_L = torch.stack([
            load_balancing_loss(probs_NE=r.probs_NE.float(), expert_counts_E=r.expert_counts_E, top_k=top_k)
            for r in router
        ])
        z_L = torch.stack([router_z_loss(logits_NE=r.logits_NE.float()) for r in router])
    return balance_L.mean(), z_L.mean()


def micro_batch_losses(model, inputs_BT: torch.Tensor, targets_BT: torch.Tensor, top_k: int) -> MicroBatchLosses:
    """Forward ``model`` (or its DDP/FSDP wrapper) with the fused LM head + cross-entropy."""
    out = model(inputs_BT, head_fn=partial(_head_loss, targets_BT=targets_BT))
    aux, z = router_losses(out.router, top_k)
    return MicroBatchLosses(out.head, aux, z, out.router)


def _head_loss(h_BTD: torch.Tensor, weight_VD: torch.Tensor, *, targets_BT: torch.Tensor) -> torch.Tensor:
    return linear_cross_entropy(h_BTD, weight_VD, targets_BT)
