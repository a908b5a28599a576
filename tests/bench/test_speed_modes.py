"""Every fast path a speed-up added gives the same results as the plain one.

* ``attend``: every path (the CPU bf16 single-query upcast and the CPU bf16 matmul attention
  included) vs fp32 SDPA, with causal, padding-mask and grouped-KV inputs; matmul attention's
  gradients too.
* Row-padded expert groups (CPU bf16): the same MoE outputs and gradients as exact groups;
  the batched (equal-group ``bmm``) expert path: the ragged path's, and which one the rule takes.
* The embedding-bag slot path (CPU decoding): the grouped path's and the loop oracle's outputs.
* KV cache without padding (mask-free SDPA) vs with a mask; cached generation vs full forward.
* ``cached_weight_casts``: identical outputs, and a weight change is picked up.
* ``maybe_compile``: compiled blocks give the eager logits and gradients (slow: compiles).
"""

import pytest
import torch
import torch.nn.functional as F

import moelab.model.transformer as tr
from moelab.config import ModelConfig
from moelab.model import KVCache, MoETransformer, generate
from moelab.model import moe as moe_mod
from moelab.model.moe import MoE, cached_weight_casts, dispatch
from moelab.model.reference import reference_moe

BF16_TOL = dict(atol=2e-2, rtol=2e-2)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    base = dict(vocab_size=96, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, num_experts=4, top_k=2,
                expert_hidden=48, init_std=0.15)
    return MoETransformer(ModelConfig(**{**base, **kw})).eval()


def _reference(q, k, v, mask, causal):
    rep = q.shape[1] // k.shape[1]
    k, v = k.float().repeat_interleave(rep, 1), v.float().repeat_interleave(rep, 1)
    return F.scaled_dot_product_attention(q.float(), k, v, attn_mask=mask, is_causal=causal)


@pytest.mark.parametrize("kv_heads", [4, 2])
@pytest.mark.parametrize("kind", ["causal", "mask", "decode", "decode-mask"])
def test_attention_paths_match_fp32_sdpa(kind, kv_heads):
    gen = torch.Generator().manual_seed(0)
    B, H, Dh = 3, 4, 16
    T, S = (1, 9) if kind.startswith("decode") else (9, 9)
    q = torch.randn(B, H, T, Dh, generator=gen)
    k, v = (torch.randn(B, kv_heads, S, Dh, generator=gen) for _ in range(2))
    mask = None
    if kind.endswith("mask"):
        valid = torch.ones(B, S, dtype=torch.bool)
        valid[0, :3] = False  # left padding in row 0
        mask = tr.attention_mask(valid, torch.arange(S - T, S))
    expected = _reference(q, k, v, mask, causal=mask is None and T > 1)
    got = tr.attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert got.dtype == torch.bfloat16 and got.shape == expected.shape
    torch.testing.assert_close(got.float(), expected, **BF16_TOL)
    torch.testing.assert_close(tr.attend(q, k, v, mask), expected, atol=1e-5, rtol=1e-5)  # fp32: SDPA


def test_bf16_softmax_is_the_fp32_softmax_rounded_once():
    # matmul_attention relies on this for its forward (HF-eager numerics) without the casts.
    gen = torch.Generator().manual_seed(3)
    scores = (torch.randn(6, 40, 40, generator=gen) * 4 + torch.full((40, 40), float("-inf")).triu(1)).bfloat16()
    assert torch.equal(torch.softmax(scores, dim=-1), torch.softmax(scores.float(), dim=-1).bfloat16())


@pytest.mark.parametrize("kind", ["causal", "mask"])
def test_matmul_attention_gradients_match_fp32_sdpa(kind):
    gen = torch.Generator().manual_seed(1)
    B, H, Hkv, T, Dh = 2, 4, 2, 24, 16
    q = torch.randn(B, H, T, Dh, generator=gen)
    k, v = (torch.randn(B, Hkv, T, Dh, generator=gen) for _ in range(2))
    mask = None
    if kind == "mask":
        valid = torch.ones(B, T, dtype=torch.bool)
        valid[1, :5] = False
        mask = tr.attention_mask(valid, torch.arange(T))
    grad_out = torch.randn(B, H, T, Dh, generator=gen)

    def grads(fn, *xs):
        xs = [x.detach().requires_grad_() for x in xs]
        fn(*xs).float().backward(grad_out.to(xs[0].dtype))
        return [x.grad.float() for x in xs]

    expected = grads(lambda q, k, v: _reference(q, k, v, mask, causal=mask is None), q, k, v)
    got = grads(lambda q, k, v: tr.matmul_attention(q, k, v, mask), q.bfloat16(), k.bfloat16(), v.bfloat16())
    for g, e, name in zip(got, expected, "qkv"):
        torch.testing.assert_close(g, e, atol=5e-2, rtol=5e-2, msg=name)
        assert torch.isfinite(g).all()


def test_dispatch_pads_groups_to_the_row_multiple():
    idx_NK = torch.tensor([[2, 0], [0, 1], [2, 1], [2, 0]])
    plan = dispatch(idx_NK, 4, row_align=4)
    assert plan.counts_E.tolist() == [3, 2, 3, 0]
    assert plan.offs_E.tolist() == [4, 8, 12, 12]  # every group a multiple of 4 rows
    # each slot (n*K + k) lands in its expert's group, in token order; padding rows read token 0
    rows = plan.row_of_slot_S.tolist()
    assert [rows[s] for s in (1, 2, 7)] == [0, 1, 2]  # expert 0: slots 1, 2, 7
    assert [rows[s] for s in (3, 5)] == [4, 5]  # expert 1 starts at row 4
    assert [rows[s] for s in (0, 4, 6)] == [8, 9, 10]
    assert plan.token_R.tolist() == [0, 1, 3, 0, 1, 2, 0, 0, 0, 2, 3, 0]
    for slot, row in enumerate(rows):
        assert plan.token_R[row] == slot // 2


def test_padded_expert_groups_give_the_exact_groups_results(monkeypatch):
    torch.manual_seed(0)
    layer = MoE(d_model=64, num_experts=8, top_k=2, hidden=96)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(4, 40, 64)

    def run(align):
        monkeypatch.setattr(moe_mod, "_CPU_ROW_ALIGN", align)
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer.experts.compute_dtype(xi.device, 4 * 40 * 2) == torch.bfloat16  # the padded path
            assert layer.experts.row_align(xi.device, torch.bfloat16) == align
            y, stats = layer(xi)
        y.float().square().sum().backward()
        return y.float(), xi.grad, {n: p.grad.clone() for n, p in layer.named_parameters()}

    y1, gx1, gp1 = run(1)
    y32, gx32, gp32 = run(32)
    torch.testing.assert_close(y32, y1, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(gx32, gx1, atol=1e-2, rtol=1e-2)
    for name in gp1:
        torch.testing.assert_close(gp32[name], gp1[name], atol=1e-2, rtol=1e-2, msg=name)


def test_dispatch_pads_every_group_to_the_largest_within_the_allowance():
    idx_NK = torch.tensor([[2, 0], [0, 1], [2, 1], [2, 0]])  # counts 3, 2, 3, 0 over 8 slots
    plan = dispatch(idx_NK, 4, row_align=4, max_padding=2.0)  # 4 groups of 4 rows = 2 per slot
    assert plan.capacity == 4 and plan.offs_E.tolist() == [4, 8, 12, 16]
    for slot, row in enumerate(plan.row_of_slot_S.tolist()):
        assert plan.token_R[row] == slot // 2 and row // 4 == idx_NK.reshape(-1)[slot]
    assert dispatch(idx_NK, 4, row_align=4, max_padding=1.9).capacity is None  # over the allowance: ragged
    assert dispatch(idx_NK, 4, row_align=4).capacity is None


@pytest.mark.parametrize("E,k", [(8, 2), (16, 1), (64, 4)])
def test_batched_expert_path_gives_the_ragged_results_and_is_taken_by_the_rule(monkeypatch, E, k):
    torch.manual_seed(E)
    layer = MoE(d_model=32, num_experts=E, top_k=k, hidden=48)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(4, 64, 32)
    taken = []
    real_dispatch, real_rule = moe_mod.dispatch, moe_mod.cpu_max_padding

    def spy(*args, **kw):
        plan = real_dispatch(*args, **kw)
        taken.append(plan.capacity is not None)
        return plan

    monkeypatch.setattr(moe_mod, "dispatch", spy)

    def run(allowance):
        monkeypatch.setattr(moe_mod, "cpu_max_padding", lambda *a: allowance)
        layer.zero_grad()
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, _ = layer(xi)
        y.float().square().sum().backward()
        return y.float(), xi.grad, {n: p.grad.clone() for n, p in layer.named_parameters()}

    ragged = run(0.0)
    batched = run(float(E))  # any routing fits
    assert taken == [False, True]
    torch.testing.assert_close(batched[0], ragged[0], **BF16_TOL)
    torch.testing.assert_close(batched[1], ragged[1], **BF16_TOL)
    for name in ragged[2]:
        torch.testing.assert_close(batched[2][name], ragged[2][name], **BF16_TOL, msg=name)
    # the rule itself: small experts at the presets' sizes take the batched path at ≈2x padding,
    # big ones only when nearly balanced (measured crossovers in cpu_max_padding's docstring)
    assert real_rule(16, 2048, 64, 128) > 2.0
    assert real_rule(4, 4096, 128, 256) < 1.1


@pytest.mark.parametrize("E,k,N", [(4, 2, 6), (8, 2, 5), (16, 3, 9), (1, 1, 3)])
def test_slot_path_matches_grouped_experts_and_the_loop_oracle(E, k, N):
    torch.manual_seed(E + k)
    layer = MoE(d_model=32, num_experts=E, top_k=k, hidden=48)  # unaligned widths on purpose
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(1, N, 32)
    with torch.no_grad():
        assert layer.experts.uses_slot_path(x.device, N * k)  # a few rows per expert, no autograd...
        y_slot, stats_slot = layer(x)
        y_ref = reference_moe(layer, x)
    assert not layer.experts.uses_slot_path(x.device, N * k)  # ...but with autograd: grouped_mm
    y_grouped, stats_grouped = layer(x)
    torch.testing.assert_close(y_slot, y_grouped.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(y_slot, y_ref, atol=1e-6, rtol=1e-5)
    assert torch.equal(stats_slot.expert_counts_E, stats_grouped.expert_counts_E)
    assert torch.equal(stats_slot.topk_idx_NK, stats_grouped.topk_idx_NK)


def test_slot_path_under_autocast_computes_in_bf16_with_or_without_the_cast_cache():
    torch.manual_seed(0)
    layer = MoE(d_model=64, num_experts=8, top_k=2, hidden=96)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(8, 1, 64)  # one decoding step of a batch of 8: 16 slots over 8 experts
    with torch.no_grad():
        expected = reference_moe(layer, x)  # fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer.experts.compute_dtype(x.device, 16) == torch.float32  # autograd: grouped, fp32
        with torch.no_grad():
            assert layer.experts.compute_dtype(x.device, 16) == torch.bfloat16
            uncached, _ = layer(x)  # casts the weights for this call
            with cached_weight_casts(layer):
                cached, _ = layer(x)
                assert layer.experts._cast_cache["weights"][0].dtype == torch.bfloat16
    assert cached.dtype == torch.bfloat16 and torch.equal(cached, uncached)  # the cache is only speed
    torch.testing.assert_close(cached.float(), expected, **BF16_TOL)


def test_unpadded_cache_runs_mask_free_and_matches_full_forward():
    model = _model()
    ids = torch.randint(0, 96, (2, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids).logits
        cache = KVCache.for_model(model, batch_size=2, max_len=10)
        steps = [model(ids[:, :4], attention_mask_BT=torch.ones(2, 4, dtype=torch.long), kv_cache=cache).logits]
        assert cache.padded is False
        steps += [model(ids[:, 4:6], kv_cache=cache).logits]  # a block after cached tokens: offset mask
        steps += [model(ids[:, t : t + 1], kv_cache=cache).logits for t in range(6, 10)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_padded_prompt_sets_the_flag():
    model = _model()
    cache = KVCache.for_model(model, batch_size=2, max_len=6)
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    with torch.no_grad():
        model(torch.tensor([[0, 5, 6], [7, 8, 9]]), attention_mask_BT=mask, kv_cache=cache)
    assert cache.padded is True


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cached_weight_casts_change_nothing(dtype):
    model = _model(seed=3)
    prompts = [[3, 14, 15, 9], [2, 6], [5]]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        ids = torch.randint(0, 96, (2, 7), generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            plain = model(ids).logits
            with cached_weight_casts(model):
                first, again = model(ids).logits, model(ids).logits
                with torch.no_grad():
                    model.layers[0].moe.experts.w_up.mul_(1.5)  # in place: bumps _version
                changed = model(ids).logits
            model.layers[0].moe.experts.w_up.div_(1.5)
        assert torch.equal(first, plain) and torch.equal(again, plain)
        assert not torch.allclose(changed, plain)
        assert all(m._cast_cache is None for m in model.modules() if hasattr(m, "_cast_cache"))
        tokens = generate(model, prompts, max_new_tokens=6, eos_token_id=None, pad_token_id=0)
    # generate() caches casts internally; the same greedy tokens as stepping without the cache
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16), torch.no_grad():
        for p, got in zip(prompts, tokens):
            seq = list(p)
            for _ in range(6):
                seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
            if dtype == torch.float32:
                assert got == seq[len(p):]
            else:  # bf16: cached decoding and full re-forwards differ in rounding, not in kind
                assert len(got) == 6


@pytest.mark.slow
def test_compiled_blocks_match_eager_logits_and_gradients():
    model = _model(seed=5).train()
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(6))
    out = model(ids).logits
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    tr.maybe_compile(model)
    names = [n for n, _ in model.named_parameters()]
    assert names == list(grads)  # compiling in place keeps parameter names (checkpoints, HF export)
    out_c = model(ids).logits
    torch.testing.assert_close(out_c, out, atol=1e-5, rtol=1e-5)
    out_c.square().mean().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], atol=1e-5, rtol=1e-4, msg=n)
