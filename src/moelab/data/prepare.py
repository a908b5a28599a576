"""``moelab data prepare``: tokenize corpora once into Megatron-LM indexed shards, streaming and resumable.

    moelab data prepare corpus.jsonl more/ --tokenizer llm-jp-tokenizer/ --out prepared/
    # then: data.sources: [{kind: prepared, path: prepared/}]  (moelab)
    #   or: pretrain_gpt.py --data-path $(jq -r .megatron_data_path prepared/moelab-prepared.json)

What lands in ``--out``::

    moelab-prepared.json            the manifest (written atomically after every shard)
    tokenizer/                      the tokenizer the shards were made with
    <source-id>/train-00000.bin/.idx  Megatron indexed datasets, one sequence per document,
    <source-id>/val-00000.bin/.idx    documents as ``BOS doc EOS`` (as moelab's corpus does)

* Streaming: documents are read one at a time (corpus.iter_documents) and encoded in batches by
  the Rust ``tokenizers`` backend (``encode_batch`` runs across all cores); a shard's tokens go
  straight to disk. Memory holds one batch of text and 4 bytes per document of the open shard.
* Resumable: a shard becomes part of the dataset when the manifest lists it, and it is listed
  only after its ``.bin``/``.idx`` were renamed into place. After a SIGKILL the same command
  skips the documents of the listed shards (read again, not tokenized) and goes on; a partial
  shard is a hidden ``.tmp`` file nobody reads.
* Validation split by document identity: a document is held out when a hash of its text falls
  below ``val_fraction`` — the same documents whatever the order, the shard size or the run.
  (Today's in-memory split permutes document indices; that needs the whole corpus in memory.)
* A source is known by its kind, path, field, split and the size and mtime of each file (or
  a Hugging Face dataset's fingerprint): an unchanged, finished source is not tokenized again;
  a changed one is tokenized again from its first document.
* The manifest records the tokenizer's hash (its ``tokenizer.json`` serialisation plus BOS/EOS):
  a directory prepared with another tokenizer is refused in one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from moelab.atomic import atomic_write_json
from moelab.config import DataSourceConfig
from moelab.errors import UserError

MANIFEST = "moelab-prepared.json"
KIND = "moelab prepared data"
FORMAT_VERSION = 1
DEFAULT_SHARD_TOKENS = 256 * 2**20  # 256 Mi tokens: 512 MiB of uint16 per shard
_SUFFIX_KINDS = {".txt": "text", ".jsonl": "jsonl", ".parquet": "parquet"}


# ------------------------------------------------------------------ identities


def tokenizer_hash(tok) -> str:
    """What makes two tokenizers encode alike: the backend's full serialisation and BOS/EOS."""
    from moelab.data.tokenizer import bos_eos_ids

    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise UserError(f"tokenizer {tok.name_or_path}: needs a fast (tokenizers-backed) tokenizer")
    text = backend.to_str() + json.dumps(bos_eos_ids(tok))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def source_key(src: DataSourceConfig) -> str:
    return json.dumps([src.kind, src.path, src.text_field, src.split])


def source_hash(src: DataSourceConfig) -> str:
    """Identity of a source's content: path, size and mtime of every file, or a HF fingerprint."""
    from moelab.data.corpus import _files

    h = hashlib.sha256(source_key(src).encode())
    path = Path(str(src.path)).expanduser()
    if src.kind in _SUFFIX_KINDS.values():
        suffix = {v: k for k, v in _SUFFIX_KINDS.items()}[src.kind]
        for file in _files(path, (suffix,), src.kind):
            if not os.access(file, os.R_OK):
                raise UserError(f"{file}: not readable")
            st = file.stat()
            h.update(f"{file.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    elif path.exists():  # a local HF file or folder
        for file in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
            st = file.stat()
            h.update(f"{file}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _source_bytes(src: DataSourceConfig) -> int | None:
    """Total bytes of a file source (for the progress bar's ETA); None when unknown."""
    path = Path(str(src.path)).expanduser()
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return None


def _source_dir(src: DataSourceConfig) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(src.path)).name)[:40] or "source"
    return f"{stem}-{hashlib.sha256(source_key(src).encode()).hexdigest()[:8]}"


def is_val(text: str, val_fraction: float) -> bool:
    """Held out for validation, by the document's own text (fixed whatever the order or run)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=b"moelab-val").digest()
    return int.from_bytes(digest, "little") < val_fraction * 2**64


def infer_source(spec: str, kind: str | None, text_field: str, split: str) -> DataSourceConfig:
    """A command-line SOURCE as a config: kind from ``--kind`` or the suffix / folder contents."""
    path = Path(spec).expanduser()
    if kind is None:
        if path.is_file():
            kind = _SUFFIX_KINDS.get(path.suffix)
        elif path.is_dir():
            found = {_SUFFIX_KINDS[p.suffix] for p in path.rglob("*") if p.suffix in _SUFFIX_KINDS}
            if any((path / f).is_file() for f in ("dataset_dict.json", "state.json")):
                found = {"hf"}
            kind = found.pop() if len(found) == 1 else None
        elif not spec.startswith((".", "/", "~")) and spec.count("/") == 1:
            kind = "hf"  # owner/name on the Hub
        if kind is None:
            if not path.exists() and kind is None and not spec.count("/") == 1:
                raise UserError(f"{spec}: no such file or directory")
            raise UserError(f"{spec}: cannot tell the source kind; give --kind (text, jsonl, parquet, hf)")
    return DataSourceConfig(kind=kind, path=spec, text_field=text_field, split=split)


# ------------------------------------------------------------------ the manifest


def read_manifest(out: Path) -> dict | None:
    """The manifest of a prepared directory, None when ``out`` is new or empty; a UserError when
    ``out`` holds something else."""
    from moelab.outdir import read_own_manifest

    return read_own_manifest(out, MANIFEST, KIND, "prepared data")


def megatron_data_path(out: Path, manifest: dict, split: str = "train") -> str:
    """``--data-path`` for Megatron: ``W1 PREFIX1 W2 PREFIX2 …`` over the shards, weighted by tokens,
    so the blend is the concatenation of every source."""
    words = []
    for src in manifest["sources"].values():
        for shard in src["shards"]:
            if shard.get(split):
                words += [str(shard[f"{split}_tokens"]), str((out / shard[split]).resolve())]
    return " ".join(words)


# ------------------------------------------------------------------ the pipeline


def _batches(docs: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for doc in docs:
        if doc.strip():
            batch.append(doc)
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def prepare(sources: list[DataSourceConfig], tokenizer_dir: str | Path, out: str | Path, *,
            val_fraction: float = 0.05, shard_tokens: int = DEFAULT_SHARD_TOKENS, batch_docs: int = 512,
            progress: bool = True) -> dict:
    """Tokenize ``sources`` into ``out`` (see the module docstring); returns the manifest.

    Every check (tokenizer, sources readable, ``out`` this command's own and made with the same
    tokenizer) runs before anything is written; a ``UserError`` later in a fresh ``out`` removes it.
    """
    from moelab.data.indexed import token_dtype
    from moelab.data.tokenizer import load_tokenizer

    out = Path(out)
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction {val_fraction}: must be between 0 and 1")
    tok = load_tokenizer(tokenizer_dir)
    tok_hash = tokenizer_hash(tok)
    manifest = read_manifest(out)
    if manifest is not None:
        if manifest.get("tokenizer", {}).get("hash") != tok_hash:
            raise UserError(f"--out {out}: prepared with another tokenizer (hash {manifest['tokenizer'].get('hash')}, "
                            f"{tokenizer_dir} is {tok_hash}); use a new folder")
        if manifest.get("val_fraction") != val_fraction:
            raise UserError(f"--out {out}: prepared with --val-fraction {manifest.get('val_fraction')}, "
                            f"not {val_fraction}; use a new folder")
    hashes = {source_key(s): source_hash(s) for s in sources}  # missing files: UserError, nothing written
    for s in sources:
        if s.kind == "hf":
            from moelab.data.corpus import iter_documents

            iter_documents(s)  # loads (or fails to load) the dataset now, before any write
    created = not out.exists()
    if manifest is None:
        manifest = {"kind": KIND, "format_version": FORMAT_VERSION, "val_fraction": val_fraction,
                    "tokenizer": {"hash": tok_hash, "vocab_size": len(tok), "source": str(tokenizer_dir),
                                  "dtype": token_dtype(len(tok)).name},
                    "sources": {}}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / MANIFEST, manifest)  # first: the folder is this command's from now on
        from moelab.atomic import atomic_dir
        from moelab.data.tokenizer import save_tokenizer

        with atomic_dir(out / "tokenizer") as tmp:
            save_tokenizer(tok, tmp)
    try:
        with _Progress(progress, sum(b or 0 for b in map(_source_bytes, sources)) or None) as bar:
            for src in sources:
                _prepare_source(src, hashes[source_key(src)], tok, out, manifest, val_fraction,
                                shard_tokens, batch_docs, bar)
    except UserError:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    manifest["megatron_data_path"] = megatron_data_path(out, manifest)
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _prepare_source(src, src_hash, tok, out, manifest, val_fraction, shard_tokens, batch_docs, bar) -> None:
    from moelab.data.corpus import iter_documents, source_label
    from moelab.data.indexed import IndexedWriter, token_dtype
    from moelab.data.tokenizer import bos_eos_ids

    key = source_key(src)
    entry = manifest["sources"].get(key)
    if entry is not None and entry["hash"] == src_hash and entry["state"] == "done":
        bar.skip(_source_bytes(src) or 0)
        return
    if entry is None or entry["hash"] != src_hash:  # new or changed: from the first document
        for shard in (entry or {}).get("shards", []):
            for split in ("train", "val"):
                for ext in (".bin", ".idx"):
                    if shard.get(split):
                        (out / f"{shard[split]}{ext}").unlink(missing_ok=True)
        entry = {"kind": src.kind, "path": src.path, "text_field": src.text_field, "split": src.split,
                 "hash": src_hash, "dir": _source_dir(src), "state": "partial", "docs": 0, "shards": []}
        manifest["sources"][key] = entry
    dtype = token_dtype(len(tok))
    bos, eos = bos_eos_ids(tok)
    backend = tok.backend_tokenizer
    skip = entry["docs"]  # documents already in listed shards: read again, not tokenized
    writers: dict[str, IndexedWriter] | None = None
    counts = {"docs": 0, "train_docs": 0, "val_docs": 0}

    def close_shard() -> None:
        nonlocal writers
        shard = {"docs": counts["docs"]}
        for split, w in writers.items():
            n = counts[f"{split}_docs"]
            shard[split] = str(w.finish().relative_to(out)) if n else None
            if not n:
                w.abort()
            shard[f"{split}_tokens"] = w.num_tokens
            shard[f"{split}_docs"] = n
        entry["shards"].append(shard)
        entry["docs"] += counts["docs"]
        atomic_write_json(out / MANIFEST, manifest)  # the shard is part of the dataset from here on
        writers = None
        for k in counts:
            counts[k] = 0

    seen = 0
    for texts in _batches(iter_documents(src), batch_docs):
        if seen + len(texts) <= skip:
            seen += len(texts)
            bar.advance(sum(len(t.encode()) for t in texts), 0, 0)
            continue
        texts = texts[max(skip - seen, 0):]
        seen = max(seen, skip) + len(texts)
        if writers is None:
            num = len(entry["shards"])
            writers = {s: IndexedWriter(out / entry["dir"] / f"{s}-{num:05d}", dtype) for s in ("train", "val")}
        encs = backend.encode_batch(texts, add_special_tokens=False)  # Rust, parallel across cores
        parts: dict[str, list[np.ndarray]] = {"train": [], "val": []}
        for text, enc in zip(texts, encs):
            ids = np.empty(len(enc.ids) + 2, np.int64)  # [1 + n + 1]: BOS doc EOS
            ids[0], ids[1:-1], ids[-1] = bos, enc.ids, eos
            parts["val" if is_val(text, val_fraction) else "train"].append(ids)
        num_tokens = 0
        for split, docs in parts.items():
            writers[split].add_documents(docs)
            counts[f"{split}_docs"] += len(docs)
            num_tokens += sum(len(d) for d in docs)
        counts["docs"] += len(texts)
        bar.advance(sum(len(t.encode()) for t in texts), len(texts), num_tokens)
        if writers["train"].num_tokens + writers["val"].num_tokens >= shard_tokens:
            close_shard()
    if writers is not None:
        close_shard()
    if entry["docs"] == 0:
        raise UserError(f"{source_label(src)}: empty corpus (no non-empty documents)")
    entry["state"] = "done"
    entry["train_tokens"] = sum(s["train_tokens"] for s in entry["shards"])
    entry["val_tokens"] = sum(s["val_tokens"] for s in entry["shards"])
    atomic_write_json(out / MANIFEST, manifest)


class _Progress:
    """A rich bar over source bytes with documents/s, tokens/s and the ETA; silent when disabled."""

    def __init__(self, enabled: bool, total_bytes: int | None):
        self.enabled, self.total = enabled, total_bytes
        self.docs = self.tokens = 0

    def __enter__(self):
        self.t0 = time.perf_counter()
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            from moelab.ui import console

            self.prog = Progress(TextColumn("[bold]prepare"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                 TextColumn("{task.fields[dps]:,.0f} docs/s"), TextColumn("{task.fields[tps]:,.0f} tok/s"),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=console)
            self.prog.__enter__()
            self.task = self.prog.add_task("prepare", total=self.total, dps=0.0, tps=0.0)
        return self

    def skip(self, nbytes: int) -> None:
        self.advance(nbytes, 0, 0)

    def advance(self, nbytes: int, docs: int, tokens: int) -> None:
        self.docs += docs
        self.tokens += tokens
        if self.enabled:
            dt = max(time.perf_counter() - self.t0, 1e-9)
            self.prog.update(self.task, advance=nbytes, dps=self.docs / dt, tps=self.tokens / dt)

    def __exit__(self, *exc):
        if self.enabled:
            if self.total:
                self.prog.update(self.task, completed=self.total)
            self.prog.__exit__(*exc)
        return False
