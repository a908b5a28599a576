"""Shared fixtures for the eval tests: a small world, its tokenizer, a tiny random model, and the
seed paper's task files (from ``<repo>/../shared/data``; tests that need them skip without it)."""

from pathlib import Path

import pytest
import torch

from moelab.config import ModelConfig, WorldConfig
from moelab.data.tokenizer import train_tokenizer
from moelab.data.world import build_world

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not present (the shared/ data directory sits beside the repository)")
    return path


@pytest.fixture(scope="session")
def small_world():
    return build_world(WorldConfig(num_people=20, reasoning_train_items=40, reasoning_eval_items=10,
                                   knowledge_eval_items=10, bio_paraphrases=2))


@pytest.fixture(scope="session")
def tokenizer(small_world):
    return train_tokenizer(small_world.documents(), vocab_size=400)


def tiny_model(vocab_size: int, *, seed: int = 0, **kw):
    torch.manual_seed(seed)
    base = dict(vocab_size=vocab_size, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, num_experts=4, top_k=2,
                init_std=0.1, max_seq_len=128)
    from moelab.model import MoETransformer

    return MoETransformer(ModelConfig(**{**base, **kw})).eval()


@pytest.fixture(scope="session")
def model(tokenizer):
    return tiny_model(len(tokenizer))
