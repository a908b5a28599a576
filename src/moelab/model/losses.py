"""Auxiliary router losses — pure functions, computed in fp32, averaged over layers by the trainer.

Legend: N tokens, E experts.
"""

from __future__ import annotations

import torch


def load_balancing_loss(*, probs_NE: torch.Tensor, expert_counts_E: torch.Tensor, top_k: int) -> torch.Tensor:
    """Switch/Mixtral balance loss ``E · Σ_e f_e · P_e``; 1.0 when routing is perfectly uniform.

    ``f_e`` is the share of the N·K routed slots that went to expert e (so Σ f = 1) and ``P_e`` the
    mean router probability of e. Only ``P`` carries gradient (the counts are integers).
    Note: HF ``load_balancing_loss_func`` divides the counts by N instead of N·K, so its value
    is ``top_k`` times this one.
    """
    num_tokens, num_experts = probs_NE.shape
    f_E = expert_counts_E.float() / max(num_tokens * top_k, 1)
    p_E = probs_NE.float().mean(dim=0)
    return num_experts * torch.sum(f_E * p_E)


def router_z_loss(*, logits_NE: torch.Tensor) -> torch.Tensor:
    """ST-MoE z-loss ``mean_n logsumexp(logits_n)²``: keeps router logits small."""
    return torch.logsumexp(logits_NE.float(), dim=-1).square().mean()
