"""Data: the default knowledge-and-reasoning world, tokenizers, corpora and packed batches.

Typical use (what the trainer does)::

    world = build_world(cfg.data.world)
    tok = build_tokenizer(cfg.data, world)          # or load_tokenizer(run_dir / "tokenizer")
    streams = build_streams(cfg.data, tok, world)
    batches = PackedBatches(streams.train, cfg.data.seq_len, cfg.train.batch_size, cfg.train.seed,
                            doc_starts=streams.train_doc_starts)   # data.document_order: per_epoch
    inputs_BT, targets_BT = batches.batch(step)
    val = streams.val_batches(cfg.train.eval_batches, cfg.train.batch_size)
"""

from moelab.data.corpus import (
    PackedBatches,
    TokenStreams,
    build_streams,
    build_tokenizer,
    load_documents,
    tokenizer_texts,
    val_batches,
)
from moelab.data.tokenizer import (
    BOS,
    EOS,
    PAD,
    bos_eos_ids,
    encode_prompt,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from moelab.data.world import Task, TaskItem, World, build_world

__all__ = [
    "BOS", "EOS", "PAD", "PackedBatches", "Task", "TaskItem", "TokenStreams", "World",
    "bos_eos_ids", "build_streams", "build_tokenizer", "build_world", "encode_prompt",
    "load_documents", "load_tokenizer", "save_tokenizer", "tokenizer_texts", "train_tokenizer", "val_batches",
]
