"""Power loss in the middle of a write, at any byte, for each of moelab's writers (docs/reliability.md).

A real ``moelab`` process is cut off while it writes: just before a chosen file (or directory) is
made durable, its temp file — or a random file of its temp directory — loses every byte after a
random offset, and the process SIGKILLs itself, which is what a power cut leaves (the rename never
happened). Then the command is run again. Each time: the torn write is never taken for complete,
the previous complete version is read, byte for byte, and the re-run finishes the work.

Writers covered: a checkpoint (a directory), ``status.json`` and ``metrics.jsonl`` of a run, an
evaluation summary, the store's ``results.csv``, and a report (a directory).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from battery_assets import _fake_sweep
from rel_helpers import ENV, make_fake_run, moelab, run_cli, snapshot, tiny_run

# ``python -c POWER_CUT moelab-args…``: the real CLI, except that the write whose destination is
# named CUT_NAME (its CUT_NTH arrival) is torn at a random byte (CUT_SEED) and the process killed.
POWER_CUT = r'''
import os, random, signal, sys
from pathlib import Path
from moelab import atomic

name, nth, rng = os.environ["CUT_NAME"], int(os.environ.get("CUT_NTH", "0")), random.Random(int(os.environ["CUT_SEED"]))
seen = {"n": 0, "in_tree": False}

def cut(tmp, files):
    if not tmp.name.startswith("." + name + "."):
        return
    seen["n"] += 1
    if seen["n"] - 1 != nth:
        return
    files = [f for f in files if f.stat().st_size > 0] or files
    for f in rng.sample(files, rng.randint(1, len(files))):  # the pages not yet on disk are lost
        size = f.stat().st_size
        os.truncate(f, rng.randint(0, max(0, size - 1)))
    Path(os.environ["CUT_MARKER"]).write_text(str(tmp))
    os.kill(os.getpid(), signal.SIGKILL)

real_file, real_tree = atomic.fsync_file, atomic.fsync_tree

def fsync_file(path):
    if not seen["in_tree"]:
        cut(Path(path), [Path(path)])
    real_file(path)

def fsync_tree(root):
    cut(Path(root), sorted(p for p in Path(root).rglob("*") if p.is_file()))
    seen["in_tree"] = True
    try:
        real_tree(root)
    finally:
        seen["in_tree"] = False

atomic.fsync_file, atomic.fsync_tree = fsync_file, fsync_tree
from moelab.cli import main
sys.exit(main(sys.argv[1:]))
'''


def cut_power(argv: list, name: str, seed: int, marker: Path, nth: int = 0) -> Path:
    """Run ``moelab argv`` and cut the power in its write of ``name``; returns the torn temp path."""
    marker.unlink(missing_ok=True)
    env = {**ENV, "CUT_NAME": name, "CUT_NTH": str(nth), "CUT_SEED": str(seed), "CUT_MARKER": str(marker)}
    res = subprocess.run([sys.executable, "-c", POWER_CUT, *map(str, argv)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == -9 and marker.exists(), f"never cut at {name}:{nth} ({res.returncode}): {res.stderr[-2000:]}"
    torn = Path(marker.read_text())
    assert torn.exists(), torn  # the torn temp is left, as a power cut leaves it
    return torn


def _steps(run: Path) -> list[int]:
    return sorted({json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()
                   if ln.strip() and "step" in json.loads(ln)})


def test_a_power_cut_in_a_checkpoint_or_a_status_write_is_never_taken_for_complete(tmp_path):
    from moelab.train.checkpoint import latest_complete

    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run(train={"steps": 10, "checkpoint_every": 5, "eval_every": 10})))
    ref = tmp_path / "ref"
    assert moelab("train", cfg, "--out", ref, "--quiet").returncode == 0
    rng = random.Random(27)

    # the second checkpoint torn at a random byte of random files: step-5 is the latest complete one
    run = tmp_path / "run"
    torn = cut_power(["train", cfg, "--out", run, "--quiet"], "step-10", rng.randrange(1 << 30), tmp_path / "m")
    assert torn.parent == run / "checkpoints" and torn.name.startswith(".step-10.")
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith(".")) == ["step-5"]
    assert latest_complete(run).name == "step-5"
    # the run's status.json torn too, on the resumed run's first write of it
    cut_power(["train", cfg, "--out", run, "--quiet"], "status.json", rng.randrange(1 << 30), tmp_path / "m")
    assert json.loads((run / "status.json").read_text())["state"] in ("running", "failed")  # the previous one, whole
    res = moelab("train", cfg, "--out", run, "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((run / "status.json").read_text())["state"] == "done" and _steps(run) == _steps(ref)
    from safetensors.torch import load_file

    a, b = load_file(run / "model" / "model.safetensors"), load_file(ref / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)  # bitwise: nothing lost
    assert not list((run / "checkpoints").glob(".*.tmp"))  # the torn checkpoint was removed by the next save


@pytest.mark.parametrize("seed", [1])
def test_a_power_cut_in_an_evaluation_summary_keeps_the_previous_one(tmp_path, seed, one_thread):
    run = make_fake_run(tmp_path)
    out = tmp_path / "ev"
    argv = ["eval", "taskloss", "--model", run, "--task", "knowledge", "--limit", "2", "--out", out]
    assert run_cli(argv)[0] == 0  # the writes that are not cut run in this process (seconds saved)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    torn = cut_power(argv, "taskloss.json", seed, tmp_path / "m")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p != torn} == before  # old summary, whole
    code, err = run_cli(argv)
    assert code == 0, err[-2000:]
    assert not torn.exists()  # a dead writer's temp is removed by the next write of the file
    assert json.loads((out / "taskloss.json").read_text()) == json.loads(before["taskloss.json"])


@pytest.mark.parametrize("name", ["results.csv", "report"])
def test_a_power_cut_in_a_store_rebuild_or_a_report_keeps_the_previous_files(tmp_path, name, one_thread):
    sweep = _fake_sweep(tmp_path)
    assert run_cli(["report", sweep, "--bootstrap", "50"])[0] == 0
    before = snapshot(sweep)
    argv = (["query", sweep, "SELECT 1", "--rebuild"] if name == "results.csv"
            else ["report", sweep, "--bootstrap", "50"])
    torn = cut_power(argv, name, 27, tmp_path / "m")
    # every file is the old or the new version, whole: a rebuild replaces study.duckdb (the same rows,
    # a new rebuilt_at) before it writes results.csv; nothing else changed
    changed = {k for k in _complete(before) if _complete(snapshot(sweep)).get(k) != before[k]}
    assert changed <= ({"./study.duckdb"} if name == "results.csv" else set()), changed
    res = moelab("query", sweep, "SELECT count(*) AS n FROM runs", "--json")  # readers: a whole store
    assert res.returncode == 0 and json.loads(res.stdout) == [{"n": 2}], res.stderr[-2000:]
    code, err = run_cli(argv)
    assert code == 0, err[-2000:]
    assert not torn.exists()
    assert _complete(snapshot(sweep))["./results.csv"] == before["./results.csv"]  # rebuilt, the same rows


def _complete(snap: dict) -> dict:
    """A snapshot without temp files and directories (``.NAME.HOST-PID.XXXX.tmp``)."""
    return {k: v for k, v in snap.items()
            if not any(part.startswith(".") and part.endswith(".tmp") for part in k.split("/"))}
