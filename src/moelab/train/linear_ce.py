"""Fused LM head + cross-entropy, chunked over tokens, that never builds the ``[N, V]`` logits.

Why hand-written: the plain path (``F.linear`` → fp32 cast → ``cross_entropy``) writes and reads
the full fp32 logits and their gradient several times — ``[2048, 8192]`` is 64 MB per copy at the
benchmark size; that path's forward + backward took 99 ms on one CPU core against 82 ms here
(benchmarks/RESULTS.md), and its three 64 MB tensors are the largest activations. Here each chunk of
rows computes its logits, log-sum-exp, loss *and* the gradients of the loss with respect to the
hidden states and the head weight while the chunk is still in cache; backward only scales the
stored gradients by the incoming scalar. The matmul count is the same as unfused (one forward,
two backward), and no extra recomputation is needed because the loss is a scalar.

Precision follows autocast: inside a ``torch.autocast`` region the two operands are cast to the
autocast dtype (as ``F.linear`` would be), logits and softmax are fp32, the weight gradient is
accumulated in fp32 across chunks. Legend: N tokens, D model width, V vocabulary, C chunk rows.
"""

from __future__ import annotations

import torch

__all__ = ["CHUNK_ELEMENTS", "GROUP_ELEMENTS", "linear_cross_entropy"]

_IGNORE = -100
CHUNK_ELEMENTS = 1 << 21  # logits elements per chunk: 8 MB in fp32, about one L2/L3 slice
GROUP_ELEMENTS = 1 << 25  # low precision: logit gradients kept for one weight-gradient matmul (64 MB in bf16)


def _compute_dtype(h: torch.Tensor) -> torch.dtype:
    device_type = h.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return h.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h_ND, weight_VD, targets_N, dtype, chunk_rows, reduction):
        n_tokens, vocab = h_ND.shape[0], weight_VD.shape[0]
        device = h_ND.device
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        low_precision = dtype != torch.float32
        # Low precision: the weight gradient of a group of chunks is one matmul and one fp32
        # accumulation; casting and adding a [V, D] product per chunk cost more than its matmul.
        group_rows = chunk_rows * max(1, GROUP_ELEMENTS // (chunk_rows * vocab)) if low_precision else chunk_rows
        with torch.autocast(device_type=device.type, enabled=False):
            h_c_ND, w_c_VD = h_ND.to(dtype), weight_VD.to(dtype)
            valid_N = targets_N != _IGNORE
            safe_targets_N = targets_N.masked_fill(~valid_N, 0)
            # mean over the valid tokens, as F.cross_entropy(reduction="mean") does
            denom = valid_N.sum().clamp_min(1).to(torch.float32) if reduction == "mean" else None
            loss = torch.zeros((), dtype=torch.float32, device=device)
            logits_buf = torch.empty(min(chunk_rows, n_tokens), vocab, dtype=torch.float32, device=device)
            if need_grad:
                grad_h_ND = torch.empty_like(h_c_ND)
                # fp32 accumulates in place (addmm_); low precision is assigned by its first group
                grad_w_VD = None if low_precision else torch.zeros(weight_VD.shape, dtype=torch.float32, device=device)
                group_buf = torch.empty(min(group_rows, n_tokens), vocab, dtype=dtype, device=device) \
                    if low_precision else None
            group_start = 0
            for start in range(0, n_tokens, chunk_rows):
                stop = min(start + chunk_rows, n_tokens)
                rows = stop - start
                hc_CD = h_c_ND[start:stop]
                tc_C, vc_C = safe_targets_N[start:stop], valid_N[start:stop]
                # Softmax with one exp pass, in place in the fp32 buffer (exp dominates the
                # elementwise cost): shift by the row max, exponentiate, sum.
                x_CV = logits_buf[:rows]
                if low_precision:
                    x_CV.copy_(hc_CD @ w_c_VD.T)
                else:
                    torch.mm(hc_CD, w_c_VD.T, out=x_CV)
                max_C = x_CV.amax(dim=-1)
                x_CV.sub_(max_C[:, None])
                shifted_target_C = x_CV.gather(1, tc_C[:, None]).squeeze(1)
                x_CV.exp_()
                sum_C = x_CV.sum(dim=-1)
                loss += torch.where(vc_C, sum_C.log() - shifted_target_C, 0.0).sum()
                if not need_grad:
                    continue
                # d loss / d logits = (exp − one-hot·sum) / sum, × 1/denominator, 0 on ignored rows;
                # the one-hot is subtracted in fp32, before any cast, to keep (p − 1) accurate.
                row_scale_C = vc_C.to(torch.float32)
                if denom is not None:
                    row_scale_C = row_scale_C / denom
                x_CV[torch.arange(rows, device=device), tc_C] -= sum_C
                x_CV.mul_((row_scale_C / sum_C)[:, None])
                if not low_precision:
                    torch.mm(x_CV, w_c_VD, out=grad_h_ND[start:stop])
                    grad_w_VD.addmm_(x_CV.T, hc_CD)
                    continue
                g_CV = group_buf[start - group_start:stop - group_start]
                g_CV.copy_(x_CV)
                torch.mm(g_CV, w_c_VD, out=grad_h_ND[start:stop])
                if stop - group_start == group_rows or stop == n_tokens:
                    part_VD = group_buf[:stop - group_start].T @ h_c_ND[group_start:stop]
                    if grad_w_VD is None:
                        grad_w_VD = part_VD.float()
                    else:
                        grad_w_VD.add_(part_VD)
                    group_start = stop
            if denom is not None:
                loss = loss / denom
            if need_grad and grad_w_VD is None:  # no tokens at all
                grad_w_VD = torch.zeros(weight_VD.shape, dtype=torch.float32, device=device)
        if need_grad:
            ctx.save_for_backward(grad_h_ND, grad_w_VD)
            ctx.input_dtypes = (h_ND.dtype, weight_VD.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h_ND, grad_w_VD = ctx.saved_tensors
        h_dtype, w_dtype = ctx.input_dtypes
        grad_h = (grad_h_ND * grad_loss).to(h_dtype) if ctx.needs_input_grad[0] else None
        grad_w = (grad_w_VD * grad_loss).to(w_dtype) if ctx.needs_input_grad[1] else None
        return grad_h, grad_w, None, None, None, None


def linear_cross_entropy(
    h_BTD: torch.Tensor, weight_VD: torch.Tensor, targets_BT: torch.Tensor, *,
    reduction: str = "mean", chunk_rows: int | None = None,
) -> torch.Tensor:
    """``F.cross_entropy(F.linear(h, weight).float(), targets)`` without materialising the logits.

    ``targets`` equal to -100 are ignored. ``reduction``: "mean" (over the counted tokens) or "sum".
    Returns an fp32 scalar. Gradients flow to ``h`` and ``weight``.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    h_ND = h_BTD.reshape(-1, h_BTD.shape[-1])
    targets_N = targets_BT.reshape(-1)
    if targets_N.shape[0] != h_ND.shape[0]:
        raise ValueError(f"{h_ND.shape[0]} hidden states but {targets_N.shape[0]} targets")
    rows = chunk_rows or max(1, CHUNK_ELEMENTS // weight_VD.shape[0])
    return _LinearCrossEntropy.apply(h_ND, weight_VD, targets_N, _compute_dtype(h_BTD), rows, reduction)
