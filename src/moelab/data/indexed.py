"""Megatron-LM's indexed dataset (``PREFIX.bin`` + ``PREFIX.idx``): moelab's own reader and writer.

The same files feed ``pretrain_gpt.py --data-path PREFIX`` and moelab. moelab reads them with
numpy memory maps (no Megatron import: megatron-core takes seconds to import and pulls in its
whole training stack), and tests check both directions against megatron-core's own
``IndexedDataset`` / ``IndexedDatasetBuilder`` (tests/data/test_indexed.py).

Layout (facts from megatron.core.datasets.indexed_dataset, version 1, all little-endian)::

    PREFIX.idx   b"MMIDIDX\\x00\\x00"         9 bytes, magic
                 version             uint64  = 1
                 dtype code          uint8   1 uint8, 2 int8, 3 int16, 4 int32, 5 int64,
                                             6 float64, 7 float32, 8 uint16
                 sequence_count S    uint64
                 document_count D+1  uint64
                 sequence_lengths    int32[S]    tokens per sequence
                 sequence_pointers   int64[S]    byte offset of each sequence in .bin
                 document_indices    int64[D+1]  0, then the sequence index ending each document
                 (sequence_modes     int8[S]     multimodal datasets only; moelab writes none)
    PREFIX.bin   the tokens of every sequence back to back, in the dtype above

moelab writes one sequence per document (as Megatron's ``preprocess_data.py`` does without
sentence splitting), so ``document_indices == arange(D+1)``; it reads any valid file, several
sequences per document included. Tokens are ``uint16`` when the vocabulary has fewer than 65,500
tokens and ``int32`` otherwise — Megatron's own rule (``DType.optimal_dtype``); its format has
no uint32 code, so a wider dtype than int32 could not be read by Megatron.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from moelab.atomic import fsync_dir
from moelab.errors import UserError

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPES: dict[int, type] = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64,
                           6: np.float64, 7: np.float32, 8: np.uint16}
CODES = {np.dtype(t): c for c, t in DTYPES.items()}
_HEADER = len(MAGIC) + 8 + 1 + 8 + 8  # magic, version, dtype code, two counts: 34 bytes


def token_dtype(vocab_size: int) -> np.dtype:
    """The token dtype Megatron picks for a vocabulary of ``vocab_size`` (``DType.optimal_dtype``)."""
    return np.dtype(np.uint16 if vocab_size < 65_500 else np.int32)


def idx_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.idx")


def bin_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.bin")


def exists(prefix: str | Path) -> bool:
    return idx_path(prefix).is_file() and bin_path(prefix).is_file()


class IndexedDataset:
    """A read-only view of ``PREFIX.bin``/``PREFIX.idx`` through memory maps.

    Nothing is read into memory but the three index arrays' pages as they are touched: a
    sequence is ``tokens[pointer : pointer + length]`` of the ``.bin`` map. A truncated or
    malformed pair is a ``UserError`` naming the file (checked from sizes, without reading the data).
    """

    def __init__(self, prefix: str | Path, *, random_access: bool = False):
        self.prefix = str(prefix)
        ipath, bpath = idx_path(prefix), bin_path(prefix)
        for p in (ipath, bpath):
            if not p.is_file():
                raise UserError(f"{p}: no such file (an indexed dataset is PREFIX.bin + PREFIX.idx)")
        size = ipath.stat().st_size
        with open(ipath, "rb") as f:
            head = f.read(_HEADER)
        if len(head) < _HEADER or head[: len(MAGIC)] != MAGIC:
            raise UserError(f"{ipath}: not a Megatron indexed dataset index (bad or truncated header)")
        version, code, num_seq, num_doc = struct.unpack("<QBQQ", head[len(MAGIC):])
        if version != VERSION or code not in DTYPES:
            raise UserError(f"{ipath}: unsupported index (version {version}, dtype code {code})")
        self.dtype = np.dtype(DTYPES[code])
        body = num_seq * 4 + num_seq * 8 + num_doc * 8
        if size not in (_HEADER + body, _HEADER + body + num_seq):  # + int8 modes when multimodal
            raise UserError(f"{ipath}: truncated or damaged index ({size} bytes, expected {_HEADER + body} "
                            f"for {num_seq} sequences and {num_doc - 1} documents)")
        self._idx = np.memmap(ipath, dtype=np.uint8, mode="r")
        self.sequence_lengths = np.frombuffer(self._idx, np.int32, num_seq, _HEADER)  # [S]
        self.sequence_pointers = np.frombuffer(self._idx, np.int64, num_seq, _HEADER + 4 * num_seq)  # [S]
        self.document_indices = np.frombuffer(self._idx, np.int64, num_doc, _HEADER + 12 * num_seq)  # [D+1]
        need = int(self.sequence_pointers[-1]) + int(self.sequence_lengths[-1]) * self.dtype.itemsize if num_seq else 0
        if bpath.stat().st_size < need:
            raise UserError(f"{bpath}: truncated data ({bpath.stat().st_size} bytes, the index needs {need})")
        # An empty .bin cannot be memory-mapped; an empty dataset reads as zero tokens.
        self.tokens = (np.memmap(bpath, dtype=self.dtype, mode="r") if bpath.stat().st_size
                       else np.zeros(0, self.dtype))  # [num_tokens], the whole .bin
        if random_access and isinstance(self.tokens, np.memmap):
            import mmap

            # Training reads scattered windows: no readahead of the neighbours of each (on a cold page
            # cache the kernel would otherwise read up to 128 KB around every 1-8 KB window).
            self.tokens._mmap.madvise(mmap.MADV_RANDOM)

    def __len__(self) -> int:
        return len(self.sequence_lengths)

    @property
    def num_documents(self) -> int:
        return len(self.document_indices) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.sequence_lengths.sum(dtype=np.int64))

    def __getitem__(self, i: int) -> np.ndarray:
        """Sequence ``i`` (a view into the map, no copy)."""
        start = int(self.sequence_pointers[i]) // self.dtype.itemsize
        return self.tokens[start:start + int(self.sequence_lengths[i])]


class IndexedWriter:
    """Streams documents into ``PREFIX.bin``/``PREFIX.idx``; the pair appears only on ``finish``.

    Both files are written under temporary names and renamed into place, ``.bin`` first and ``.idx``
    last, so a reader (ours or Megatron's, which both open the ``.idx`` first) never sees a partial
    pair: a writer killed at any point leaves at most hidden ``.tmp`` files, which :func:`finish`
    of the next writer of that prefix overwrites. The per-document lengths stay in memory
    (4 bytes a document); the tokens go straight to disk.
    """

    def __init__(self, prefix: str | Path, dtype: np.dtype | type):
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        assert self.dtype in CODES, self.dtype
        self._tmp_bin = self.prefix.with_name(f".{self.prefix.name}.bin.tmp")
        self._tmp_idx = self.prefix.with_name(f".{self.prefix.name}.idx.tmp")
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self._bin = open(self._tmp_bin, "wb")
        self._lengths: list[np.ndarray] = []  # int32 chunks, one per add_documents call
        self.num_tokens = 0

    def add_documents(self, docs: list[np.ndarray]) -> None:
        """Append documents (each a 1-D integer array, one sequence and one document each)."""
        if not docs:
            return
        flat = np.concatenate(docs)
        if flat.size and (flat.min() < 0 or flat.max() > np.iinfo(self.dtype).max):
            raise ValueError(f"token id out of range for {self.dtype}")
        try:
            self._bin.write(flat.astype(self.dtype, copy=False).tobytes())
        except OSError as err:
            raise self._disk_full(err, bin_path(self.prefix), self._tmp_bin) from None
        self._lengths.append(np.fromiter((len(d) for d in docs), np.int32, len(docs)))
        self.num_tokens += int(flat.size)

    def _disk_full(self, err: OSError, dest: Path, tmp: Path) -> OSError:
        """``err``, or the one-line full-disk error naming the shard (not its temp name) and the
        space left (moelab.atomic)."""
        from moelab.atomic import as_disk_full

        return as_disk_full(err, dest, tmp) or err

    def finish(self) -> Path:
        """Make the pair durable and visible; returns the prefix."""
        try:
            return self._finish()
        except OSError as err:
            if self._bin.closed:  # the .bin is whole: the .idx was being written
                raise self._disk_full(err, idx_path(self.prefix), self._tmp_idx) from None
            raise self._disk_full(err, bin_path(self.prefix), self._tmp_bin) from None

    def _finish(self) -> Path:
        self._bin.flush()
        os.fsync(self._bin.fileno())
        self._bin.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)  # [S]
        pointers = np.zeros(len(lengths), np.int64)  # [S] byte offsets
        np.cumsum(lengths[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        doc_idx = np.arange(len(lengths) + 1, dtype=np.int64)  # one sequence per document
        with open(self._tmp_idx, "wb") as f:
            f.write(MAGIC + struct.pack("<QBQQ", VERSION, CODES[self.dtype], len(lengths), len(doc_idx)))
            f.write(lengths.tobytes() + pointers.tobytes() + doc_idx.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(self._tmp_bin, bin_path(self.prefix))
        os.replace(self._tmp_idx, idx_path(self.prefix))
        fsync_dir(self.prefix.parent)
        return self.prefix

    def abort(self) -> None:
        try:
            self._bin.close()
        except OSError:  # its buffer cannot be flushed (a full disk): the file is deleted anyway
            pass
        for p in (self._tmp_bin, self._tmp_idx):
            p.unlink(missing_ok=True)


def write_indexed(prefix: str | Path, docs: list[np.ndarray], dtype: np.dtype | type) -> Path:
    """Write ``docs`` (one sequence and one document each) as an indexed dataset in one go."""
    writer = IndexedWriter(prefix, dtype)
    try:
        writer.add_documents(docs)
    except BaseException:
        writer.abort()
        raise
    return writer.finish()
