"""DDP and FSDP2 on CPU (gloo, 2 processes): the global batch is sharded, checkpoints resume across modes."""

import json
import os
import subprocess
import sys

import pytest
import torch.distributed as dist

from moelab.train.metrics import read_jsonl
from moelab.train.trainer import train

SCRIPT = """
import json, sys
from moelab.config import RunConfig
from moelab.train.trainer import train
cfg = RunConfig.model_validate(json.loads(sys.argv[1]))
train(cfg, sys.argv[2], progress=False, max_steps_this_call=int(sys.argv[3]) or None)
"""


def _torchrun(tmp_path, cfg, run_dir, max_steps=0):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(script), json.dumps(cfg.model_dump(mode="json")), str(run_dir), str(max_steps)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _losses(run_dir):
    return [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_fsdp_then_ddp_resume_matches_single_process(tmp_path, tiny_cfg):
    base = {"steps": 6, "checkpoint_every": 3, "eval_every": 3, "grad_accum": 2}
    single = train(tiny_cfg(train={**base, "distributed": "none"}), tmp_path / "single", progress=False)
    run = tmp_path / "dist"
    _torchrun(tmp_path, tiny_cfg(train={**base, "distributed": "fsdp"}), run, max_steps=3)
    assert json.loads((run / "status.json").read_text())["step"] == 3
    _torchrun(tmp_path, tiny_cfg(train={**base, "distributed": "ddp"}), run)  # same run, other mode
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 6 and summary["tokens"] == single["tokens"]  # global batch unchanged
    assert _losses(run) == pytest.approx(_losses(tmp_path / "single"), rel=1e-4)
    assert summary["final_val_loss"] == pytest.approx(single["final_val_loss"], rel=1e-4)


def _cli(tmp_path, cfg, run_dir, *, nproc=1, stop_after=None):
    """`moelab train` as a user runs it: plain, or under torchrun with `-m moelab`."""
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)] \
        if nproc > 1 else [sys.executable]
    cmd = [*launcher, "-m", "moelab", "train", str(path), "--out", str(run_dir), "--quiet"]
    if stop_after:
        cmd += ["--stop-after", str(stop_after)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_checkpoints_move_between_one_and_two_processes(tmp_path, tiny_cfg):
    base = {"steps": 6, "checkpoint_every": 3, "eval_every": 3, "grad_accum": 2, "distributed": "ddp"}
    cfg = tiny_cfg(train=base)
    single = train(cfg, tmp_path / "single", progress=False)
    # 2 processes (torchrun -m moelab train) for 3 steps, then 1 process finishes
    _cli(tmp_path, cfg, tmp_path / "two-then-one", nproc=2, stop_after=3)
    _cli(tmp_path, cfg, tmp_path / "two-then-one")
    # 1 process for 3 steps, then 2 processes finish
    _cli(tmp_path, cfg, tmp_path / "one-then-two", stop_after=3)
    _cli(tmp_path, cfg, tmp_path / "one-then-two", nproc=2)
    for run in ("two-then-one", "one-then-two"):
        summary = json.loads((tmp_path / run / "train_summary.json").read_text())
        assert summary["steps"] == 6 and summary["tokens"] == single["tokens"]
        assert _losses(tmp_path / run) == pytest.approx(_losses(tmp_path / "single"), rel=1e-4)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_a_tokenizer_failure_on_rank_0_stops_every_rank(tmp_path, tiny_cfg):
    """Only rank 0 builds the tokenizer; when it fails, rank 1 must not wait at a barrier forever."""
    import time

    import yaml

    not_a_tokenizer = tmp_path / "empty-tokenizer-dir"
    not_a_tokenizer.mkdir()
    cfg = tiny_cfg(train={"steps": 2, "distributed": "ddp"}).model_dump(mode="json")
    cfg["data"]["tokenizer"] = str(not_a_tokenizer)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "moelab", "train", str(path), "--out", str(tmp_path / "run"), "--quiet"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 200  # before the fix: rank 1 sat in a 30-minute gloo barrier
    assert "empty-tokenizer-dir" in proc.stderr  # rank 0's own one-line error
    assert "rank 0 could not build the tokenizer" in proc.stderr  # rank 1's
    assert not (tmp_path / "run").exists()  # bad input leaves nothing behind


SPY = """
import json, os, sys
from moelab.config import RunConfig
from moelab.data.prepared import PreparedBatches
from moelab.train.trainer import train
read = []
real_batch = PreparedBatches.batch
def batch(self, step, rank=0, world=1):  # records what this rank really reads, then reads it
    read.append([step, rank, world, self.rows(step, rank, world)])
    return real_batch(self, step, rank, world)
PreparedBatches.batch = batch
cfg = RunConfig.model_validate(json.loads(sys.argv[1]))
train(cfg, sys.argv[2], progress=False)
with open(os.path.join(sys.argv[2], f"read-{os.environ.get('RANK', '0')}.json"), "w") as f:
    json.dump(read, f)
"""


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_prepared_data_two_ranks_read_disjoint_sequences(tmp_path, tiny_cfg):
    from prepared_helpers import make_prepared  # tests/train is on sys.path (pytest's rootdir insertion)

    prepared = make_prepared(tmp_path / "data", tiny_cfg().data.world.model_dump())
    cfg = tiny_cfg(data={"sources": [{"kind": "prepared", "path": str(prepared)}]},
                   train={"steps": 4, "checkpoint_every": 2, "eval_every": 2, "distributed": "ddp"})
    single = train(cfg, tmp_path / "single", progress=False)
    script = tmp_path / "spy.py"
    script.write_text(SPY)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    run = tmp_path / "two"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script), json.dumps(cfg.model_dump(mode="json")), str(run)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reads = [json.loads((run / f"read-{r}.json").read_text()) for r in (0, 1)]
    for step in range(4):
        rows = [next(tuple(map(tuple, x[3])) for x in reads[r] if x[0] == step and x[1] == r) for r in (0, 1)]
        assert len(rows[0]) == len(rows[1]) == 4  # half of the global batch of 8 each
        assert not set(rows[0]) & set(rows[1])  # disjoint sequences
    assert _losses(run) == pytest.approx(_losses(tmp_path / "single"), rel=1e-4)  # the same global batches
    assert json.loads((run / "train_summary.json").read_text())["tokens"] == single["tokens"]
