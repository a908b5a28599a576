"""Shared fixtures for the eval tests: a small world, its tokenizer and a tiny random model."""

import pytest

from moelab.config import WorldConfig
from moelab.data.tokenizer import train_tokenizer
from moelab.data.world import build_world

from eval_helpers import tiny_model


@pytest.fixture(scope="session")
def small_world():
    return build_world(WorldConfig(num_people=20, reasoning_train_items=40, reasoning_eval_items=10,
                                   knowledge_eval_items=10, bio_paraphrases=2))


@pytest.fixture(scope="session")
def tokenizer(small_world):
    return train_tokenizer(small_world.documents(), vocab_size=400)


@pytest.fixture(scope="session")
def model(tokenizer):
    return tiny_model(len(tokenizer))
