"""Helpers shared by the eval tests (a uniquely named module: every test folder has a conftest.py)."""

from pathlib import Path

import pytest
import torch

from moelab.config import ModelConfig

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def shared_file(name: str) -> Path:
    """A seed-paper task file from ``<repo>/../shared/data``; skips the test when it is absent."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not present (the shared/ data directory sits beside the repository)")
    return path


def tiny_model(vocab_size: int, *, seed: int = 0, **kw):
    from moelab.model import MoETransformer

    torch.manual_seed(seed)
    base = dict(vocab_size=vocab_size, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, num_experts=4, top_k=2,
                init_std=0.1, max_seq_len=128)
    return MoETransformer(ModelConfig(**{**base, **kw})).eval()


def scripted_model(tokenizer, script: str, *, max_seq_len: int = 256):
    """A moelab model that, after a prompt ending in the script's last token, writes ``script`` forever.

    Every block is zeroed (attention and experts add nothing), so the logits depend only on the
    current token: a bigram table. Embeddings are one-hot (d_model = vocab), the LM head maps each
    script token to the next one in the cycle, and every other token to EOS.
    """
    from moelab.model import MoETransformer

    ids = tokenizer.encode(script, add_special_tokens=False)
    cycle = [ids[-1], *ids[:-1]]
    assert len(set(cycle)) == len(cycle), f"script tokens must be distinct: {tokenizer.convert_ids_to_tokens(ids)}"
    V = len(tokenizer)
    D = -(-V // 8) * 8
    cfg = ModelConfig(vocab_size=V, d_model=D, n_layers=1, n_heads=4, num_experts=2, top_k=1, expert_hidden=8,
                      max_seq_len=max_seq_len)
    model = MoETransformer(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(1.0 if name.endswith("norm.weight") else 0.0)
        model.embed.weight[:, :V] = torch.eye(V)
        model.lm_head.weight[tokenizer.eos_token_id, :] = 1.0
        for a, b in zip(cycle, cycle[1:] + cycle[:1]):
            model.lm_head.weight[b, a] = 10.0
    return model
