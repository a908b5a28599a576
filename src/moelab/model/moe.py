"""Mixtral-style sparse MoE layer: router → dispatcher → grouped experts.

Legend: N tokens (B*T), D d_model, E experts, K top-k, F expert hidden, S = N*K routed slots,
M rows of a grouped matmul (= S, sorted by expert).

Three seams with clear borders:

* :class:`Router` — linear D→E (no bias) in fp32, softmax over all E, top-k; the k weights are
  renormalised to sum to 1 (Mixtral) or are the probabilities themselves (Switch, Qwen-MoE,
  OLMoE): ``ModelConfig.router_norm``. Renormalised at k = 1 the gate is exactly 1 and the router
  gets no gradient from the task, so ``auto`` uses the probability there. Autocast is switched
  off for it: routing decisions are discrete, and bf16 logits flip near-ties.
* :func:`dispatch` — parameter-free: a stable argsort of the flattened expert ids gives the
  permutation that groups the S slots by expert; counts come from a scatter-add (no host sync,
  unlike ``bincount`` on CUDA). No per-token Python loop, no ``.item()``.
* :class:`GroupedExperts` — stacked SwiGLU weights ``w_gate/w_up [E,D,F]``, ``w_down [E,F,D]``
  run through ``torch.nn.functional.grouped_mm`` on the expert-sorted rows; for a handful of
  rows per expert on CPU without autograd (decoding) through ``embedding_bag`` instead, slot by
  slot, with no dispatch at all (:meth:`GroupedExperts.forward_slots`); under CPU bf16, when
  padding every group to the largest costs little (:func:`cpu_max_padding`), as one ``bmm``.

Dropless: every slot is computed, an expert with zero tokens is simply an empty group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class RouterStats(NamedTuple):
    """What one MoE layer reports for losses and metrics (the model itself computes no loss)."""

    logits_NE: torch.Tensor  # fp32 router logits
    probs_NE: torch.Tensor  # fp32 softmax over all E experts
    topk_idx_NK: torch.Tensor  # int64 chosen experts, best first
    expert_counts_E: torch.Tensor  # int64 slots routed to each expert (sums to N*K)


class Routing(NamedTuple):
    logits_NE: torch.Tensor
    probs_NE: torch.Tensor
    weights_NK: torch.Tensor  # fp32 gate of each chosen expert (differentiable)
    idx_NK: torch.Tensor


class Router(nn.Module):
    """Top-k softmax router. The parameter is ``weight [E,D]`` like ``nn.Linear(D, E, bias=False)``.

    ``renormalize``: the gates are the k chosen probabilities divided by their sum (Mixtral, and
    Megatron-Core's default softmax over the top-k logits: the same numbers); otherwise the
    probabilities themselves (Megatron's ``--moe-router-pre-softmax``)."""

    def __init__(self, d_model: int, num_experts: int, top_k: int, renormalize: bool = True):
        super().__init__()
        assert 0 < top_k <= num_experts
        self.top_k = top_k
        self.renormalize = renormalize
        self.weight = nn.Parameter(torch.empty(num_experts, d_model))

    def forward(self, x_ND: torch.Tensor) -> Routing:
        with torch.autocast(device_type=x_ND.device.type, enabled=False):
            logits_NE = F.linear(x_ND.float(), self.weight.float())
        probs_NE = torch.softmax(logits_NE, dim=-1)
        if self.top_k == 1:  # max is topk(1) exactly, and 1.1-12x faster on CPU (2048 tokens x 16 experts: 22 vs 256 us)
            top_NK, idx_NK = probs_NE.max(dim=-1, keepdim=True)
        elif iterative_top_k(probs_NE, self.top_k):
            idx_NK = top_k_by_max(probs_NE.detach(), self.top_k)
            top_NK = probs_NE.gather(-1, idx_NK)  # topk's values, with topk's backward (a scatter)
        else:
            top_NK, idx_NK = torch.topk(probs_NE, self.top_k, dim=-1)
        weights_NK = top_NK / top_NK.sum(dim=-1, keepdim=True) if self.renormalize else top_NK
        return Routing(logits_NE, probs_NE, weights_NK, idx_NK)


# CPU top-k by k rounds of max (top_k_by_max) instead of torch.topk, from this many router
# probabilities (N * E) on, for k ≤ 4 and k ≤ E/4. Why: torch 2.13's CPU topk costs ≈ 7x more
# per element from 32,768 elements on (measured at one thread and at two: its cost steps up there),
# where max reduces all rows at once. Measured 2026-12-02 on a Zen 5 EPYC (CPU family 26 model 2),
# medians of 30 calls, topk / rounds of max in ms, one thread: N 2048 — E16 k2 0.29 / 0.10,
# E16 k4 0.35 / 0.29, E32 k2 0.63 / 0.20, E64 k2 1.15 / 0.33, E64 k4 1.25 / 0.68, E64 k8
# 1.53 / 1.40 (even, hence k ≤ 4); N 4096 — E8 k2 0.23 / 0.15, E8 k4 0.31 / 0.40 (hence
# k ≤ E/4); below 32,768 topk wins or ties everywhere measured (N 16–2048: e.g. N 2048 E8 k2
# 0.043 / 0.043, N 1024 E16 k2 0.034 / 0.047; decoding-sized N ≤ 128: 0.004–0.024 against
# 0.011–0.098). Two threads: the same picture (N 2048 E64 k4 0.75 / 0.50, E16 k2 0.29 / 0.07).
# Measured on one CPU (Zen 5) only: elsewhere the crossover may move; the routing does not.
_CPU_ITERATIVE_TOPK_MIN_ELEMENTS = 32768
_CPU_ITERATIVE_TOPK_MAX_K = 4


def iterative_top_k(probs_NE: torch.Tensor, top_k: int) -> bool:
    """Whether the router takes :func:`top_k_by_max` for this call (CPU, large enough, small k)."""
    return (probs_NE.device.type == "cpu" and 2 <= top_k <= _CPU_ITERATIVE_TOPK_MAX_K
            and 4 * top_k <= probs_NE.shape[-1] and probs_NE.numel() >= _CPU_ITERATIVE_TOPK_MIN_ELEMENTS)


def top_k_by_max(probs_NE: torch.Tensor, top_k: int) -> torch.Tensor:
    """int64 ``[N,K]`` indices of the k largest probabilities per row, best first: k rounds of
    ``max``, each knocking out the winner (probabilities are ≥ 0, so -1 is below all of them).

    The same experts in the same order as ``torch.topk`` whenever a row has no exact ties among
    its k+1 largest values; on a tie it takes the lower expert id first (as ``max`` does, and as
    the top-1 path already does), where CPU topk's order among equal values is unspecified.
    """
    rest_NE = probs_NE.clone()
    idx = []
    for j in range(top_k):
        _, idx_N1 = rest_NE.max(dim=-1, keepdim=True)  # measured faster than argmax here
        idx.append(idx_N1)
        if j + 1 < top_k:
            rest_NE.scatter_(-1, idx_N1, -1.0)
    return torch.cat(idx, dim=-1)


class Dispatch(NamedTuple):
    order_S: torch.Tensor  # slot ids (n*K + k) sorted by expert, stable
    token_S: torch.Tensor  # token of each sorted slot
    counts_E: torch.Tensor  # int64 slots per expert
    offs_E: torch.Tensor  # int32 cumulative group sizes (grouped_mm group ends), padding included
    # With row padding (``row_align > 1``): the grouped-matmul row of each slot, in slot order,
    # and the token each of the R rows reads (padding rows read token 0). None without padding.
    row_of_slot_S: torch.Tensor | None = None
    token_R: torch.Tensor | None = None
    # Rows per expert when every group was padded to the same size (see ``max_padding``), else None.
    capacity: int | None = None


def expert_counts(idx_NK: torch.Tensor, num_experts: int) -> torch.Tensor:
    """int64 slots routed to each expert, from a scatter-add (no host sync, unlike ``bincount``)."""
    expert_S = idx_NK.reshape(-1)
    counts_E = torch.zeros(num_experts, dtype=torch.long, device=idx_NK.device)
    return counts_E.scatter_add_(0, expert_S, torch.ones_like(expert_S))


def dispatch(idx_NK: torch.Tensor, num_experts: int, row_align: int = 1, max_padding: float | None = None) -> Dispatch:
    """Group the N*K routed slots by expert without host synchronisation.

    ``row_align > 1`` rounds every expert's group up to a multiple of ``row_align`` rows (one
    host sync for the total, so meant for CPU). Why: on CPU, bf16 ``grouped_mm`` runs one oneDNN
    matmul per expert, and oneDNN JIT-compiles a kernel for every new row count (≈0.3 ms each,
    measured); routing changes every step, so exact group sizes keep missing its cache (≈60 ms
    of a 0.5 s step at the issue-7 reference size). Padded sizes take a few dozen values. The
    padding rows are real tokens' rows whose outputs are never read: their gradient is zero,
    so they add exactly nothing to any weight or input gradient.

    ``max_padding`` (with ``row_align > 1``): if padding *every* group to the largest one costs
    at most this many rows per routed slot, do so and set ``capacity`` — the experts then run
    as one batched matmul over ``[E, capacity, D]`` (see :meth:`GroupedExperts.forward`). One
    more host sync (the largest group).
    """
    top_k = idx_NK.shape[-1]
    expert_S = idx_NK.reshape(-1)
    # Stable, so slots of one expert keep token order: results do not depend on sort internals.
    order_S = torch.argsort(expert_S, stable=True)
    token_S = torch.div(order_S, top_k, rounding_mode="floor")
    counts_E = expert_counts(idx_NK, num_experts)
    if row_align == 1:
        return Dispatch(order_S, token_S, counts_E, counts_E.cumsum(0).to(torch.int32))
    sizes_E = torch.div(counts_E + row_align - 1, row_align, rounding_mode="floor") * row_align
    capacity = None
    if max_padding is not None:
        largest = int(sizes_E.max())
        if largest * num_experts <= max_padding * expert_S.numel():
            capacity = largest
            sizes_E = torch.full_like(sizes_E, largest)
    ends_E = sizes_E.cumsum(0)
    shift_E = (ends_E - sizes_E) - (counts_E.cumsum(0) - counts_E)  # padded start - packed start
    row_S = torch.arange(expert_S.numel(), device=idx_NK.device) + shift_E[expert_S[order_S]]
    row_of_slot_S = torch.empty_like(row_S).index_copy_(0, order_S, row_S)
    token_R = torch.zeros(int(ends_E[-1]), dtype=token_S.dtype, device=idx_NK.device)
    token_R.index_copy_(0, row_S, token_S)
    return Dispatch(order_S, token_S, counts_E, ends_E.to(torch.int32), row_of_slot_S, token_R, capacity)


def grouped_matmul(x_MI: torch.Tensor, w_EIO: torch.Tensor, offs_E: torch.Tensor) -> torch.Tensor:
    """Rows ``x[offs[e-1]:offs[e]] @ w[e]`` for every expert e, as one ``grouped_mm`` call.

    ``grouped_mm`` (torch 2.13) runs on CPU and CUDA for fp32/bf16/fp16, forward and backward,
    with empty groups; on CUDA its fast kernel is bf16 on SM90+, other dtypes take torch's own
    fallback. It requires every row stride to be a multiple of 16 bytes, so unaligned I/O
    widths are zero-padded here (exact: zero columns add nothing, padded outputs are sliced off).
    """
    rows, width_in = x_MI.shape
    width_out = w_EIO.shape[-1]
    align = 16 // x_MI.element_size()
    pad_in, pad_out = -width_in % align, -width_out % align
    if pad_in or pad_out:
        x_MI = F.pad(x_MI, (0, pad_in))
        w_EIO = F.pad(w_EIO, (0, pad_out, 0, pad_in))
    if torch.compiler.is_compiling() and (x_MI.dtype != torch.bfloat16 or x_MI.device.type == "cpu"):
        out_MO = _grouped_mm_outside_compile(x_MI.contiguous(), w_EIO.contiguous(), offs_E)
    else:
        out_MO = F.grouped_mm(x_MI.contiguous(), w_EIO.contiguous(), offs=offs_E)
    return out_MO[:, :width_out] if pad_out else out_MO


@torch.compiler.disable
def _grouped_mm_outside_compile(x_MI: torch.Tensor, w_EIO: torch.Tensor, offs_E: torch.Tensor) -> torch.Tensor:
    # torch 2.13's shape function for grouped_mm accepts bf16 only, so under torch.compile the
    # other dtypes run eagerly here (a graph break; the kernels themselves support them).
    return F.grouped_mm(x_MI, w_EIO, offs=offs_E)


# On CPU, layers averaging fewer routed rows per expert than this are "few-row": without autograd
# (decoding) they take the embedding-bag path, with autograd under autocast their grouped
# matmuls keep the fp32 weights (see compute_dtype, forward_slots). Measured at the issue-7
# reference size (E=16, D=256, F=512, one core): the embedding-bag path beats grouped_mm up to
# ≈6 rows per expert in fp32 and ≈12 with cached bf16 weights; bf16 grouped_mm catches up with
# fp32 at ≈8 rows.
_CPU_MIN_ROWS_PER_EXPERT = 8
# Under CPU bf16, expert groups are padded to a multiple of this many rows (see dispatch).
_CPU_ROW_ALIGN = 32


# What one expert's three oneDNN products (forward, both gradients) cost on CPU in bf16 beyond
# their arithmetic, in FLOPs of batched-matmul work: ≈0.04 ms per expert at ≈350 GFLOP/s,
# i.e. ≈14 MFLOP (measured, see cpu_max_padding); half of it is used, for a margin.
_CPU_BF16_EXPERT_OVERHEAD_FLOPS = 7e6


def cpu_max_padding(num_experts: int, num_slots: int, d_model: int, hidden: int) -> float:
    """How many padded rows per routed slot the batched (equal-group, ``bmm``) expert path may
    cost on CPU in bf16 before the ragged ``grouped_mm`` is used instead.

    Why: CPU bf16 ``grouped_mm`` runs one oneDNN matmul per expert, with a fixed cost per
    expert that dominates for the presets' small experts; one ``bmm`` over equal groups pays it
    once but computes the padding. The batched path wins while its extra FLOPs,
    ``(padding - 1) · 6·S·D·F``, cost less than the ragged path's ``E`` per-expert overheads.
    Measured (forward + backward of one projection, one core, torch 2.13, Zen 5; crossover
    padding where ``bmm`` stops winning): D64 F128 S2048 — 1.5 / 1.9 / 2.9 / 6.4 at E = 4 / 8 /
    16 / 64; D128 F256 S4096 — 1.2 / 1.25 / 1.5 / 2.3; D32 F32 S8192 — 1.6 / 2.3 / 3.9 / 9.7.
    The model with the full overhead predicts these within ≈ 30 %; with half of it, it stays
    below all of them but the last (9.9 against 9.7, where the two paths are even). Measured on
    one CPU (Zen 5) only; the margin is there for CPUs whose per-call cost differs.
    """
    work = 6.0 * num_slots * d_model * hidden
    return 1.0 + num_experts * _CPU_BF16_EXPERT_OVERHEAD_FLOPS / work


class GroupedExperts(nn.Module):
    """E SwiGLU experts stored as stacked tensors: ``(silu(x@w_gate) * (x@w_up)) @ w_down``."""

    def __init__(self, num_experts: int, d_model: int, hidden: int):
        super().__init__()
        self.w_gate = nn.Parameter(torch.empty(num_experts, d_model, hidden))
        self.w_up = nn.Parameter(torch.empty(num_experts, d_model, hidden))
        self.w_down = nn.Parameter(torch.empty(num_experts, hidden, d_model))
        self._cast_cache: dict | None = None  # see cached_weight_casts

    def few_rows(self, device: torch.device, num_rows: int) -> bool:
        """A handful of routed rows per expert on CPU (decoding)."""
        return device.type == "cpu" and num_rows < _CPU_MIN_ROWS_PER_EXPERT * self.w_gate.shape[0]

    def uses_slot_path(self, device: torch.device, num_rows: int) -> bool:
        """Whether :meth:`forward_slots` serves this call: few rows on CPU, outside autograd."""
        return self.few_rows(device, num_rows) and not torch.is_grad_enabled()

    def compute_dtype(self, device: torch.device, num_rows: int) -> torch.dtype:
        """grouped_mm has no autocast rule, so apply autocast's choice by hand — except for
        grouped matmuls on CPU with a few rows per expert (small batches under autograd), where
        the stored fp32 weights are used: CPU bf16 matmul kernels repack the weight on every
        call, which makes them slower than fp32 for a handful of rows (measured, torch 2.13),
        and fp32 is what autocast falls back to anyway. The embedding-bag path (few rows, no
        autograd: decoding) takes autocast's dtype; under :func:`cached_weight_casts` its
        weights are cast once per generation, and the bf16 copies halve every step's weight
        traffic. The cache never changes the dtype, only how often the casts are made."""
        if not torch.is_autocast_enabled(device.type):
            return self.w_gate.dtype
        if self.few_rows(device, num_rows) and torch.is_grad_enabled():
            return self.w_gate.dtype
        return torch.get_autocast_dtype(device.type)

    def row_align(self, device: torch.device, dtype: torch.dtype) -> int:
        """Group-size multiple for :func:`dispatch`: only CPU bf16/fp16 runs through oneDNN's
        per-shape kernels (fp32 goes to MKL, CUDA has one grouped kernel)."""
        return _CPU_ROW_ALIGN if device.type == "cpu" and dtype in (torch.bfloat16, torch.float16) else 1

    def weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``w_gate, w_up, w_down`` in ``dtype``.

        Under :func:`cached_weight_casts` and without autograd, the cast copies are kept and
        reused until a weight changes (in-place updates bump ``_version``): decoding reads every
        weight once per token, and re-casting all of them each step would double that traffic.
        """
        ws = (self.w_gate, self.w_up, self.w_down)
        if ws[0].dtype == dtype:
            return ws
        cache = self._cast_cache
        if cache is None or torch.is_grad_enabled():
            return tuple(w.to(dtype) for w in ws)
        key = (dtype, tuple((w._version, w.data_ptr()) for w in ws))
        if cache.get("key") != key:
            cache.clear()
            cache["weights"] = tuple(w.detach().to(dtype) for w in ws)
            cache["key"] = key
        return cache["weights"]

    def forward(self, x_MD: torch.Tensor, offs_E: torch.Tensor, capacity: int | None = None) -> torch.Tensor:
        """``x_MD`` rows sorted by expert, ``offs_E`` their cumulative int32 counts; with
        ``capacity``, every expert has exactly that many rows and the experts run as ``bmm``."""
        dtype = self.compute_dtype(x_MD.device, x_MD.shape[0])
        w_gate, w_up, w_down = self.weights(dtype)
        x_MD = x_MD.to(dtype)
        if capacity is not None:
            x_ECD = x_MD.view(w_gate.shape[0], capacity, -1)
            h_ECF = F.silu(torch.bmm(x_ECD, w_gate)) * torch.bmm(x_ECD, w_up)
            return torch.bmm(h_ECF, w_down).view(x_MD.shape[0], -1)
        gate_MF = grouped_matmul(x_MD, w_gate, offs_E)
        up_MF = grouped_matmul(x_MD, w_up, offs_E)
        return grouped_matmul(F.silu(gate_MF) * up_MF, w_down, offs_E)

    def forward_slots(self, x_SD: torch.Tensor, expert_S: torch.Tensor) -> torch.Tensor:
        """Row ``s`` through expert ``expert_S[s]``, rows in any order (no dispatch), no autograd.

        Each row's matrix-vector products are weighted sums of its expert's weight rows, which
        is what ``embedding_bag(mode="sum", per_sample_weights=x)`` computes over the stacked
        weights viewed as tables ``[E*D, F]`` and ``[E*F, D]``. Why not matmuls: with a few rows
        per expert the step is bound by streaming the hit experts' weights, and
        the CPU matmul kernels stream them at ≈24 GB/s where embedding_bag reaches about
        twice that (measured at the issue-7 reference size: 0.29 ms per layer in bf16 against
        0.79 ms for grouped_mm in fp32, the previous decoding path). Sums run in fp32 for
        bf16 tables too; the output has the compute dtype.
        """
        assert not torch.is_grad_enabled()
        dtype = self.compute_dtype(x_SD.device, x_SD.shape[0])
        w_gate, w_up, w_down = self.weights(dtype)
        E, D, Fh = w_gate.shape
        x_SD = x_SD.to(dtype)
        rows_SD = expert_S[:, None] * D + torch.arange(D, device=x_SD.device)
        rows_SF = expert_S[:, None] * Fh + torch.arange(Fh, device=x_SD.device)
        # Off autocast: it would run embedding_bag's tables in fp32 whatever their dtype.
        with torch.autocast(device_type=x_SD.device.type, enabled=False):
            gate_SF = F.embedding_bag(rows_SD, w_gate.reshape(E * D, Fh), mode="sum", per_sample_weights=x_SD)
            up_SF = F.embedding_bag(rows_SD, w_up.reshape(E * D, Fh), mode="sum", per_sample_weights=x_SD)
            h_SF = F.silu(gate_SF) * up_SF
            return F.embedding_bag(rows_SF, w_down.reshape(E * Fh, D), mode="sum", per_sample_weights=h_SF)


@contextlib.contextmanager
def cached_weight_casts(model: nn.Module) -> Iterator[None]:
    """Within this block, autocast copies of expert weights are made once, not every forward
    (only outside autograd; the copies are dropped on exit). Autocast's own cache does the same
    for ``nn.Linear`` weights within one autocast region."""
    experts = [m for m in model.modules() if isinstance(m, GroupedExperts)]
    saved = [m._cast_cache for m in experts]
    for m in experts:
        m._cast_cache = {}
    try:
        yield
    finally:
        for m, old in zip(experts, saved):
            m._cast_cache = old


class MoE(nn.Module):
    """Dropless top-k MoE FFN. ``num_experts=1, top_k=1`` is exactly a dense SwiGLU FFN, in outputs
    and gradients, with either gate: the softmax of one logit is exactly 1, with zero gradient."""

    def __init__(self, d_model: int, num_experts: int, top_k: int, hidden: int, renormalize: bool = True):
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k
        self.router = Router(d_model, num_experts, top_k, renormalize)
        self.experts = GroupedExperts(num_experts, d_model, hidden)

    def forward(self, x_BTD: torch.Tensor) -> tuple[torch.Tensor, RouterStats]:
        B, T, D = x_BTD.shape
        x_ND = x_BTD.reshape(-1, D)
        route = self.router(x_ND)
        num_slots = x_ND.shape[0] * self.top_k
        if self.experts.uses_slot_path(x_ND.device, num_slots):  # decoding on CPU
            y_SD = self.experts.forward_slots(x_ND.repeat_interleave(self.top_k, 0), route.idx_NK.reshape(-1))
            counts_E = expert_counts(route.idx_NK, self.num_experts)
            return self._combine(y_SD, route, counts_E, (B, T, D))
        dtype = self.experts.compute_dtype(x_ND.device, num_slots)
        align = self.experts.row_align(x_ND.device, dtype)
        pad = None
        if align > 1 and not torch.compiler.is_compiling():  # its group size is data-dependent
            pad = cpu_max_padding(self.num_experts, num_slots, D, self.experts.w_gate.shape[-1])
        plan = dispatch(route.idx_NK, self.num_experts, align, pad)
        # Cast before the gather: N rows to convert instead of N*K. Gathers use index_select, not
        # x[idx]: on CPU its backward (index_add_) is faster than indexing's accumulating
        # index_put_, ≈5% of the issue-7 reference training step.
        x_ND = x_ND.to(dtype)
        if plan.token_R is None:
            h_SD = self.experts(x_ND.index_select(0, plan.token_S), plan.offs_E)
            # Un-permute back to (token, k) slot order and reduce over k, instead of an index_add_
            # into tokens: same sum, but deterministic on GPU (no float atomics) and each slot's
            # weight stays a plain differentiable multiply — the router's gradient path.
            y_SD = torch.empty_like(h_SD).index_copy(0, plan.order_S, h_SD)
        else:
            h_RD = self.experts(x_ND.index_select(0, plan.token_R), plan.offs_E, plan.capacity)
            y_SD = h_RD.index_select(0, plan.row_of_slot_S)  # slot order, padding rows dropped
        return self._combine(y_SD, route, plan.counts_E, (B, T, D))

    def _combine(self, y_SD: torch.Tensor, route: Routing, counts_E: torch.Tensor, shape_BTD) -> tuple[torch.Tensor, RouterStats]:
        """Weight each token's k expert outputs (slot order ``n*K + k``) and sum them.

        A chain of ``addcmul`` over k rather than a broadcast multiply and ``sum(dim=1)``: CPU
        bf16 reductions over a middle dimension are slow (1.0 against 0.16 ms forward for
        N=2048, K=2, D=256; ≈0.8 % of the issue-7 reference training step, A/B in one process).
        """
        y_NKD = y_SD.view(-1, self.top_k, shape_BTD[-1])
        w_NK = route.weights_NK.to(y_NKD.dtype)
        y_ND = y_NKD[:, 0] * w_NK[:, :1]
        for k in range(1, self.top_k):
            y_ND = torch.addcmul(y_ND, y_NKD[:, k], w_NK[:, k : k + 1])
        stats = RouterStats(route.logits_NE, route.probs_NE, route.idx_NK, counts_E)
        return y_ND.view(shape_BTD), stats
