"""Corpora: file kinds, user errors, train/val split, mixture weights, packing."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from moelab.config import DataConfig, DataSourceConfig
from moelab.data.corpus import PackedBatches, build_streams, build_tokenizer, load_documents, val_batches
from moelab.errors import UserError

DOCS = [f"Document number {i} talks about topic {i % 7} at some length." for i in range(40)]


def _jsonl(path, docs, field="text"):
    path.write_text("".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)))
    return path


def _cfg(*sources, **kw):
    return DataConfig(sources=list(sources), seq_len=kw.pop("seq_len", 16), **kw)


# ------------------------------------------------------------------ reading


def test_text_files_split_at_blank_lines(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\nstill first\n\n\nsecond doc\n  \nthird doc\n")
    (tmp_path / "b.txt").write_text("fourth doc")
    (tmp_path / "skip.md").write_text("not read")
    src = DataSourceConfig(kind="text", path=str(tmp_path))
    assert load_documents(src) == ["first doc\nstill first", "second doc", "third doc", "fourth doc"]
    single = DataSourceConfig(kind="text", path=str(tmp_path / "b.txt"))
    assert load_documents(single) == ["fourth doc"]


def test_jsonl_and_parquet(tmp_path):
    src = DataSourceConfig(kind="jsonl", path=str(_jsonl(tmp_path / "c.jsonl", DOCS)))
    assert load_documents(src) == DOCS
    pq.write_table(pa.table({"body": DOCS, "n": list(range(40))}), tmp_path / "c.parquet")
    src = DataSourceConfig(kind="parquet", path=str(tmp_path / "c.parquet"), text_field="body")
    assert load_documents(src) == DOCS


def test_hf_local_file_and_directory(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    path = _jsonl(tmp_path / "d.jsonl", DOCS)
    assert load_documents(DataSourceConfig(kind="hf", path=str(path))) == DOCS
    datasets.Dataset.from_dict({"text": DOCS[:5]}).save_to_disk(str(tmp_path / "saved"))
    assert load_documents(DataSourceConfig(kind="hf", path=str(tmp_path / "saved"))) == DOCS[:5]
    with pytest.raises(UserError, match="no text field 'body'.*text"):
        load_documents(DataSourceConfig(kind="hf", path=str(path), text_field="body"))


def test_user_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(UserError, match=f"{missing}: no such file"):
        load_documents(DataSourceConfig(kind="jsonl", path=str(missing)))
    bad_field = _jsonl(tmp_path / "e.jsonl", DOCS[:3], field="content")
    with pytest.raises(UserError, match=r"e\.jsonl:1: no text field 'text' \(found: content, id\)"):
        load_documents(DataSourceConfig(kind="jsonl", path=str(bad_field)))
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: invalid JSON"):
        load_documents(DataSourceConfig(kind="jsonl", path=str(tmp_path / "bad.jsonl")))
    (tmp_path / "empty.txt").write_text("\n\n   \n")
    with pytest.raises(UserError, match="empty.txt: empty corpus"):
        load_documents(DataSourceConfig(kind="text", path=str(tmp_path / "empty.txt")))
    pq.write_table(pa.table({"body": DOCS}), tmp_path / "f.parquet")
    with pytest.raises(UserError, match=r"f\.parquet: no text field 'text' \(columns: body\)"):
        load_documents(DataSourceConfig(kind="parquet", path=str(tmp_path / "f.parquet")))
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UserError, match="nothing: no .jsonl files"):
        load_documents(DataSourceConfig(kind="jsonl", path=str(tmp_path / "nothing")))
    (tmp_path / "one.txt").write_text("just one document")
    with pytest.raises(UserError, match="one.txt: only 1 document"):
        build_streams(_cfg(DataSourceConfig(kind="text", path=str(tmp_path / "one.txt"))), tokenizer=None)


# ------------------------------------------------------------------ streams


def test_streams_split_documents_deterministically(tmp_path, tokenizer):
    cfg = _cfg(DataSourceConfig(kind="jsonl", path=str(_jsonl(tmp_path / "g.jsonl", DOCS))), val_fraction=0.1)
    a, b = build_streams(cfg, tokenizer), build_streams(cfg, tokenizer)
    assert a.train.dtype == np.int32 and np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert a.val[0] == bos and a.val[-1] == eos and a.train[0] == bos
    assert a.sources[0]["val_docs"] == 4 and a.sources[0]["train_docs"] == 36
    val_text = tokenizer.decode(a.val)
    train_text = tokenizer.decode(a.train)
    val_docs = [d for d in DOCS if d in val_text]
    assert len(val_docs) == 4 and not any(d in train_text for d in val_docs)


def test_world_stream_keeps_eval_train_items_in_training(small_world, tokenizer):
    cfg = _cfg(DataSourceConfig(kind="world"), val_fraction=0.3)
    streams = build_streams(cfg, tokenizer, small_world)
    val_text = tokenizer.decode(streams.val)
    for task in small_world.tasks().values():
        for item in task.splits["train"]:
            assert item.prompt + item.answer + tokenizer.eos_token not in val_text


def test_mixture_weights_scale_each_source(tmp_path, tokenizer):
    a = DataSourceConfig(kind="jsonl", path=str(_jsonl(tmp_path / "a.jsonl", DOCS)))
    b = DataSourceConfig(kind="text", path=str(tmp_path / "b.txt"))
    (tmp_path / "b.txt").write_text("\n\n".join(f"Other text {i} here." for i in range(40)))
    base = build_streams(_cfg(a, b), tokenizer).sources
    mixed = build_streams(_cfg(a.model_copy(update={"weight": 2.0}), b.model_copy(update={"weight": 0.5})), tokenizer)
    assert mixed.sources[0]["train_tokens"] == 2 * base[0]["train_tokens"]
    assert mixed.sources[1]["train_tokens"] < 0.6 * base[1]["train_tokens"]
    assert mixed.sources[1]["train_tokens"] > 0.4 * base[1]["train_tokens"]
    assert len(mixed.train) == mixed.sources[0]["train_tokens"] + mixed.sources[1]["train_tokens"]
    assert mixed.sources[1]["val_tokens"] == base[1]["val_tokens"]  # validation is unweighted


def test_build_tokenizer_trains_or_loads(tmp_path, tokenizer):
    cfg = _cfg(DataSourceConfig(kind="jsonl", path=str(_jsonl(tmp_path / "t.jsonl", DOCS))), vocab_size=300)
    trained = build_tokenizer(cfg)
    assert len(trained) <= 300 and trained.bos_token == "<|bos|>"
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = build_tokenizer(cfg.model_copy(update={"tokenizer": str(tmp_path / "tok")}))
    assert loaded.get_vocab() == tokenizer.get_vocab()


# ------------------------------------------------------------------ packing


def test_packing_shapes_and_determinism():
    tokens = np.arange(1001, dtype=np.int32)
    batches = PackedBatches(tokens, seq_len=10, batch_size=4, seed=3)
    assert batches.num_sequences == 100
    x, y = batches.batch(7)
    assert x.shape == y.shape == (4, 10) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:, -1], x[:, -1] + 1)
    assert bool((x[:, 0] % 10 == 0).all())  # windows start on sequence boundaries
    # the data position is the step alone: a fresh object (a resumed run) gives the same batch
    assert torch.equal(PackedBatches(tokens, 10, 4, seed=3).batch(7)[0], x)
    assert not torch.equal(PackedBatches(tokens, 10, 4, seed=4).batch(7)[0], x)


def test_each_epoch_visits_every_window_once():
    tokens = np.arange(241, dtype=np.int32)
    batches = PackedBatches(tokens, seq_len=8, batch_size=6, seed=0)  # 30 windows, 5 steps per epoch
    for epoch in range(3):
        starts = torch.cat([batches.batch(epoch * 5 + s)[0][:, 0] for s in range(5)])
        assert sorted(starts.tolist()) == list(range(0, 240, 8))
    # a batch straddling an epoch boundary is still full
    assert PackedBatches(tokens, 8, 7, seed=0).batch(4)[0].shape == (7, 8)
    assert batches.epoch(5) == 1.0


def test_too_small_corpus_is_a_user_error():
    with pytest.raises(UserError, match="fewer than one batch of 8"):
        PackedBatches(np.arange(50, dtype=np.int32), seq_len=10, batch_size=8, seed=0)
    with pytest.raises(UserError, match="validation stream has 5 tokens"):
        val_batches(np.arange(5, dtype=np.int32), seq_len=10, n=2, batch_size=2)


def test_val_batches_are_fixed_and_spread():
    tokens = np.arange(1001, dtype=np.int32)
    first = val_batches(tokens, seq_len=10, n=3, batch_size=4)
    again = val_batches(tokens, seq_len=10, n=3, batch_size=4)
    assert len(first) == 3 and all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    starts = torch.cat([x[:, 0] for x, _ in first]).tolist()
    assert starts[0] == 0 and starts[-1] == 990 and len(set(starts)) == 12
    few = val_batches(np.arange(31, dtype=np.int32), seq_len=10, n=4, batch_size=2)
    assert [x.shape[0] for x, _ in few] == [2, 1]  # only 3 windows exist


# ------------------------------------------------------------------ per-epoch document order


def _docs_stream(lengths, seed=0):
    """A stream of documents [bos=1000+i, i, i, …] of the given lengths, and their offsets."""
    from moelab.data.corpus import doc_starts

    docs = [np.array([1000 + i] + [i] * (n - 1), dtype=np.int32) for i, n in enumerate(lengths)]
    return np.concatenate(docs), doc_starts(lengths)


def _epoch_windows(batches, epoch, steps_per_epoch):
    return torch.cat([batches.batch(epoch * steps_per_epoch + s)[0] for s in range(steps_per_epoch)])


def test_per_epoch_order_relays_documents_and_keeps_them_whole():
    lengths = np.random.default_rng(0).integers(3, 12, size=60)
    tokens, starts = _docs_stream(lengths)
    seq, batch = 8, 4
    batches = PackedBatches(tokens, seq, batch, seed=5, doc_starts=starts)
    steps = batches.num_sequences // batch
    epoch0, epoch1 = batches._stream(0), batches._stream(1)
    # each epoch's stream holds every document once, whole, in an order of its own
    for stream in (epoch0, epoch1):
        assert sorted(stream.tolist()) == sorted(tokens.tolist())
        firsts = [int(t) - 1000 for t in stream if t >= 1000]
        assert sorted(firsts) == list(range(60))
        at = 0
        for i in firsts:  # document i starts at `at` and is lengths[i] long
            assert stream[at] == 1000 + i and (stream[at + 1: at + lengths[i]] == i).all()
            at += lengths[i]
    assert not np.array_equal(epoch0, epoch1) and not np.array_equal(epoch0, tokens)
    # the windows of two epochs differ in content, not only in order: neighbours change
    w0 = {tuple(r) for r in _epoch_windows(batches, 0, steps).tolist()}
    w1 = {tuple(r) for r in _epoch_windows(batches, 1, steps).tolist()}
    assert len(w0 & w1) < len(w0) // 4
    # the data position is still the step alone: a resumed run sees the same batches
    again = PackedBatches(tokens, seq, batch, seed=5, doc_starts=starts)
    for step in (0, steps - 1, steps, 3 * steps + 1):
        assert torch.equal(again.batch(step)[0], batches.batch(step)[0])
        x, y = batches.batch(step)
        assert torch.equal(x[:, 1:], y[:, :-1])


def test_fixed_order_is_the_old_packing():
    tokens, starts = _docs_stream([5, 7, 9, 4, 6] * 10)
    fixed = PackedBatches(tokens, 8, 4, seed=2)
    for step in range(12):  # without offsets, every epoch cuts the same windows (before 2026-12-07)
        assert torch.equal(fixed.batch(step)[0], _windows_of(tokens, fixed, step))


def _windows_of(tokens, batches, step):
    positions = step * batches.batch_size + np.arange(batches.batch_size)
    epochs, within = np.divmod(positions, batches.num_sequences)
    rows = [np.random.default_rng([batches.seed, int(e)]).permutation(batches.num_sequences)[w]
            for e, w in zip(epochs, within)]
    return torch.tensor(np.stack([tokens[r * 8: r * 8 + 8] for r in rows]).astype(np.int64))


def test_document_order_default_and_legacy_configs():
    assert DataConfig().document_order == "per_epoch"
    saved_before = {"world": {}, "sources": [{"kind": "world"}], "tokenizer": None, "vocab_size": 512,
                    "seq_len": 128, "val_fraction": 0.05}  # every field of a config saved before 2026-12-07
    assert DataConfig(**saved_before).document_order == "fixed"
    assert DataConfig(seq_len=64).document_order == "per_epoch"  # a config a person writes
    with pytest.raises(Exception, match="document_order"):
        DataConfig(document_order="sometimes")
