"""Mixtral-style decoder-only MoE Transformer (pre-norm, RoPE, grouped-KV attention, SwiGLU experts).

Legend: B batch, T new tokens, S keys (cached + new), D d_model, V vocab, H heads,
Hkv kv-heads, Dh head dim, L layers.

Semantics follow Hugging Face ``MixtralForCausalLM`` (so checkpoints convert both ways, see
``moelab.interop.hf``): RMSNorm computed in fp32, RoPE in the rotate-half convention with
``inv_freq = theta^(-2i/Dh)``, attention scale ``Dh^-0.5``, no biases anywhere.

The model returns logits and router statistics; losses live with training.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from moelab.config import ModelConfig
from moelab.model.moe import MoE, RouterStats

if TYPE_CHECKING:
    from moelab.model.generate import KVCache


class ModelOutput(NamedTuple):
    logits: torch.Tensor | None  # [B,T,V] fp32; None when a ``head_fn`` replaced the LM head
    router: list[RouterStats]  # one per layer
    head: Any = None  # what ``head_fn`` returned, if one was given


class RMSNorm(nn.Module):
    """RMSNorm normalising in fp32 and scaling in the input dtype, exactly as HF Mixtral does.

    Hand-written rather than ``nn.RMSNorm`` because that one keeps the input dtype throughout,
    which drifts from HF for bf16 weights.
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RMSNorm.apply(x, self.weight, self.eps)


class _RMSNorm(torch.autograd.Function):
    """``weight * (x * rsqrt(mean(x²) + eps)).to(x.dtype)`` with x in fp32, and its analytic
    backward: ``dx = r·g − x·r³·mean(g⊙x)`` for ``g = dy⊙weight``, ``r = rsqrt(mean(x²) + eps)``.

    Hand-written because autograd through the six elementwise ops takes about twice the passes
    over the ``[N, D]`` activations (measured ≈2× faster forward + backward on one CPU core).
    """

    @staticmethod
    def forward(ctx, x, weight, eps):
        x32 = x.float()
        r_N1 = torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, r_N1)
        return weight * (x32 * r_N1).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, r_N1 = ctx.saved_tensors
        x32 = x.float()
        grad_w = None
        if ctx.needs_input_grad[1]:
            normed = (x32 * r_N1).to(x.dtype)
            grad_w = (grad_y * normed).reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)
        grad_n = (grad_y * weight).float()
        coef_N1 = (grad_n * x32).mean(-1, keepdim=True) * r_N1.pow(3)
        grad_x = (grad_n * r_N1).sub_(x32 * coef_N1)
        return grad_x.to(x.dtype), grad_w, None


def rope_cos_sin(position_ids_BT: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 ``cos, sin [B,T,Dh]`` for the rotate-half RoPE convention.

    Computed per forward from the positions (cheap) rather than kept as a buffer, so a model
    built on the meta device and materialised later needs no buffer re-initialisation.
    """
    device = position_ids_BT.device
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    freqs_BTd = position_ids_BT[..., None].float() * inv_freq
    emb_BTDh = torch.cat((freqs_BTd, freqs_BTd), dim=-1)
    return emb_BTDh.cos(), emb_BTDh.sin()


def apply_rope(x_BHTDh: torch.Tensor, cos_BTDh: torch.Tensor, sin_BTDh: torch.Tensor) -> torch.Tensor:
    """Rotate q or k; done in fp32 and cast back so bf16 positions stay exact."""
    return _Rope.apply(x_BHTDh, cos_BTDh[:, None], sin_BTDh[:, None])


def _rotate_fp32(x_BHTDh: torch.Tensor, cos_B1TDh: torch.Tensor, sin_B1TDh: torch.Tensor, sign: float) -> torch.Tensor:
    """``x*cos + sign * rotate_half(x)*sin`` in fp32, where rotate_half(x) = cat(-x2, x1)."""
    half = x_BHTDh.shape[-1] // 2
    x32 = x_BHTDh.float()
    out = x32 * cos_B1TDh
    out[..., :half].addcmul_(x32[..., half:], sin_B1TDh[..., :half], value=-sign)
    out[..., half:].addcmul_(x32[..., :half], sin_B1TDh[..., half:], value=sign)
    return out


class _Rope(torch.autograd.Function):
    """RoPE with its analytic backward: the gradient of a rotation by θ is a rotation by −θ.

    Hand-written because autograd through ``cat``/``neg``/two products takes twice the passes
    over q and k (≈1.0 vs 0.5 ms forward + backward per call at B=8, H=4, T=256, Dh=64 on
    one CPU core, about 4 ms of the issue-7 reference training step).
    """

    @staticmethod
    def forward(ctx, x_BHTDh, cos_B1TDh, sin_B1TDh):
        ctx.save_for_backward(cos_B1TDh, sin_B1TDh)
        return _rotate_fp32(x_BHTDh, cos_B1TDh, sin_B1TDh, 1.0).to(x_BHTDh.dtype)

    @staticmethod
    def backward(ctx, grad_BHTDh):
        cos_B1TDh, sin_B1TDh = ctx.saved_tensors
        return _rotate_fp32(grad_BHTDh, cos_B1TDh, sin_B1TDh, -1.0).to(grad_BHTDh.dtype), None, None


def attention_mask(key_valid_BS: torch.Tensor, query_slot_T: torch.Tensor) -> torch.Tensor:
    """Boolean ``[B,1,T,S]`` mask (True = attend): causal in cache slots, padding keys hidden.

    Every query may also see itself, so a padding query never has an empty row (an all-masked
    softmax gives NaN, and a NaN value vector poisons other rows through ``0 * NaN``).
    """
    key_slot_S = torch.arange(key_valid_BS.shape[1], device=key_valid_BS.device)
    causal_TS = key_slot_S[None, :] <= query_slot_T[:, None]
    self_TS = key_slot_S[None, :] == query_slot_T[:, None]
    allowed_BTS = (causal_TS[None] & key_valid_BS[:, None, :].bool()) | self_TS[None]
    return allowed_BTS[:, None]


def attend(
    q_BHTDh: torch.Tensor, k_BHSDh: torch.Tensor, v_BHSDh: torch.Tensor, mask_B1TS: torch.Tensor | None
) -> torch.Tensor:
    """Scaled dot-product attention, ``[B,H,T,Dh]``; k/v may have fewer (grouped) heads.

    No mask means every key is real: causal for a fresh block of T > 1 tokens, and a single new
    token (decoding) attends to all cached keys (``is_causal`` would wrongly align it to key 0).

    On CPU in bf16, torch 2.13's flash kernel is slow (measured on a Zen 5 EPYC): ~5x slower
    than fp32 for a single query, so decoding upcasts the query and the cached keys/values; and
    for blocks of queries :func:`matmul_attention` is ~2.3x faster, forward + backward.
    """
    H, T = q_BHTDh.shape[1], q_BHTDh.shape[2]
    gqa = H != k_BHSDh.shape[1]
    causal = mask_B1TS is None and T > 1
    if q_BHTDh.device.type == "cpu" and q_BHTDh.dtype == torch.bfloat16:
        if T > 1:
            return matmul_attention(q_BHTDh, k_BHSDh, v_BHSDh, mask_B1TS)
        with torch.autocast("cpu", enabled=False):
            o_BHTDh = F.scaled_dot_product_attention(
                q_BHTDh.float(), k_BHSDh.float(), v_BHSDh.float(), attn_mask=mask_B1TS, enable_gqa=gqa
            )
        return o_BHTDh.to(q_BHTDh.dtype)
    if gqa and mask_B1TS is not None:
        # With an explicit mask, CUDA's memory-efficient kernel is the fast one, and it
        # does not take enable_gqa; repeating the (small, inference-time) kv is cheaper
        # than the math fallback.
        rep = H // k_BHSDh.shape[1]
        k_BHSDh = k_BHSDh.repeat_interleave(rep, dim=1)
        v_BHSDh = v_BHSDh.repeat_interleave(rep, dim=1)
        gqa = False
    return F.scaled_dot_product_attention(
        q_BHTDh, k_BHSDh, v_BHSDh, attn_mask=mask_B1TS, is_causal=causal, enable_gqa=gqa
    )


def matmul_attention(
    q_BHTDh: torch.Tensor, k_BHSDh: torch.Tensor, v_BHSDh: torch.Tensor, mask_B1TS: torch.Tensor | None
) -> torch.Tensor:
    """Attention as two batched matmuls around an fp32 softmax, for bf16 blocks on CPU.

    The numerics of HF's eager attention: scores from a bf16 matmul (fp32 accumulation, one
    rounding to bf16), softmax in fp32, probabilities rounded to bf16 for the value matmul.
    The softmax's backward works from those bf16 probabilities.
    Written out because torch 2.13's CPU flash kernel takes ~24 ms forward + backward for
    B=8, H=4, T=256, Dh=64 in bf16 where these ops take ~10 ms with autograd as is. The
    causal/padding mask enters as an additive -inf bias inside ``baddbmm`` (no separate pass).
    No mask means causal with S == T.
    """
    B, H, T, Dh = q_BHTDh.shape
    S = k_BHSDh.shape[2]
    rep = H // k_BHSDh.shape[1]
    if rep > 1:
        k_BHSDh = k_BHSDh.repeat_interleave(rep, dim=1)
        v_BHSDh = v_BHSDh.repeat_interleave(rep, dim=1)
    if mask_B1TS is None:
        bias_XTS = _causal_bias(T, q_BHTDh.dtype, q_BHTDh.device)  # X = 1, broadcast over B*H
    else:
        bias_B1TS = torch.zeros(mask_B1TS.shape, dtype=q_BHTDh.dtype, device=q_BHTDh.device)
        bias_B1TS.masked_fill_(~mask_B1TS, float("-inf"))
        bias_XTS = bias_B1TS.expand(B, H, T, S).reshape(B * H, T, S)
    q_XTDh = q_BHTDh.reshape(B * H, T, Dh)
    k_XSDh = k_BHSDh.reshape(B * H, S, Dh)
    v_XSDh = v_BHSDh.reshape(B * H, S, Dh)
    scores_XTS = torch.baddbmm(bias_XTS, q_XTDh, k_XSDh.transpose(1, 2), alpha=Dh**-0.5)
    # The bf16 softmax kernel computes in fp32 and rounds once: bitwise the fp32 softmax cast to
    # bf16, in 1.5 ms forward + backward instead of 2.8 for the explicit casts (B=8, H=4, T=256,
    # one CPU core); its backward reads the bf16 probabilities. (softmax(bf16, dtype=float32)
    # is ~8x slower than either on CPU, torch 2.13.)
    probs_XTS = torch.softmax(scores_XTS, dim=-1)
    return torch.bmm(probs_XTS, v_XSDh).view(B, H, T, Dh)


@functools.lru_cache(maxsize=8)
def _causal_bias(T: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[1,T,T]`` additive causal mask (0 on and below the diagonal, -inf above), cached."""
    return torch.full((T, T), float("-inf"), dtype=dtype, device=device).triu(1)[None]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_dim
        d = cfg.d_model
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)

    def forward(
        self,
        x_BTD: torch.Tensor,
        cos_BTDh: torch.Tensor,
        sin_BTDh: torch.Tensor,
        *,
        mask_B1TS: torch.Tensor | None,
        kv_cache: KVCache | None,
        layer_idx: int,
        cache_start: int,
    ) -> torch.Tensor:
        B, T, _ = x_BTD.shape
        q_BHTDh = self.q_proj(x_BTD).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k_BHTDh = self.k_proj(x_BTD).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v_BHTDh = self.v_proj(x_BTD).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q_BHTDh = apply_rope(q_BHTDh, cos_BTDh, sin_BTDh)
        k_BHTDh = apply_rope(k_BHTDh, cos_BTDh, sin_BTDh)
        if kv_cache is not None:
            k_BHTDh, v_BHTDh = kv_cache.update(layer_idx, k_BHTDh, v_BHTDh, cache_start)
        o_BHTDh = attend(q_BHTDh, k_BHTDh, v_BHTDh, mask_B1TS)
        return self.o_proj(o_BHTDh.transpose(1, 2).reshape(B, T, -1))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.rms_eps)
        self.attn = Attention(cfg)
        self.moe_norm = RMSNorm(cfg.d_model, cfg.rms_eps)
        self.moe = MoE(cfg.d_model, cfg.num_experts, cfg.top_k, cfg.ffn_hidden, cfg.renormalize_gate)

    def forward(self, x_BTD: torch.Tensor, cos_BTDh, sin_BTDh, **attn_kw) -> tuple[torch.Tensor, RouterStats]:
        h_BTD = x_BTD + self.attn(self.attn_norm(x_BTD), cos_BTDh, sin_BTDh, **attn_kw)
        y_BTD, stats = self.moe(self.moe_norm(h_BTD))
        return h_BTD + y_BTD, stats


class MoETransformer(nn.Module):
    """Token embedding → L × [attention, MoE] blocks → final RMSNorm → (untied) LM head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.rms_eps)
        # Tied: no lm_head module at all, so parameter names/counts match accounting and HF.
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.init_weights(cfg.init_std, cfg.depth_scaled_init)

    @torch.no_grad()
    def init_weights(self, std: float, depth_scaled: bool = False) -> None:
        """normal(0, std) for every matrix, ones for norms. ``depth_scaled``: the matrices that write
        into the residual stream (attention ``o_proj``, expert ``w_down``) get std / sqrt(2 L), as
        Megatron-Core's ``output_layer_init_method`` (so the paper's runs: 0.02 / sqrt(32) = 0.0035
        at 16 layers), which keeps the residual stream's variance from growing with depth."""
        out_std = std / math.sqrt(2 * len(self.layers)) if depth_scaled else std
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(("attn.o_proj.weight", "experts.w_down")):
                p.normal_(0.0, out_std)
            else:
                p.normal_(0.0, std)

    @property
    def lm_weight_VD(self) -> torch.Tensor:
        """The output projection (the embedding when tied)."""
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def lm_logits(self, h_BTD: torch.Tensor) -> torch.Tensor:
        """fp32 logits from final-normed hidden states."""
        return F.linear(h_BTD, self.lm_weight_VD).float()

    def hidden_states(
        self,
        input_ids_BT: torch.Tensor,
        *,
        attention_mask_BT: torch.Tensor | None = None,
        position_ids_BT: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, list[RouterStats]]:
        """Final-normed hidden states ``[B,T,D]`` and router stats; see :meth:`forward`."""
        B, T = input_ids_BT.shape
        device = input_ids_BT.device
        start = 0 if kv_cache is None else kv_cache.length
        steps_T = torch.arange(T, device=device)
        seen_B1 = 0 if kv_cache is None else kv_cache.seen_B[:, None]
        if position_ids_BT is None:
            if attention_mask_BT is None:  # [1,T] without a cache: RoPE tables broadcast over B
                position_ids_BT = seen_B1 + steps_T[None, :]
            else:  # left padding: real tokens count from 0; pad positions are irrelevant
                position_ids_BT = (seen_B1 + attention_mask_BT.long().cumsum(-1) - 1).clamp_min(0)

        mask_B1TS = None
        if kv_cache is not None:
            valid_BT = torch.ones(B, T, dtype=torch.bool, device=device) if attention_mask_BT is None else attention_mask_BT.bool()
            if attention_mask_BT is not None and not kv_cache.padded:
                kv_cache.padded = not bool(valid_BT.all())  # one host sync per masked call, until padding shows
            key_valid_BS = kv_cache.write_mask(valid_BT, start)
            # Without padding the mask is plain causal: leave it to SDPA's fast mask-free kernels,
            # except for a multi-token block after cached tokens (causal with an offset).
            if kv_cache.padded or (T > 1 and start > 0):
                mask_B1TS = attention_mask(key_valid_BS, start + steps_T)
        elif attention_mask_BT is not None:
            mask_B1TS = attention_mask(attention_mask_BT.bool(), steps_T)

        cos_BTDh, sin_BTDh = rope_cos_sin(position_ids_BT, self.cfg.head_dim, self.cfg.rope_theta)
        x_BTD = self.embed(input_ids_BT)
        router: list[RouterStats] = []
        for i, layer in enumerate(self.layers):
            x_BTD, stats = layer(
                x_BTD, cos_BTDh, sin_BTDh, mask_B1TS=mask_B1TS, kv_cache=kv_cache, layer_idx=i, cache_start=start
            )
            router.append(stats)
        if kv_cache is not None:
            kv_cache.advance(valid_BT, start)
        return self.norm(x_BTD), router

    def forward(
        self,
        input_ids_BT: torch.Tensor,
        *,
        attention_mask_BT: torch.Tensor | None = None,
        position_ids_BT: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        head_fn: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
    ) -> ModelOutput:
        """Logits ``[B,T,V]`` (fp32) and per-layer router statistics.

        ``head_fn(h_BTD, lm_weight_VD)``, when given, replaces the LM head: its result is returned
        as ``head`` and ``logits`` is None. Training passes its fused head + loss this way, so
        the ``[B,T,V]`` logits are never built, and the call still goes through ``forward``, which
        DDP and FSDP wrappers need.

        ``attention_mask_BT`` marks real tokens (1) and left padding (0) of *these* tokens; with a
        ``kv_cache`` the mask of earlier tokens is remembered by the cache. Positions default to
        the count of real tokens before each one (``cumsum(mask) - 1``, continued across cache
        calls). Without mask and cache the attention is plain causal (fast SDPA kernels).
        """
        h_BTD, router = self.hidden_states(
            input_ids_BT, attention_mask_BT=attention_mask_BT, position_ids_BT=position_ids_BT, kv_cache=kv_cache
        )
        if head_fn is not None:
            return ModelOutput(None, router, head_fn(h_BTD, self.lm_weight_VD))
        return ModelOutput(self.lm_logits(h_BTD), router)


def maybe_compile(model: MoETransformer, enabled: bool = True, **compile_kwargs) -> MoETransformer:
    """Opt-in ``torch.compile`` of every block, in place.

    Blocks rather than the whole model, so parameter names, ``hidden_states``, ``lm_logits`` and
    generation keep working unchanged (``nn.Module.compile`` swaps in a compiled forward).
    Measured on the 2-core CPU (reference configuration, ``moelab bench``): ~8-10% faster bf16
    training and scoring, no gain for decoding, 15-60 s of compilation first.
    """
    if enabled:
        import torch._dynamo

        # The blocks share one forward, so each block instance, shape (prefill, decode) and
        # KV-cache length regime is a cache entry of the same code: allow that many.
        limit = torch._dynamo.config.recompile_limit
        torch._dynamo.config.recompile_limit = max(limit, 8 * len(model.layers))
        for layer in model.layers:
            layer.compile(**compile_kwargs)
    return model
