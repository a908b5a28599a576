"""Shared fixtures for the data tests: one default world and one small tokenizer per session."""

import pytest

from moelab.config import WorldConfig
from moelab.data.tokenizer import train_tokenizer
from moelab.data.world import build_world


@pytest.fixture(scope="session")
def world():
    return build_world(WorldConfig())


@pytest.fixture(scope="session")
def small_world():
    return build_world(WorldConfig(num_people=20, reasoning_train_items=40, reasoning_eval_items=10,
                                   knowledge_eval_items=10, bio_paraphrases=2))


@pytest.fixture(scope="session")
def tokenizer(small_world):
    texts = small_world.documents() + ["The quick brown fox jumps over the lazy dog."] * 5
    return train_tokenizer(texts, vocab_size=400)


@pytest.fixture(scope="session")
def rg_world():
    """The world with reasoning_gym's generators instead of moelab's addition (the previous default)."""
    return build_world(WorldConfig(num_people=400, bio_paraphrases=4, reasoning_tasks=["basic_arithmetic", "chain_sum"],
                                   reasoning_train_items=2000, reasoning_eval_items=100, knowledge_eval_items=100))
