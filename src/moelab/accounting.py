"""Parameter and FLOP accounting — pure arithmetic on a ModelConfig, no torch.

Conventions (documented because every scaling-law paper picks its own):

* **Total parameters** count every weight: input embedding, every expert, router,
  norms, attention, final norm and (untied) output head.
* **Active parameters** are those one token touches: the same, with ``E`` experts
  replaced by ``k`` experts per layer. The router and the embedding count as active.
* **Training FLOPs** follow the Kaplan/Chinchilla ``6 · N_active · D`` convention
  (2 FLOPs per multiply-add forward, ×3 for forward + backward) with ``N_active`` as above.
  ``attention=True`` adds the PaLM term ``12 · n_layers · d_model · seq_len`` per token
  for the attention scores and the weighted sum (non-causal count, as PaLM does).
* **TPP** (tokens per parameter) = ``D / N_total`` — the seed paper's x-axis.
* **Names** follow the seed paper's released checkpoints, ``d{d}-E{E}-k{k}-{total}-A{active}``,
  e.g. ``d512-E8-k2-320M-A170M``: ``{total}`` is the total above (router included) and
  ``{active}`` is the active count *without* the router, as the paper counts it
  (``d1024-E128-k4-13.2B-A670M``: 673.7M without the router's 2.1M, 675.8M with it).
  :func:`summary` reports both active counts; see :func:`human_count` for the rounding rule.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config imports pydantic only; keep this module import-light
    from moelab.config import ModelConfig


@dataclass(frozen=True)
class ParamCounts:
    embedding: int  # input embedding
    head: int  # output projection (0 when tied)
    attention: int  # all layers
    norms: int  # all RMSNorm weights, final norm included
    router: int  # all layers
    experts_total: int  # all layers, all experts
    experts_active: int  # all layers, k experts

    @property
    def total(self) -> int:
        return self.embedding + self.head + self.attention + self.norms + self.router + self.experts_total

    @property
    def active(self) -> int:
        return self.embedding + self.head + self.attention + self.norms + self.router + self.experts_active

    @property
    def active_without_router(self) -> int:
        """The active count the seed paper's names use: the router's d·E weights left out."""
        return self.active - self.router

    @property
    def non_embedding_active(self) -> int:
        return self.active - self.embedding - self.head


def param_counts(cfg: "ModelConfig") -> ParamCounts:
    d, f, L = cfg.d_model, cfg.ffn_hidden, cfg.n_layers
    hd = cfg.head_dim
    q_and_o = 2 * d * cfg.n_heads * hd
    k_and_v = 2 * d * cfg.kv_heads * hd
    per_expert = 3 * d * f  # SwiGLU: gate, up, down
    return ParamCounts(
        embedding=cfg.vocab_size * d,
        head=0 if cfg.tie_embeddings else cfg.vocab_size * d,
        attention=L * (q_and_o + k_and_v),
        norms=L * 2 * d + d,
        router=L * d * cfg.num_experts,
        experts_total=L * cfg.num_experts * per_expert,
        experts_active=L * cfg.top_k * per_expert,
    )


def total_params(cfg: "ModelConfig") -> int:
    return param_counts(cfg).total


def active_params(cfg: "ModelConfig") -> int:
    return param_counts(cfg).active


def sparsity(num_experts: int, top_k: int) -> float:
    """1 − k/E: 0 for a dense model, close to 1 for a very sparse one."""
    return 1.0 - top_k / num_experts


def train_flops_per_token(cfg: "ModelConfig", *, attention: bool = False, seq_len: int | None = None) -> float:
    """Training FLOPs per token: 6·N_active (+ 12·L·d·seq_len when ``attention``)."""
    flops = 6.0 * active_params(cfg)
    if attention:
        flops += 12.0 * cfg.n_layers * cfg.d_model * (seq_len or cfg.max_seq_len)
    return flops


def forward_flops_per_token(cfg: "ModelConfig", *, attention: bool = False, seq_len: int | None = None) -> float:
    return train_flops_per_token(cfg, attention=attention, seq_len=seq_len) / 3.0


def training_flops(cfg: "ModelConfig", tokens: float, **kw) -> float:
    return train_flops_per_token(cfg, **kw) * tokens


def tokens_for_budget(cfg: "ModelConfig", budget_flops: float, **kw) -> int:
    """D = C / (6 · N_active): the tokens an iso-FLOP family member trains on."""
    if budget_flops <= 0:
        raise ValueError(f"compute budget must be positive, got {budget_flops}")
    return int(budget_flops // train_flops_per_token(cfg, **kw))


def tokens_per_param(cfg: "ModelConfig", tokens: float) -> float:
    return tokens / total_params(cfg)


def human_count(n: float) -> str:
    """The seed paper's checkpoint-name rounding: 320160256 → '320M', 1881966592 → '1.9B'.

    In the chosen unit (K, M, B, T), values that round to ≥ 100 keep two significant figures
    (169.2M → '170M', 999.6M → '1.0B') and smaller values exactly one decimal, a trailing '.0'
    included (26.45B → '26.4B', 26.03B → '26.0B', 1.48B → '1.5B'). This reproduces the names
    of all 65 released models (tests/core/test_paper_names.py).
    """
    units = (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3))
    for i, (unit, scale) in enumerate(units):
        if n >= scale:
            break
    else:
        return str(int(n))
    x = n / scale
    if round(x, 1) < 100:
        return f"{x:.1f}{unit}"
    digits = int(math.floor(math.log10(x))) + 1
    rounded = int(round(x, 2 - digits))
    if rounded >= 1000 and i > 0:  # 999.6M rounds to 1000M: say 1.0B
        return f"{rounded / 1000:.1f}{units[i - 1][0]}"
    return f"{rounded}{unit}"


def model_name(cfg: "ModelConfig") -> str:
    """``d{d}-E{E}-k{k}-{total}-A{active}``, the seed paper's naming scheme: ``total`` counts the
    router, ``active`` does not (:attr:`ParamCounts.active_without_router`), as the paper's names do."""
    c = param_counts(cfg)
    return (f"d{cfg.d_model}-E{cfg.num_experts}-k{cfg.top_k}-{human_count(c.total)}"
            f"-A{human_count(c.active_without_router)}")


def summary(cfg: "ModelConfig", tokens: float | None = None) -> dict:
    """Everything ``moelab params`` prints."""
    c = param_counts(cfg)
    out = {
        "name": model_name(cfg),
        "d_model": cfg.d_model,
        "n_layers": cfg.n_layers,
        "num_experts": cfg.num_experts,
        "top_k": cfg.top_k,
        "expert_hidden": cfg.ffn_hidden,
        "vocab_size": cfg.vocab_size,
        "total_params": c.total,
        "active_params": c.active,  # exact, router included
        "active_params_without_router": c.active_without_router,  # the count the name's A… uses
        "non_embedding_active_params": c.non_embedding_active,
        "sparsity": sparsity(cfg.num_experts, cfg.top_k),
        "density": cfg.top_k / cfg.num_experts,
        "train_flops_per_token": train_flops_per_token(cfg),
        "breakdown": asdict(c),
    }
    if tokens is not None:
        out["tokens"] = int(tokens)
        out["tpp"] = tokens / c.total
        out["train_flops"] = train_flops_per_token(cfg) * tokens
    return out


# The seed paper's released architecture (Nakamura et al., 2508.18672): 16 layers,
# vocabulary 99,584, expert width 2·d, full multi-head attention, untied embeddings.
PAPER_ARCH = dict(n_layers=16, vocab_size=99_584, ffn_mult=2.0, tie_embeddings=False, n_kv_heads=None)
PAPER_TOKENS = 125_000_000_000


def paper_heads(d_model: int) -> int:
    """Head count for the paper preset (head_dim 128 where it divides, else 64)."""
    for hd in (128, 64):
        if d_model % hd == 0 and d_model >= hd:
            return d_model // hd
    return 1


def model_vocab_size(configured: int, tokenizer_size: int | None) -> int:
    """The model's vocabulary for a tokenizer of ``tokenizer_size`` tokens: the configured size when
    the tokenizer fits in it (or is unknown), else the tokenizer's size padded as Megatron pads it."""
    if tokenizer_size is None or tokenizer_size <= configured:
        return configured
    return padded_vocab_size(tokenizer_size)


def padded_vocab_size(vocab_size: int, tensor_parallel: int = 1, divisible_by: int = 128) -> int:
    """The vocabulary Megatron-LM builds: rounded up to a multiple of ``--make-vocab-size-divisible-by``
    (128) × the tensor-parallel size, so each TP shard of the embedding is a whole number of 128-row
    blocks. 99,584 stays 99,584 at TP 1 and 2, becomes 99,840 at TP 4 and 100,352 at TP 8."""
    multiple = divisible_by * tensor_parallel
    return -(-vocab_size // multiple) * multiple
