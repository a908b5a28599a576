"""KV-cached batched generation: left-padded prompts, greedy or temperature + top-p sampling.

Legend: B batch, P padded prompt length, S cache slots, Hkv kv-heads, Dh head dim, V vocab.

Usage::

    new_tokens = generate(model, [[1, 5, 9], [1, 7]], max_new_tokens=32,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)

The whole prompt batch is prefilled in one forward, then one token per step reuses the cache.
Greedy decoding reproduces exactly what re-running the full forward would pick.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from moelab.model.moe import cached_weight_casts
from moelab.model.transformer import MoETransformer


class KVCache:
    """Preallocated per-layer key/value buffers ``[B,Hkv,S_max,Dh]``.

    All rows share one slot counter ``length`` (left padding keeps them aligned); ``key_valid_BS``
    remembers which slots hold real tokens and ``seen_B`` how many real tokens each row has
    (the next RoPE position). ``padded`` (a Python bool) says whether any slot is padding; until
    one is, attention runs without a mask.
    """

    def __init__(
        self,
        *,
        num_layers: int,
        batch_size: int,
        num_kv_heads: int,
        head_dim: int,
        max_len: int,
        device: torch.device | str,
        dtype: torch.dtype,
    ):
        shape = (batch_size, num_kv_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.key_valid_BS = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)
        self.seen_B = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.max_len = max_len
        self.length = 0  # a Python int: no device sync to read it
        self.padded = False  # has any slot been padding? (False: attention needs no mask)

    @classmethod
    def for_model(cls, model: MoETransformer, batch_size: int, max_len: int, *, dtype: torch.dtype | None = None) -> "KVCache":
        """A cache matching ``model``; dtype defaults to autocast's if active, else the weights'."""
        cfg = model.cfg
        param = model.embed.weight
        if dtype is None:
            dev = param.device.type
            dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else param.dtype
        return cls(
            num_layers=cfg.n_layers,
            batch_size=batch_size,
            num_kv_heads=cfg.kv_heads,
            head_dim=cfg.head_dim,
            max_len=max_len,
            device=param.device,
            dtype=dtype,
        )

    def write_mask(self, valid_BT: torch.Tensor, start: int) -> torch.Tensor:
        """Record which new slots are real; returns the key mask ``[B,start+T]``."""
        end = start + valid_BT.shape[1]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, {end} requested")
        self.key_valid_BS[:, start:end] = valid_BT
        return self.key_valid_BS[:, :end]

    def update(self, layer: int, k_BHTDh: torch.Tensor, v_BHTDh: torch.Tensor, start: int):
        """Store this layer's new keys/values at ``start`` and return all keys/values so far."""
        end = start + k_BHTDh.shape[2]
        self.k[layer][:, :, start:end] = k_BHTDh
        self.v[layer][:, :, start:end] = v_BHTDh
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, valid_BT: torch.Tensor, start: int) -> None:
        """Called once per forward after every layer has written its slots."""
        self.length = start + valid_BT.shape[1]
        self.seen_B += valid_BT.sum(-1)


def sample_next(
    logits_BV: torch.Tensor, *, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Greedy when ``temperature <= 0``; else softmax(logits/T) restricted to the top-p nucleus."""
    if temperature <= 0:
        return logits_BV.argmax(dim=-1)
    probs_BV = torch.softmax(logits_BV.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return torch.multinomial(probs_BV, 1, generator=generator).squeeze(-1)
    sorted_BV, order_BV = probs_BV.sort(dim=-1, descending=True)
    # Keep a token while the mass ranked above it is below top_p (the best token always stays).
    outside_BV = sorted_BV.cumsum(-1) - sorted_BV >= top_p
    sorted_BV = sorted_BV.masked_fill(outside_BV, 0.0)
    pick_B1 = torch.multinomial(sorted_BV, 1, generator=generator)
    return order_BV.gather(-1, pick_B1).squeeze(-1)


def trim_at_stop(tokens: list[int], stop_strings: Sequence[str], decode: Callable[[list[int]], str]) -> list[int]:
    """Longest prefix of ``tokens`` whose text ends at or before the earliest stop string.

    A token straddling the start of the stop string is dropped with it, so the returned tokens
    decode to text that contains no part of the stop string (when decoding is prefix-consistent).
    """
    text = decode(tokens)
    hits = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    if not hits:
        return tokens
    cut = min(hits)
    n = 0
    while n < len(tokens) and len(decode(tokens[: n + 1])) <= cut:
        n += 1
    return tokens[:n]


def _as_id_set(eos_token_id: int | Sequence[int] | None) -> set[int]:
    if eos_token_id is None:
        return set()
    if isinstance(eos_token_id, int):
        return {eos_token_id}
    return set(eos_token_id)


# no_grad, not inference_mode: under inference_mode autocast stops caching its weight casts
# and would re-cast every weight for every token.
@torch.no_grad()
def generate(
    model: MoETransformer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    eos_token_id: int | Sequence[int] | None,
    pad_token_id: int | None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop_strings: Sequence[str] = (),
    decode: Callable[[list[int]], str] | None = None,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """New tokens for each prompt, with the EOS token and anything after it removed, and cut
    before the first stop string (see :func:`trim_at_stop`). Rows stop independently; the batch
    stops when every row has finished or after ``max_new_tokens``.

    ``generator`` must live on the model's device. Repeating a prompt (``num_return_sequences``)
    is the caller's business: pass it several times.
    """
    if stop_strings and decode is None:
        raise ValueError("stop_strings need a decode callable")
    if not prompts or max_new_tokens <= 0:
        return [[] for _ in prompts]
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    eos_ids = _as_id_set(eos_token_id)
    device = model.embed.weight.device
    B, P = len(prompts), max(len(p) for p in prompts)

    # The pad id only fills masked slots, so any id works when the tokenizer has none.
    ids_BP = torch.full((B, P), 0 if pad_token_id is None else pad_token_id, dtype=torch.long)
    mask_BP = torch.zeros(B, P, dtype=torch.long)
    for b, prompt in enumerate(prompts):
        ids_BP[b, P - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask_BP[b, P - len(prompt) :] = 1

    was_training = model.training
    model.eval()
    try:
        with cached_weight_casts(model):  # under autocast: cast expert weights once, not per token
            new = _decode(model, ids_BP.to(device), mask_BP.to(device), max_new_tokens=max_new_tokens, eos_ids=eos_ids,
                          temperature=temperature, top_p=top_p, stop_strings=stop_strings, decode=decode,
                          generator=generator)
    finally:
        model.train(was_training)

    out = []
    for toks in new:
        toks = next((toks[:i] for i, t in enumerate(toks) if t in eos_ids), toks)
        if stop_strings:
            toks = trim_at_stop(toks, stop_strings, decode)
        out.append(toks)
    return out


def _decode(model, ids_BP, mask_BP, *, max_new_tokens, eos_ids, temperature, top_p, stop_strings, decode,
            generator) -> list[list[int]]:
    """Prefill, then one token per step; raw new tokens per row (EOS and what follows included)."""
    B, P = ids_BP.shape
    cache = KVCache.for_model(model, B, P + max_new_tokens)
    h_BTD, _ = model.hidden_states(ids_BP, attention_mask_BT=mask_BP, kv_cache=cache)
    new: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    for step in range(max_new_tokens):
        # Only the last position's logits: [B,P,V] in fp32 would be the biggest tensor here.
        next_B = sample_next(model.lm_logits(h_BTD[:, -1]), temperature=temperature, top_p=top_p, generator=generator)
        for b, tok in enumerate(next_B.tolist()):
            if done[b]:
                continue
            new[b].append(tok)
            if tok in eos_ids:
                done[b] = True
            elif stop_strings and any(s in decode(new[b]) for s in stop_strings):
                done[b] = True
        if all(done) or step == max_new_tokens - 1:
            break
        # Finished rows keep running (cheaper than reshaping the cache); their tokens are ignored.
        h_BTD, _ = model.hidden_states(next_B[:, None], kv_cache=cache)
    return new
