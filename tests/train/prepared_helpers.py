"""A small prepared corpus (the tiny world's documents through `moelab data prepare`) for training tests."""

import json
from pathlib import Path

from moelab.config import WorldConfig
from moelab.data.prepare import prepare
from moelab.data.tokenizer import save_tokenizer, train_tokenizer
from moelab.data.world import build_world


def make_prepared(root: Path, world_cfg: dict, vocab_size: int = 384, name: str = "prep") -> Path:
    """``root/name``: the world's documents prepared with a BPE trained on them (``root/tok``)."""
    docs = build_world(WorldConfig(**world_cfg)).documents()
    root.mkdir(parents=True, exist_ok=True)
    src = root / f"{name}.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    if not (root / "tok").is_dir():
        save_tokenizer(train_tokenizer(docs, vocab_size), root / "tok")
    from moelab.data.prepare import infer_source

    prepare([infer_source(str(src), None, "text", "train")], root / "tok", root / name, progress=False)
    return root / name
