"""The command line as a user runs it: real subprocesses, exit codes, one-line errors."""

import json
import subprocess
import sys

import pytest

MOELAB = [sys.executable, "-m", "moelab"]


def run(*args, cwd=None, timeout=600):
    return subprocess.run([*MOELAB, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.mark.parametrize("d,e,k,name", [(512, 8, 2, "d512-E8-k2-320M-A170M"), (1024, 16, 2, "d1024-E16-k2-1.9B-A470M"),
                                        (2048, 64, 2, "d2048-E64-k2-26.4B-A1.5B")])
def test_params_paper_names(d, e, k, name):
    res = run("params", "--preset", "paper", "--d-model", d, "--experts", e, "--top-k", k, "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["name"] == name
    assert info["tpp"] == pytest.approx(125e9 / info["total_params"])
    assert info["sparsity"] == pytest.approx(1 - k / e)
    assert info["active_params"] < info["total_params"]


@pytest.mark.parametrize("args,needle", [
    (["params", "--experts", "2", "--top-k", "4"], "top_k=4 exceeds num_experts=2"),
    (["params", "--d-model", "100", "--heads", "3"], "not divisible by n_heads"),
    (["params", "--preset", "nope"], "unknown architecture preset"),
    (["params", "--tokens", "-5"], "--tokens: must be positive"),
    (["plan", "no-such-study"], "unknown study preset"),
    (["train", "missing.yaml", "--out", "x"], "no such file"),
    (["export-hf", "/no/such/run", "out"], "no such file or directory"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    res = run(*args, cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_bad_run_config_names_field_and_writes_nothing(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model:\n  num_experts: 2\n  top_k: 3\n")
    res = run("train", cfg, "--out", tmp_path / "out")
    assert res.returncode == 2 and "model: top_k=3 exceeds num_experts=2" in res.stderr
    assert not (tmp_path / "out").exists()
    cfg.write_text("model:\n  d_modle: 64\n")
    res = run("train", cfg, "--out", tmp_path / "out")
    assert res.returncode == 2 and "did you mean 'd_model'" in res.stderr
    assert not (tmp_path / "out").exists()
