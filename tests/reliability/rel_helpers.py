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


def run_cli(argv: list) -> tuple[int, str]:
    """``moelab ARGV`` in this process, through the command line's code path (no interpreter and torch
    start-up, seconds saved per call): (exit code, stderr)."""
    import contextlib
    import io

    from moelab.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([str(x) for x in argv])
    return code, err.getvalue()


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


def make_fake_run(root: Path) -> Path:
    """A pretraining run directory without the training: ``config.yaml`` (a tiny world) and ``model/``
    (a randomly initialised 1-layer MoE with a BPE tokenizer). Returns the run directory."""
    import torch

    from moelab.config import ModelConfig, RunConfig, dump_yaml
    from moelab.data.tokenizer import train_tokenizer
    from moelab.data.world import build_world
    from moelab.model.transformer import MoETransformer
    from moelab.modelio import save_model_dir

    run = Path(root) / "run"
    run.mkdir(parents=True)
    cfg = RunConfig.model_validate({"data": {"world": TINY_WORLD}})
    (run / "config.yaml").write_text(dump_yaml(cfg))
    tok = train_tokenizer(build_world(cfg.data.world).documents(), vocab_size=300)
    torch.manual_seed(0)
    mcfg = ModelConfig(vocab_size=len(tok), d_model=32, n_layers=1, n_heads=2, num_experts=2, top_k=1,
                       max_seq_len=96)
    save_model_dir(MoETransformer(mcfg), mcfg, tok, run / "model")
    return run


# ``python -c PAUSABLE moelab-args…``: the real CLI, except that when MOELAB_PAUSE="point:n" it writes
# MOELAB_PAUSE_MARKER and sleeps at the n-th (0-based) arrival at ``point`` in this process, so that a
# test can SIGKILL it exactly there. Points: train-step (after the backward, before the optimizer
# step), checkpoint (every data file is in the temp directory, the manifest is not), eval (inside
# the trainer's validation), grpo-step (after a GRPO step's updates, before the step is counted).
PAUSABLE = r'''
import os, sys, time
from pathlib import Path

point, _, nth = os.environ.get("MOELAB_PAUSE", "").partition(":")
arrivals = {"n": 0}

def maybe_pause(here):
    if here != point:
        return
    if arrivals["n"] == int(nth):
        Path(os.environ["MOELAB_PAUSE_MARKER"]).write_text(str(os.getpid()))
        time.sleep(600)
    arrivals["n"] += 1

if point in ("train-step", "eval"):
    from moelab.train import trainer
    step_fn, eval_fn = trainer._Loop._train_step, trainer.evaluate
    def train_step(self, *a, **k):
        out = step_fn(self, *a, **k)
        maybe_pause("train-step")
        return out
    def evaluate(*a, **k):
        maybe_pause("eval")
        return eval_fn(*a, **k)
    trainer._Loop._train_step, trainer.evaluate = train_step, evaluate
if point == "checkpoint":
    from moelab.train import checkpoint
    manifest_fn = checkpoint.write_manifest
    def write_manifest(ckpt_dir, step):
        maybe_pause("checkpoint")
        return manifest_fn(ckpt_dir, step)
    checkpoint.write_manifest = write_manifest
if point == "grpo-step":
    from moelab.posttrain import grpo
    grpo_step = grpo._Loop._train_step
    def train_step(self, *a, **k):
        out = grpo_step(self, *a, **k)
        maybe_pause("grpo-step")
        return out
    grpo._Loop._train_step = train_step

from moelab.cli import main
sys.exit(main(sys.argv[1:]))
'''


def run_and_kill_at(argv: list, point: str, nth: int, marker: Path, *, timeout: float = 240) -> None:
    """Run ``moelab argv`` and SIGKILL it when it pauses at the ``nth`` arrival at ``point``."""
    import signal
    import time

    marker.unlink(missing_ok=True)
    env = {**ENV, "MOELAB_PAUSE": f"{point}:{nth}", "MOELAB_PAUSE_MARKER": str(marker)}
    proc = subprocess.Popen([sys.executable, "-c", PAUSABLE, *map(str, argv)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"exited ({proc.returncode}) before reaching {point}:{nth}: "
                                     f"{proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"never reached {point}:{nth}")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
