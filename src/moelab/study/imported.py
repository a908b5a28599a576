"""Checkpoints a study evaluates without training them: the study file's ``models:`` section.

    models:
      - path: /data/optimal-sparsity-math-d512-E8-k2-320M-A170M   # a Hugging Face Mixtral directory
        tokens: 125.0e+9                                          # training tokens: FLOPs, TPP follow
        train_log: runs/elsewhere/loss.csv                        # optional pretraining losses

``inspect_model(entry, i)`` checks an entry before anything is written and returns its
``ModelConfig`` (read from ``config.json``; parameter counts follow from it): the path is a
directory, ``config.json`` is a Mixtral config moelab reproduces, the weights are safetensors
(pickle-only directories are refused; nothing is unpickled, no weight is read), tokenizer files are
there and the train log parses. ``run_ids(paths)`` names the runs (``hf-<directory name>``).

An imported model's run directory (``DIR/runs/<run_id>/``, written by :func:`prepare_run_dir`)
holds what a trained run's holds, so ``moelab eval``, ``report``, ``advise`` and ``query`` read it
the same way:

* ``config.yaml`` — the run config: the model read from ``config.json``, the study's ``base.data``
  (the world the evaluation tasks come from) and ``base.eval``, ``train.tokens`` = the tokens given;
* ``imported.json`` — the source directory (read in place, never copied), the tokens, the train
  log, and a fingerprint of the checkpoint (``config.json`` digest, weight file sizes): a run
  directory that holds another checkpoint's results is refused rather than mixed;
* ``train_summary.json`` — the trainer's keys: ``train_loss`` / ``val_loss`` from the train log
  (smoothed like the trainer's), ``None`` without one (the report then leaves the model out of
  the pretraining-loss figures and says so); ``origin: imported``;
* ``metrics.jsonl`` — the train log as the trainer's records (``kind`` train / val), when given;
* then, as for a trained run, ``eval/summary.json`` (the evaluation, written once), ``ttc/``, ``grpo/``.

Train log: a CSV file with a header row; columns ``step`` and/or ``tokens``, and ``train_loss``
and/or ``val_loss`` (``train/loss``, ``val/loss`` and ``loss`` are accepted too; other columns are
ignored). Empty cells are missing values; losses are mean NLL per token in nats, as moelab logs them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from pathlib import Path

from moelab.errors import UserError

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
_COLUMNS = {"step": ("step",), "tokens": ("tokens",),
            "train_loss": ("train_loss", "train/loss", "loss"), "val_loss": ("val_loss", "val/loss")}


# ---------------------------------------------------------------- checking an entry


def inspect_model(entry, index: int):
    """The ``ModelConfig`` of ``models[index]`` after every check of the module docstring; a bad
    entry is a one-line ``UserError`` naming it."""
    from moelab.interop.hf import read_hf_config, weight_files

    where = f"models[{index}]"
    path = Path(entry.path)
    if not path.exists():
        raise UserError(f"{where}: {path}: no such directory")
    if not path.is_dir():
        raise UserError(f"{where}: {path}: not a directory (expected a Hugging Face Mixtral directory)")
    if not (path / "config.json").is_file():
        raise UserError(f"{where}: {path}: no config.json (not a Hugging Face model directory)")
    try:
        cfg = read_hf_config(path)
        weight_files(path)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise UserError(f"{where}: {path}: no tokenizer files ({', '.join(_TOKENIZER_FILES)})")
    if not math.isfinite(entry.tokens) or entry.tokens < 1:
        raise UserError(f"{where}: tokens must be at least 1, got {entry.tokens:g}")
    if entry.train_log is not None:
        read_train_log(entry.train_log, where=f"{where}.train_log")
    return cfg


def run_ids(paths: list[str]) -> list[str]:
    """``hf-<directory name>`` per path; names two paths share take their parent's name too
    (``hf-a-ckpt-final``, ``hf-b-ckpt-final``), and an index when that is not enough."""

    def slug(*parts: str) -> str:
        text = "-".join(p for p in parts if p)
        return "hf-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model")

    short = [slug(Path(p).name) for p in paths]
    names = [slug(Path(p).parent.name, Path(p).name) if short.count(n) > 1 else n for p, n in zip(paths, short)]
    return [n if names.count(n) == 1 else f"{n}-{i}" for i, n in enumerate(names)]


# ---------------------------------------------------------------- train logs


def _number(text: str, where: str, line: int, column: str) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: line {line}: {column} is not a number: '{text}'") from None
    return value if math.isfinite(value) else None


def read_train_log(path: str | Path, *, where: str = "train_log") -> list[dict]:
    """The train log's rows as ``{step, tokens, train_loss, val_loss}`` (None where missing)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{where}: {path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            found = {key: next((h for h in header if h in names), None) for key, names in _COLUMNS.items()}
            if not (found["step"] or found["tokens"]) or not (found["train_loss"] or found["val_loss"]):
                raise UserError(f"{where}: {path}: needs a header with step or tokens and train_loss or val_loss "
                                f"(found: {', '.join(header) or 'no header'})")
            rows = []
            for line, raw in enumerate(reader, start=2):
                cells = {(k or "").strip().lower(): v for k, v in raw.items()}
                rows.append({key: (_number(cells.get(col) or "", f"{where}: {path}", line, col) if col else None)
                             for key, col in found.items()})
    except UnicodeDecodeError:
        raise UserError(f"{where}: {path}: not UTF-8 text") from None
    except csv.Error as err:
        raise UserError(f"{where}: {path}: not a CSV file ({err})") from None
    if not any(r["train_loss"] is not None or r["val_loss"] is not None for r in rows):
        raise UserError(f"{where}: {path}: no loss values")
    return rows


def log_records(rows: list[dict]) -> list[dict]:
    """The train log as the trainer's ``metrics.jsonl`` records (``kind`` train with ``loss``, val with ``val_loss``)."""
    out = []
    for r in rows:
        ids = {k: (int(r[k]) if r[k] is not None else None) for k in ("step", "tokens")}
        if r["train_loss"] is not None:
            out.append({"kind": "train", **ids, "loss": r["train_loss"]})
        if r["val_loss"] is not None:
            out.append({"kind": "val", **ids, "val_loss": r["val_loss"]})
    return out


# ---------------------------------------------------------------- the run directory


def fingerprint(source: str | Path) -> dict:
    """What identifies a checkpoint cheaply: the digest of ``config.json`` and the weight files' sizes."""
    from moelab.interop.hf import weight_files

    source = Path(source)
    return {"config_sha256": hashlib.sha256((source / "config.json").read_bytes()).hexdigest(),
            "weights": {f.name: f.stat().st_size for f in weight_files(source)}}


def import_record(run) -> dict:
    """``imported.json`` for a planned imported run."""
    return {"source": run.source, "tokens": run.tokens, "train_log": run.train_log,
            "fingerprint": fingerprint(run.source)}


def prepare_run_dir(rdir: Path, run_id: str, config: dict, record: dict) -> dict:
    """Write (once) what an imported run directory holds before evaluation; returns the train summary.

    A directory already holding this checkpoint is left as it is; one holding another checkpoint's
    files is a ``UserError``."""
    from moelab import accounting
    from moelab.atomic import atomic_write_json, atomic_write_text
    from moelab.config import RunConfig, dump_yaml
    from moelab.modelio import IMPORTED_FILE
    from moelab.train.metrics import smoothed

    rdir = Path(rdir)
    cfg = RunConfig.model_validate(config)
    saved_path = rdir / IMPORTED_FILE
    if saved_path.is_file():
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
        if {k: saved.get(k) for k in record} != record:
            changed = next(k for k in record if saved.get(k) != record[k])
            raise UserError(f"{rdir}: holds the evaluation of another checkpoint ({changed} differs: "
                            f"{saved.get(changed)!r} there, {record[changed]!r} now); use a new --out")
        summary_path = rdir / "train_summary.json"
        if summary_path.is_file():
            return json.loads(summary_path.read_text(encoding="utf-8"))
    rows = read_train_log(record["train_log"]) if record.get("train_log") else []
    records = log_records(rows)
    train = [r["loss"] for r in records if r["kind"] == "train"]
    val = [r["val_loss"] for r in records if r["kind"] == "val"]
    m = cfg.model
    last = rows[-1] if rows else {}
    summary = {
        "name": run_id, "state": "done", "origin": "imported", "model_name": accounting.model_name(m),
        "steps": int(last["step"]) if last.get("step") is not None else None, "tokens": record["tokens"],
        "final_train_loss": smoothed(train), "final_val_loss": val[-1] if val else None,
        "train_loss": smoothed(train), "val_loss": val[-1] if val else None,
        "total_params": accounting.total_params(m), "active_params": accounting.active_params(m),
        "num_experts": m.num_experts, "top_k": m.top_k, "d_model": m.d_model, "model_dir": None,
    }
    rdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(rdir / "config.yaml", dump_yaml(cfg))
    atomic_write_text(rdir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_json(rdir / "train_summary.json", summary)
    atomic_write_json(saved_path, record)  # last: it marks the directory as prepared
    return summary
