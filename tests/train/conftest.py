"""A tiny run config shared by the training tests (fp32: bf16 autocast is slow on most CPUs)."""

import pytest

from moelab.config import RunConfig

TINY = {
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "num_experts": 4, "top_k": 2, "max_seq_len": 32},
    "data": {
        "world": {"num_people": 40, "reasoning_train_items": 50, "reasoning_eval_items": 10, "knowledge_eval_items": 10},
        "vocab_size": 384,
        "seq_len": 32,
    },
    "train": {"batch_size": 8, "steps": 20, "lr": 3e-3, "warmup_steps": 3, "log_every": 1, "eval_every": 10,
              "checkpoint_every": 5, "precision": "fp32", "device": "cpu"},
}


def make_cfg(**sections) -> RunConfig:
    """``make_cfg(train={"steps": 10})`` — TINY with per-section overrides."""
    data = {k: dict(v) for k, v in TINY.items()}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return RunConfig.model_validate(data)


@pytest.fixture(scope="session")
def tiny_cfg():
    return make_cfg


@pytest.fixture(autouse=True, scope="module")  # module scope: also covers module-scoped runs
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine spinning
    OpenMP workers make them 10x slower; restored afterwards so other test folders are unaffected."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
