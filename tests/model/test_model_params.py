"""Accounting (pure arithmetic) must equal the parameters the model actually builds."""

import pytest
import torch

from moelab import accounting
from moelab.config import ModelConfig
from moelab.model import MoETransformer

CONFIGS = {
    "dense": dict(num_experts=1, top_k=1),
    "moe": dict(num_experts=8, top_k=2),
    "gqa": dict(n_heads=8, n_kv_heads=2, num_experts=4, top_k=1),
    "tied": dict(tie_embeddings=True, num_experts=4, top_k=2),
    "many_experts": dict(num_experts=64, top_k=8, expert_hidden=24),
    "k_equals_e": dict(num_experts=4, top_k=4, ffn_mult=1.5),
}


BASE = dict(vocab_size=100, d_model=64, n_layers=3, n_heads=4)


def _meta_model(cfg: ModelConfig) -> MoETransformer:
    with torch.device("meta"):
        return MoETransformer(cfg)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_total_params_match_built_model(name):
    cfg = ModelConfig(**{**BASE, **CONFIGS[name]})
    model = _meta_model(cfg)
    assert accounting.total_params(cfg) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_active_params_is_count_with_k_experts(name):
    cfg = ModelConfig(**{**BASE, **CONFIGS[name]})
    model = _meta_model(cfg)
    per_expert = sum(p[0].numel() for n, p in model.named_parameters() if ".moe.experts." in n) // cfg.n_layers
    total = sum(p.numel() for p in model.parameters())
    expected_active = total - cfg.n_layers * (cfg.num_experts - cfg.top_k) * per_expert
    assert accounting.active_params(cfg) == expected_active


def test_parameter_names_follow_the_contract():
    cfg = ModelConfig(vocab_size=100, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, num_experts=4, top_k=2)
    shapes = {n: tuple(p.shape) for n, p in _meta_model(cfg).named_parameters()}
    D, V, E, F, Dh = 64, 100, 4, cfg.ffn_hidden, cfg.head_dim
    assert shapes["embed.weight"] == (V, D)
    assert shapes["lm_head.weight"] == (V, D)
    assert shapes["norm.weight"] == (D,)
    assert shapes["layers.1.attn_norm.weight"] == (D,)
    assert shapes["layers.1.attn.q_proj.weight"] == (4 * Dh, D)
    assert shapes["layers.1.attn.k_proj.weight"] == (2 * Dh, D)
    assert shapes["layers.1.attn.v_proj.weight"] == (2 * Dh, D)
    assert shapes["layers.1.attn.o_proj.weight"] == (D, 4 * Dh)
    assert shapes["layers.1.moe_norm.weight"] == (D,)
    assert shapes["layers.1.moe.router.weight"] == (E, D)
    assert shapes["layers.1.moe.experts.w_gate"] == (E, D, F)
    assert shapes["layers.1.moe.experts.w_up"] == (E, D, F)
    assert shapes["layers.1.moe.experts.w_down"] == (E, F, D)
    assert len(shapes) == 3 + 2 * 10
    tied = _meta_model(cfg.model_copy(update={"tie_embeddings": True}))
    assert "lm_head.weight" not in dict(tied.named_parameters())


def test_init_weights_std_and_norm_ones():
    # Plain init: one std everywhere (the depth-scaled default: tests/model/test_router_recipe.py).
    cfg = ModelConfig(vocab_size=256, d_model=64, n_layers=1, n_heads=4, num_experts=4, top_k=2, init_std=0.05,
                      depth_scaled_init=False)
    model = MoETransformer(cfg)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            assert torch.all(p == 1)
        else:
            assert abs(p.std().item() - 0.05) < 0.01, name
            assert abs(p.mean().item()) < 0.01, name
