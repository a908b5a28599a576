"""The Mixtral-style MoE language model: architecture, router losses, KV-cached generation."""

from moelab.model.generate import KVCache, generate
from moelab.model.losses import load_balancing_loss, router_z_loss
from moelab.model.moe import GroupedExperts, MoE, Router, RouterStats
from moelab.model.transformer import ModelOutput, MoETransformer

__all__ = [
    "GroupedExperts",
    "KVCache",
    "MoE",
    "MoETransformer",
    "ModelOutput",
    "Router",
    "RouterStats",
    "generate",
    "load_balancing_loss",
    "router_z_loss",
]
