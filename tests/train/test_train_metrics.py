"""Router statistics against hand-computed values; JSONL log truncation."""

import math
from collections import namedtuple

import pytest
import torch

from moelab.train.metrics import JsonlLogger, RouterStatsAccumulator, read_jsonl, smoothed, truncate_jsonl

Stats = namedtuple("Stats", "logits_NE probs_NE topk_idx_NK expert_counts_E")


def _stats(probs, counts):
    probs = torch.tensor(probs)
    return Stats(probs.log(), probs, None, torch.tensor(counts))


def test_router_stats_hand_computed():
    acc = RouterStatsAccumulator()
    uniform = [[0.25] * 4, [0.25] * 4]
    onehot = [[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    acc.add([_stats(uniform, [1, 1, 1, 1]), _stats(onehot, [4, 0, 0, 0])])
    acc.add([_stats(uniform, [1, 1, 1, 1]), _stats(onehot, [4, 0, 0, 0])])  # a second micro-batch
    out = acc.result()
    assert out["load_max_mean"] == pytest.approx([1.0, 4.0])
    assert out["router_entropy"] == pytest.approx([math.log(4), 0.0], abs=1e-5)


def test_jsonl_truncate_drops_replayed_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with JsonlLogger(path) as log:
        for step in (10, 20, 30):
            log.log({"step": step, "loss": float(step)})
        log.log({"step": 31, "loss": float("nan")})
    with open(path, "a") as f:
        f.write('{"step": 40, "lo')  # a write torn by SIGKILL
    assert [r["step"] for r in read_jsonl(path)] == [10, 20, 30, 31]
    assert read_jsonl(path)[-1]["loss"] == "nan"
    truncate_jsonl(path, 20)
    assert [r["step"] for r in read_jsonl(path)] == [10, 20]
    assert smoothed([5.0] * 18 + [1.0, 3.0]) == pytest.approx(2.0)
