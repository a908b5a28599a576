"""Byte-level BPE tokenizers: train on the run's own text, save and load in Hugging Face format.

The tokenizer adds no special tokens by itself (``tok.encode(text)`` is the bare text);
callers add ``<|bos|>`` / ``<|eos|>`` explicitly: ``encode_prompt`` for prompts, the corpus
for documents (``<|bos|> doc <|eos|>``). Every moelab encode path passes
``add_special_tokens=False``, so a tokenizer that adds BOS by itself — Mixtral's, or the copy a
Hugging Face export carries (:func:`adding_bos`) — never gets a second one.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from moelab.errors import UserError, one_line

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
SPECIAL_TOKENS = (BOS, EOS, PAD)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE with ``<|bos|>``, ``<|eos|>``, ``<|pad|>`` (ids 0, 1, 2).

    Digits are split one per token before BPE, so no merge ever spans two digits and
    arithmetic keeps a consistent per-digit representation.
    """
    tok = Tokenizer(models.BPE())  # byte-level: every byte is in the alphabet, no <unk> needed
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)


def save_tokenizer(tok: PreTrainedTokenizerBase, directory: str | Path) -> None:
    """Write the tokenizer files into ``directory`` (created if needed; other files there are kept).

    Each file is written to a temporary directory first and moved into place with an
    atomic rename, so a crash never leaves a half-written tokenizer file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".tokenizer-tmp-") as tmp:
        tok.save_pretrained(tmp)
        add_bos = bool(getattr(tok, "add_bos_token", False))
        _portable_class_name(Path(tmp) / "tokenizer_config.json", add_bos_token=add_bos)
        for name in sorted(os.listdir(tmp)):
            with open(os.path.join(tmp, name), "rb") as f:
                os.fsync(f.fileno())
            os.replace(os.path.join(tmp, name), directory / name)


def _portable_class_name(config_path: Path, *, add_bos_token: bool = False) -> None:
    # transformers 5 writes "TokenizersBackend", which transformers 4 cannot load; both
    # versions load "PreTrainedTokenizerFast" (an alias of the same class in 5). It also leaves
    # add_bos_token out: the post-processor in tokenizer.json adds BOS; the flag says so to the
    # readers that look for it (transformers' own __init__, lm-eval, vLLM).
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    before = dict(config)
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    if add_bos_token:
        config["add_bos_token"] = True
    if config != before:
        config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerBase:
    """Load a Hugging Face tokenizer directory offline; a missing or unreadable one is a UserError."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise UserError(f"{directory}: no such tokenizer directory")
    if not any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise UserError(f"{directory}: not a tokenizer directory (no tokenizer.json or tokenizer_config.json)")
    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as err:  # transformers raises many types; the user needs one line
        first = one_line(err)
        raise UserError(f"{directory}: cannot load tokenizer: {first}") from None


def bos_eos_ids(tok: PreTrainedTokenizerBase) -> tuple[int, int]:
    """(BOS id, EOS id). A tokenizer with only one of them (GPT-2 style) uses it for both."""
    bos, eos = tok.bos_token_id, tok.eos_token_id
    bos = eos if bos is None else bos
    eos = bos if eos is None else eos
    if bos is None:
        raise UserError(f"tokenizer {tok.name_or_path or ''} has neither a BOS nor an EOS token".replace("  ", " "))
    return bos, eos


def adding_bos(tok: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """A copy of ``tok`` whose plain ``tok(text)`` is BOS + the text (no EOS), as Mixtral's tokenizer
    does (a ``TemplateProcessing`` post-processor ``BOS $A``, and ``add_bos_token`` when saved).

    For exports: lm-eval, vLLM and TRL encode with the tokenizer's defaults, and so condition on
    ``BOS + prompt`` as moelab does. (A tokenizer with only EOS, GPT-2 style, gets EOS as its BOS,
    which is what :func:`bos_eos_ids` and so moelab read.)
    """
    bos, _ = bos_eos_ids(tok)
    out = copy.deepcopy(tok)
    if out.bos_token is None:
        out.bos_token = out.convert_ids_to_tokens(bos)
    if getattr(out, "add_eos_token", False):
        out.add_eos_token = False  # moelab's prompts end with the prompt, not with EOS
    out.add_bos_token = True  # transformers >= 5 rebuilds the post-processor: TemplateProcessing("BOS $A")
    probe, bare = out("a b")["input_ids"], out("a b", add_special_tokens=False)["input_ids"]
    if probe != [bos, *bare]:
        raise UserError(f"tokenizer {tok.name_or_path or ''}: cannot make it add one BOS by itself "
                        f"(it encodes 'a b' as {probe[:6]})".replace("  ", " "))
    return out


def encode_prompt(tok: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` with BOS prepended — how every document starts in training."""
    return [bos_eos_ids(tok)[0], *tok.encode(text, add_special_tokens=False)]
