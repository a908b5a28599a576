"""Task loss equals a slow per-item computation (fp32), with any batching, padding and truncation."""

import math

import pytest
import torch

from moelab.data.world import TaskItem
from moelab.eval.taskloss import LN2, task_loss

from eval_helpers import tiny_model


def _items(world):
    tasks = world.tasks()
    return tasks["knowledge"].splits["heldout"][:6] + tasks["reasoning"].splits["heldout"][:6] + [
        TaskItem(prompt="", answer=" a lone answer", gold="x"),  # an empty prompt: BOS only
        TaskItem(prompt="Question: Where?\nAnswer:", answer=" Ümlaut café", gold="x"),  # multi-byte UTF-8
    ]


def _slow_nll(model, tok, item, max_len=None):
    """Sum of -log p(answer token) from one unpadded forward of BOS + prompt + answer."""
    p = [tok.bos_token_id, *tok.encode(item.prompt, add_special_tokens=False)]
    a = tok.encode(item.answer, add_special_tokens=False)
    seq = p + a
    cut = 0 if max_len is None else max(0, len(seq) - (max_len + 1))
    seq = seq[cut:]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([seq[:-1]])).logits[0].double(), dim=-1)
    first = max(len(p) - cut, 1)  # index in seq of the first scored answer token
    return -sum(logp[j - 1, seq[j]].item() for j in range(first, len(seq))), len(seq) - first


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


@pytest.mark.parametrize("batch_size", [1, 4, None])
def test_equals_slow_per_item_computation(small_world, tokenizer, model, batch_size):
    items = _items(small_world)
    result = task_loss(model, tokenizer, items, batch_size=batch_size)
    assert result.num_truncated == 0
    for k, it in enumerate(items):
        nll, ntok = _slow_nll(model, tokenizer, it)
        assert result.num_tokens[k] == ntok
        assert _rel(result.nll[k], nll) <= 1e-5
        assert result.num_bytes[k] == len(it.answer.encode("utf-8"))


def test_answer_logits_in_several_chunks_equal_one(small_world, tokenizer, model, monkeypatch):
    """The LM head runs in chunks of answer positions; a batch split over several gives the same NLLs."""
    from moelab.eval import taskloss

    items = _items(small_world)
    whole = task_loss(model, tokenizer, items, batch_size=4)
    monkeypatch.setattr(taskloss, "_LOGIT_CHUNK", 3)  # every batch has more than 3 answer positions
    chunked = task_loss(model, tokenizer, items, batch_size=4)
    assert chunked.nll == pytest.approx(whole.nll, rel=1e-6)
    assert chunked.num_tokens == whole.num_tokens


def test_averages_follow_their_definitions(small_world, tokenizer, model):
    r = task_loss(model, tokenizer, _items(small_world), batch_size=3)
    assert r.bits_per_token == pytest.approx(sum(r.nll) / LN2 / sum(r.num_tokens))
    assert r.bits_per_byte == pytest.approx(sum(r.nll) / LN2 / sum(r.num_bytes))
    per_item = [n / LN2 / t for n, t in zip(r.nll, r.num_tokens)]
    assert r.mean_bits_per_token == pytest.approx(sum(per_item) / len(per_item))
    assert r.item_bits_per_token == pytest.approx(per_item)
    s = r.summary()
    assert s["num_items"] == len(r.nll) and s["bits_per_token"] == r.bits_per_token
    assert len(r.records()) == len(r.nll)


def test_records_carry_index_and_prompt(small_world, tokenizer, model):
    """Per-item records join with accuracy records (and other tools' logs) by index and prompt."""
    from moelab.eval.accuracy import accuracy

    items = _items(small_world)
    items[1] = TaskItem(items[1].prompt, items[1].answer, items[1].gold, meta={"index": 41})
    rows = task_loss(model, tokenizer, items, batch_size=3).records()
    assert [row["index"] for row in rows] == list(range(len(items)))
    assert [row["prompt"] for row in rows] == [it.prompt for it in items]
    assert rows[1]["item_index"] == 41
    assert [row.get("item_index") for row in rows] == [it.meta.get("index") for it in items]
    acc = accuracy(model, tokenizer, items, max_new_tokens=2).records
    assert [(a["index"], a["prompt"], a.get("item_index")) for a in acc] == \
           [(row["index"], row["prompt"], row.get("item_index")) for row in rows]
    for row, it in zip(rows, items):  # and the numbers are still the item's own
        assert row["nll"] == pytest.approx(task_loss(model, tokenizer, [it]).nll[0], rel=1e-5)


def test_left_truncation_matches_slow_window(small_world, tokenizer):
    model = tiny_model(len(tokenizer), seed=1, max_seq_len=12)
    items = _items(small_world)
    long_answer = TaskItem(prompt="Q:", answer=" one two three four five six seven eight nine ten eleven twelve", gold="")
    items.append(long_answer)
    r = task_loss(model, tokenizer, items, batch_size=5)
    assert r.num_truncated == sum(r.truncated) > 0
    for k, it in enumerate(items):
        nll, ntok = _slow_nll(model, tokenizer, it, max_len=12)
        assert r.num_tokens[k] == ntok
        assert _rel(r.nll[k], nll) <= 1e-5
    assert r.num_tokens[-1] == 12  # an answer longer than the context: its last max_seq_len tokens
    assert r.num_bytes[-1] < len(long_answer.answer.encode())


def test_empty_item_list(tokenizer, model):
    r = task_loss(model, tokenizer, [])
    assert r.num_items == 0 and math.isnan(r.bits_per_token)
    assert r.summary()["bits_per_token"] is None


def test_bf16_autocast_is_close(small_world, tokenizer, model):
    items = _items(small_world)
    fp32 = task_loss(model, tokenizer, items)
    bf16 = task_loss(model, tokenizer, items, dtype=torch.bfloat16)
    assert _rel(bf16.bits_per_token, fp32.bits_per_token) < 0.05


def test_imported_hf_mixtral_matches_transformers(small_world, tokenizer, tmp_path):
    """A random transformers MixtralForCausalLM, imported: moelab task loss == transformers' NLL."""
    hf = pytest.importorskip("moelab.interop.hf")
    from transformers import MixtralForCausalLM

    from moelab.config import ModelConfig

    cfg = ModelConfig(vocab_size=len(tokenizer), d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, num_experts=4,
                      top_k=2, max_seq_len=256, init_std=0.1)
    torch.manual_seed(0)
    ref = MixtralForCausalLM(hf.config_to_hf(cfg)).eval()
    ref.save_pretrained(tmp_path / "hf")
    _, model = hf.import_hf(tmp_path / "hf")
    items = _items(small_world)
    r = task_loss(model, tokenizer, items, batch_size=5)
    for k, it in enumerate(items):
        p = [tokenizer.bos_token_id, *tokenizer.encode(it.prompt, add_special_tokens=False)]
        a = tokenizer.encode(it.answer, add_special_tokens=False)
        with torch.no_grad():
            logits = ref(torch.tensor([p + a])).logits[0, len(p) - 1 : -1].double()
        nll = -torch.log_softmax(logits, -1).gather(-1, torch.tensor(a)[:, None]).sum().item()
        assert _rel(r.nll[k], nll) <= 1e-4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp32_and_bf16_autocast(small_world, tokenizer):
    import copy

    cpu_model = tiny_model(len(tokenizer), seed=2)
    gpu_model = copy.deepcopy(cpu_model).cuda()
    items = _items(small_world)
    ref = task_loss(cpu_model, tokenizer, items)
    fp32 = task_loss(gpu_model, tokenizer, items)
    bf16 = task_loss(gpu_model, tokenizer, items, dtype=torch.bfloat16)
    assert all(_rel(a, b) <= 1e-3 for a, b in zip(fp32.nll, ref.nll))  # TF32 and kernel differences only
    assert _rel(bf16.bits_per_token, ref.bits_per_token) < 0.05
