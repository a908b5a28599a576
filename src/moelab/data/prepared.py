"""Training from prepared data (``kind: prepared``): sequences read through memory maps.

    data:
      sources:
        - {kind: prepared, path: prepared/web, weight: 3}
        - {kind: prepared, path: prepared/math, weight: 1}

Each ``path`` is a folder written by ``moelab data prepare`` (moelab.data.prepare). Nothing
is tokenized and nothing is loaded: the ``.bin`` shards are memory-mapped and a batch reads only
its own windows, so memory does not grow with the corpus.

Sampling, as ``PackedBatches`` does for in-memory streams, so the data position is the step:

* a shard's tokens are cut into windows of ``seq_len + 1`` tokens (inputs and shifted targets),
  never across shards; a dataset's windows are numbered across its shards;
* mixture (Megatron's ``--data-path W1 P1 W2 P2``): global sample ``j`` goes to dataset ``d``
  chosen by a golden-ratio low-discrepancy sequence over the normalised weights, so after any
  ``n`` samples each dataset has had ``n·w_d`` of them up to a few (Megatron's own blend is an
  error-minimising greedy with the same property; this one is vectorised);
* within a dataset, its ``k``-th sample is window ``perm_epoch[k mod n]`` with ``epoch = k // n``
  and one seeded permutation per (dataset, epoch): every window once per epoch, random order;
* under torchrun rank ``r`` of ``R`` reads only rows ``r·B/R … (r+1)·B/R - 1`` of each global
  batch: disjoint sequences, and the same global batch as one process.

Validation: windows spread evenly over the ``val`` shards of every source (unweighted), the same
windows at every step and in every run.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from moelab.config import DataConfig
from moelab.data.indexed import IndexedDataset
from moelab.errors import UserError

_PHI = (math.sqrt(5) - 1) / 2  # golden-ratio fraction: the most even 1-D low-discrepancy step


class WindowedShards:
    """Windows of ``seq_len + 1`` tokens over several token arrays (memory maps), numbered across them."""

    def __init__(self, arrays: list[np.ndarray], seq_len: int):
        self.arrays, self.seq_len = arrays, seq_len
        counts = np.array([max(len(a) - 1, 0) // seq_len for a in arrays], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])  # [num_shards + 1]
        self.num_windows = int(self.starts[-1])

    def windows(self, idx_B: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs_BT, targets_BT) int64 for global window numbers ``idx_B``."""
        shard_B = np.searchsorted(self.starts, idx_B, side="right") - 1
        local_B = idx_B - self.starts[shard_B]
        offs_T1 = np.arange(self.seq_len + 1)
        rows = [self.arrays[s][l * self.seq_len + offs_T1] for s, l in zip(shard_B, local_B)]  # reads pages
        chunk_BT1 = torch.from_numpy(np.stack(rows).astype(np.int64)) if rows else torch.zeros(0, self.seq_len + 1,
                                                                                               dtype=torch.int64)
        return chunk_BT1[:, :-1], chunk_BT1[:, 1:]


class PreparedData:
    """The prepared sources of one data config: train windows per source, validation windows."""

    def __init__(self, data_cfg: DataConfig, tokenizer):
        from moelab.data.prepare import tokenizer_hash

        self.seq_len = data_cfg.seq_len
        want = tokenizer_hash(tokenizer)
        self.weights: list[float] = []
        self.train: list[WindowedShards] = []
        val_arrays: list[np.ndarray] = []
        self.train_tokens = 0
        for src in data_cfg.sources:
            root = Path(str(src.path)).expanduser()
            manifest = read_prepared(root)
            if manifest["tokenizer"]["hash"] != want:
                raise UserError(f"{root}: prepared with another tokenizer (hash {manifest['tokenizer']['hash']}, "
                                f"the run's is {want}); prepare it again with the run's tokenizer")
            arrays = []
            for entry in manifest["sources"].values():
                for shard in entry["shards"]:
                    if shard.get("train"):
                        arrays.append(IndexedDataset(root / shard["train"], random_access=True).tokens)
                    if shard.get("val"):
                        val_arrays.append(IndexedDataset(root / shard["val"], random_access=True).tokens)
            shards = WindowedShards(arrays, self.seq_len)
            if shards.num_windows == 0:
                raise UserError(f"{root}: fewer than seq_len+1={self.seq_len + 1} training tokens per shard")
            self.train.append(shards)
            self.weights.append(src.weight)
            self.train_tokens += sum(len(a) for a in arrays)
        self.val = WindowedShards(val_arrays, self.seq_len)

    def batches(self, batch_size: int, seed: int, total_steps: int) -> "PreparedBatches":
        return PreparedBatches(self.train, self.weights, batch_size, seed, total_steps)

    def val_batches(self, n: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Up to ``n`` fixed batches of windows spread evenly over every validation shard."""
        if self.val.num_windows == 0:
            raise UserError(f"the prepared validation shards hold no window of seq_len+1={self.seq_len + 1} tokens; "
                            "prepare with a larger --val-fraction")
        count = min(n * batch_size, self.val.num_windows)
        idx = np.unique(np.linspace(0, self.val.num_windows - 1, count).round().astype(np.int64))
        return [self.val.windows(idx[i:i + batch_size]) for i in range(0, len(idx), batch_size)]


def read_prepared(root: Path) -> dict:
    """The manifest of a finished prepared folder (a ``UserError`` for anything else)."""
    from moelab.data.prepare import MANIFEST, read_manifest

    if not root.is_dir():
        raise UserError(f"{root}: no such prepared data folder (make it with `moelab data prepare`)")
    manifest = read_manifest(root)
    if manifest is None:
        raise UserError(f"{root}: empty folder, not prepared data (no {MANIFEST})")
    unfinished = [e["path"] for e in manifest["sources"].values() if e.get("state") != "done"]
    if unfinished:
        raise UserError(f"{root}: {unfinished[0]} is not fully prepared; run `moelab data prepare` again to finish it")
    return manifest


def prepared_tokenizer(data_cfg: DataConfig):
    """The tokenizer of the (first) prepared source, for runs that name none."""
    from moelab.data.tokenizer import load_tokenizer

    root = Path(str(data_cfg.sources[0].path)).expanduser()
    read_prepared(root)
    return load_tokenizer(root / "tokenizer")


class PreparedBatches:
    """Global batch ``step`` (or one rank's rows of it) from weighted prepared datasets; see the module."""

    def __init__(self, datasets: list[WindowedShards], weights: list[float], batch_size: int, seed: int,
                 total_steps: int):
        self.datasets, self.batch_size, self.seed = datasets, batch_size, seed
        self.num_sequences = sum(d.num_windows for d in datasets)
        if self.num_sequences < batch_size:
            raise UserError(f"the prepared training data has {self.num_sequences} sequences of seq_len="
                            f"{datasets[0].seq_len}: fewer than one batch of {batch_size}")
        num_samples = total_steps * batch_size
        w = np.asarray(weights, dtype=np.float64) / sum(weights)
        u = (np.arange(num_samples, dtype=np.float64) * _PHI + 0.5) % 1.0  # [N] low-discrepancy in [0, 1)
        self.dataset_of = np.minimum(np.searchsorted(np.cumsum(w), u, side="right"), len(w) - 1).astype(np.int16)
        self.sample_of = np.zeros(num_samples, dtype=np.int64)  # [N] k-th sample of its dataset
        for d in range(len(w)):
            mask = self.dataset_of == d
            self.sample_of[mask] = np.arange(int(mask.sum()))
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def _order(self, d: int, epoch: int) -> np.ndarray:
        key = (d, epoch)
        if key not in self._orders:
            if len(self._orders) >= 2 * len(self.datasets):  # a batch spans at most two epochs per dataset
                self._orders.pop(next(iter(self._orders)))
            self._orders[key] = np.random.default_rng([self.seed, d, epoch]).permutation(self.datasets[d].num_windows)
        return self._orders[key]

    def rows(self, step: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
        """(dataset, window) of each row rank ``rank`` of ``world`` reads at ``step``."""
        share = self.batch_size // world
        out = []
        for j in range(step * self.batch_size + rank * share, step * self.batch_size + (rank + 1) * share):
            d, k = int(self.dataset_of[j]), int(self.sample_of[j])
            n = self.datasets[d].num_windows
            out.append((d, int(self._order(d, k // n)[k % n])))
        return out

    def batch(self, step: int, rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs_BT, targets_BT) int64: this rank's rows of global batch ``step`` (all rows when world=1)."""
        assert 0 <= step and (step + 1) * self.batch_size <= len(self.dataset_of), step
        parts = [self.datasets[d].windows(np.array([w])) for d, w in self.rows(step, rank, world)]
        return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])

    def epoch(self, step: int) -> float:
        return step * self.batch_size / self.num_sequences
