"""Shared pieces of the reliability tests: the CLI as a subprocess, tiny configs, tree snapshots."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

MOELAB = [sys.executable, "-m", "moelab"]
# One intra-op thread: tiny models gain nothing from more, and the machine is shared.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

TINY_WORLD = {"num_people": 12, "reasoning_train_items": 20, "reasoning_eval_items": 4,
              "knowledge_eval_items": 4, "bio_paraphrases": 1}

# A run small enough to train in a second or two on one CPU thread.
TINY_RUN = {
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "num_experts": 4, "top_k": 2, "max_seq_len": 32},
    "data": {"world": {"num_people": 40, "reasoning_train_items": 50, "reasoning_eval_items": 10,
                       "knowledge_eval_items": 10},
             "vocab_size": 384, "seq_len": 32},
    "train": {"batch_size": 8, "steps": 20, "lr": 3e-3, "warmup_steps": 3, "log_every": 1, "eval_every": 10,
              "checkpoint_every": 5, "precision": "fp32", "device": "cpu"},
}


def tiny_run(**sections) -> dict:
    """TINY_RUN with per-section overrides: ``tiny_run(train={"steps": 5})``."""
    data = {k: dict(v) for k, v in TINY_RUN.items()}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return data


def moelab(*args, cwd=None, timeout=300, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*MOELAB, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env or ENV)


def snapshot(path: Path) -> dict | None:
    """Every file and directory under ``path`` with its content hash (None when ``path`` is absent)."""
    path = Path(path)
    if not path.exists():
        return None
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        rel = os.path.relpath(dirpath, path)
        out[rel + "/"] = "dir"
        for name in filenames:
            p = Path(dirpath) / name
            out[os.path.join(rel, name)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
