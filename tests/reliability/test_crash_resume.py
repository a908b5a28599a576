"""SIGKILL ``moelab train`` and ``moelab grpo`` at chosen points, resume with the same command, and
get bitwise the weights (and the metrics log) of an uninterrupted run.

The killed process is the real CLI run by ``rel_helpers.PAUSABLE``, which only adds a pause at the
point to kill, so that the kill lands there every time: inside a training step (after the backward,
before the optimizer step), inside a checkpoint write (every data file in the temp directory, no
manifest yet) and inside validation. Where in those phases (which step, which checkpoint, which
evaluation) is drawn at random; the seed is in every assertion message.
"""

from __future__ import annotations

import json
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from moelab.train.checkpoint import latest_complete, step_dirs

from rel_helpers import make_fake_run, moelab, run_and_kill_at, tiny_run

SEED = int(os.environ.get("MOELAB_TEST_SEED", random.randrange(10**6)))
_TIMING = ("tokens_per_s", "elapsed_s")


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _log(run_dir: Path) -> list[dict]:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if k not in _TIMING} for r in records]


def _status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def _in_background(argv: list):
    """Start ``moelab argv`` now (the reference run overlaps with the killed one: two cores)."""
    return ThreadPoolExecutor(max_workers=1).submit(moelab, *argv)


STEPS, EVERY, EVAL_EVERY = 24, 3, 4


@pytest.fixture(scope="module")
def train_reference(tmp_path_factory):
    """(run.yaml, a future of the uninterrupted run's directory): it trains while the kills happen."""
    root = tmp_path_factory.mktemp("train-reference")
    cfg = root / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run(train={"steps": STEPS, "checkpoint_every": EVERY,
                                                  "eval_every": EVAL_EVERY, "keep_checkpoints": 2})))
    ref = root / "reference"
    pending = _in_background(["train", cfg, "--out", ref, "--quiet"])

    def done() -> Path:
        res = pending.result()
        assert res.returncode == 0, res.stderr[-2000:]
        return ref

    return cfg, done


def test_train_killed_in_a_step_a_checkpoint_write_and_validation_resumes_bitwise(tmp_path, train_reference):
    rng = random.Random(SEED)
    why = f"(MOELAB_TEST_SEED={SEED})"
    steps, every = STEPS, EVERY
    cfg, reference = train_reference
    run, marker = tmp_path / "killed", tmp_path / "paused"
    argv = ["train", cfg, "--out", run, "--quiet"]

    # 1. inside a training step (0-based step index; a checkpoint or two exist already)
    step = rng.randrange(4, 10)
    run_and_kill_at(argv, "train-step", step, marker)
    status = _status(run)
    assert status["state"] == "running" and status["step"] <= step, (status, why)
    assert [s for s, _ in step_dirs(run)][-1] == step // every * every, why

    # 2. inside a checkpoint write: the temp directory holds the data files, not the manifest
    resumed_from = step // every * every
    target = rng.choice([12, 15, 18])  # checkpoint step to kill inside
    nth = (target - resumed_from) // every - 1  # the n-th checkpoint written by this process
    run_and_kill_at(argv, "checkpoint", nth, marker)
    tmp_dirs = [p for p in (run / "checkpoints").iterdir() if p.name.startswith(f".step-{target}.")]
    assert len(tmp_dirs) == 1 and (tmp_dirs[0] / "model.safetensors").is_file(), (tmp_dirs, why)
    assert not (tmp_dirs[0] / "manifest.json").exists()
    assert latest_complete(run).name == f"step-{target - every}", why  # the torn one is never used

    # 3. inside validation (the first or second evaluation this process runs)
    run_and_kill_at(argv, "eval", rng.randrange(2), marker)
    assert _status(run)["state"] == "running", why

    # 4. resume to the end
    res = moelab(*argv)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _status(run)["state"] == "done"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")], "temp dirs left behind"
    ref = reference()
    assert _same_weights(run / "model", ref / "model"), f"final weights differ from the uninterrupted run {why}"
    assert _log(run) == _log(ref), why
    assert json.loads((run / "train_summary.json").read_text())["steps"] == steps


def test_train_warns_about_a_corrupt_checkpoint_and_resumes_from_the_previous_one(tmp_path, train_reference):
    """A bit flipped in the newest checkpoint (truncation and the library path: tests/train)."""
    cfg, reference = train_reference
    run = tmp_path / "run"
    res = moelab("train", cfg, "--out", run, "--quiet", "--stop-after", 12)
    assert res.returncode == 0, res.stderr[-2000:]
    weights = run / "checkpoints" / "step-12" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x10
    weights.write_bytes(bytes(data))

    res = moelab("train", cfg, "--out", run, "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("moelab: warning: skipping corrupt checkpoint: "), res.stderr
    assert "step-12" in lines[0] and "checksum mismatch" in lines[0], lines[0]
    # it went on from step 9, the previous complete checkpoint, and replayed steps 10-12 exactly
    ref = reference()
    assert _same_weights(run / "model", ref / "model")
    assert _log(run) == _log(ref)


def test_grpo_killed_midway_resumes_bitwise(tmp_path):
    rng = random.Random(SEED + 1)
    why = f"(MOELAB_TEST_SEED={SEED})"
    start = make_fake_run(tmp_path)
    steps = 4
    common = ["--model", start / "model", "--task", "reasoning", "--steps", steps, "--group-size", "2",
              "--prompts-per-step", "2", "--max-new-tokens", "8", "--eval-limit", "2", "--eval-every", "2",
              "--checkpoint-every", "1", "--device", "cpu", "--quiet"]
    ref, run, marker = tmp_path / "reference", tmp_path / "killed", tmp_path / "paused"
    reference = _in_background(["grpo", *common, "--out", ref])
    step = rng.randrange(1, steps - 1)  # 0-based: killed after this step's updates, before it is saved
    run_and_kill_at(["grpo", *common, "--out", run], "grpo-step", step, marker)
    status = _status(run)
    assert status["state"] == "running" and status["step"] == step, (status, why)
    res = moelab("grpo", *common, "--out", run)
    assert res.returncode == 0, res.stderr[-2000:]
    ref_res = reference.result()
    assert ref_res.returncode == 0, ref_res.stderr[-2000:]
    assert _status(run)["state"] == "done"
    assert _same_weights(run / "model", ref / "model"), f"GRPO weights differ from the uninterrupted run {why}"
    assert _log(run) == _log(ref), why
