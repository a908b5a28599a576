"""Slow, obviously-correct MoE forward: the test oracle for the grouped dispatch in ``moe.py``.

Routing is recomputed from scratch, then every expert runs on *all* tokens with ordinary
matmuls and its output is weighted by a dense [N,E] gate that is zero where the expert was
not chosen. No sorting, no grouped matmul, no index bookkeeping to get wrong.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moelab.model.moe import MoE


def reference_route(x_ND: torch.Tensor, router_weight_ED: torch.Tensor, top_k: int, renormalize: bool = True):
    """``(probs_NE, gate_NE)``: softmax router probs and the dense top-k gate (the chosen
    probabilities, renormalised to sum to 1 or not)."""
    probs_NE = torch.softmax(x_ND.float() @ router_weight_ED.float().T, dim=-1)
    top_NK, idx_NK = torch.topk(probs_NE, top_k, dim=-1)
    gates_NK = top_NK / top_NK.sum(-1, keepdim=True) if renormalize else top_NK
    gate_NE = torch.zeros_like(probs_NE).scatter(1, idx_NK, gates_NK)
    return probs_NE, gate_NE


def reference_moe(moe: MoE, x_BTD: torch.Tensor) -> torch.Tensor:
    """The MoE layer's output for ``x_BTD`` using ``moe``'s weights, one expert at a time."""
    B, T, D = x_BTD.shape
    x_ND = x_BTD.reshape(-1, D)
    _, gate_NE = reference_route(x_ND, moe.router.weight, moe.top_k, moe.router.renormalize)
    w = moe.experts
    y_ND = torch.zeros_like(x_ND)
    for e in range(moe.num_experts):
        h_NF = F.silu(x_ND @ w.w_gate[e]) * (x_ND @ w.w_up[e])
        y_ND = y_ND + gate_NE[:, e : e + 1].to(x_ND.dtype) * (h_NF @ w.w_down[e])
    return y_ND.view(B, T, D)
