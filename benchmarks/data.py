"""Data pipeline benchmark: prepare throughput vs `datasets.map`, loader headroom, the stream cache's saving.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data.py            # ~2 min on 2 cores
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/data.py --docs 20000 --quick

1. prepare: ``moelab data prepare`` (streamed jsonl → tokenizers' encode_batch → indexed shards)
   against the peer, ``datasets.load_dataset("json") .map(tokenize, batched=True)`` with the same
   tokenizer (HF fast tokenizer, batched, as its docs recommend), in the same process, alternated,
   median of the repeats. MB/s of source text and tokens/s.
2. loader: ``PreparedBatches.batch`` sequences/s at the reference configuration (seq 256, batch 8)
   against the sequences/s the trainer consumes there (fwd + bwd + AdamW on d256, 4 layers, E16 k2,
   vocabulary 8192, fp32, as benchmarks/compare_hf.py's reference). Target: >= 20x headroom.
3. cache: the seconds `build_streams` takes for the default world config with its BPE, against
   reading the cached streams (moelab.data.cache): what each run of a sweep saves.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _corpus(path: Path, num_docs: int) -> None:
    rng = np.random.default_rng(0)
    words = np.array("the of and to in is was for on that with as by at from his her it an were are which this "
                     "be or has had not but first one their its new after who they have two been also other "
                     "theorem proof let integer prime 17 2024 3.14 x y z".split())
    with open(path, "w", encoding="utf-8") as f:
        for i in range(num_docs):
            f.write(json.dumps({"text": " ".join(rng.choice(words, size=int(rng.integers(50, 600))))}) + "\n")


def bench_prepare(tmp: Path, num_docs: int, repeats: int) -> dict:
    from moelab.data.prepare import infer_source, prepare
    from moelab.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

    src = tmp / "corpus.jsonl"
    _corpus(src, num_docs)
    mb = src.stat().st_size / 1e6
    texts = [json.loads(line)["text"] for line in open(src, encoding="utf-8")][:2000]
    save_tokenizer(train_tokenizer(texts, 8192), tmp / "tok")
    tok = load_tokenizer(tmp / "tok")
    import datasets

    datasets.disable_progress_bars()
    ours, peer, tokens = [], [], 0
    for r in range(repeats):
        t0 = time.perf_counter()
        m = prepare([infer_source(str(src), None, "text", "train")], tmp / "tok", tmp / f"prep{r}", progress=False)
        ours.append(time.perf_counter() - t0)
        tokens = sum(s["train_tokens"] + s["val_tokens"] for s in m["sources"].values())
        t0 = time.perf_counter()
        ds = datasets.load_dataset("json", data_files=str(src), split="train", cache_dir=str(tmp / f"hf{r}"))
        ds.map(lambda b: tok(b["text"], add_special_tokens=False), batched=True, remove_columns=["text"],
               cache_file_name=str(tmp / f"hf{r}" / "map.arrow"))
        peer.append(time.perf_counter() - t0)
    o, p = statistics.median(ours), statistics.median(peer)
    return {"docs": num_docs, "MB": round(mb, 1), "tokens": tokens,
            "moelab_s": round(o, 2), "moelab_MB_s": round(mb / o, 1), "moelab_tok_s": round(tokens / o),
            "datasets_map_s": round(p, 2), "datasets_map_MB_s": round(mb / p, 1), "datasets_map_tok_s": round(tokens / p),
            "speedup": round(p / o, 2), "prepared": str(tmp / "prep0")}


def bench_loader(prepared: str, steps: int) -> dict:
    import torch

    from moelab.config import DataConfig, ModelConfig
    from moelab.data.prepared import PreparedData
    from moelab.data.tokenizer import load_tokenizer
    from moelab.model.transformer import MoETransformer
    from moelab.train.objective import micro_batch_losses

    seq, batch = 256, 8
    data = PreparedData(DataConfig(seq_len=seq, sources=[{"kind": "prepared", "path": prepared}]),
                        load_tokenizer(Path(prepared) / "tokenizer"))
    batches = data.batches(batch, 0, 10_000)
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < 2.0:
        batches.batch(n % 10_000)
        n += 1
    loader = n * batch / (time.perf_counter() - t0)
    cfg = ModelConfig(vocab_size=8192, d_model=256, n_layers=4, n_heads=4, num_experts=16, top_k=2,
                      expert_hidden=512, max_seq_len=seq)
    model = MoETransformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for step in range(steps):
        x, y = batches.batch(step)
        t0 = time.perf_counter()
        losses = micro_batch_losses(model, x, y, cfg.top_k)
        losses.total(1e-2, 1e-3).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    trainer = batch / statistics.median(times[1:])
    return {"loader_seq_s": round(loader), "trainer_seq_s": round(trainer, 1), "headroom": round(loader / trainer)}


def bench_cache(tmp: Path) -> dict:
    os.environ["MOELAB_CACHE"] = str(tmp / "cache")
    from moelab.config import DataConfig
    from moelab.data.cache import cached_streams
    from moelab.data.corpus import build_tokenizer
    from moelab.data.world import build_world

    cfg = DataConfig()  # the default world and BPE vocabulary (the presets' data)
    world = build_world(cfg.world)
    tok = build_tokenizer(cfg, world)
    t0 = time.perf_counter()
    first = cached_streams(cfg, tok, world)  # builds and writes the entry
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = cached_streams(cfg, tok, world)
    read = time.perf_counter() - t0
    assert np.array_equal(first.train, second.train)
    return {"train_tokens": len(first.train), "build_streams_s": round(build, 2), "cached_s": round(read, 3),
            "saved_per_run_s": round(build - read, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=40_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--quick", action="store_true", help="one repeat, two training steps")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.steps = 1, 3
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out = {"cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                            if line.startswith("model name")), "?"),
               "loadavg": open("/proc/loadavg").read().split()[:3], "omp_threads": os.environ.get("OMP_NUM_THREADS")}
        out["prepare"] = bench_prepare(tmp, args.docs, args.repeats)
        out["loader"] = bench_loader(out["prepare"].pop("prepared"), args.steps)
        out["cache"] = bench_cache(tmp)
        out["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
