"""generate(): cached greedy == naive full-forward greedy; padding, EOS, stop strings, sampling."""

import pytest
import torch

from moelab.config import ModelConfig
from moelab.model import MoETransformer, generate
from moelab.model.generate import sample_next, trim_at_stop


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    base = dict(vocab_size=64, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, num_experts=4, top_k=2, init_std=0.15)
    return MoETransformer(ModelConfig(**{**base, **kw})).eval()


def _naive_greedy(model, prompt, n):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


PROMPTS = [[3, 14, 15, 9, 2, 6], [5, 3], [58, 9, 7, 9], [1]]


def test_cached_greedy_equals_full_forward_greedy():
    model = _model()
    for p in PROMPTS:
        got = generate(model, [p], max_new_tokens=12, eos_token_id=None, pad_token_id=0)[0]
        assert got == _naive_greedy(model, p, 12)


def test_left_padded_batch_equals_one_prompt_at_a_time():
    model = _model(seed=3)
    batched = generate(model, PROMPTS, max_new_tokens=10, eos_token_id=None, pad_token_id=0)
    single = [generate(model, [p], max_new_tokens=10, eos_token_id=None, pad_token_id=0)[0] for p in PROMPTS]
    assert batched == single
    assert all(len(t) == 10 for t in batched)


def test_eos_is_trimmed_per_row_and_mode_restored():
    model = _model().train()
    free = generate(model, PROMPTS, max_new_tokens=10, eos_token_id=None, pad_token_id=0)
    assert model.training
    eos = free[0][4]
    got = generate(model, PROMPTS, max_new_tokens=10, eos_token_id=eos, pad_token_id=0)
    for row, ref in zip(got, free):
        assert row == (ref[: ref.index(eos)] if eos in ref else ref)


def test_stop_strings_cut_before_the_stop_text():
    model = _model()
    decode = lambda toks: "".join(chr(ord("a") + t % 26) for t in toks)  # noqa: E731
    free = generate(model, PROMPTS[:1], max_new_tokens=10, eos_token_id=None, pad_token_id=0)[0]
    stop = decode(free[3:5])
    got = generate(model, PROMPTS[:1], max_new_tokens=10, eos_token_id=None, pad_token_id=0,
                   stop_strings=[stop], decode=decode)[0]
    cut = decode(free).find(stop)
    assert got == free[:cut]
    with pytest.raises(ValueError):
        generate(model, PROMPTS, max_new_tokens=3, eos_token_id=None, pad_token_id=0, stop_strings=["x"])


def test_trim_at_stop_drops_straddling_token():
    vocab = {0: "ab", 1: "c\nQ", 2: ":", 3: "zz"}
    decode = lambda toks: "".join(vocab[t] for t in toks)  # noqa: E731
    assert trim_at_stop([0, 1, 2, 3], ["\nQ:"], decode) == [0]
    assert trim_at_stop([0, 1, 3], ["\nQ:"], decode) == [0, 1, 3]
    assert trim_at_stop([0, 3, 1, 2], ["zz", "\nQ:"], decode) == [0]


def test_sampling_reproducible_and_top_p_nucleus():
    model = _model()
    kw = dict(max_new_tokens=8, eos_token_id=None, pad_token_id=0, temperature=1.0, top_p=0.9)
    a = generate(model, PROMPTS, generator=torch.Generator().manual_seed(7), **kw)
    b = generate(model, PROMPTS, generator=torch.Generator().manual_seed(7), **kw)
    assert a == b
    greedy = generate(model, PROMPTS, max_new_tokens=8, eos_token_id=None, pad_token_id=0)
    tiny_p = generate(model, PROMPTS, max_new_tokens=8, eos_token_id=None, pad_token_id=0, temperature=1.0,
                      top_p=1e-6, generator=torch.Generator().manual_seed(0))
    assert tiny_p == greedy  # a nucleus of one token is greedy decoding
    logits = torch.tensor([[0.0, 3.0, 2.9, -5.0]])
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, temperature=1.0, top_p=0.6, generator=g)) for _ in range(200)}
    assert draws == {1, 2}
