"""Load a model from whatever path a user gives; save a model directory.

``load_model(path)`` accepts, in this order of detection:

1. a **model directory**: ``moelab_model.json`` (ModelConfig JSON) + ``model.safetensors`` + tokenizer files;
2. a **run directory** (``config.yaml``): its ``model/`` when finished, else its newest
   complete checkpoint with the run's ``tokenizer/``;
3. a **checkpoint directory** (``manifest.json`` + ``model.safetensors``), inside
   ``RUN/checkpoints/``; the model config comes from its ``state.json`` or the run's ``config.yaml``;
4. a **Hugging Face Mixtral directory** (``config.json`` with ``model_type: mixtral``), via
   ``moelab.interop.hf.import_hf`` and ``transformers.AutoTokenizer``;
5. an **imported run directory** (a study's ``models:`` entry: ``config.yaml`` + ``imported.json``
   naming the Hugging Face Mixtral directory it evaluates, which is read in place, not copied).

Anything else — a missing path, a file, an unrecognised directory — is a one-line ``UserError``.
Weights are read with safetensors only; no pickle is ever loaded here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file

from moelab.atomic import atomic_dir
from moelab.config import ModelConfig, load_run_config, validate
from moelab.errors import UserError, one_line

MODEL_CONFIG_FILE = "moelab_model.json"
WEIGHTS_FILE = "model.safetensors"
IMPORTED_FILE = "imported.json"  # in a run directory: {"source": the Hugging Face directory, ...}


def save_model_dir(
    model: torch.nn.Module | Mapping[str, torch.Tensor], cfg: ModelConfig, tokenizer: Any, out_dir: str | Path
) -> Path:
    """Write a model directory atomically (it appears whole or not at all, replacing an old one)."""
    from moelab.train.checkpoint import cpu_state_dict

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / MODEL_CONFIG_FILE).write_text(cfg.model_dump_json(indent=2) + "\n", encoding="utf-8")
        save_file(cpu_state_dict(model), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        if tokenizer is not None:
            from moelab.data.tokenizer import save_tokenizer

            save_tokenizer(tokenizer, tmp)
    return out_dir


def _read_model_config(path: Path) -> ModelConfig:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a readable model config ({err})") from None
    return validate(ModelConfig, data, str(path))


def _build(cfg: ModelConfig, state: dict[str, torch.Tensor], device: str | torch.device, where: Path):
    from moelab.model.transformer import MoETransformer

    with torch.device("meta"):  # no random init: every weight comes from the file
        model = MoETransformer(cfg)
    try:
        model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True, assign=True)
    except RuntimeError as err:
        raise UserError(f"{where}: weights do not match the model config ({str(err).splitlines()[0]})") from None
    return model.float().eval()


def _weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"{path}: missing")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error type on a damaged header
        raise UserError(f"{path}: unreadable safetensors file ({str(err).splitlines()[0]})") from None


def _tokenizer(directory: Path):
    from moelab.data.tokenizer import load_tokenizer

    return load_tokenizer(directory)


def _load_model_dir(path: Path, device):
    cfg = _read_model_config(path / MODEL_CONFIG_FILE)
    model = _build(cfg, _weights(path / WEIGHTS_FILE), device, path)
    return model, _tokenizer(path), cfg


def _load_checkpoint_dir(path: Path, device, run_dir: Path | None = None):
    from moelab.train.checkpoint import CorruptCheckpoint, read_state, verify_checkpoint

    try:
        verify_checkpoint(path)
    except CorruptCheckpoint as err:
        raise UserError(f"corrupt checkpoint: {err}") from None
    if run_dir is None and path.parent.name == "checkpoints":
        run_dir = path.parent.parent
    state = read_state(path)
    if "model_config" in state:
        cfg = validate(ModelConfig, state["model_config"], f"{path}/state.json")
    elif run_dir is not None and (run_dir / "config.yaml").is_file():
        cfg = load_run_config(run_dir / "config.yaml").model
    else:
        raise UserError(f"{path}: checkpoint has no model config and no run config.yaml above it")
    if run_dir is None or not (run_dir / "tokenizer").is_dir():
        raise UserError(f"{path}: no tokenizer/ in the run directory above this checkpoint")
    model = _build(cfg, _weights(path / WEIGHTS_FILE), device, path)
    return model, _tokenizer(run_dir / "tokenizer"), cfg


def _load_hf(path: Path, device):
    from moelab.interop.hf import import_hf

    cfg, model = import_hf(path, device=device)
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # transformers raises many types; the user needs one line
        first = one_line(err)
        raise UserError(f"{path}: cannot load the tokenizer ({first})") from None
    return model, tok, cfg


def imported_source(run_dir: str | Path) -> Path:
    """The Hugging Face directory an imported run directory evaluates (``imported.json``'s ``source``)."""
    record = Path(run_dir) / IMPORTED_FILE
    try:
        source = json.loads(record.read_text(encoding="utf-8"))["source"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise UserError(f"{record}: not a readable import record ({err})") from None
    src = Path(source)
    if not src.is_dir():
        raise UserError(f"{run_dir}: the checkpoint it imports, {src}, is gone")
    return src


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Any, ModelConfig]:
    """``(model in eval mode, tokenizer, ModelConfig)`` from any supported path (see module doc)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise UserError(f"{path}: expected a model, run, checkpoint or Hugging Face Mixtral directory, got a file")
    if (path / MODEL_CONFIG_FILE).is_file():
        return _load_model_dir(path, device)
    if (path / "grpo_config.yaml").is_file():  # a GRPO output: its final model, else its latest checkpoint
        if (path / "model" / MODEL_CONFIG_FILE).is_file():
            return _load_model_dir(path / "model", device)
        raise UserError(f"{path}: GRPO output without model/ yet (finish or resume the GRPO run first)")
    if (path / "config.yaml").is_file():
        if (path / "model" / MODEL_CONFIG_FILE).is_file():
            return _load_model_dir(path / "model", device)
        if (path / IMPORTED_FILE).is_file():
            return _load_hf(imported_source(path), device)
        from moelab.train.checkpoint import latest_complete

        latest = latest_complete(path)
        if latest is None:
            raise UserError(f"{path}: run directory has neither model/ nor a complete checkpoint yet")
        return _load_checkpoint_dir(latest, device, run_dir=path)
    if (path / "manifest.json").is_file() and (path / WEIGHTS_FILE).is_file():
        return _load_checkpoint_dir(path, device)
    if (path / "config.json").is_file():
        try:
            model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            raise UserError(f"{path}/config.json: not a JSON object") from None
        if model_type not in ("mixtral", "qwen2_moe"):
            raise UserError(f"{path}: Hugging Face model_type {model_type!r} is not supported (only 'mixtral', "
                            "and 'qwen2_moe' without a shared expert)")
        return _load_hf(path, device)
    raise UserError(
        f"{path}: not a model directory (expected {MODEL_CONFIG_FILE}, a run directory with config.yaml, "
        "a checkpoint directory, or a Hugging Face Mixtral config.json)"
    )


# ---------------------------------------------------------------- the run a model belongs to

GRPO_CONFIG_FILE = "grpo_config.yaml"  # moelab.posttrain.grpo.CONFIG_FILE


def run_config_near(path: Path, depth: int = 0) -> Path | None:
    """The pretraining ``config.yaml`` that ``path`` came from: ``path`` itself (a run directory), its
    parent (``RUN/model``), its grandparent (``RUN/checkpoints/step-N``), or — for a GRPO output
    (``grpo_config.yaml`` in one of those places) — the same, from the model the GRPO run started with."""
    if depth > 4:  # a chain of GRPO runs; stop at a cycle
        return None
    candidates = [path, path.parent]
    if path.parent.name == "checkpoints":
        candidates.append(path.parent.parent)
    for d in candidates:
        if (d / "config.yaml").is_file():
            return d / "config.yaml"
        if (d / GRPO_CONFIG_FILE).is_file():
            from moelab.config import read_yaml

            data = read_yaml(d / GRPO_CONFIG_FILE)
            start = data.get("model") if isinstance(data, dict) else None
            return run_config_near(Path(start), depth + 1) if start else None
    return None


def world_for_model(model_path: str | Path | None, world_config: str | None = None):
    """The world whose tasks a model should be evaluated on (None: the default world)."""
    from moelab.config import load_run_config
    from moelab.data.world import build_world

    if world_config:
        return build_world(load_run_config(world_config).data.world)
    if model_path is None:
        return None
    cfg_path = run_config_near(Path(model_path).expanduser().resolve())
    if cfg_path is None:
        return None
    return build_world(load_run_config(cfg_path).data.world)
