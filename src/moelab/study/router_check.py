"""Does every router of a study learn from the task? Measured, before anything trains.

    from moelab.study.router_check import check_routers_learn, router_task_gradient
    router_task_gradient(num_experts=16, top_k=1, router_norm="auto")   # ≈ 1e-2; "renormalize": ≈ 1e-10
    check_routers_learn(study)   # a warning naming each (E, k, gate) whose router gets no task gradient

Why measured rather than a rule on (k, router_norm): the failure this guards against (a
renormalised top-1 gate, always exactly 1) matched transformers to 1e-6 in the forward pass and
still trained a router that never saw the task. A small model with the study's E, k and gate
rule is built, the language-model loss alone (aux and z at 0) is back-propagated, and the router's
gradient must be far above round-off. The gate's semantics do not depend on width or depth, so a
1-layer d = 32 model answers for a grid point of any size (the paper's 30B-parameter points too),
in milliseconds. A warning, not a refusal: the only way to such a gate is to ask for it
(``router_norm: renormalize`` at k = 1), e.g. to reproduce a study trained before 2026-12-07.
"""

from __future__ import annotations

import functools
import math
import warnings

from moelab.config import StudyConfig

# Measured on the probe model 2026-12-07: a learning router's gradient is 2e-5 to 5e-4 (k = 1 with
# the probability as gate: 2.5e-4, 7e-5, 2e-5 at E = 4, 16, 64; k = 2: 5e-4), a gate of exactly 1
# gives round-off, 2e-11 to 5e-11. The bar sits more than two orders of magnitude from each.
MIN_ROUTER_GRADIENT = 1e-7


@functools.lru_cache(maxsize=256)
def router_task_gradient(num_experts: int, top_k: int, router_norm: str, seed: int = 0) -> float:
    """Norm of the router's gradient from the language-model loss alone, on a small model with
    this gate (random tokens, fixed seed: a deterministic figure)."""
    import torch

    from moelab.config import ModelConfig
    from moelab.model.transformer import MoETransformer
    from moelab.train.objective import micro_batch_losses

    gen = torch.Generator().manual_seed(seed)
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=2, num_experts=num_experts, top_k=top_k,
                      expert_hidden=16, router_norm=router_norm, max_seq_len=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MoETransformer(cfg)
    ids_BT = torch.randint(0, 64, (4, 33), generator=gen)
    losses = micro_batch_losses(model, ids_BT[:, :-1], ids_BT[:, 1:], top_k)
    losses.total(0.0, 0.0).backward()
    return math.sqrt(float(model.layers[0].moe.router.weight.grad.square().sum()))


def routers_without_task_gradient(study: StudyConfig) -> list[str]:
    """One line for each grid point with more than one expert whose router gets no gradient from
    the task (imported checkpoints are trained already and are not checked)."""
    if not (study.budgets or study.tokens):
        return []
    norm, found = study.base.model.router_norm, []
    for num_experts in study.grid.num_experts:
        for top_k in study.grid.top_k:
            if num_experts == 1 or top_k > num_experts:  # dense has no router; k > E is infeasible anyway
                continue
            grad = router_task_gradient(num_experts, top_k, norm)
            if grad < MIN_ROUTER_GRADIENT:
                found.append(
                    f"study '{study.name}': E={num_experts} k={top_k} with model.router_norm '{norm}': the router "
                    f"gets no gradient from the task (measured {grad:.1e}; the top-{top_k} gate renormalised is "
                    "always 1, and Megatron-LM refuses it); router_norm 'auto' or 'none' lets it learn")
    return found


def check_routers_learn(study: StudyConfig) -> None:
    """A one-line warning for each grid point whose router gets no gradient from the task."""
    for line in routers_without_task_gradient(study):
        warnings.warn(line, UserWarning, stacklevel=2)
