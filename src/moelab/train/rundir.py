"""A training run directory's bookkeeping: is it the same run, and what state is it in.

    saved = check_same_run(cfg, run_dir)      # the saved config, None for a fresh folder, UserError for another run
    write_status(run_dir, "running", step, total_steps)
    read_status(run_dir)                      # the status dict, or None (absent or damaged)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from moelab.atomic import atomic_write_json
from moelab.config import RunConfig, load_run_config
from moelab.errors import UserError

_OPERATIONAL = ("device", "distributed", "checkpoint_every", "keep_checkpoints")
# The fields of the paper-engine recipe (moelab.config): a saved run without them is read with the old values.
_RECIPE_OF_2026_12_07 = ("model.router_norm", "model.depth_scaled_init", "train.router_loss_layers")


def _comparable(cfg: RunConfig) -> dict:
    d = cfg.model_dump(mode="json")
    d["model"].pop("vocab_size")
    for key in _OPERATIONAL:
        d["train"].pop(key)
    return {"model": d["model"], "data": d["data"], "train": d["train"]}


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            diff = _first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else key)
            if diff:
                return diff
        return None
    return None if a == b else f"{path}: {b!r} in the run directory, {a!r} now"


def check_same_run(cfg: RunConfig, run_dir: Path) -> RunConfig | None:
    """The saved effective config, or None for a fresh directory; ``UserError`` for a different run."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    saved = load_run_config(path)
    diff = _first_difference(_comparable(cfg), _comparable(saved))
    if diff:
        hint = ""
        if diff.split(":")[0] in _RECIPE_OF_2026_12_07:
            hint = (" — it was trained with the recipe before 2026-12-07; to finish it as it began, set "
                    "model.router_norm: renormalize, model.depth_scaled_init: false and train.router_loss_layers: mean")
        raise UserError(f"{run_dir} holds a different run ({diff}); use a new run directory{hint}")
    return saved


def write_status(run_dir: Path, state: str, step: int, total_steps: int, message: str = "", **extra) -> None:
    atomic_write_json(run_dir / "status.json", {
        "state": state, "step": step, "total_steps": total_steps, "message": message,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra,
    })


def read_status(run_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return None
