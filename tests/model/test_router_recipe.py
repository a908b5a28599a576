"""The paper engine's MoE recipe: a router that learns from the task at every k, router losses
summed over layers (Megatron-Core), depth-scaled init, and a dense model that is exactly dense.

The checks run on gradients, not only forward passes: a renormalised top-1 gate matches
transformers to 1e-6 and still gives its router no gradient from the task."""

import math

import pytest
import torch
import torch.nn.functional as F

from moelab.config import ModelConfig, TrainConfig
from moelab.model.moe import MoE, Router
from moelab.model.reference import reference_moe
from moelab.model.transformer import MoETransformer
from moelab.train.objective import micro_batch_losses


def _router_grad_norm(num_experts: int, top_k: int, router_norm: str, seed: int = 0) -> float:
    """Router gradient norm from the language-model loss alone (aux and z at 0)."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, num_experts=num_experts, top_k=top_k,
                      router_norm=router_norm, max_seq_len=32)
    model = MoETransformer(cfg)
    ids_BT = torch.randint(0, 64, (4, 17))
    losses = micro_batch_losses(model, ids_BT[:, :-1], ids_BT[:, 1:], top_k)
    losses.total(0.0, 0.0).backward()
    return math.sqrt(sum(float(layer.moe.router.weight.grad.square().sum()) for layer in model.layers))


@pytest.mark.parametrize("num_experts", [4, 16])
def test_renormalised_top1_gate_gives_the_router_no_task_gradient(num_experts):
    # The failure the recipe fixes: Mixtral's rule at k = 1 is a gate of exactly 1.
    assert _router_grad_norm(num_experts, 1, "renormalize") < 1e-8
    # auto (Switch's gate at k = 1) and k = 2 both learn, by orders of magnitude more.
    assert _router_grad_norm(num_experts, 1, "auto") > 1e-4
    assert _router_grad_norm(num_experts, 2, "auto") > 1e-4


def test_auto_gate_is_probability_at_k1_and_renormalised_above():
    torch.manual_seed(0)
    x_ND = torch.randn(10, 16)
    for top_k, renorm in ((1, False), (2, True), (4, True)):
        cfg = ModelConfig(d_model=16, n_heads=2, num_experts=8, top_k=top_k)
        assert cfg.renormalize_gate is renorm
        router = Router(16, 8, top_k, cfg.renormalize_gate)
        torch.nn.init.normal_(router.weight)
        route = router(x_ND)
        top_NK = route.probs_NE.gather(-1, route.idx_NK)
        expected = top_NK / top_NK.sum(-1, keepdim=True) if renorm else top_NK
        torch.testing.assert_close(route.weights_NK, expected, atol=0, rtol=0)
    assert not ModelConfig(num_experts=8, top_k=2, router_norm="none").renormalize_gate
    assert ModelConfig(num_experts=8, top_k=1, router_norm="renormalize").renormalize_gate


@pytest.mark.parametrize("renormalize", [True, False])
def test_grouped_moe_matches_the_loop_reference_in_outputs_and_gradients(renormalize):
    torch.manual_seed(3)
    moe = MoE(16, 4, 2, 24, renormalize)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x_BTD = torch.randn(2, 5, 16, requires_grad=True)
    y, _ = moe(x_BTD)
    ref = reference_moe(moe, x_BTD)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x_BTD, *moe.parameters()], g)
    ref_grads = torch.autograd.grad(ref, [x_BTD, *moe.parameters()], g)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def _layer0_router_grad(model, ids_BT, loss_fn) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss_fn(micro_batch_losses(model, ids_BT[:, :-1], ids_BT[:, 1:], 2)).backward()
    return model.layers[0].moe.router.weight.grad.clone()


@pytest.mark.parametrize("n_layers", [1, 2, 4, 8])
def test_router_losses_are_summed_over_layers_as_megatron_does(n_layers):
    # Megatron-Core: every MoE layer adds coef x its own balance (and z) loss to the objective.
    from moelab.model.losses import load_balancing_loss, router_z_loss

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=n_layers, n_heads=2, num_experts=4, top_k=2, max_seq_len=32)
    model = MoETransformer(cfg)
    ids_BT = torch.randint(0, 64, (4, 17))

    def by_hand(out):  # Σ_l (0.5·balance_l + 0.25·z_l), each layer's loss from its own statistics
        return sum(0.5 * load_balancing_loss(probs_NE=r.probs_NE, expert_counts_E=r.expert_counts_E, top_k=2)
                   + 0.25 * router_z_loss(logits_NE=r.logits_NE) for r in out.router)

    summed = _layer0_router_grad(model, ids_BT, lambda out: out.total(0.5, 0.25) - out.lm)
    hand = _layer0_router_grad(model, ids_BT, by_hand)
    mean = _layer0_router_grad(model, ids_BT, lambda out: out.total(0.5, 0.25, "mean") - out.lm)
    torch.testing.assert_close(summed, hand, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(mean * n_layers, summed, rtol=1e-5, atol=1e-9)


def test_total_loss_scales_the_layer_means_by_depth():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=3, n_heads=2, num_experts=4, top_k=2, max_seq_len=32)
    ids_BT = torch.randint(0, 64, (2, 9))
    losses = micro_batch_losses(MoETransformer(cfg), ids_BT[:, :-1], ids_BT[:, 1:], 2)
    expected = losses.lm + 3 * (1e-2 * losses.aux + 1e-3 * losses.z)
    torch.testing.assert_close(losses.total(1e-2, 1e-3), expected)
    torch.testing.assert_close(losses.total(1e-2, 1e-3, "mean"), losses.lm + 1e-2 * losses.aux + 1e-3 * losses.z)
    assert TrainConfig().router_loss_layers == "sum"


@pytest.mark.parametrize("n_layers", [2, 16])
def test_depth_scaled_init_gives_output_projections_std_over_sqrt_2L(n_layers):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=512, d_model=128, n_layers=n_layers, n_heads=4, num_experts=4, top_k=2,
                      init_std=0.02)
    model = MoETransformer(cfg)
    scaled = 0.02 / math.sqrt(2 * n_layers)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            assert torch.all(p == 1)
            continue
        want = scaled if name.endswith(("attn.o_proj.weight", "experts.w_down")) else 0.02
        assert abs(float(p.std()) - want) < 0.1 * want, (name, float(p.std()), want)
    plain = MoETransformer(cfg.model_copy(update={"depth_scaled_init": False}))
    assert abs(float(plain.layers[0].attn.o_proj.weight.std()) - 0.02) < 2e-3


def test_dense_model_is_a_dense_swiglu_ffn_in_outputs_and_gradients_and_has_no_router_loss():
    torch.manual_seed(0)
    D, Fh = 16, 40
    for router_norm in ("auto", "renormalize", "none"):
        cfg = ModelConfig(d_model=D, n_heads=2, num_experts=1, top_k=1, router_norm=router_norm)
        moe = MoE(D, 1, 1, Fh, cfg.renormalize_gate)
        for p in moe.parameters():
            torch.nn.init.normal_(p, std=0.5)
        x_BTD = torch.randn(2, 7, D, requires_grad=True)
        y_BTD, stats = moe(x_BTD)
        w = moe.experts
        x2 = x_BTD.detach().clone().requires_grad_(True)
        gate_DF, up_DF, down_FD = (t.detach().clone().requires_grad_(True) for t in (w.w_gate[0], w.w_up[0], w.w_down[0]))
        dense = (F.silu(x2 @ gate_DF) * (x2 @ up_DF)) @ down_FD
        torch.testing.assert_close(y_BTD, dense, atol=0, rtol=0)
        g = torch.randn_like(dense)
        y_BTD.backward(g)
        dense.backward(g)
        torch.testing.assert_close(x_BTD.grad, x2.grad, atol=0, rtol=0)
        torch.testing.assert_close(w.w_gate.grad[0], gate_DF.grad, atol=0, rtol=0)
        torch.testing.assert_close(w.w_up.grad[0], up_DF.grad, atol=0, rtol=0)
        torch.testing.assert_close(w.w_down.grad[0], down_FD.grad, atol=0, rtol=0)
        assert moe.router.weight.grad is None or torch.all(moe.router.weight.grad == 0)
    # Whole model: the router losses of a dense model are exactly zero and its router gets no gradient.
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, num_experts=1, top_k=1, max_seq_len=32)
    model = MoETransformer(cfg)
    ids_BT = torch.randint(0, 64, (2, 9))
    losses = micro_batch_losses(model, ids_BT[:, :-1], ids_BT[:, 1:], 1)
    assert float(losses.aux) == 0 and float(losses.z) == 0
    losses.total(1e-2, 1e-3).backward()
    assert all(float(layer.moe.router.weight.grad.abs().max()) == 0 for layer in model.layers)


def test_configs_saved_before_the_gate_rule_keep_the_recipe_they_trained_with():
    # Every field of the day present (a saved model_dump) but not the new ones: the old recipe.
    old_model = ModelConfig(num_experts=4, top_k=1).model_dump()
    for key in ("router_norm", "depth_scaled_init"):
        old_model.pop(key)
    legacy = ModelConfig.model_validate(old_model)
    assert legacy.router_norm == "renormalize" and legacy.depth_scaled_init is False
    old_train = TrainConfig().model_dump()
    old_train.pop("router_loss_layers")
    assert TrainConfig.model_validate(old_train).router_loss_layers == "mean"
    # A config a person writes gets today's recipe.
    fresh = ModelConfig.model_validate({"num_experts": 4, "top_k": 1})
    assert fresh.router_norm == "auto" and fresh.depth_scaled_init and not fresh.renormalize_gate
    assert TrainConfig.model_validate({"lr": 1e-3}).router_loss_layers == "sum"


def test_a_run_trained_before_the_recipe_change_is_not_resumed_with_the_new_one(tmp_path):
    import yaml

    from moelab.config import RunConfig
    from moelab.errors import UserError
    from moelab.train.rundir import check_same_run

    cfg = RunConfig.model_validate({"model": {"num_experts": 4, "top_k": 1}})
    saved = cfg.model_dump(mode="json")  # as an older moelab wrote it: without the recipe's fields
    for section, key in (("model", "router_norm"), ("model", "depth_scaled_init"), ("train", "router_loss_layers")):
        saved[section].pop(key)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(UserError, match="recipe before 2026-12-07; to finish it as it began, set model.router_norm: renormalize"):
        check_same_run(cfg, tmp_path)
    old = RunConfig.model_validate({"model": {"num_experts": 4, "top_k": 1, "router_norm": "renormalize",
                                              "depth_scaled_init": False}, "train": {"router_loss_layers": "mean"}})
    assert check_same_run(old, tmp_path) is not None  # the same run, resumable as it began
