"""Router / expert-load statistics and the JSONL metrics log.

Statistics are collected apart from the loss path (no gradients, no effect on training):
``RouterStatsAccumulator.add`` keeps running tensors across micro-batches without a
host sync; ``result()`` syncs once per logged step.

* ``load_max_mean`` — per layer, max over experts of the tokens routed there divided by
  the mean: 1.0 is perfect balance, E means every assignment went to one expert.
* ``router_entropy`` — per layer, mean over tokens of the entropy (nats) of the router's
  softmax over E; log E means uniform routing, 0 means hard one-hot routing.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from moelab.atomic import atomic_write_text


class RouterStatsAccumulator:
    """Sums expert counts and router entropies over the micro-batches of one step."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._counts_LE: torch.Tensor | None = None
        self._entropy_sum_L: torch.Tensor | None = None
        self._num_tokens = 0

    @torch.no_grad()
    def add(self, router: Sequence[Any]) -> None:
        """``router`` is ``ModelOutput.router``: one ``RouterStats`` per layer."""
        if not router:
            return
        counts_LE = torch.stack([r.expert_counts_E.detach().float() for r in router])
        # entropy per token, summed: -sum_e p log p; clamp keeps 0·log 0 = 0
        entropy_sum_L = torch.stack(
            [-(r.probs_NE.detach().float() * r.probs_NE.detach().float().clamp_min(1e-30).log()).sum() for r in router]
        )
        num_tokens = router[0].probs_NE.shape[0]
        if self._counts_LE is None:
            self._counts_LE, self._entropy_sum_L = counts_LE, entropy_sum_L
        else:
            self._counts_LE = self._counts_LE + counts_LE
            self._entropy_sum_L = self._entropy_sum_L + entropy_sum_L
        self._num_tokens += num_tokens

    def result(self) -> dict[str, list[float]]:
        if self._counts_LE is None:
            return {}
        counts_LE = self._counts_LE
        mean_L = counts_LE.mean(dim=1).clamp_min(1e-12)
        ratio_L = counts_LE.max(dim=1).values / mean_L
        entropy_L = self._entropy_sum_L / max(self._num_tokens, 1)
        both = torch.stack([ratio_L, entropy_L]).cpu().tolist()  # one sync for all layers
        return {"load_max_mean": [round(x, 5) for x in both[0]], "router_entropy": [round(x, 5) for x in both[1]]}

    def all_reduce(self) -> None:
        """Sum across ranks (call on every rank before ``result`` under torch.distributed)."""
        import torch.distributed as dist

        if self._counts_LE is None or not (dist.is_available() and dist.is_initialized()):
            return
        dist.all_reduce(self._counts_LE)
        dist.all_reduce(self._entropy_sum_L)
        n = torch.tensor([float(self._num_tokens)], device=self._counts_LE.device)
        dist.all_reduce(n)
        self._num_tokens = int(n.item())


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so every line stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class JsonlLogger:
    """Append-only ``metrics.jsonl``: one JSON object per line, flushed after each write."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def log(self, record: dict) -> None:
        self._f.write(json.dumps(_clean(record), allow_nan=False) + "\n")
        self._f.flush()

    def sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> "JsonlLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_jsonl(path: str | Path) -> list[dict]:
    """Every parseable record of a JSONL file (a torn last line from a crash is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_jsonl(path: str | Path, max_step: int) -> list[dict]:
    """Keep only records with ``step <= max_step`` (atomically); return them.

    On resume from checkpoint N, whatever was logged after step N is replayed, so it
    is dropped first: the resumed log then equals the log of an uninterrupted run.
    """
    kept = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= max_step]
    if Path(path).exists():
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def smoothed(values: Iterable[float], fraction: float = 0.1) -> float | None:
    """Mean of the last ``fraction`` (at least one) of ``values``: a smoothed final loss."""
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return None
    n = max(1, math.ceil(fraction * len(values)))
    return sum(values[-n:]) / n
