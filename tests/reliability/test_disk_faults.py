"""A real full disk and a real read-only folder (docs/reliability.md): small tmpfs mounts.

* Full disk: every kind of write (a checkpoint, an evaluation summary, a store rebuild, a report)
  fails with one line naming the file and the space left, exit 1; the previous complete state is
  intact byte for byte; once space is freed, the same command finishes with nothing lost.
* Read-only output folder (a read-only mount, which refuses root too): every command that writes
  refuses it in one line, exit 2, before any work.

The mounts need root (or CAP_SYS_ADMIN); elsewhere these tests skip, saying so. The fault-injecting
disk-full test of ``test_resources.py`` runs everywhere.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from battery_assets import _fake_sweep
from rel_helpers import make_fake_run, moelab, run_cli, snapshot, tiny_run


class Disk:
    """A tmpfs of ``size`` mounted at ``path``: ``fill()`` takes every free byte, ``free()`` gives it back."""

    def __init__(self, path: Path):
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        for name, chunk in (("filler", 1 << 16), ("filler-small", 512)):  # then the last pages
            fd = os.open(self.path / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as err:
                assert err.errno == errno.ENOSPC
            finally:
                os.close(fd)
        assert shutil.disk_usage(self.path).free < 8192

    def free(self) -> None:
        self.filler.unlink()
        (self.path / "filler-small").unlink()

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True, capture_output=True)


def _mount(path: Path, size: str) -> Disk:
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root or CAP_SYS_ADMIN needed): {res.stderr.strip()}")
    return Disk(path)


@pytest.fixture
def disk(tmp_path):
    """A 3.5 MiB tmpfs: a tiny run's first checkpoint fits (2.3 MB), the second does not."""
    d = _mount(tmp_path / "disk", "3500k")
    yield d
    subprocess.run(["umount", "-l", str(d.path)], capture_output=True)


def _one_line_disk_full(res, names: str) -> str:
    """``res``: a finished process, or ``(exit code, stderr)`` of :func:`run_cli`."""
    code, stderr = (res.returncode, res.stderr) if hasattr(res, "returncode") else res
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("moelab:")]  # not progress bars
    assert code == 1 and len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    line = lines[0]
    assert line.startswith("moelab: error: No space left on device writing ") and names in line, line
    assert " free there)" in line and "run the same command again" in line, line
    return line


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_and_resumes(disk, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run(train={"steps": 10, "checkpoint_every": 5, "eval_every": 10})))
    run = disk.path / "run"
    res = moelab("train", cfg, "--out", run, "--quiet")
    line = _one_line_disk_full(res, f"{run}/checkpoints/step-10")
    assert "B free there" in line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-5"]  # no half-written step-10
    from moelab.train.checkpoint import latest_complete

    assert latest_complete(run).name == "step-5"  # its manifest verifies
    kept = snapshot(run / "checkpoints" / "step-5")
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "No space left on device" in status["message"]
    disk.remount("size=16m")  # space is freed
    res = moelab("train", cfg, "--out", run, "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((run / "status.json").read_text())["state"] == "done"
    steps = [json.loads(ln).get("step") for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted({s for s in steps if s}) == list(range(1, 11))  # nothing lost, nothing twice
    assert snapshot(run / "checkpoints" / "step-5") == kept


def test_a_full_disk_during_an_evaluation_keeps_the_previous_summary(disk, tmp_path, one_thread):
    run = make_fake_run(tmp_path)
    out = disk.path / "ev"
    argv = ["eval", "taskloss", "--model", run, "--task", "knowledge", "--limit", "2", "--out", out]
    assert run_cli(argv)[0] == 0  # in this process, through the command line's code path (seconds saved)
    before = snapshot(out)
    disk.fill()
    _one_line_disk_full(run_cli(argv), f"{out}/")
    assert snapshot(out) == before  # the previous summary and records, byte for byte
    disk.free()
    code, err = run_cli(argv)
    assert code == 0, err[-2000:]
    assert json.loads((out / "taskloss.json").read_text())


def test_a_full_disk_during_a_store_rebuild_and_a_report_keeps_the_previous_files(disk, one_thread):
    sweep = _fake_sweep(disk.path)  # a finished sweep and its store
    code, err = run_cli(["report", sweep, "--bootstrap", "50"])
    assert code == 0, err[-2000:]
    before = snapshot(sweep)
    disk.fill()
    _one_line_disk_full(run_cli(["query", sweep, "SELECT count(*) FROM runs", "--rebuild"]), f"{sweep}/")
    assert snapshot(sweep) == before  # study.duckdb, results.parquet, results.csv: the previous ones
    _one_line_disk_full(run_cli(["report", sweep, "--bootstrap", "50"]), f"{sweep}/report")
    assert snapshot(sweep) == before  # the previous report, whole
    disk.free()
    res = moelab("query", sweep, "SELECT count(*) AS n FROM runs", "--rebuild", "--json")  # a real process
    assert res.returncode == 0 and json.loads(res.stdout) == [{"n": 2}], res.stderr[-2000:]
    assert run_cli(["report", sweep, "--bootstrap", "50"])[0] == 0
    assert (sweep / "report" / "index.html").stat().st_size > 1000


def test_a_sweep_on_a_full_disk_resumes_without_retry_failed_once_space_is_freed(disk, tmp_path):
    """A full disk fails the run it hits (status ``failed``, the message names the file), not the
    study: once space is back, the same ``moelab sweep`` picks that run up again by itself."""
    from test_concurrency import STUDY

    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({**STUDY, "grid": {**STUDY["grid"], "num_experts": [4]}}))  # one run
    out = disk.path / "sweep"
    res = moelab("sweep", study, "--out", out, "--quiet")
    # the sweep stops in one line when its own write (the store) finds no space; a run that found
    # none is marked failed, to be retried by the next sweep
    assert res.returncode == 1, res.stderr[-3000:]
    _one_line_disk_full(res, f"{out}/")
    statuses = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/status.json"))]
    [st] = statuses  # the run's last checkpoint found no space: failed, marked for the next sweep
    assert st["state"] == "failed" and st.get("retry_on_rerun") == "disk full", st
    assert "No space left on device writing " in st["message"] and "/checkpoints/step-" in st["message"], st
    disk.remount("size=64m")  # space is freed
    res = moelab("sweep", study, "--out", out, "--quiet")  # the same command: no --retry-failed
    assert res.returncode == 0, res.stderr[-3000:]
    statuses = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/status.json"))]
    assert [st["state"] for st in statuses] == ["done"] and not any("retry_on_rerun" in st for st in statuses)


# ---------------------------------------------------------------- a read-only output folder


def test_a_full_disk_during_data_prepare_keeps_the_finished_source_and_resumes(disk, tmp_path):
    from moelab.data.indexed import IndexedDataset
    from moelab.data.prepare import MANIFEST
    from moelab.data.tokenizer import save_tokenizer, train_tokenizer

    words = ["alpha", "beta", "gamma", "delta", "fox", "runs", "over", "12", "7"]
    sources = {}
    for name, count in (("a", 2000), ("b", 150000)):  # b needs more than the 3.5 MiB disk holds
        docs = [f"{name} doc {i}: " + " ".join(words[(i * j) % len(words)] for j in range(3 + i % 17)) for i in range(count)]
        sources[name] = tmp_path / f"{name}.jsonl"
        sources[name].write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    save_tokenizer(train_tokenizer(docs[:500], 300), tmp_path / "tok")
    out = disk.path / "prepared"
    common = ["--tokenizer", tmp_path / "tok", "--out", out, "--shard-tokens", 100_000, "--quiet"]
    assert moelab("data", "prepare", sources["a"], *common).returncode == 0
    kept = snapshot(out)
    res = moelab("data", "prepare", sources["a"], sources["b"], *common)
    line = _one_line_disk_full(res, str(out))
    assert ".tmp" not in line  # the shard (or manifest) by its own name, not a temp file's
    manifest = json.loads((out / MANIFEST).read_text())
    done = [e for e in manifest["sources"].values() if e["state"] == "done"]
    assert len(done) == 1 and all(IndexedDataset(out / sh["train"]) for sh in done[0]["shards"])
    manifest_key = f"./{MANIFEST}"  # the manifest lists the new source's shards as they finish
    assert {k: v for k, v in snapshot(out).items() if k in kept and k != manifest_key} == \
        {k: v for k, v in kept.items() if k != manifest_key}  # the finished source's shards, byte for byte
    disk.remount("size=16m")  # space is freed
    res = moelab("data", "prepare", sources["a"], sources["b"], *common)
    assert res.returncode == 0, res.stderr[-2000:]
    manifest = json.loads((out / MANIFEST).read_text())
    assert all(e["state"] == "done" for e in manifest["sources"].values()) and len(manifest["sources"]) == 2


@pytest.fixture(scope="module")
def read_only(tmp_path_factory, one_thread):
    """(a read-only tmpfs holding a finished sweep, an empty folder and a training run; writable assets)."""
    from battery_assets import build_assets

    root = tmp_path_factory.mktemp("readonly")
    assets = build_assets(root / "assets")
    disk = _mount(root / "ro", "8m")
    _fake_sweep(disk.path)
    (disk.path / "empty").mkdir()
    shutil.copytree(assets / "run", disk.path / "run")
    disk.remount("ro")
    yield disk.path, assets
    subprocess.run(["umount", "-l", str(disk.path)], capture_output=True)


READ_ONLY = {  # (ro, assets) -> argv: every command that writes, into a new, empty or own-kind folder
    "train-new": lambda r, a: ["train", a / "run.yaml", "--out", r / "new", "--quiet"],
    "train-empty": lambda r, a: ["train", a / "run.yaml", "--out", r / "empty", "--quiet"],
    "sweep-new": lambda r, a: ["sweep", a / "study.yaml", "--out", r / "new", "--quiet"],
    "sweep-resume": lambda r, a: ["sweep", r / "sweep" / "study.yaml", "--out", r / "sweep", "--quiet"],
    "eval": lambda r, a: ["eval", "taskloss", "--model", a / "run", "--task", "knowledge", "--limit", "2",
                          "--out", r / "ev"],
    "eval-into-its-run": lambda r, a: ["eval", "all", "--model", r / "run", "--limit", "2", "--out", r / "run" / "eval"],
    "report": lambda r, a: ["report", r / "sweep", "--bootstrap", "50"],
    "query-rebuild": lambda r, a: ["query", r / "sweep", "SELECT 1", "--rebuild"],
    "grpo": lambda r, a: ["grpo", "--model", a / "run", "--task", "reasoning", "--steps", "1", "--quiet",
                          "--out", r / "g"],
    "ttc": lambda r, a: ["ttc", "--model", a / "run", "--task", "reasoning", "--samples", "2", "--limit", "1",
                         "--quiet", "--out", r / "t"],
    "export-hf": lambda r, a: ["export-hf", a / "run", r / "hf"],
    "import-hf": lambda r, a: ["import-hf", a / "hf", r / "m"],
    "demo": lambda r, a: ["demo", "--out", r / "demo", "--preset", "smoke", "--quiet"],
    "plan-emit": lambda r, a: ["plan", a / "study.yaml", "--emit", "megatron", "--out", r / "mg"],
}


@pytest.mark.parametrize("case", READ_ONLY)
def test_a_read_only_output_folder_is_refused_up_front(read_only, case):
    ro, assets = read_only
    with open("/proc/self/mounts") as f:  # the real thing: a read-only mount, which refuses root too
        assert any(line.split()[1] == str(ro) and "ro" in line.split()[3].split(",") for line in f)
    before = snapshot(assets)
    started = time.monotonic()
    code, err = run_cli(READ_ONLY[case](ro, assets))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert lines[0].startswith("moelab: error: ") and "not writable" in lines[0], lines[0]
    assert time.monotonic() - started < 10  # before any work
    assert snapshot(assets) == before


def test_the_read_only_query_still_works_on_a_read_only_folder(read_only):
    ro, _ = read_only
    code, err = run_cli(["query", ro / "sweep", "SELECT count(*) FROM runs", "--json"])
    assert code == 0, err
