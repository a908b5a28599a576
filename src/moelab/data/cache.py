"""Token streams cached on disk, so a sweep tokenizes its world (or small corpus) once, not once per run.

``cached_streams(data_cfg, tok, world)`` is ``corpus.build_streams`` behind a cache: the train and
validation streams are stored as Megatron indexed datasets (the train stream one sequence per document,
so its document boundaries come back too; validation one sequence) under
``$MOELAB_CACHE/streams/<key>/`` (default ``~/.cache/moelab``) and read back as memory maps. The key
hashes everything the streams depend on: the data config (but ``seq_len``, which only cuts
windows), the tokenizer (moelab.data.prepare.tokenizer_hash) and each file source's size and mtime.
The streams read back are the very arrays ``build_streams`` returns, so a run trains identically
with or without the cache. Entries appear atomically; a damaged one is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from moelab.config import DataConfig

FORMAT = 2  # 2: the train stream stored one document per sequence (per-epoch document order)


def cache_root() -> Path:
    return Path(os.environ.get("MOELAB_CACHE") or Path.home() / ".cache" / "moelab").expanduser()


def streams_key(data_cfg: DataConfig, tok) -> str:
    from moelab.data.prepare import source_hash, tokenizer_hash

    cfg = data_cfg.model_dump(mode="json", exclude={"seq_len"})
    files = [source_hash(s) if s.kind != "world" else "" for s in data_cfg.sources]
    text = json.dumps([FORMAT, cfg, tokenizer_hash(tok), files], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cached_streams(data_cfg: DataConfig, tok, world=None):
    """``build_streams(data_cfg, tok, world)``, tokenized at most once per key (see the module)."""
    from moelab.atomic import atomic_dir
    import numpy as np

    from moelab.data.corpus import TokenStreams, build_streams, doc_starts
    from moelab.data.indexed import IndexedDataset, token_dtype, write_indexed
    from moelab.errors import UserError

    entry = cache_root() / "streams" / streams_key(data_cfg, tok)
    if (entry / "sources.json").is_file():
        try:
            train_ds = IndexedDataset(entry / "train")
            train, val = train_ds.tokens, IndexedDataset(entry / "val").tokens
            sources = json.loads((entry / "sources.json").read_text(encoding="utf-8"))
            return TokenStreams(train=train, val=val, seq_len=data_cfg.seq_len, sources=sources,
                                train_doc_starts=doc_starts(train_ds.sequence_lengths))
        except (UserError, OSError, ValueError):
            pass  # damaged (a disk error, a hand edit): rebuilt below
    streams = build_streams(data_cfg, tok, world)
    try:
        with atomic_dir(entry) as tmp:  # replaces a damaged entry whole
            dtype = token_dtype(len(tok))
            write_indexed(Path(tmp) / "train", np.split(streams.train, streams.train_doc_starts[1:]), dtype)
            write_indexed(Path(tmp) / "val", [streams.val], dtype)
            (Path(tmp) / "sources.json").write_text(json.dumps(streams.sources), encoding="utf-8")
    except OSError:
        pass  # a read-only or full cache only costs the next run the tokenization
    return streams
