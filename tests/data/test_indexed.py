"""Megatron-LM's indexed dataset: moelab's reader and writer against megatron-core's own, both ways."""

import warnings

import numpy as np
import pytest

from moelab.data.indexed import IndexedDataset, bin_path, idx_path, token_dtype, write_indexed
from moelab.errors import UserError


@pytest.fixture(scope="module")
def mcore():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Transformer Engine and Apex are not installed" on CPU
        return pytest.importorskip("megatron.core.datasets.indexed_dataset")


def _docs(num, vocab, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=int(n)) for n in rng.integers(1, 300, size=num)]


@pytest.mark.parametrize("vocab", [400, 99_584])  # uint16, and int32 for the paper's 99,584 tokens
def test_moelab_writes_megatron_reads(tmp_path, mcore, vocab):
    docs = _docs(57, vocab)
    prefix = write_indexed(tmp_path / "corpus_text_document", docs, token_dtype(vocab))
    theirs = mcore.IndexedDataset(str(prefix))
    assert len(theirs) == len(docs)
    assert theirs.index.dtype == (np.uint16 if vocab < 65_500 else np.int32)
    assert theirs.document_indices.tolist() == list(range(len(docs) + 1))
    for i, doc in enumerate(docs):
        assert theirs[i].tolist() == doc.tolist()
    assert theirs.sequence_lengths.tolist() == [len(d) for d in docs]


def test_megatron_writes_moelab_reads(tmp_path, mcore):
    """Megatron's builder, with several sequences in some documents (sentence-split style)."""
    import torch

    prefix = str(tmp_path / "theirs")
    builder = mcore.IndexedDatasetBuilder(str(bin_path(prefix)), dtype=np.uint16)
    docs = [_docs(n, 60_000, seed=n) for n in (1, 3, 2, 1)]  # documents of 1-3 sequences
    for doc in docs:
        for seq in doc:
            builder.add_item(torch.tensor(seq))
        builder.end_document()
    builder.finalize(str(idx_path(prefix)))
    ours = IndexedDataset(prefix)
    flat = [seq for doc in docs for seq in doc]
    assert len(ours) == len(flat) and ours.num_documents == len(docs)
    assert ours.document_indices.tolist() == [0, 1, 4, 6, 7]
    assert all(ours[i].tolist() == seq.tolist() for i, seq in enumerate(flat))
    assert ours.tokens.tolist() == np.concatenate(flat).tolist()  # the whole .bin as one stream
    assert ours.dtype == np.uint16


def test_megatron_int32_and_our_reader_agree_on_every_array(tmp_path, mcore):
    import torch

    prefix = str(tmp_path / "wide")
    builder = mcore.IndexedDatasetBuilder(str(bin_path(prefix)), dtype=np.int32)
    for doc in _docs(20, 99_584, seed=3):
        builder.add_item(torch.tensor(doc))
        builder.end_document()
    builder.finalize(str(idx_path(prefix)))
    ours, theirs = IndexedDataset(prefix), mcore.IndexedDataset(prefix)
    np.testing.assert_array_equal(ours.sequence_lengths, theirs.sequence_lengths)
    np.testing.assert_array_equal(ours.document_indices, theirs.document_indices)
    np.testing.assert_array_equal(ours.sequence_pointers, theirs.index.sequence_pointers)
    assert ours.dtype == np.int32


def test_truncated_idx_or_bin_is_one_line_user_error(tmp_path):
    prefix = write_indexed(tmp_path / "c", _docs(10, 400), np.uint16)
    data = idx_path(prefix).read_bytes()
    idx_path(prefix).write_bytes(data[:-5])
    with pytest.raises(UserError, match="truncated or damaged index"):
        IndexedDataset(prefix)
    idx_path(prefix).write_bytes(data[:20])
    with pytest.raises(UserError, match="bad or truncated header"):
        IndexedDataset(prefix)
    idx_path(prefix).write_bytes(data)
    raw = bin_path(prefix).read_bytes()
    bin_path(prefix).write_bytes(raw[:-2])
    with pytest.raises(UserError, match="truncated data"):
        IndexedDataset(prefix)
    bin_path(prefix).write_bytes(raw)
    assert IndexedDataset(prefix).num_documents == 10


def test_out_of_range_token_refused_and_nothing_written(tmp_path):
    with pytest.raises(ValueError, match="out of range"):
        write_indexed(tmp_path / "c", [np.array([1, 70_000])], np.uint16)
    assert list(tmp_path.iterdir()) == []
