"""Grouped dispatch vs the loop-over-experts oracle, and the 1-expert MoE vs a dense SwiGLU FFN."""

import pytest
import torch
import torch.nn.functional as F

from moelab.model.moe import MoE, dispatch, grouped_matmul
from moelab.model.reference import reference_moe


def _moe(E, k, D=32, Fh=48, seed=0, std=0.3):
    torch.manual_seed(seed)
    moe = MoE(D, E, k, Fh)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=std)
    return moe


def _grads(moe, fn, x):
    moe.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    y = fn(moe, x)
    y.backward(torch.randn_like(y, generator=torch.Generator().manual_seed(1)))
    return y.detach(), x.grad, {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in moe.named_parameters()}


@pytest.mark.parametrize("E,k", [(1, 1), (4, 1), (4, 2), (8, 2), (4, 4), (16, 3)])
def test_grouped_dispatch_matches_reference(E, k):
    moe = _moe(E, k)
    x = torch.randn(3, 5, 32)
    y, gx, gp = _grads(moe, lambda m, v: m(v)[0], x)
    y_ref, gx_ref, gp_ref = _grads(moe, reference_moe, x)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, gx_ref, atol=1e-5, rtol=1e-5)
    for name in gp:
        torch.testing.assert_close(gp[name], gp_ref[name], atol=1e-5, rtol=1e-5, msg=name)
    assert gp["router.weight"].abs().sum() > 0 or E == 1  # router learns through the top-k weights


def test_experts_with_zero_tokens():
    moe = _moe(8, 2)
    with torch.no_grad():  # a huge bias toward experts 2 and 5 starves all the others
        moe.router.weight.zero_()
        moe.router.weight[2, 0] = moe.router.weight[5, 0] = 50.0
    x = torch.randn(2, 6, 32)
    x[..., 0] = x[..., 0].abs() + 1.0
    _, stats = moe(x)
    counts = stats.expert_counts_E.tolist()
    assert counts[2] == counts[5] == 12 and sum(counts) == 24
    y, gx, gp = _grads(moe, lambda m, v: m(v)[0], x)
    y_ref, gx_ref, gp_ref = _grads(moe, reference_moe, x)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, gx_ref, atol=1e-5, rtol=1e-5)
    for name in gp:
        torch.testing.assert_close(gp[name], gp_ref[name], atol=1e-5, rtol=1e-5)
    assert torch.all(gp["experts.w_gate"][[0, 1, 3, 4, 6, 7]] == 0)


def test_router_stats_contract():
    moe = _moe(6, 2)
    x = torch.randn(2, 4, 32)
    _, s = moe(x)
    assert s.logits_NE.shape == (8, 6) and s.logits_NE.dtype == torch.float32
    assert s.probs_NE.dtype == torch.float32
    torch.testing.assert_close(s.probs_NE.sum(-1), torch.ones(8))
    assert s.topk_idx_NK.shape == (8, 2)
    assert s.expert_counts_E.tolist() == torch.bincount(s.topk_idx_NK.flatten(), minlength=6).tolist()


def test_one_expert_top1_is_dense_swiglu():
    moe = _moe(1, 1)
    x = torch.randn(2, 7, 32)

    def dense(m, v):
        w = m.experts
        return (F.silu(v @ w.w_gate[0]) * (v @ w.w_up[0])) @ w.w_down[0]

    y, gx, gp = _grads(moe, lambda m, v: m(v)[0], x)
    y_d, gx_d, gp_d = _grads(moe, dense, x)
    torch.testing.assert_close(y, y_d, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(gx, gx_d, atol=1e-6, rtol=1e-6)
    for name in ("experts.w_gate", "experts.w_up", "experts.w_down"):
        torch.testing.assert_close(gp[name], gp_d[name], atol=1e-6, rtol=1e-6)
    assert torch.all(gp["router.weight"] == 0)  # softmax over one expert is constant


def test_dispatch_groups_slots_by_expert_stably():
    idx_NK = torch.tensor([[2, 0], [0, 1], [2, 1]])
    plan = dispatch(idx_NK, 4)
    assert plan.counts_E.tolist() == [2, 2, 2, 0]
    assert plan.offs_E.dtype == torch.int32 and plan.offs_E.tolist() == [2, 4, 6, 6]
    assert plan.order_S.tolist() == [1, 2, 3, 5, 0, 4]
    assert plan.token_S.tolist() == [0, 1, 1, 2, 0, 2]


@pytest.mark.parametrize("I,O", [(7, 9), (10, 6), (12, 20), (16, 32)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_matmul_pads_unaligned_widths(I, O, dtype):
    offs = torch.tensor([3, 3, 8, 10], dtype=torch.int32)
    x = torch.randn(10, I, dtype=dtype, requires_grad=True)
    w = torch.randn(4, I, O, dtype=dtype, requires_grad=True)
    out = grouped_matmul(x, w, offs)
    starts = [0, 3, 3, 8]
    ref = torch.cat([x[s:e] @ w[g] for g, (s, e) in enumerate(zip(starts, offs.tolist()))])
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-1, rtol=2e-2)
    torch.testing.assert_close(out, ref, **tol)
    out.float().square().sum().backward()
    assert x.grad.shape == x.shape and w.grad.shape == w.shape


def test_moe_under_bf16_autocast_and_in_bf16():
    moe = _moe(4, 2, D=24, Fh=36)  # widths not 16-byte aligned in bf16: exercises the padding
    x = torch.randn(2, 5, 24)
    ref = reference_moe(moe, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, stats = moe(x)
    assert stats.probs_NE.dtype == torch.float32 and stats.logits_NE.dtype == torch.float32
    torch.testing.assert_close(y.float(), ref, atol=0.1, rtol=0.05)
    y.float().sum().backward()
    assert moe.router.weight.grad is not None and moe.experts.w_down.grad.dtype == torch.float32
    y16, _ = moe.to(torch.bfloat16)(x.bfloat16())
    assert y16.dtype == torch.bfloat16


def test_top_1_routing_equals_topk():
    """The router's top-1 shortcut (max instead of topk) picks the same experts with the same weights."""
    from moelab.model.moe import Router

    torch.manual_seed(0)
    router = Router(d_model=16, num_experts=8, top_k=1)
    torch.nn.init.normal_(router.weight, std=0.5)
    x_ND = torch.randn(300, 16)
    routing = router(x_ND)
    top_NK, idx_NK = torch.topk(torch.softmax(x_ND @ router.weight.T, dim=-1), 1, dim=-1)
    assert torch.equal(routing.idx_NK, idx_NK)
    assert torch.allclose(routing.probs_NE.gather(-1, routing.idx_NK), top_NK)
    assert torch.equal(routing.weights_NK, torch.ones(300, 1))


@pytest.mark.parametrize("tokens,experts,top_k", [(2048, 16, 2), (2048, 64, 4), (1024, 32, 2), (4096, 8, 2)])
def test_top_k_by_max_equals_topk(tokens, experts, top_k, monkeypatch):
    """Where the CPU rule takes rounds of max instead of torch.topk, routing and gradients are topk's, bit for bit."""
    from moelab.model import moe as moe_mod
    from moelab.model.moe import Router

    torch.manual_seed(0)
    router = Router(d_model=16, num_experts=experts, top_k=top_k)
    torch.nn.init.normal_(router.weight, std=0.5)
    x_ND = torch.randn(tokens, 16)
    probs_NE = torch.softmax(x_ND @ router.weight.T, dim=-1)
    assert moe_mod.iterative_top_k(probs_NE, top_k)  # the rule takes the rounds-of-max path here

    def route_and_grad():
        router.weight.grad = None
        routing = router(x_ND)
        (routing.weights_NK * torch.arange(1.0, top_k + 1)).sum().backward()
        return routing, router.weight.grad.clone()

    fast, grad_fast = route_and_grad()
    monkeypatch.setattr(moe_mod, "iterative_top_k", lambda p, k: False)  # the torch.topk path
    ref, grad_ref = route_and_grad()
    assert torch.equal(fast.idx_NK, ref.idx_NK)
    assert torch.equal(fast.weights_NK, ref.weights_NK)
    assert torch.equal(grad_fast, grad_ref)


def test_iterative_top_k_rule():
    """Rounds of max only on CPU, from 32,768 router probabilities, for 2 <= k <= 4 and k <= E/4."""
    from moelab.model.moe import iterative_top_k, top_k_by_max

    assert iterative_top_k(torch.zeros(2048, 16), 2) and iterative_top_k(torch.zeros(2048, 64), 4)
    assert not iterative_top_k(torch.zeros(2047, 16), 2)  # below 32,768 elements: topk is as fast
    assert not iterative_top_k(torch.zeros(16, 64), 2)  # decoding-sized
    assert not iterative_top_k(torch.zeros(4096, 8), 4)  # k > E/4
    assert not iterative_top_k(torch.zeros(2048, 64), 8)  # k > 4: even with topk
    assert not iterative_top_k(torch.zeros(2048, 64, device="meta"), 2)  # not CPU
    # exact ties: the lower expert id first, as max (and the top-1 path) does
    assert top_k_by_max(torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.1, 0.3, 0.3, 0.3]]), 2).tolist() == [[0, 1], [1, 2]]
