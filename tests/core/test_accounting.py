"""Accounting: the seed paper's names and counts, derived quantities, name rounding."""

import pytest

from moelab import accounting
from moelab.config import ModelConfig


def paper(d, e, k):
    return ModelConfig(d_model=d, num_experts=e, top_k=k, n_heads=accounting.paper_heads(d), **accounting.PAPER_ARCH)


@pytest.mark.parametrize(
    "d,e,k,name",
    [(512, 8, 2, "d512-E8-k2-320M-A170M"), (1024, 16, 2, "d1024-E16-k2-1.9B-A470M"),
     (2048, 64, 2, "d2048-E64-k2-26.4B-A1.5B")],
)
def test_paper_names(d, e, k, name):
    assert accounting.model_name(paper(d, e, k)) == name


def test_paper_d512_counts_by_hand():
    # embeddings in and out: 2·V·d; per layer: 4d² attention, 2d norms, dE router, E·3·d·2d experts
    d, V, L, E, k = 512, 99_584, 16, 8, 2
    per_layer = 4 * d * d + 2 * d + d * E
    total = 2 * V * d + L * (per_layer + E * 3 * d * 2 * d) + d
    active = 2 * V * d + L * (per_layer + k * 3 * d * 2 * d) + d
    cfg = paper(d, E, k)
    assert accounting.total_params(cfg) == total == 320_160_256
    assert accounting.active_params(cfg) == active


def test_dense_model_total_equals_active():
    cfg = ModelConfig(num_experts=1, top_k=1)
    assert accounting.total_params(cfg) == accounting.active_params(cfg)
    assert accounting.sparsity(1, 1) == 0.0


def test_gqa_and_tied_reduce_counts():
    full = ModelConfig(d_model=128, n_heads=4)
    gqa = ModelConfig(d_model=128, n_heads=4, n_kv_heads=1)
    tied = ModelConfig(d_model=128, n_heads=4, tie_embeddings=True)
    c = accounting.param_counts
    assert c(full).attention - c(gqa).attention == 4 * 2 * 128 * (128 - 32)
    assert c(full).total - c(tied).total == full.vocab_size * 128


def test_flops_tokens_tpp_roundtrip():
    cfg = ModelConfig(d_model=128, num_experts=8, top_k=2)
    n_active = accounting.active_params(cfg)
    assert accounting.train_flops_per_token(cfg) == 6 * n_active
    with_attn = accounting.train_flops_per_token(cfg, attention=True, seq_len=256)
    assert with_attn == 6 * n_active + 12 * cfg.n_layers * cfg.d_model * 256
    tokens = accounting.tokens_for_budget(cfg, 1e15)
    assert abs(accounting.training_flops(cfg, tokens) - 1e15) <= 6 * n_active
    assert accounting.tokens_per_param(cfg, tokens) == pytest.approx(tokens / accounting.total_params(cfg))
    with pytest.raises(ValueError):
        accounting.tokens_for_budget(cfg, 0)


@pytest.mark.parametrize("n,text", [(320_160_256, "320M"), (169_165_312, "170M"), (1_881_966_592, "1.9B"),
                                    (26_448_302_080, "26.4B"), (1_483_802_624, "1.5B"), (45_300_000, "45.3M"),
                                    (26_030_000_000, "26.0B"), (2_000_000, "2.0M"), (99_960_000, "100M"),
                                    (999_600_000, "1.0B"), (999, "999"), (1_000_000_000_000, "1.0T")])
def test_human_count(n, text):
    assert accounting.human_count(n) == text


def test_summary_has_cli_fields():
    s = accounting.summary(paper(512, 8, 2), tokens=125e9)
    assert s["tpp"] == pytest.approx(125e9 / 320_160_256)
    assert s["sparsity"] == 0.75 and s["name"] == "d512-E8-k2-320M-A170M"
    assert s["active_params"] == s["active_params_without_router"] + 16 * 512 * 8  # exact count keeps the router
