"""SIGKILL a training process mid-run, resume in a new call: bitwise the uninterrupted run."""

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from moelab.train.checkpoint import step_dirs
from moelab.train.metrics import read_jsonl
from moelab.train.trainer import train

SCRIPT = """
import json, sys
from moelab.config import RunConfig
from moelab.train.trainer import train
train(RunConfig.model_validate(json.loads(sys.argv[1])), sys.argv[2], progress=False)
"""


def _trajectory(run_dir):
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "elapsed_s")}
            for r in read_jsonl(run_dir / "metrics.jsonl")]


def test_sigkill_then_resume(tmp_path, tiny_cfg, sigkill_when):
    cfg = tiny_cfg(train={"steps": 60, "checkpoint_every": 7, "eval_every": 25, "log_every": 1})
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(cfg.model_dump(mode="json")), str(killed)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sigkill_when(proc, lambda: any(step >= 14 for step, _ in step_dirs(killed)))
    status = json.loads((killed / "status.json").read_text())
    assert status["state"] == "running" and status["step"] < 60  # the kill left it mid-run

    resumed = train(cfg, killed, progress=False)
    reference = train(cfg, tmp_path / "reference", progress=False)
    assert resumed["steps"] == reference["steps"] == 60
    assert _trajectory(killed) == _trajectory(tmp_path / "reference")
    a = load_file(str(killed / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "reference" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)
