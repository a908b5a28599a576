"""`moelab bench` returns its fields; compare_hf.py --quick ends with the ratio line."""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from moelab.bench import add_bench_command

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--d-model", "32", "--layers", "1", "--heads", "2", "--experts", "4", "--top-k", "2",
        "--expert-hidden", "32", "--vocab", "64", "--seq", "16", "--batch", "2", "--new-tokens", "4",
        "--prompt-len", "4", "--repeats", "2", "--warmup", "1", "--threads", "1"]
FIELDS = {"mode", "device", "dtype", "threads", "compile", "model", "tokens_per_run", "seconds", "median_seconds",
          "tokens_per_s", "model_flops_per_s", "peak_matmul_flops_per_s", "mfu", "peak_memory_bytes", "torch"}


def _run_cli(argv, capsys) -> dict:
    parser = argparse.ArgumentParser(prog="moelab")
    add_bench_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("mode,dtype", [("train", "fp32"), ("score", "bf16"), ("generate", "fp32")])
def test_bench_json_fields(mode, dtype, capsys):
    out = _run_cli(["bench", mode, *TINY, "--dtype", dtype, "--json"], capsys)
    assert FIELDS <= set(out)
    assert out["mode"] == mode and out["dtype"] == dtype and out["threads"] == 1
    assert len(out["seconds"]) == 2 and out["median_seconds"] > 0
    assert out["tokens_per_run"] == (2 * 4 if mode == "generate" else 2 * 16)
    assert out["tokens_per_s"] > 0 and out["model_flops_per_s"] > 0 and out["peak_matmul_flops_per_s"] > 0
    assert 0 < out["mfu"] < 10  # a ratio, not a percentage
    assert out["peak_memory_bytes"] > 0
    assert out["model"]["num_experts"] == 4 and out["model"]["active_params"] < out["model"]["total_params"]


def test_bench_flops_follow_accounting(capsys):
    from moelab import accounting
    from moelab.config import ModelConfig

    out = _run_cli(["bench", "train", *TINY, "--json"], capsys)
    cfg = ModelConfig(d_model=32, n_layers=1, n_heads=2, num_experts=4, top_k=2, expert_hidden=32, vocab_size=64)
    expected = 6 * accounting.active_params(cfg) * out["tokens_per_run"] / out["median_seconds"]
    assert out["model_flops_per_s"] == pytest.approx(expected)


def test_bench_bad_option_is_a_user_error(capsys):
    from moelab.errors import UserError

    with pytest.raises(UserError, match="top_k"):
        _run_cli(["bench", "train", *TINY, "--top-k", "9", "--json"], capsys)


def test_compare_hf_quick_last_line():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_hf.py"), "--quick", "--threads", "1"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"ratio train=\d+\.\d\d score=\d+\.\d\d generate=\d+\.\d\d", lines[-1]), lines[-1]
    assert "greedy tokens identical: True" in proc.stdout


def test_compare_commits_quick_last_line():
    """The side-by-side script against this very checkout: one tiny size, both precisions, both sides."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_commits.py"), "--old", str(ROOT),
                           "--quick", "--threads", "1"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"ratio vs-old-default=\d+\.\d\d vs-old-best=\d+\.\d\d", lines[-1]), lines[-1]
    (row,) = [ln for ln in lines if ln.startswith("size ")]
    assert "new default fp32" in row  # the suite runs under MOELAB_AUTO_PRECISION=fp32 (tests/conftest.py)


def test_compare_commits_refuses_a_folder_that_is_not_a_checkout(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_commits.py"), "--old", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode != 0 and "not a moelab checkout" in proc.stderr
