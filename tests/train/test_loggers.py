"""TensorBoard and W&B (offline) log what metrics.jsonl says, and a resumed run continues the same log."""

import glob
import json
import shutil
import struct
import sys
import time

import pytest

from moelab.config import LoggingConfig, RunConfig, validate
from moelab.errors import UserError
from moelab.train.loggers import run_name, scalars
from moelab.train.metrics import read_jsonl
from moelab.train.trainer import check_same_run, train

LOGGING = {"tensorboard": True, "wandb": {"project": "moelab-test", "mode": "offline"}}


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B without network or home-directory writes: everything it keeps goes under tmp_path."""
    pytest.importorskip("wandb")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def _tensorboard_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _wandb_records(path):
    """The protobuf records of a ``run-<id>.wandb`` file (LevelDB log format: 7-byte file header, then
    32 KiB blocks of chunks, each ``crc32 | length (2) | type (1) | payload``; types 1 full, 2-4 first/middle/last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    assert data[:4] == b":W&B", data[:8]
    out, pos, partial = [], 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # block trailer: padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding at the end of a block
            pos += left
            continue
        payload, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        partial = payload if kind in (1, 2) else partial + payload
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(partial)
            out.append(rec)
    return out


def _wandb_history(run_file) -> tuple[dict, list[dict]]:
    run, rows = {}, []
    for rec in _wandb_records(run_file):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run = {"id": rec.run.run_id, "name": rec.run.display_name, "project": rec.run.project}
        elif kind == "history":
            rows.append({(it.key or "/".join(it.nested_key)): json.loads(it.value_json) for it in rec.history.item})
    return run, rows


def _expected(records) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for r in records:
        for tag, value in scalars(r).items():
            out.setdefault(tag, {})[r["step"]] = value
    return out


def test_loggers_log_metrics_jsonl_and_continue_after_a_resume(tmp_path, tiny_cfg, offline_wandb):
    pytest.importorskip("tensorboard")
    run = tmp_path / "runs" / "C1e12-d32-E4-k2"
    cfg = tiny_cfg(train={"steps": 10, "eval_every": 5, "checkpoint_every": 4}, logging=LOGGING)
    assert train(cfg, run, progress=False, max_steps_this_call=6)["step"] == 6  # checkpoints 4 and 6
    # A crash after step 6 was logged but before its checkpoint: the run resumes from step 4 and replays 5, 6.
    shutil.rmtree(run / "checkpoints" / "step-6")
    time.sleep(1.1)  # W&B names an offline run folder by the second it starts: keep the two starts apart
    summary = train(cfg, run, progress=False)
    assert summary["state"] == "done" and summary["steps"] == 10
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 11))
    expected = _expected(records)
    assert {"train/loss", "train/lm_loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "val/val_loss",
            "train/load_max_mean/0", "train/router_entropy/1"} <= set(expected)

    # TensorBoard: one event stream in RUN/logs/tensorboard; each tag has every step once, with its value
    # (what the interrupted run logged after step 4 was purged on the resume, then logged again).
    tb = _tensorboard_scalars(run / "logs" / "tensorboard")
    assert len(glob.glob(str(run / "logs" / "tensorboard" / "events.out.tfevents.*"))) == 2  # two starts
    assert set(tb) == set(expected)
    for tag, by_step in expected.items():
        assert [s for s, _ in tb[tag]] == sorted(by_step), tag
        for step, value in tb[tag]:
            assert value == pytest.approx(by_step[step], rel=1e-6, abs=1e-9), (tag, step)  # float32 in the file

    # W&B: two offline run directories (two starts) of one W&B run, id kept in RUN/logs/wandb-id.
    wandb_id = (run / "logs" / "wandb-id").read_text().strip()
    assert wandb_id.startswith("C1e12-d32-E4-k2-")
    files = sorted(glob.glob(str(run / "logs" / "wandb" / "offline-run-*" / f"run-{wandb_id}.wandb")))
    assert len(files) == 2, files
    merged: dict[str, dict[int, float]] = {}
    histories = sorted((_wandb_history(f) for f in files), key=lambda h: min(row["step"] for row in h[1]))
    for n, (meta, rows) in enumerate(histories):  # in the order of the starts, whatever the folder names
        assert meta == {"id": wandb_id, "name": "C1e12-d32-E4-k2", "project": "moelab-test"}
        steps = sorted({row["step"] for row in rows})
        assert steps == (list(range(1, 7)) if n == 0 else list(range(5, 11)))  # the second start replays 5, 6
        for row in rows:
            for tag, value in row.items():
                if not tag.startswith("_") and tag != "step":
                    merged.setdefault(tag, {})[row["step"]] = value  # the later start wins, as in metrics.jsonl
    assert merged == expected


def test_loggers_are_operational_and_validated(tmp_path, tiny_cfg):
    cfg = tiny_cfg(train={"steps": 2, "eval_every": 2})
    train(cfg, tmp_path / "r", progress=False)
    # Turning a logger on does not make another run: the trainer accepts the directory.
    assert check_same_run(tiny_cfg(train={"steps": 2, "eval_every": 2}, logging=LOGGING), tmp_path / "r") is not None
    assert not (tmp_path / "r" / "logs").exists()  # nothing asked for, nothing written
    assert validate(LoggingConfig, {"wandb": True}, "x").wandb.project == "moelab"
    assert validate(LoggingConfig, {"wandb": False}, "x").wandb is None
    assert validate(RunConfig, {"logging": LOGGING}, "run.yaml").logging.wandb.mode == "offline"
    with pytest.raises(UserError, match=r"unknown key 'logging.wandb.projct' \(did you mean 'project'\?\)"):
        validate(RunConfig, {"logging": {"wandb": {"projct": "x"}}}, "run.yaml")
    with pytest.raises(UserError, match="logging.wandb.mode"):
        validate(RunConfig, {"logging": {"wandb": {"mode": "cloud"}}}, "run.yaml")


@pytest.mark.parametrize("module,option", [("wandb", {"wandb": True}), ("torch.utils.tensorboard", {"tensorboard": True})])
def test_a_missing_logger_is_one_line_before_anything_is_written(tmp_path, tiny_cfg, monkeypatch, capsys,
                                                                 module, option):
    from moelab.cli import main
    from moelab.config import dump_yaml

    monkeypatch.setitem(sys.modules, module, None)  # `import <module>` now raises ImportError
    cfg = tiny_cfg(logging=option)
    with pytest.raises(UserError, match=r"not installed; install the optional extra: pip install 'moelab\[logging\]'"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    (tmp_path / "run.yaml").write_text(dump_yaml(cfg))
    assert main(["train", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "cli-run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "moelab[logging]" in err and "logging." in err
    assert not (tmp_path / "cli-run").exists()
    # a study asking for it: `plan` refuses it as `sweep` would
    from moelab.config import StudyConfig

    study = StudyConfig.model_validate({"tokens": [1e5], "base": cfg.model_dump(mode="json")})
    (tmp_path / "study.yaml").write_text(dump_yaml(study))
    assert main(["plan", str(tmp_path / "study.yaml"), "--no-probe"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "moelab[logging]" in err


def test_run_names_and_scalars(tmp_path):
    (tmp_path / "runs" / "C1e15-d64-E8-k2" / "grpo").mkdir(parents=True)
    (tmp_path / "runs" / "C1e15-d64-E8-k2" / "config.yaml").write_text("{}\n")
    assert run_name(tmp_path / "runs" / "C1e15-d64-E8-k2") == "C1e15-d64-E8-k2"
    assert run_name(tmp_path / "runs" / "C1e15-d64-E8-k2" / "grpo") == "C1e15-d64-E8-k2+grpo"  # the store's row id
    record = {"kind": "eval", "step": 3, "accuracy": 0.5, "split": "heldout", "num_items": 8, "ok": True,
              "load_max_mean": [1.5, 2.0]}
    assert scalars(record) == {"eval/accuracy": 0.5, "eval/num_items": 8.0, "eval/ok": 1.0,
                               "eval/load_max_mean/0": 1.5, "eval/load_max_mean/1": 2.0}
