"""Cached token streams: the same arrays as build_streams, tokenized once per data config and tokenizer."""

import numpy as np

from moelab.config import DataConfig
from moelab.data import cache
from moelab.data.corpus import build_streams


def test_second_call_reads_the_cache_and_gives_the_same_streams(tmp_path, monkeypatch, tokenizer):
    monkeypatch.setenv("MOELAB_CACHE", str(tmp_path))
    cfg = DataConfig(world={"num_people": 20, "reasoning_train_items": 40, "reasoning_eval_items": 10,
                            "knowledge_eval_items": 10}, seq_len=16)
    fresh = build_streams(cfg, tokenizer)
    first = cache.cached_streams(cfg, tokenizer)
    calls = []
    monkeypatch.setattr("moelab.data.corpus.build_streams", lambda *a, **k: calls.append(1))
    second = cache.cached_streams(cfg.model_copy(update={"seq_len": 32}), tokenizer)  # seq_len: same entry
    assert calls == [] and isinstance(second.train, np.memmap)
    for s in (first, second):
        np.testing.assert_array_equal(s.train, fresh.train)
        np.testing.assert_array_equal(s.val, fresh.val)
        np.testing.assert_array_equal(s.train_doc_starts, fresh.train_doc_starts)  # the boundaries come back
        assert s.sources == fresh.sources
    assert len(list((tmp_path / "streams").iterdir())) == 1
    other = cfg.model_copy(update={"val_fraction": 0.1})  # another config: another entry, built
    monkeypatch.undo()
    monkeypatch.setenv("MOELAB_CACHE", str(tmp_path))
    cache.cached_streams(other, tokenizer)
    assert len([p for p in (tmp_path / "streams").iterdir() if not p.name.startswith(".")]) == 2


def test_a_damaged_entry_is_rebuilt(tmp_path, monkeypatch, tokenizer):
    monkeypatch.setenv("MOELAB_CACHE", str(tmp_path))
    cfg = DataConfig(world={"num_people": 20, "reasoning_train_items": 40, "reasoning_eval_items": 10,
                            "knowledge_eval_items": 10}, seq_len=16)
    want = cache.cached_streams(cfg, tokenizer).train.copy()
    idx = next((tmp_path / "streams").glob("*/train.idx"))
    idx.write_bytes(idx.read_bytes()[:-4])
    np.testing.assert_array_equal(cache.cached_streams(cfg, tokenizer).train, want)
    np.testing.assert_array_equal(cache.cached_streams(cfg, tokenizer).train, want)
