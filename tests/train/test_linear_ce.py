"""The fused LM head + cross-entropy equals F.linear + F.cross_entropy, without keeping [N, V]."""

import pytest
import torch
import torch.nn.functional as F

from moelab.train.linear_ce import linear_cross_entropy

B, T, D, V = 3, 37, 16, 101


def _inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    h_BTD = torch.randn(B, T, D, generator=gen, requires_grad=True)
    w_VD = torch.randn(V, D, generator=gen, requires_grad=True)
    y_BT = torch.randint(0, V, (B, T), generator=gen)
    y_BT[0, :5] = -100  # ignored positions
    return h_BTD, w_VD, y_BT


def _reference(h_BTD, w_VD, y_BT, reduction="mean"):
    return F.cross_entropy(F.linear(h_BTD, w_VD).float().flatten(0, 1), y_BT.flatten(), reduction=reduction)


@pytest.mark.parametrize("chunk_rows", [1, 10, 111, 1000])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_and_gradients_equal_the_unfused_path_in_fp32(chunk_rows, reduction):
    h, w, y = _inputs()
    ref = _reference(h, w, y, reduction)
    ref_gh, ref_gw = torch.autograd.grad(ref * 3.0, [h, w])  # a non-unit upstream gradient
    got = linear_cross_entropy(h, w, y, reduction=reduction, chunk_rows=chunk_rows)
    gh, gw = torch.autograd.grad(got * 3.0, [h, w])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(gh, ref_gh, rtol=1e-4, atol=1e-5 * ref_gh.abs().max().item())
    torch.testing.assert_close(gw, ref_gw, rtol=1e-4, atol=1e-5 * ref_gw.abs().max().item())
    assert gh[0, :5].abs().max() == 0  # ignored targets send no gradient


@pytest.mark.parametrize("group_elements", [1 << 25, 40 * V])  # one weight-gradient group, or several
def test_under_bf16_autocast_it_matches_autocast_linear_to_bf16_resolution(group_elements, monkeypatch):
    from moelab.train import linear_ce

    monkeypatch.setattr(linear_ce, "GROUP_ELEMENTS", group_elements)
    h, w, y = _inputs(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = _reference(h, w, y)
        got = linear_cross_entropy(h, w, y, chunk_rows=16)
    ref_gh, ref_gw = torch.autograd.grad(ref, [h, w])
    gh, gw = torch.autograd.grad(got, [h, w])
    assert gh.dtype == h.dtype and gw.dtype == w.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    scale_h, scale_w = ref_gh.abs().max(), ref_gw.abs().max()
    assert (gh - ref_gh).abs().max() <= 1e-2 * scale_h
    assert (gw - ref_gw).abs().max() <= 1e-2 * scale_w


def test_tied_weights_collect_both_gradients():
    """A tied embedding is both looked up and used as the head: autograd must add the two parts."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(V, D)
    ids_BT = torch.randint(0, V, (B, T))
    y_BT = torch.randint(0, V, (B, T))
    ref = _reference(emb(ids_BT), emb.weight, y_BT)
    (ref_g,) = torch.autograd.grad(ref, [emb.weight])
    got = linear_cross_entropy(emb(ids_BT), emb.weight, y_BT)
    (g,) = torch.autograd.grad(got, [emb.weight])
    torch.testing.assert_close(g, ref_g, rtol=1e-5, atol=1e-6)


def test_nothing_of_size_tokens_by_vocabulary_is_kept_for_backward():
    h, w, y = _inputs()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        linear_cross_entropy(h, w, y, chunk_rows=8).backward()
    assert saved and all(V not in shape or D in shape for shape in saved), saved  # [N,D] and [V,D] only
    assert max(torch.Size(s).numel() for s in saved) <= max(B * T * D, V * D)


def test_without_grad_it_only_scores():
    h, w, y = _inputs()
    with torch.no_grad():
        got = linear_cross_entropy(h, w, y, reduction="sum")
    torch.testing.assert_close(got, _reference(h, w, y, "sum").detach(), rtol=1e-6, atol=1e-4)


def test_bad_arguments_are_refused():
    h, w, y = _inputs()
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(h, w, y, reduction="none")
    with pytest.raises(ValueError, match="targets"):
        linear_cross_entropy(h, w, y[:, :-1])


def test_an_empty_batch_gives_zero_loss_and_zero_gradients():
    h = torch.randn(0, D, requires_grad=True)
    w = torch.randn(V, D, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(h, w, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and w.grad.abs().sum() == 0
