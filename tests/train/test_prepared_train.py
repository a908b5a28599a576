"""Training from prepared data: exact resume after SIGKILL, bounded memory, mixture weights, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from moelab.train.checkpoint import step_dirs
from moelab.train.metrics import read_jsonl
from moelab.train.trainer import train
from prepared_helpers import make_prepared  # tests/train is on sys.path (pytest's rootdir insertion)

SCRIPT = """
import json, sys
from moelab.config import RunConfig
from moelab.train.trainer import train
train(RunConfig.model_validate(json.loads(sys.argv[1])), sys.argv[2], progress=False)
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_cfg):
    return make_prepared(tmp_path_factory.mktemp("prepared"), tiny_cfg().data.world.model_dump())


def _cfg(tiny_cfg, path, **train):
    return tiny_cfg(data={"sources": [{"kind": "prepared", "path": str(path)}]}, train=train)


def _trajectory(run_dir):
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "elapsed_s")}
            for r in read_jsonl(run_dir / "metrics.jsonl")]


def test_sigkill_then_resume_from_prepared_data(tmp_path, tiny_cfg, prepared, sigkill_when):
    cfg = _cfg(tiny_cfg, prepared, steps=40, checkpoint_every=5, eval_every=20, log_every=1)
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(cfg.model_dump(mode="json")), str(killed)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sigkill_when(proc, lambda: any(step >= 10 for step, _ in step_dirs(killed)))
    assert json.loads((killed / "status.json").read_text())["step"] < 40
    resumed = train(cfg, killed, progress=False)
    reference = train(cfg, tmp_path / "reference", progress=False)
    assert resumed["steps"] == reference["steps"] == 40
    assert _trajectory(killed) == _trajectory(tmp_path / "reference")
    assert reference["final_val_loss"] < 6.0  # it learned something from the prepared tokens (ln 384 = 5.95)


def test_mixture_follows_the_weights_and_ranks_read_disjoint_rows(tmp_path, prepared):
    from moelab.data.prepared import PreparedBatches, WindowedShards

    a = WindowedShards([np.arange(0, 3300) % 300], 32)  # 103 windows
    b = WindowedShards([np.arange(1000, 1000 + 990)], 32)  # 30 windows
    batches = PreparedBatches([a, b], [3.0, 1.0], batch_size=8, seed=0, total_steps=250)
    for n in (8, 100, 2000):  # every prefix of the sample sequence is close to 3:1
        assert abs((batches.dataset_of[:n] == 0).sum() - 0.75 * n) <= 2
    seen_b = [w for step in range(250) for d, w in batches.rows(step) if d == 1]
    assert sorted(seen_b[:30]) == list(range(30))  # an epoch of b visits every window once
    for step in (0, 7, 249):
        r0, r1 = batches.rows(step, 0, 2), batches.rows(step, 1, 2)
        assert r0 + r1 == batches.rows(step)  # the two ranks' rows make the global batch
        x0, _ = batches.batch(step, 0, 2)
        x1, _ = batches.batch(step, 1, 2)
        assert torch.equal(torch.cat([x0, x1]), batches.batch(step)[0])
    x, y = batches.batch(3)
    assert torch.equal(x[:, 1:], y[:, :-1]) and x.shape == (8, 32)


_RSS_SCRIPT = """
import resource, sys
from pathlib import Path
import numpy as np
from moelab.config import DataConfig
from moelab.data.prepared import PreparedData
from moelab.data.tokenizer import load_tokenizer
root = Path(sys.argv[1])
data = PreparedData(DataConfig(seq_len=256, sources=[{"kind": "prepared", "path": str(root)}]),
                    load_tokenizer(root / "tokenizer"))
batches = data.batches(32, 0, 200)
for step in range(200):
    batches.batch(step)
data.val_batches(8, 32)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(data.train_tokens, int(status["RssAnon"].split()[0]) // 1024, int(status["RssFile"].split()[0]) // 1024)
"""


def test_peak_rss_does_not_grow_with_the_corpus(tmp_path, prepared):
    """A 10x larger prepared corpus (12M vs 120M uint16 tokens: 24 vs 240 MB) adds under 20 MB of the process's
    own (anonymous) resident memory, read after 200 batches and the validation batches, with every map alive.

    The file-backed part of RSS is not bounded this way: the kernel maps up to 64 KB of page cache around
    each faulted window (fault-around, not turned off by MADV_RANDOM on Linux 6.x), so random reads over a
    larger file leave more clean, shared, reclaimable page-cache pages mapped. That is the page cache, not
    the process's memory: it is dropped under memory pressure and shared by every rank reading the file."""
    import shutil

    from moelab.data.indexed import write_indexed

    manifest = json.loads((prepared / "moelab-prepared.json").read_text())
    rss = {}
    for scale in (1, 10):
        root = tmp_path / f"x{scale}"
        (root / "s").mkdir(parents=True)
        shutil.copytree(prepared / "tokenizer", root / "tokenizer")
        shards = []
        rng = np.random.default_rng(scale)
        for i in range(scale):  # 12M tokens per shard, written in 1M-token documents
            docs = [rng.integers(0, 384, size=1_000_000, dtype=np.uint16) for _ in range(12)]
            write_indexed(root / "s" / f"train-{i}", docs, np.uint16)
            write_indexed(root / "s" / f"val-{i}", docs[:1], np.uint16)
            shards.append({"docs": 13, "train": f"s/train-{i}", "train_tokens": 12_000_000, "train_docs": 12,
                           "val": f"s/val-{i}", "val_tokens": 1_000_000, "val_docs": 1})
        m = {**manifest, "sources": {"x": {"path": "x", "state": "done", "shards": shards, "docs": 13 * scale}}}
        (root / "moelab-prepared.json").write_text(json.dumps(m))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
        out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(root)], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        tokens, rss[scale], _file = map(int, out.stdout.split())
        assert tokens == 12_000_000 * scale
    assert rss[10] - rss[1] < 20, rss  # reading the corpus into memory would add 216 MB


def test_prepared_with_another_tokenizer_is_refused_in_one_line(tmp_path, tiny_cfg, prepared):
    from moelab.cli import main
    from moelab.data.tokenizer import save_tokenizer, train_tokenizer

    import yaml

    save_tokenizer(train_tokenizer(["something else entirely"] * 20, 300), tmp_path / "other")
    cfg = _cfg(tiny_cfg, prepared, steps=2).model_dump(mode="json")
    cfg["data"]["tokenizer"] = str(tmp_path / "other")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert not (tmp_path / "run").exists()


def test_truncated_idx_is_refused_in_one_line(tmp_path, tiny_cfg, prepared, capsys):
    import shutil

    import yaml

    from moelab.cli import main

    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    idx = next(copy.rglob("train-00000.idx"))
    idx.write_bytes(idx.read_bytes()[:-3])
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(_cfg(tiny_cfg, copy, steps=2).model_dump(mode="json")))
    assert main(["train", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated or damaged index" in err[0]
    assert not (tmp_path / "run").exists()
