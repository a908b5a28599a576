"""Pretraining text: load sources, split train/validation, mix, tokenize, pack into batches.

Source kinds (``DataSourceConfig.kind``) and what one document is:

- ``world``   — each of ``World.documents()``.
- ``text``    — a ``.txt`` file, or a directory of them (read in sorted order); documents are
                separated by one or more blank lines (a blank-line-separated paragraph is a
                document; put a whole document in one paragraph to keep it together).
- ``jsonl``   — a ``.jsonl`` file or a directory of ``*.jsonl``; one JSON object per line,
                its ``text_field`` is the document.
- ``parquet`` — a ``.parquet`` file or a directory of ``*.parquet``; column ``text_field``.
- ``hf``      — ``datasets.load_dataset(path, split=split)`` for a Hub name or a local
                directory of data files; a local ``.json/.jsonl/.csv/.parquet/.txt`` file is
                loaded with the matching builder; a ``save_to_disk`` directory with
                ``load_from_disk``. Column ``text_field``.

Each source is split at the document level (``val_fraction`` held out, fixed by the source's
identity, not by the training seed, so every run of a study validates on the same text).
The weight of a source scales how many of its training documents enter the train stream:
weight 2 repeats each document twice, 0.5 takes a fixed half of them. Validation is unweighted.
Token streams are documents as ``<|bos|> doc <|eos|>`` back to back.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from moelab.config import DataConfig, DataSourceConfig
from moelab.data.tokenizer import bos_eos_ids, load_tokenizer, train_tokenizer
from moelab.data.world import World, build_world
from moelab.errors import UserError

# ------------------------------------------------------------------ reading sources


def _files(path: Path, suffixes: tuple[str, ...], kind: str) -> list[Path]:
    """The file itself, or the matching files of a directory (sorted, recursive)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes))
        if not found:
            raise UserError(f"{path}: no {'/'.join(suffixes)} files for data source of kind '{kind}'")
        return found
    raise UserError(f"{path}: no such file or directory")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None


def _lines(file: Path) -> Iterator[str]:
    """The lines of a UTF-8 file, streamed (a corpus file may be larger than memory)."""
    try:
        with open(file, encoding="utf-8") as f:
            yield from f
    except UnicodeDecodeError:
        raise UserError(f"{file}: not UTF-8 text") from None


def _is_blank(line: str) -> bool:
    return not line.strip(" \t\r\n")


def _text_documents(path: Path) -> Iterator[str]:
    """Blank-line-separated paragraphs, line by line (a line of only spaces, tabs or CRs is blank)."""
    for file in _files(path, (".txt",), "text"):
        para: list[str] = []
        for line in _lines(file):
            if _is_blank(line):
                text = "".join(para).strip()
                if text:
                    yield text
                para = []
            else:
                para.append(line)
        text = "".join(para).strip()
        if text:
            yield text


def _jsonl_documents(path: Path, text_field: str) -> Iterator[str]:
    for file in _files(path, (".jsonl",), "jsonl"):
        for num, line in enumerate(_lines(file), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{file}:{num}: invalid JSON ({err.msg})") from None
            if not isinstance(row, dict) or text_field not in row:
                keys = ", ".join(row) if isinstance(row, dict) else type(row).__name__
                raise UserError(f"{file}:{num}: no text field '{text_field}' (found: {keys})")
            yield _as_text(row[text_field], f"{file}:{num}", text_field)


def _parquet_documents(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    for file in _files(path, (".parquet",), "parquet"):
        try:
            pf = pq.ParquetFile(file)
        except Exception as err:  # pyarrow raises ArrowInvalid/OSError for non-parquet files
            raise UserError(f"{file}: not a Parquet file ({_first_line(err)})") from None
        names = pf.schema_arrow.names
        if text_field not in names:
            raise UserError(f"{file}: no text field '{text_field}' (columns: {', '.join(names)})")
        for batch in pf.iter_batches(columns=[text_field], batch_size=4096):  # row groups, streamed
            for value in batch.column(0).to_pylist():
                yield _as_text(value, str(file), text_field)


_HF_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def _hf_documents(name_or_path: str, split: str, text_field: str) -> Iterator[str]:
    try:
        import datasets  # optional: only 'hf' sources need it
    except ImportError:
        raise UserError("data source kind 'hf' needs the 'datasets' package (pip install datasets)") from None
    path = Path(name_or_path).expanduser()
    try:
        if path.is_file():
            builder = _HF_BUILDERS.get(path.suffix)
            if builder is None:
                raise UserError(f"{path}: unknown data file type (use one of {', '.join(_HF_BUILDERS)})")
            # A single data file has only a "train" split, whatever `split` says.
            ds = datasets.load_dataset(builder, data_files=str(path), split="train")
        elif path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "state.json")):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise UserError(f"{path}: no split '{split}' (splits: {', '.join(ds)})")
                ds = ds[split]
        else:
            ds = datasets.load_dataset(name_or_path, split=split)
    except UserError:
        raise
    except Exception as err:  # datasets raises many types (network, format, split); one line for the user
        raise UserError(f"{name_or_path}: cannot load Hugging Face dataset: {_first_line(err)}") from None
    if text_field not in ds.column_names:
        raise UserError(f"{name_or_path}: no text field '{text_field}' (columns: {', '.join(ds.column_names)})")
    return _hf_rows(ds, name_or_path, text_field)


def _hf_rows(ds, name_or_path: str, text_field: str) -> Iterator[str]:
    for batch in ds.select_columns([text_field]).iter(batch_size=4096):  # Arrow-backed: memory-mapped
        for value in batch[text_field]:
            yield _as_text(value, name_or_path, text_field)


def _as_text(value: object, where: str, text_field: str) -> str:
    if value is None:
        return ""  # empty rows are skipped later
    if not isinstance(value, str):
        raise UserError(f"{where}: text field '{text_field}' holds {type(value).__name__}, not text")
    return value


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def source_label(source: DataSourceConfig) -> str:
    return "world" if source.kind == "world" else str(source.path)


def iter_documents(source: DataSourceConfig, world: World | None = None) -> Iterator[str]:
    """The documents of one source as a stream (empty ones included); errors are UserErrors."""
    if source.kind == "world":
        assert world is not None, "a 'world' source needs the built world"
        docs = world.documents()
    elif source.kind == "text":
        docs = _text_documents(Path(source.path).expanduser())
    elif source.kind == "jsonl":
        docs = _jsonl_documents(Path(source.path).expanduser(), source.text_field)
    elif source.kind == "parquet":
        docs = _parquet_documents(Path(source.path).expanduser(), source.text_field)
    else:
        docs = _hf_documents(source.path, source.split, source.text_field)
    return iter(docs)


def load_documents(source: DataSourceConfig, world: World | None = None) -> list[str]:
    """All non-empty documents of one source; a missing file or an empty corpus is a UserError."""
    docs = [d for d in iter_documents(source, world) if d.strip()]
    if not docs:
        raise UserError(f"{source_label(source)}: empty corpus (no non-empty documents)")
    return docs


# ------------------------------------------------------------------ splitting and mixing


def _stable_seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass
class SourceSplit:
    label: str
    weight: float
    train: list[str]
    val: list[str]


def split_documents(
    docs: list[str], val_fraction: float, *, seed: int, label: str, keep_in_train: set[str] = frozenset()
) -> tuple[list[str], list[str]]:
    """(train, val) at the document level; documents in ``keep_in_train`` never go to val."""
    if len(docs) < 2:
        raise UserError(f"{label}: only {len(docs)} document; need at least 2 to hold out a validation share")
    num_val = min(max(round(len(docs) * val_fraction), 1), len(docs) - 1)
    candidates = [i for i, d in enumerate(docs) if d not in keep_in_train]
    rng = np.random.default_rng(seed)
    val_idx = set(rng.permutation(candidates)[:num_val].tolist()) if candidates else set()
    train = [d for i, d in enumerate(docs) if i not in val_idx]
    val = [d for i, d in enumerate(docs) if i in val_idx]
    return train, val


def load_sources(data_cfg: DataConfig, world: World | None = None) -> list[SourceSplit]:
    """Every source's documents, split into train and validation."""
    if world is None and any(s.kind == "world" for s in data_cfg.sources):
        world = build_world(data_cfg.world)
    splits = []
    for source in data_cfg.sources:
        docs = load_documents(source, world)
        keep: set[str] = set()
        if source.kind == "world":
            # Evaluation "train"-split items must really be in the training stream,
            # otherwise the train/heldout gap would be measured on partly unseen items.
            keep = {it.prompt + it.answer for t in world.tasks().values() for it in t.splits["train"]}
        seed = _stable_seed("moelab-split", source.kind, source.path, source.text_field, source.split)
        label = source_label(source)
        train, val = split_documents(docs, data_cfg.val_fraction, seed=seed, label=label, keep_in_train=keep)
        splits.append(SourceSplit(label, source.weight, train, val))
    return splits


def weighted_indices(num_docs: int, weight: float, seed: int) -> np.ndarray:
    """Document indices for one source's share of the train stream: each index ``floor(weight)``
    times, plus a fixed random ``frac(weight)`` share of them once more (at least one in all)."""
    whole, frac = int(weight), weight - int(weight)
    extra = np.random.default_rng(seed).permutation(num_docs)[: round(frac * num_docs)]
    indices = np.concatenate([np.tile(np.arange(num_docs), whole), np.sort(extra)])
    return indices if len(indices) else np.zeros(1, dtype=np.int64)


# ------------------------------------------------------------------ token streams


@dataclass
class TokenStreams:
    """Training and validation token streams (int32), documents as ``<|bos|> doc <|eos|>``."""

    train: np.ndarray
    val: np.ndarray
    seq_len: int | None = None  # the data config's seq_len, for val_batches
    sources: list[dict] = field(default_factory=list)  # per source: label, weight, docs and tokens
    train_doc_starts: np.ndarray | None = None  # [D] offset of each training document in ``train``

    def val_batches(self, n: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        assert self.seq_len is not None, "TokenStreams built without seq_len"
        return val_batches(self.val, self.seq_len, n, batch_size)


def _tokenize(tokenizer, docs: list[str]) -> list[np.ndarray]:
    """Each document as an int32 array ``[bos, *ids, eos]``."""
    bos, eos = bos_eos_ids(tokenizer)
    ids = tokenizer(docs, add_special_tokens=False, return_attention_mask=False)["input_ids"] if docs else []
    return [np.array([bos, *doc, eos], dtype=np.int32) for doc in ids]


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)


def build_streams(data_cfg: DataConfig, tokenizer, world: World | None = None) -> TokenStreams:
    """Tokenize every source, apply the mixture weights, and return the train and val streams.

    The train stream's documents are shuffled with a fixed seed so repeated and mixed
    sources interleave; ``world`` is built from ``data_cfg.world`` when needed and not given.
    """
    train_parts: list[np.ndarray] = []  # one array per document occurrence
    val_parts: list[np.ndarray] = []
    info = []
    for i, src in enumerate(load_sources(data_cfg, world)):
        train_docs = _tokenize(tokenizer, src.train)
        picks = weighted_indices(len(train_docs), src.weight, seed=_stable_seed("moelab-weight", i, src.label))
        train_parts += [train_docs[j] for j in picks]
        val_docs = _tokenize(tokenizer, src.val)
        val_parts += val_docs
        info.append({
            "label": src.label, "weight": src.weight, "train_docs": len(src.train), "val_docs": len(src.val),
            "train_tokens": int(sum(len(train_docs[j]) for j in picks)),
            "val_tokens": int(sum(len(d) for d in val_docs)),
        })
    order = np.random.default_rng(_stable_seed("moelab-mix")).permutation(len(train_parts))
    train = _concat([train_parts[j] for j in order])
    starts = doc_starts([len(train_parts[j]) for j in order])
    return TokenStreams(train=train, val=_concat(val_parts), seq_len=data_cfg.seq_len, sources=info,
                        train_doc_starts=starts)


def doc_starts(lengths) -> np.ndarray:
    """[D] offsets of documents of these lengths laid back to back."""
    lengths_D = np.asarray(lengths, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(lengths_D)[:-1]]) if len(lengths_D) else np.zeros(0, dtype=np.int64)


def tokenizer_texts(data_cfg: DataConfig, world: World | None = None, max_chars: int = 50_000_000) -> list[str]:
    """Training documents of every source (up to ``max_chars`` in all) to train a BPE on."""
    texts, total = [], 0
    for src in load_sources(data_cfg, world):
        for doc in src.train:
            if total >= max_chars:
                return texts
            texts.append(doc)
            total += len(doc)
    return texts


def build_tokenizer(data_cfg: DataConfig, world: World | None = None):
    """``data_cfg.tokenizer`` loaded from disk, or a BPE of ``data_cfg.vocab_size`` trained on the sources."""
    if data_cfg.tokenizer:
        return load_tokenizer(data_cfg.tokenizer)
    if any(s.kind == "prepared" for s in data_cfg.sources):
        from moelab.data.prepared import prepared_tokenizer

        return prepared_tokenizer(data_cfg)  # the one the shards were made with
    return train_tokenizer(tokenizer_texts(data_cfg, world), data_cfg.vocab_size)


# ------------------------------------------------------------------ packing


class PackedBatches:
    """Fixed-length training batches cut from one token stream, deterministic in (seed, step).

    The stream is cut into ``num_sequences`` non-overlapping windows of ``seq_len`` inputs
    (targets shifted by one). Each epoch visits every window once in its own random order;
    batch ``step`` takes the windows at positions ``step*B .. step*B+B-1`` of that endless
    sequence of epochs. The data position is therefore just the step: resuming at step s
    reproduces exactly the batches an uninterrupted run would have seen.

    With ``doc_starts`` (the documents' offsets: ``data.document_order: per_epoch``) every epoch
    first lays the documents out in an order of its own (seeded by (seed, epoch)) and cuts its
    windows from that: a document meets other neighbours and other window boundaries each epoch,
    so the only thing to learn from many epochs is the documents themselves, not the stream.
    Without it, every epoch cuts the same windows from the one stream (``fixed``, moelab before
    2026-12-07). The epoch's stream is a permuted copy (a gather), kept for the last two epochs.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int = 0,
                 doc_starts: np.ndarray | None = None):
        self.tokens = np.asarray(tokens)
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.num_sequences = max(len(self.tokens) - 1, 0) // seq_len
        self._orders: dict[int, np.ndarray] = {}
        self._streams: dict[int, np.ndarray] = {}
        self.doc_starts = None if doc_starts is None else np.asarray(doc_starts, dtype=np.int64)
        if self.doc_starts is not None:
            self.doc_lengths = np.diff(np.append(self.doc_starts, len(self.tokens)))
        if self.num_sequences < batch_size:
            raise UserError(
                f"the training stream has {len(self.tokens)} tokens, {self.num_sequences} sequences of "
                f"seq_len={seq_len}: fewer than one batch of {batch_size}; add data or lower the batch size or seq_len"
            )

    def _order(self, epoch: int) -> np.ndarray:
        """The window order of one epoch."""
        return _last_two(self._orders, epoch,
                         lambda: np.random.default_rng([self.seed, epoch]).permutation(self.num_sequences))

    def epoch(self, step: int) -> float:
        """How many passes over the stream the batches before ``step`` make."""
        return step * self.batch_size / self.num_sequences

    def batch(self, step: int, rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs_BT, targets_BT) int64 tensors for training step ``step`` (0-based): rank ``rank``'s
        contiguous share of the global batch (all of it when ``world`` is 1)."""
        assert step >= 0
        share = self.batch_size // world
        positions = step * self.batch_size + rank * share + np.arange(share)
        epochs, within = np.divmod(positions, self.num_sequences)
        windows_B = np.array([self._order(int(e))[w] for e, w in zip(epochs, within)])
        if self.doc_starts is None:
            return _windows(self.tokens, windows_B, self.seq_len)
        parts = [_windows(self._stream(int(e)), windows_B[epochs == e], self.seq_len) for e in np.unique(epochs)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _stream(self, epoch: int) -> np.ndarray:
        """The training documents laid out in epoch ``epoch``'s own order (see the class docstring)."""
        def relay() -> np.ndarray:
            perm_D = np.random.default_rng([self.seed, epoch, 1]).permutation(len(self.doc_starts))
            lengths_D = self.doc_lengths[perm_D]
            # token t of the new stream = old offset of its document + its place inside the document
            shift_D = self.doc_starts[perm_D] - doc_starts(lengths_D)
            return self.tokens[np.repeat(shift_D, lengths_D) + np.arange(len(self.tokens))]

        return _last_two(self._streams, epoch, relay)

    def val_batches(self, n: int, batch_size: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``val_batches`` over this stream (useful when it is a validation stream)."""
        return val_batches(self.tokens, self.seq_len, n, batch_size or self.batch_size)


def _last_two(cache: dict, epoch: int, make) -> np.ndarray:
    """``cache[epoch]``, made on first use; only the last two epochs are kept (a batch spans at most two)."""
    if epoch not in cache:
        if len(cache) >= 2:
            cache.pop(min(cache))
        cache[epoch] = make()
    return cache[epoch]


def _windows(tokens: np.ndarray, windows_B: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx_BT1 = windows_B[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    chunk = torch.from_numpy(tokens[idx_BT1].astype(np.int64))
    return chunk[:, :-1], chunk[:, 1:]


def val_batches(tokens: np.ndarray, seq_len: int, n: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Up to ``n`` fixed batches of windows spread evenly over the stream (the last may be smaller).

    Always the same windows for the same stream, so validation losses are comparable
    across steps and runs.
    """
    tokens = np.asarray(tokens)
    num_sequences = max(len(tokens) - 1, 0) // seq_len
    if num_sequences == 0:
        raise UserError(
            f"the validation stream has {len(tokens)} tokens, fewer than seq_len+1={seq_len + 1}; "
            "add data or raise data.val_fraction"
        )
    count = min(n * batch_size, num_sequences)
    windows = np.unique(np.linspace(0, num_sequences - 1, count).round().astype(np.int64))
    return [_windows(tokens, windows[i : i + batch_size], seq_len) for i in range(0, len(windows), batch_size)]
