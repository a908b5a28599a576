"""MoETransformer behaviour: dtypes, causality, KV cache and left padding equal the plain forward."""

import pytest
import torch

from moelab.config import ModelConfig
from moelab.model import KVCache, MoETransformer


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    base = dict(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, num_experts=4, top_k=2, init_std=0.1)
    return MoETransformer(ModelConfig(**{**base, **kw})).eval()


def test_output_contract():
    model = _model()
    out = model(torch.randint(0, 128, (2, 9)))
    assert out.logits.shape == (2, 9, 128) and out.logits.dtype == torch.float32
    assert len(out.router) == 2
    for stats in out.router:
        assert stats.logits_NE.shape == (18, 4) and stats.probs_NE.dtype == torch.float32
        assert stats.topk_idx_NK.shape == (18, 2) and int(stats.expert_counts_E.sum()) == 36


def test_causal():
    model = _model()
    ids = torch.randint(0, 128, (1, 10))
    changed = ids.clone()
    changed[0, 6] = (changed[0, 6] + 1) % 128
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_bf16_autocast_forward_backward_and_bf16_weights():
    model = _model().train()
    ids = torch.randint(0, 128, (2, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids)
    assert out.logits.dtype == torch.float32 and out.router[0].probs_NE.dtype == torch.float32
    out.logits.logsumexp(-1).mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        ref = _model()(ids).logits
        low = _model().to(torch.bfloat16)(ids).logits
    assert low.dtype == torch.float32
    assert (low - ref).abs().max() < 0.2 * ref.abs().max()


def test_kv_cache_incremental_equals_full_forward():
    model = _model(tie_embeddings=True)
    ids = torch.randint(0, 128, (2, 12))
    with torch.no_grad():
        full = model(ids).logits
        cache = KVCache.for_model(model, batch_size=2, max_len=12)
        parts = [model(ids[:, :5], kv_cache=cache).logits]
        parts += [model(ids[:, t : t + 1], kv_cache=cache).logits for t in range(5, 10)]
        parts.append(model(ids[:, 10:], kv_cache=cache).logits)  # a 2-token chunk after single steps
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 12 and cache.seen_B.tolist() == [12, 12]


def test_left_padding_equals_unpadded_rows():
    model = _model(seed=1, n_kv_heads=None)
    rows = [torch.randint(0, 128, (n,)) for n in (7, 3, 5)]
    width = 7
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, width - len(r) :], mask[b, width - len(r) :] = r, 1
    with torch.no_grad():
        padded = model(ids, attention_mask_BT=mask).logits
        assert torch.isfinite(padded).all()
        for b, r in enumerate(rows):
            alone = model(r[None]).logits[0]
            torch.testing.assert_close(padded[b, width - len(r) :], alone, atol=1e-5, rtol=1e-5)
        # and continuing a padded batch through the cache
        cache = KVCache.for_model(model, batch_size=3, max_len=width + 1)
        model(ids, attention_mask_BT=mask, kv_cache=cache)
        nxt = torch.randint(0, 128, (3, 1))
        step = model(nxt, kv_cache=cache).logits
        for b, r in enumerate(rows):
            alone = model(torch.cat([r, nxt[b]])[None]).logits[0, -1]
            torch.testing.assert_close(step[b, 0], alone, atol=1e-5, rtol=1e-5)


def test_explicit_positions_match_default():
    model = _model()
    ids = torch.randint(0, 128, (2, 6))
    with torch.no_grad():
        a = model(ids).logits
        b = model(ids, position_ids_BT=torch.arange(6).expand(2, 6)).logits
        c = model(ids, position_ids_BT=torch.arange(3, 9).expand(2, 6)).logits
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_runs_bf16_autocast():
    model = _model()
    ids = torch.randint(0, 128, (2, 16))
    with torch.no_grad():
        ref = model(ids).logits
        gpu = model.cuda()
        torch.testing.assert_close(gpu(ids.cuda()).logits.cpu(), ref, atol=1e-3, rtol=1e-3)
    gpu.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = gpu(ids.cuda())
    assert out.logits.dtype == torch.float32 and out.router[0].probs_NE.dtype == torch.float32
    out.logits.logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in gpu.parameters())
