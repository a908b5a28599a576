"""GRPO arithmetic as pure functions: group-normalised advantages and the clipped, KL-penalised token loss.

Legend: N rollouts (= prompts × G), G group size, B rows of a (micro-)batch, T completion tokens.

    adv_N = group_advantages(rewards_N, group_size=G)
    terms = grpo_loss(logp_BT=..., old_logp_BT=..., ref_logp_BT=..., advantages_B=adv, mask_BT=...,
                      clip_eps=0.2, kl_coef=1e-3)
    terms.loss.backward()

Conventions (those of verl, the seed paper's RL framework, unless said otherwise):

* advantage ``A_i = (r_i - mean_g) / (std_g + eps)`` over the G completions of one prompt, with the
  unbiased (Bessel-corrected) standard deviation and ``eps = 1e-6``; every token of a completion gets
  its completion's advantage. A group whose rewards are all equal gets advantage 0.
* policy-gradient term per token (PPO clipping): ``-min(ρ·A, clip(ρ, 1-ε, 1+ε)·A)`` with
  ``ρ = exp(logp - old_logp)``.
* KL penalty per token, the k3 ("low-variance") estimator of KL(π‖π_ref):
  ``exp(ref - logp) - (ref - logp) - 1`` (≥ 0, unbiased under sampling from π); like verl, the log
  ratio is clamped to ±20 and the estimate to ≤ 10, so a degenerate token cannot blow up the loss.
* optional entropy bonus ``- entropy_coef · H(π(·|context))``.
* aggregation "token-mean": the per-token terms are summed over every completion token of the
  batch and divided by their number (so long completions weigh more than in a per-sequence mean).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["group_advantages", "zero_variance_share", "kl_k3", "grpo_loss", "GRPOLossTerms"]

ADV_EPS = 1e-6


def group_advantages(rewards_N: torch.Tensor, group_size: int, eps: float = ADV_EPS) -> torch.Tensor:
    """``(r - mean) / (std + eps)`` within consecutive groups of ``group_size`` rollouts (fp32 ``[N]``)."""
    if group_size < 2:
        raise ValueError(f"group_size={group_size}: a group needs at least 2 completions")
    if rewards_N.numel() % group_size:
        raise ValueError(f"{rewards_N.numel()} rewards do not split into groups of {group_size}")
    r_PG = rewards_N.float().view(-1, group_size)
    mean_P1 = r_PG.mean(dim=-1, keepdim=True)
    std_P1 = r_PG.std(dim=-1, keepdim=True)  # unbiased, as torch.std in verl / TRL
    return ((r_PG - mean_P1) / (std_P1 + eps)).view(-1)


def zero_variance_share(rewards_N: torch.Tensor, group_size: int) -> float:
    """Share of groups whose rewards are all equal (they carry no policy-gradient signal)."""
    r_PG = rewards_N.float().view(-1, group_size)
    return (r_PG.max(dim=-1).values == r_PG.min(dim=-1).values).float().mean().item()


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π‖π_ref): ``exp(ref - logp) - (ref - logp) - 1`` (clamped as in verl)."""
    log_ratio = (ref_logp - logp).clamp(-20.0, 20.0)
    return (log_ratio.exp() - log_ratio - 1.0).clamp(max=10.0)


class GRPOLossTerms(NamedTuple):
    """``loss`` carries gradients; the rest are detached token means over ``mask_BT`` for logging."""

    loss: torch.Tensor
    pg_loss: torch.Tensor
    kl: torch.Tensor
    entropy: torch.Tensor
    clip_frac: torch.Tensor
    num_tokens: torch.Tensor


def grpo_loss(
    *,
    logp_BT: torch.Tensor,
    old_logp_BT: torch.Tensor,
    advantages_B: torch.Tensor,
    mask_BT: torch.Tensor,
    clip_eps: float,
    ref_logp_BT: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    entropy_BT: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    normalizer: float | torch.Tensor | None = None,
) -> GRPOLossTerms:
    """The GRPO objective on one (micro-)batch; see the module docstring.

    ``normalizer`` is the number of completion tokens the per-token terms are averaged over:
    ``None`` means this batch's ``mask_BT.sum()``; with gradient accumulation pass the whole
    batch's token count, so the accumulated gradient equals one full-batch token mean.
    ``clip_frac`` is the share of tokens where the clipped branch was the one taken.
    """
    mask = mask_BT.to(logp_BT.dtype)
    num_tokens = mask.sum()
    denom = num_tokens.clamp_min(1.0) if normalizer is None else normalizer
    adv_BT = advantages_B.to(logp_BT.dtype)[:, None]
    ratio = torch.exp(logp_BT - old_logp_BT)
    pg_unclipped = -adv_BT * ratio
    pg_clipped = -adv_BT * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    pg_BT = torch.maximum(pg_unclipped, pg_clipped)
    per_token = pg_BT
    kl_BT = torch.zeros_like(logp_BT) if ref_logp_BT is None else kl_k3(logp_BT, ref_logp_BT)
    if ref_logp_BT is not None and kl_coef:
        per_token = per_token + kl_coef * kl_BT
    ent_BT = torch.zeros_like(logp_BT) if entropy_BT is None else entropy_BT
    if entropy_BT is not None and entropy_coef:
        per_token = per_token - entropy_coef * ent_BT
    loss = (per_token * mask).sum() / denom

    with torch.no_grad():
        n = num_tokens.clamp_min(1.0)
        return GRPOLossTerms(
            loss=loss,
            pg_loss=(pg_BT.detach() * mask).sum() / n,
            kl=(kl_BT.detach() * mask).sum() / n,
            entropy=(ent_BT.detach() * mask).sum() / n,
            clip_frac=((pg_clipped.detach() > pg_unclipped.detach()).to(mask.dtype) * mask).sum() / n,
            num_tokens=num_tokens.detach(),
        )
