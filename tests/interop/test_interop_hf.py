"""moelab ⇄ transformers Mixtral: same logits, same cache behaviour, same greedy generations."""

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, MixtralConfig, MixtralForCausalLM

from moelab.config import ModelConfig
from moelab.errors import UserError
from moelab.interop.hf import (
    config_from_hf,
    config_to_hf,
    export_hf,
    import_hf,
    state_dict_from_hf,
    state_dict_to_hf,
)
from moelab.model import KVCache, MoETransformer, generate

TOL = dict(atol=1e-4, rtol=0)


def _hf_model(kv_heads=2, tied=False, attn="eager", seed=0):
    torch.manual_seed(seed)
    cfg = MixtralConfig(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=kv_heads, num_local_experts=4, num_experts_per_tok=2, initializer_range=0.1,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=tied,
        max_position_embeddings=256, attn_implementation=attn,
    )
    return MixtralForCausalLM(cfg).eval()


def _imported(hf_model):
    cfg = config_from_hf(hf_model.config)
    model = MoETransformer(cfg)
    model.load_state_dict(state_dict_from_hf(hf_model.state_dict(), cfg))
    return cfg, model.eval()


@pytest.mark.parametrize("kv_heads,tied,attn", [(2, False, "eager"), (4, False, "sdpa"), (1, True, "eager")])
def test_hf_model_imported_gives_same_logits_with_and_without_cache(kv_heads, tied, attn):
    hf = _hf_model(kv_heads, tied, attn)
    cfg, model = _imported(hf)
    assert cfg.kv_heads == kv_heads and cfg.tie_embeddings == tied and cfg.rope_theta == 10000.0
    ids = torch.randint(0, 128, (3, 13))
    with torch.no_grad():
        ref = hf(ids).logits
        torch.testing.assert_close(model(ids).logits, ref, **TOL)
        cache = KVCache.for_model(model, batch_size=3, max_len=13)
        steps = [model(ids[:, :6], kv_cache=cache).logits]
        steps += [model(ids[:, t : t + 1], kv_cache=cache).logits for t in range(6, 13)]
        torch.testing.assert_close(torch.cat(steps, 1), ref, **TOL)
        # transformers' own cache agrees too
        hf_out = hf(ids[:, :6], use_cache=True)
        hf_step = hf(ids[:, 6:7], cache=hf_out.cache, use_cache=True).logits
        torch.testing.assert_close(hf_step[:, 0], ref[:, 6], **TOL)


@pytest.mark.parametrize("tied", [False, True])
def test_export_loads_in_transformers_without_missing_keys(tmp_path, tied):
    torch.manual_seed(1)
    cfg = ModelConfig(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, num_experts=4, top_k=2,
                      expert_hidden=80, rope_theta=5e5, rms_eps=1e-6, tie_embeddings=tied, init_std=0.1,
                      max_seq_len=64)
    model = MoETransformer(cfg).eval()
    export_hf(model, cfg, tmp_path)
    hf, info = MixtralForCausalLM.from_pretrained(tmp_path, output_loading_info=True, attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    hc = hf.config
    assert (hc.num_local_experts, hc.num_experts_per_tok, hc.intermediate_size, hc.head_dim) == (4, 2, 80, 16)
    assert hc.rope_parameters["rope_theta"] == 5e5 and hc.rms_norm_eps == 1e-6 and hc.sliding_window is None
    assert hc.tie_word_embeddings == tied and hc.output_router_logits is False and hc.attention_dropout == 0
    ids = torch.randint(0, 128, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(hf.eval()(ids).logits, model(ids).logits, **TOL)
    cfg2, back = import_hf(tmp_path)
    assert cfg2 == cfg
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_import_legacy_per_expert_checkpoint_as_written_by_save_pretrained(tmp_path):
    hf = _hf_model()
    hf.save_pretrained(tmp_path)  # transformers v5 writes block_sparse_moe.experts.N.w1/w2/w3
    cfg, model = import_hf(tmp_path)
    ids = torch.randint(0, 128, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, **TOL)


def test_state_dict_layouts_round_trip():
    hf = _hf_model()
    cfg, model = _imported(hf)  # from the in-memory fused v5 layout
    sd = model.state_dict()
    fused = state_dict_to_hf(sd, layout="fused")
    assert set(fused) == set(hf.state_dict())
    for k, v in hf.state_dict().items():
        assert torch.equal(fused[k], v), k
    legacy = state_dict_to_hf(sd)
    assert "model.layers.1.block_sparse_moe.experts.3.w2.weight" in legacy
    for layout in (fused, legacy):
        back = state_dict_from_hf(layout, cfg)
        assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


def test_greedy_generation_matches_transformers():
    hf = _hf_model(seed=2)
    _, model = _imported(hf)
    for prompt in ([5, 17, 99, 3], [42], [7, 7, 7, 1, 2, 3, 4, 5]):
        ours = generate(model, [prompt], max_new_tokens=12, eos_token_id=None, pad_token_id=0)[0]
        with torch.no_grad():
            theirs = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 max_new_tokens=12, min_new_tokens=12, do_sample=False, eos_token_id=None,
                                 pad_token_id=0)
        assert ours == theirs[0, len(prompt):].tolist()


def test_config_round_trip_and_errors(tmp_path):
    cfg = ModelConfig(vocab_size=300, d_model=96, n_layers=3, n_heads=6, n_kv_heads=3, num_experts=8, top_k=2)
    assert config_from_hf(config_to_hf(cfg)) == cfg
    assert config_from_hf(config_to_hf(cfg).to_dict()) == cfg
    legacy = {"model_type": "mixtral", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4,
              "intermediate_size": 100, "num_hidden_layers": 2, "vocab_size": 50, "rope_theta": 1e4}
    old = config_from_hf(legacy)
    assert old.rope_theta == 1e4 and old.ffn_hidden == 100 and old.n_kv_heads is None
    with pytest.raises(UserError, match="llama"):
        config_from_hf(LlamaConfig())
    with pytest.raises(UserError, match="rope_type"):
        config_from_hf({**legacy, "rope_scaling": {"rope_type": "linear", "factor": 2.0}})
    with pytest.raises(UserError, match="top_k"):
        config_from_hf({**legacy, "num_local_experts": 2, "num_experts_per_tok": 3})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UserError) as err:
        import_hf(tmp_path)
    assert "\n" not in str(err.value)


def test_pickle_only_checkpoint_is_refused_and_bad_tensors_reported(tmp_path):
    hf = _hf_model()
    (tmp_path / "config.json").write_text(hf.config.to_json_string())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(UserError, match="safetensors"):
        import_hf(tmp_path)
    sd = {k: v.contiguous() for k, v in state_dict_to_hf(_imported(hf)[1].state_dict()).items()}
    del sd["model.layers.1.block_sparse_moe.experts.2.w3.weight"]
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError, match="experts.2.w3"):
        import_hf(tmp_path)


def test_export_with_tokenizer_records_special_ids(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = {"<|bos|>": 0, "<|eos|>": 1, "<|pad|>": 2, "hello": 3, "world": 4}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<|pad|>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>")
    cfg = ModelConfig(vocab_size=5, d_model=32, n_layers=1, n_heads=2, num_experts=2, top_k=1)
    export_hf(MoETransformer(cfg), cfg, tmp_path, tokenizer=tok)
    written = json.loads((tmp_path / "config.json").read_text())
    assert (written["bos_token_id"], written["eos_token_id"], written["pad_token_id"]) == (0, 1, 2)
    assert AutoTokenizer.from_pretrained(tmp_path).encode("hello world") == [0, 3, 4]  # BOS, as Mixtral's
    assert tok.encode("hello world") == [3, 4]  # the tokenizer handed in is left as it was
    assert import_hf(tmp_path)[0] == cfg


def test_exported_tokenizer_adds_bos_once_and_transformers_scores_as_moelab(tmp_path):
    """The export's tokenizer prepends BOS by itself (once, also with lm-eval's add_bos_token=True);
    transformers' Mixtral with it gives moelab's task loss; moelab reading the export adds no second BOS."""
    from transformers import AutoTokenizer

    from moelab.data.tokenizer import train_tokenizer
    from moelab.data.world import TaskItem
    from moelab.eval.taskloss import encode_pairs, task_loss
    from moelab.modelio import load_model

    texts = [f"Question: Where was person {i} born?\nAnswer: city {i % 7}\n" for i in range(60)]
    tok = train_tokenizer(texts, vocab_size=300)
    cfg = ModelConfig(vocab_size=len(tok), d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, num_experts=4, top_k=2,
                      init_std=0.1, max_seq_len=64)
    torch.manual_seed(0)
    model = MoETransformer(cfg).eval()
    export_hf(model, cfg, tmp_path, tokenizer=tok)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["add_bos_token"] is True and config["tokenizer_class"] == "PreTrainedTokenizerFast"
    bos = tok.bos_token_id
    hf_tok = AutoTokenizer.from_pretrained(tmp_path)
    bare = tok.encode("Question: Where?", add_special_tokens=False)
    assert hf_tok("Question: Where?").input_ids == [bos, *bare]  # exactly one BOS, then the text
    assert AutoTokenizer.from_pretrained(tmp_path, add_bos_token=True)("Question: Where?").input_ids == [bos, *bare]
    assert hf_tok("Question: Where?", add_special_tokens=False).input_ids == bare

    items = [TaskItem(f"Question: Where was person {i} born?\nAnswer:", f" city {i % 7}", "") for i in (3, 11, 50)]
    ours = task_loss(model, tok, items)
    hf = MixtralForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    for it, nll in zip(items, ours.nll):
        context = hf_tok(it.prompt).input_ids  # the tokenizer's defaults, as other tools call it
        answer = hf_tok(it.answer, add_special_tokens=False).input_ids
        ids = torch.tensor([context + answer])
        with torch.no_grad():
            logp = torch.log_softmax(hf(ids).logits[0, :-1].double(), dim=-1)
        theirs = -sum(logp[j - 1, ids[0, j]].item() for j in range(len(context), ids.shape[1]))
        assert abs(theirs - nll) <= 1e-5 * abs(nll), (it, theirs, nll)
    # moelab on its own export: one BOS per prompt, the same task loss.
    loaded, loaded_tok, _ = load_model(tmp_path)
    prompts, _ = encode_pairs(loaded_tok, [(it.prompt, it.answer) for it in items])
    assert all(p[0] == bos and p[1] != bos for p in prompts)
    assert task_loss(loaded, loaded_tok, items).nll == pytest.approx(ours.nll, rel=1e-6)


# ---------------------------------------------------------------- the gate rule and its classes


@pytest.mark.parametrize("top_k,router_norm,cls_name", [
    (1, "auto", "Qwen2MoeForCausalLM"),  # Switch's gate: Mixtral cannot represent it
    (2, "none", "Qwen2MoeForCausalLM"),
    (2, "auto", "MixtralForCausalLM"),
    (1, "renormalize", "MixtralForCausalLM"),  # the old top-1 gate (always 1): Mixtral's own rule
])
def test_every_gate_rule_exports_to_a_class_that_computes_it(tmp_path, top_k, router_norm, cls_name):
    import transformers

    torch.manual_seed(2)
    cfg = ModelConfig(vocab_size=96, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, num_experts=4, top_k=top_k,
                      router_norm=router_norm, init_std=0.1, max_seq_len=64)
    model = MoETransformer(cfg).eval()
    export_hf(model, cfg, tmp_path)
    cls = getattr(transformers, cls_name)
    hf, info = cls.from_pretrained(tmp_path, output_loading_info=True, attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [cls_name]
    ids = torch.randint(0, 96, (2, 12))
    with torch.no_grad():
        ours = model(ids).logits
        torch.testing.assert_close(hf.eval()(ids).logits, ours, **TOL)
    cfg2, back = import_hf(tmp_path)
    assert cfg2.renormalize_gate == cfg.renormalize_gate
    assert cfg2.model_copy(update={"router_norm": router_norm}) == cfg  # the same gate, canonically spelt
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, ours, atol=0, rtol=0)


def test_mixtral_top1_imports_with_its_renormalised_gate():
    torch.manual_seed(0)
    hf = MixtralForCausalLM(MixtralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=1, max_position_embeddings=32)).eval()
    cfg, model = _imported(hf)
    assert cfg.router_norm == "renormalize" and cfg.renormalize_gate
    ids = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, **TOL)


def test_qwen2_moe_with_a_shared_expert_or_biases_is_refused_in_one_line():
    from transformers import Qwen2MoeConfig

    base = dict(vocab_size=64, hidden_size=32, intermediate_size=48, moe_intermediate_size=48, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, qkv_bias=False,
                shared_expert_intermediate_size=0, norm_topk_prob=True)
    assert config_from_hf(Qwen2MoeConfig(**base)).router_norm == "auto"
    assert config_from_hf(Qwen2MoeConfig(**{**base, "norm_topk_prob": False})).router_norm == "none"
    with pytest.raises(UserError, match="shared expert"):
        config_from_hf(Qwen2MoeConfig(**{**base, "shared_expert_intermediate_size": 64}))
    with pytest.raises(UserError, match="qkv_bias"):
        config_from_hf(Qwen2MoeConfig(**{**base, "qkv_bias": True}))
