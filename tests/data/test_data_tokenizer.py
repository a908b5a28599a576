"""Tokenizer: BPE training, digits, special tokens, Hugging Face save/load."""

import pytest
from transformers import AutoTokenizer

from moelab.data.tokenizer import BOS, EOS, PAD, encode_prompt, load_tokenizer, save_tokenizer, train_tokenizer
from moelab.errors import UserError


def test_round_trip_and_special_tokens(tokenizer, small_world):
    for text in small_world.documents()[:20] + ["naïve café — 😀 unseen bytes\n\ttab"]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (BOS, EOS, PAD)
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    assert len(tokenizer) <= 400
    # special tokens are single ids, and are not added implicitly
    assert tokenizer.encode(f"{BOS}hi{EOS}", add_special_tokens=False)[0] == tokenizer.bos_token_id
    assert tokenizer("hi")["input_ids"] == tokenizer.encode("hi", add_special_tokens=False)


def test_digits_are_single_tokens(tokenizer):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode(" 12345 = 670", add_special_tokens=False))
    digits = [t for t in tokens if any(c.isdigit() for c in t)]
    assert digits == list("12345670")


def test_encode_prompt_prepends_bos(tokenizer):
    ids = encode_prompt(tokenizer, "Question: hi\nAnswer:")
    assert ids[0] == tokenizer.bos_token_id
    assert ids[1:] == tokenizer.encode("Question: hi\nAnswer:", add_special_tokens=False)


def test_save_and_load_in_hugging_face_format(tokenizer, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"keep me")  # saving must not wipe other files
    save_tokenizer(tokenizer, tmp_path)
    assert (tmp_path / "tokenizer.json").is_file() and (tmp_path / "model.safetensors").read_bytes() == b"keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tokenizer-tmp")]
    text = "Question: Calculate 12 + 7.\nAnswer: 19"
    for loaded in (load_tokenizer(tmp_path), AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)):
        assert loaded.encode(text, add_special_tokens=False) == tokenizer.encode(text, add_special_tokens=False)
        assert loaded.bos_token == BOS and loaded.pad_token_id == tokenizer.pad_token_id


def test_adding_bos_copy_prepends_one_bos_and_survives_a_save(tokenizer, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from moelab.data.tokenizer import adding_bos
    from moelab.eval.taskloss import encode_pairs

    text = "Question: hi\nAnswer:"
    bare = tokenizer.encode(text, add_special_tokens=False)
    auto = adding_bos(tokenizer)
    assert auto(text)["input_ids"] == [tokenizer.bos_token_id, *bare]
    assert tokenizer(text)["input_ids"] == bare  # the original is untouched
    assert adding_bos(auto)(text)["input_ids"] == [tokenizer.bos_token_id, *bare]  # idempotent
    save_tokenizer(auto, tmp_path)
    for loaded in (load_tokenizer(tmp_path), AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)):
        assert loaded(text)["input_ids"] == [tokenizer.bos_token_id, *bare]
        assert encode_prompt(loaded, text) == [tokenizer.bos_token_id, *bare]  # moelab's own paths: no second BOS
        assert encode_pairs(loaded, [(text, " 19")])[0] == [[tokenizer.bos_token_id, *bare]]
    # GPT-2 style (EOS only): moelab reads EOS as BOS, and so does the copy.
    raw = Tokenizer(models.WordLevel({"<|endoftext|>": 0, "hi": 1}, unk_token="<|endoftext|>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    gpt2 = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>")
    assert adding_bos(gpt2)("hi hi")["input_ids"] == [0, 1, 1]


def test_training_is_deterministic():
    texts = ["alpha beta gamma 123", "beta gamma delta 456", "gamma delta epsilon"] * 10
    a, b = train_tokenizer(texts, 300), train_tokenizer(texts, 300)
    assert a.get_vocab() == b.get_vocab()


def test_missing_tokenizer_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such tokenizer directory"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(UserError, match="not a tokenizer directory"):
        load_tokenizer(tmp_path)


def test_prompt_and_answer_tokenize_independently(tokenizer, small_world):
    # Task loss scores answer tokens after the prompt; the split must not change the tokens.
    for task in small_world.tasks().values():
        for item in task.splits["train"] + task.splits["heldout"]:
            joint = tokenizer.encode(item.prompt + item.answer, add_special_tokens=False)
            parts = tokenizer.encode(item.prompt, add_special_tokens=False)
            assert joint == parts + tokenizer.encode(item.answer, add_special_tokens=False)
