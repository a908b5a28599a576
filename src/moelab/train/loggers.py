"""Experiment loggers: ``metrics.jsonl`` and, optionally, TensorBoard and Weights & Biases, fed the same records.

    log = open_metrics_log(run_dir, cfg.logging, resume_step=step, config=cfg.model_dump(mode="json"))
    log.log({"kind": "train", "step": 10, "loss": 2.31, "load_max_mean": [1.2, 1.4]})
    log.sync(); log.close()

``metrics.jsonl`` stays the source of truth; every record written to it also goes to each logger
the run's ``logging:`` section asks for (``train`` and ``grpo``, so every run of a sweep). A record's
numbers become scalars named ``<kind>/<key>`` at its ``step`` (a per-layer list such as
``load_max_mean`` becomes ``train/load_max_mean/0``, ``…/1``, …); strings are left out.

* **TensorBoard** (``logging.tensorboard: true``): event files in ``RUN/logs/tensorboard/``, written
  with torch's ``SummaryWriter``. A resumed run writes into the same directory with ``purge_step`` =
  the first step it replays, so readers drop what the interrupted run logged after its last
  checkpoint, as ``metrics.jsonl`` does.
* **Weights & Biases** (``logging.wandb: {project, entity, group, tags, mode}`` or ``wandb: true``):
  one W&B run per moelab run, named by its run id (:func:`run_name`), files under ``RUN/logs/wandb/``.
  Its id is the run id plus a random suffix, made on the first start and kept in
  ``RUN/logs/wandb-id``: a resumed run continues the same W&B run (``resume="allow"``), and two
  studies whose runs share an id do not collide in one project. Every metric is plotted against
  moelab's ``step`` (``define_metric``), not W&B's own counter, so the steps a resume replays land
  where they belong. ``mode: offline`` (the default) needs no network; ``wandb sync
  RUN/logs/wandb/offline-run-*`` uploads later (each start of an offline run writes its own
  directory, under the same id). Console capture is off: moelab's own output stays as it is.

Both are optional imports (the extra ``moelab[logging]``): :func:`require_loggers` turns a missing
package into a one-line ``UserError`` before a run writes anything.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

from moelab.errors import UserError, one_line
from moelab.train.metrics import JsonlLogger

__all__ = ["MetricsLog", "open_metrics_log", "require_loggers", "run_name", "scalars"]

LOGS_DIR = "logs"
_INSTALL = "install the optional extra: pip install 'moelab[logging]'"


def require_loggers(cfg: Any) -> None:
    """``UserError`` (one line) when ``cfg`` (a ``LoggingConfig`` or None) asks for a logger that is not installed."""
    if cfg is None:
        return
    if cfg.tensorboard:
        try:
            import torch.utils.tensorboard  # noqa: F401  (needs the tensorboard package)
        except ImportError:
            raise UserError(f"logging.tensorboard: TensorBoard is not installed; {_INSTALL}") from None
    if cfg.wandb is not None:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UserError(f"logging.wandb: Weights & Biases (wandb) is not installed; {_INSTALL}") from None


def run_name(out_dir: str | Path) -> str:
    """The moelab run id of an output directory: its name (a sweep's ``runs/<run_id>``); a
    post-training run inside a run directory (``RUN/grpo``) is ``<run_id>+grpo``, as the results store says."""
    out_dir = Path(out_dir).resolve()
    if (out_dir.parent / "config.yaml").is_file():
        return f"{out_dir.parent.name}+{out_dir.name}"
    return out_dir.name


def scalars(record: dict) -> dict[str, float]:
    """``{"<kind>/<key>": value}`` for every number of a metrics record (``kind`` and ``step`` excluded)."""
    kind = record.get("kind", "metrics")
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in ("kind", "step"):
            continue
        if isinstance(value, (bool, int, float)):
            out[f"{kind}/{key}"] = float(value)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
            out.update({f"{kind}/{key}/{i}": float(v) for i, v in enumerate(value)})
    return out


class _TensorBoard:
    def __init__(self, log_dir: Path, purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def log(self, record: dict) -> None:
        step = int(record.get("step", 0))
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _wandb_id(logs: Path, name: str) -> str:
    """The run's W&B id: made once (run id + random suffix), then read back on every resume."""
    from moelab.atomic import atomic_write_text

    path = logs / "wandb-id"
    if path.is_file():
        saved = path.read_text(encoding="utf-8").strip()
        if saved:
            return saved
    # W&B ids may not hold / \ # ? % : and are at most 64 characters.
    run_id = f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)[:55].strip('-') or 'run'}-{secrets.token_hex(4)}"
    atomic_write_text(path, run_id + "\n")
    return run_id


class _Wandb:
    def __init__(self, logs: Path, cfg: Any, name: str, config: dict | None, quiet: bool) -> None:
        import wandb

        try:
            self.run = wandb.init(
                project=cfg.project, entity=cfg.entity, group=cfg.group, tags=list(cfg.tags) or None,
                name=name, id=_wandb_id(logs, name), resume="allow", mode=cfg.mode, dir=str(logs), config=config,
                settings=wandb.Settings(console="off", silent=quiet),
            )
        except Exception as err:  # wandb raises its own error types (no network, no login, …)
            first = one_line(err)
            raise UserError(f"logging.wandb: cannot start a W&B run ({first})") from None
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log(self, record: dict) -> None:
        self.run.log({**scalars(record), "step": int(record.get("step", 0))})

    def flush(self) -> None:
        pass  # W&B writes in its own process; there is nothing to force here

    def close(self) -> None:
        self.run.finish()


class MetricsLog:
    """``metrics.jsonl`` plus the configured loggers behind one ``log`` / ``sync`` / ``close``."""

    def __init__(self, jsonl: JsonlLogger, loggers: list) -> None:
        self.jsonl, self.loggers = jsonl, loggers

    def log(self, record: dict) -> None:
        self.jsonl.log(record)
        for logger in self.loggers:
            logger.log(record)

    def sync(self) -> None:
        """Make ``metrics.jsonl`` durable (before a checkpoint vouches for it) and flush the loggers."""
        self.jsonl.sync()
        for logger in self.loggers:
            logger.flush()

    def close(self) -> None:
        self.jsonl.close()
        for logger in self.loggers:
            logger.close()
        self.loggers = []


def open_metrics_log(run_dir: str | Path, cfg: Any, *, resume_step: int = 0, config: dict | None = None,
                     quiet: bool = False) -> MetricsLog:
    """Open ``run_dir/metrics.jsonl`` (append) and the loggers ``cfg`` (a ``LoggingConfig`` or None) asks for.

    ``resume_step`` is the step of the checkpoint the run continues from (0 for a fresh start):
    what was logged after it is about to be replayed. ``config`` (the run's config as plain data)
    is recorded as the W&B run's config; ``quiet`` silences W&B's own messages (``--quiet``).
    """
    run_dir = Path(run_dir)
    require_loggers(cfg)
    loggers: list = []
    try:
        if cfg is not None and cfg.tensorboard:
            tb_dir = run_dir / LOGS_DIR / "tensorboard"
            resumed = tb_dir.is_dir() and any(tb_dir.glob("events.out.tfevents.*"))
            loggers.append(_TensorBoard(tb_dir, resume_step + 1 if resumed else None))
        if cfg is not None and cfg.wandb is not None:
            logs = run_dir / LOGS_DIR
            logs.mkdir(parents=True, exist_ok=True)
            loggers.append(_Wandb(logs, cfg.wandb, run_name(run_dir), config, quiet))
    except BaseException:
        for logger in loggers:
            logger.close()
        raise
    return MetricsLog(JsonlLogger(run_dir / "metrics.jsonl"), loggers)
