"""moelab's router against Megatron-Core's own routing code (megatron-core, CPU): the same gate
values and the same router gradients for every k and gate rule, the same balance and z losses, and
launch arguments Megatron's TransformerConfig accepts (it refuses a renormalised top-1 gate)."""

import pytest
import torch

from moelab.config import load_study_config
from moelab.model.losses import load_balancing_loss, router_z_loss
from moelab.model.moe import Router, expert_counts
from moelab.study.megatron import megatron_args
from moelab.study.plan import plan

moe_utils = pytest.importorskip("megatron.core.transformer.moe.moe_utils")


@pytest.mark.parametrize("top_k", [1, 2, 4])
@pytest.mark.parametrize("renormalize", [True, False])
def test_gate_values_and_router_gradients_equal_megatrons(top_k, renormalize):
    torch.manual_seed(top_k)
    N, D, E = 64, 16, 8
    x_ND = torch.randn(N, D)
    router = Router(D, E, top_k, renormalize)
    torch.nn.init.normal_(router.weight, std=0.5)
    route = router(x_ND)
    gate_NE = torch.zeros(N, E).scatter(1, route.idx_NK, route.weights_NK)
    # Megatron's default softmax over the top-k logits is the renormalised gate; pre-softmax is the probability.
    logits_NE = (x_ND @ router.weight.detach().T).requires_grad_(True)
    mg_gate_NE, mg_map_NE = moe_utils.topk_routing_with_score_function(logits_NE, top_k, use_pre_softmax=not renormalize)
    torch.testing.assert_close(gate_NE, mg_gate_NE, atol=1e-6, rtol=1e-5)
    assert torch.equal(mg_map_NE, gate_NE > 0)
    upstream_NE = torch.randn(N, E)  # any loss downstream of the gate
    (g_ED,) = torch.autograd.grad((gate_NE * upstream_NE).sum(), router.weight)
    (g_logits_NE,) = torch.autograd.grad((mg_gate_NE * upstream_NE).sum(), logits_NE)
    torch.testing.assert_close(g_ED, g_logits_NE.T @ x_ND, atol=1e-5, rtol=1e-4)
    if top_k == 1 and renormalize:  # the failure both engines share: a gate of exactly 1
        assert float(g_logits_NE.abs().max()) == 0 and float(g_ED.abs().max()) < 1e-6


@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_balance_and_z_losses_equal_megatrons_per_layer(top_k):
    torch.manual_seed(0)
    N, E = 128, 8
    logits_NE = torch.randn(N, E) * 2
    probs_NE = torch.softmax(logits_NE, -1)
    idx_NK = torch.topk(probs_NE, top_k, -1).indices
    counts_E = expert_counts(idx_NK, E)
    ours = load_balancing_loss(probs_NE=probs_NE, expert_counts_E=counts_E, top_k=top_k)
    theirs = moe_utils.switch_load_balancing_loss_func(probs_NE, counts_E, N, top_k, E, moe_aux_loss_coeff=1.0)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(router_z_loss(logits_NE=logits_NE), moe_utils.z_loss_func(logits_NE, 1.0))


def _transformer_config(run):
    """Megatron-Core's TransformerConfig from the script's literal arguments (its own validation runs)."""
    from megatron.core.transformer.transformer_config import TransformerConfig

    args = megatron_args(run)
    model, moe = dict(args["MODEL_ARGS"]), dict(args["MOE_ARGS"])
    return TransformerConfig(
        num_layers=int(model["--num-layers"]), hidden_size=int(model["--hidden-size"]),
        num_attention_heads=int(model["--num-attention-heads"]), ffn_hidden_size=int(model["--ffn-hidden-size"]),
        init_method_std=float(model["--init-method-std"]), num_moe_experts=int(moe["--num-experts"]),
        moe_router_topk=int(moe["--moe-router-topk"]), moe_ffn_hidden_size=int(moe["--moe-ffn-hidden-size"]),
        moe_router_pre_softmax="--moe-router-pre-softmax" in moe,
        moe_router_load_balancing_type=moe["--moe-router-load-balancing-type"],
        moe_aux_loss_coeff=float(moe["--moe-aux-loss-coeff"]), moe_z_loss_coeff=float(moe["--moe-z-loss-coeff"]),
    )


def test_megatron_core_accepts_every_moe_run_of_the_cpu_preset_and_refuses_the_old_top1_gate():
    import warnings

    runs = [r for r in plan(load_study_config("paper-cpu")) if r.feasible and r.config.model.num_experts > 1]
    assert {r.config.model.top_k for r in runs} == {1, 2}  # k = 4 left out on 2026-12-07 (5 seeds instead)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Megatron's own deprecation notes
        for run in runs:
            cfg = _transformer_config(run)
            assert cfg.moe_router_pre_softmax == (run.config.model.top_k == 1), run.run_id
        old = next(r for r in runs if r.config.model.top_k == 1)
        old.config.model.router_norm = "renormalize"  # the recipe before 2026-12-07
        from megatron.core.transformer.transformer_config import TransformerConfig

        fields = {k: v for k, v in vars(_transformer_config(next(r for r in runs if r.config.model.top_k == 2))).items()
                  if k in ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size", "num_moe_experts")}
        with pytest.raises(ValueError, match="pre-softmax when topk is 1"):
            TransformerConfig(**fields, moe_router_topk=1, moe_router_pre_softmax=False)
    from moelab.errors import UserError

    with pytest.raises(UserError, match="renormalised top-1 gate"):
        megatron_args(old)
