"""Checkpoints: atomic, checksummed, and safe to load.

Layout of ``RUN/checkpoints/step-N/`` (N = optimizer steps completed):

* ``model.safetensors`` — full (unsharded) fp32 model state; no pickle.
* ``optim.pt`` — ``optimizer.state_dict()`` (positional form), read back with
  ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.
* ``state.json`` — step, tokens, data position, schedule, RNG states (torch CPU, CUDA,
  numpy, python), and whatever else the trainer passes.
* ``manifest.json`` — sha256 and size of every other file; written last.

A checkpoint is written into a temp directory, fsynced, then renamed into place, so a
crash or a failed write (disk full) leaves the previous checkpoints untouched.
``latest_complete`` verifies manifests and skips corrupt checkpoints with a warning.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from moelab.atomic import atomic_dir, fsync_dir
from moelab.errors import UserError, one_line

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optim.pt"
STATE_FILE = "state.json"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CorruptCheckpoint(Exception):
    """A checkpoint whose files do not match its manifest (or that has no manifest)."""


# ---------------------------------------------------------------- RNG state


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def capture_rng_state() -> dict:
    """Every RNG a training step might touch, as JSON-able data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    out = {
        "torch_cpu": _b64(torch.get_rng_state()),
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["torch_cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def restore_rng_state(rng: Mapping) -> None:
    torch.set_rng_state(_unb64(rng["torch_cpu"]))
    n = rng["numpy"]
    np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    cuda = rng.get("torch_cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_unb64(s) for s in cuda])


# ---------------------------------------------------------------- manifest


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_manifest(ckpt_dir: Path, step: int) -> None:
    files = {}
    for p in sorted(ckpt_dir.iterdir()):
        if p.is_file() and p.name != MANIFEST_FILE:
            files[p.name] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    manifest = {"format": FORMAT_VERSION, "step": step, "files": files}
    (ckpt_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def verify_checkpoint(ckpt_dir: str | Path) -> dict:
    """Return the manifest if every listed file matches it; raise ``CorruptCheckpoint`` otherwise."""
    ckpt_dir = Path(ckpt_dir)
    try:
        manifest = json.loads((ckpt_dir / MANIFEST_FILE).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CorruptCheckpoint(f"{ckpt_dir}: unreadable manifest ({err})") from None
    for required in (MODEL_FILE, STATE_FILE):
        if required not in files:
            raise CorruptCheckpoint(f"{ckpt_dir}: manifest does not list {required}")
    for name, meta in files.items():
        path = ckpt_dir / name
        if not path.is_file():
            raise CorruptCheckpoint(f"{ckpt_dir}: {name} is missing")
        size = path.stat().st_size
        if size != meta["size"]:
            raise CorruptCheckpoint(f"{ckpt_dir}: {name} has {size} bytes, manifest says {meta['size']}")
        if sha256_file(path) != meta["sha256"]:
            raise CorruptCheckpoint(f"{ckpt_dir}: {name} checksum mismatch")
    return manifest


# ---------------------------------------------------------------- save


def cpu_state_dict(model_or_state: torch.nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A contiguous CPU copy-if-needed of a state dict; tensors sharing storage get their own copy.

    safetensors refuses aliased tensors (e.g. a tied embedding that also appears as the
    head); giving each name its own tensor keeps the file loadable with ``strict=True``.
    """
    if isinstance(model_or_state, torch.nn.Module):
        state = unwrap(model_or_state).state_dict()
    else:
        state = dict(model_or_state)
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in state.items():
        t = t.detach().to("cpu").contiguous()
        key = t.untyped_storage().data_ptr()
        if key in seen:
            t = t.clone()
        seen.add(key)
        out[name] = t
    return out


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under a DDP wrapper (FSDP2 does not wrap: it shards in place)."""
    return getattr(model, "module", model)


def step_dirs(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``checkpoints/step-N`` directory, oldest first (temp dirs ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module | Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | Mapping[str, Any] | None,
    state: dict,
    *,
    keep: int | None = None,
) -> Path:
    """Write ``run_dir/checkpoints/step-{step}/`` atomically; return its path.

    ``model`` / ``optimizer`` may be modules or already-gathered (full) state dicts (the
    trainer passes dicts under FSDP). ``state`` must be JSON-able; ``step`` and the current
    RNG states are added unless present. ``keep`` prunes all but the newest ``keep``
    checkpoints, after the new one is durable. Any error (e.g. ``OSError`` for a full disk)
    removes the partial temp directory and propagates; existing checkpoints are untouched.
    """
    final = Path(run_dir) / "checkpoints" / f"step-{step}"
    state = {"step": step, **state}
    state.setdefault("rng", capture_rng_state())
    state_text = json.dumps(state, indent=2) + "\n"  # serialise first: fail before touching disk
    with atomic_dir(final) as tmp:
        save_file(cpu_state_dict(model), str(tmp / MODEL_FILE), metadata={"format": "pt"})
        if optimizer is not None:
            osd = optimizer.state_dict() if isinstance(optimizer, torch.optim.Optimizer) else optimizer
            torch.save(osd, tmp / OPTIM_FILE)
        (tmp / STATE_FILE).write_text(state_text)
        write_manifest(tmp, step)
    if keep is not None:
        prune_checkpoints(run_dir, keep)
    return final


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` step directories (and stale temp dirs)."""
    assert keep >= 1
    dirs = step_dirs(run_dir)
    for _, path in dirs[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
    root = Path(run_dir) / "checkpoints"
    for p in root.iterdir():  # leftovers of writes killed mid-way
        if p.name.startswith(".") and (p.name.endswith(".tmp") or p.name.endswith(".old")):
            shutil.rmtree(p, ignore_errors=True)
    fsync_dir(root)


# ---------------------------------------------------------------- find and load


def latest_complete(run_dir: str | Path) -> Path | None:
    """The newest checkpoint whose manifest verifies; corrupt ones are skipped with a warning."""
    for step, path in reversed(step_dirs(run_dir)):
        try:
            verify_checkpoint(path)
        except CorruptCheckpoint as err:
            warnings.warn(f"skipping corrupt checkpoint: {err}", stacklevel=2)
            continue
        return path
    return None


def read_state(ckpt_dir: str | Path) -> dict:
    return json.loads((Path(ckpt_dir) / STATE_FILE).read_text())


def read_model_state(ckpt_dir: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    return load_file(str(Path(ckpt_dir) / MODEL_FILE), device=str(device))


def read_optim_state(ckpt_dir: str | Path) -> dict | None:
    """``optim.pt`` via the weights-only unpickler; anything else inside is refused (``UserError``)."""
    path = Path(ckpt_dir) / OPTIM_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError) as err:
        first = one_line(err)
        raise UserError(f"{path}: refusing to load: not a plain tensor state dict ({first})") from None


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    verify: bool = True,
) -> dict:
    """Load weights (and optimizer state) from a checkpoint directory; return its ``state.json``.

    Does not restore RNG states: call ``restore_rng_state(state['rng'])`` when resuming.
    A corrupt checkpoint (``verify``) or a pickle with code in it is a ``UserError``.
    """
    path = Path(path)
    if not (path / MANIFEST_FILE).is_file():
        raise UserError(f"{path}: not a checkpoint directory (no {MANIFEST_FILE})")
    if verify:
        try:
            verify_checkpoint(path)
        except CorruptCheckpoint as err:
            raise UserError(f"corrupt checkpoint: {err}") from None
    target = unwrap(model)
    device = next(target.parameters()).device
    target.load_state_dict(read_model_state(path, device), strict=True)
    if optimizer is not None:
        osd = read_optim_state(path)
        if osd is None:
            raise UserError(f"{path}: has no {OPTIM_FILE} to resume the optimizer from")
        optimizer.load_state_dict(osd)
    return read_state(path)
