"""torch.distributed plumbing for the trainer: process group, DDP / FSDP2 wrapping, full state.

Active when ``WORLD_SIZE > 1`` (set by ``torchrun``); otherwise every method is a no-op and
the trainer runs single-process. Conventions:

* Every rank reads the same global batch and takes its contiguous slice of rows (``rows``),
  so the global batch stays ``train.batch_size`` for any world size.
* Checkpoints always hold full, unsharded state in the single-process format: a plain
  model state dict and the *positional* ``optimizer.state_dict()``. FSDP2's name-keyed
  optimizer state is translated on the way out and back, so a checkpoint written with any
  world size and mode resumes with any other.
* Only rank 0 writes files; ranks meet at ``barrier`` after writes others will read.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from moelab.config import TrainConfig
from moelab.errors import UserError
from moelab.train.optim import clip_grad_norm_


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    mode: str = "none"  # none | ddp | fsdp
    created: bool = False  # we initialised the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _dist(self):
        import torch.distributed as dist

        return dist

    # -- collectives ------------------------------------------------------------------------

    def barrier(self) -> None:
        if self.world > 1:
            self._dist().barrier()

    def all_ok(self, ok: bool) -> bool:
        """A barrier that also tells every rank whether all of them got there with ``ok``.

        Used after work only rank 0 does (building the tokenizer): a bare barrier would leave the
        other ranks waiting forever when rank 0 raises instead of arriving.
        """
        if self.world == 1:
            return ok
        dist = self._dist()
        device = torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
        flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def all_reduce_sum(self, t: torch.Tensor) -> None:
        if self.world > 1:
            self._dist().all_reduce(t)

    def all_reduce_mean(self, t: torch.Tensor) -> None:
        if self.world > 1:
            self._dist().all_reduce(t)
            t /= self.world

    def rows(self, t_B: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch."""
        if self.world == 1:
            return t_B
        n = t_B.shape[0] // self.world
        return t_B[self.rank * n:(self.rank + 1) * n]

    def close(self) -> None:
        if self.created:
            self._dist().destroy_process_group()
            self.created = False

    # -- wrapping ---------------------------------------------------------------------------

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP wrapper, or FSDP2 sharding in place (per block, then the root), or nothing."""
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            dev = next(model.parameters()).device
            return DDP(model, device_ids=[dev] if dev.type == "cuda" else None)
        if self.mode == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for layer in model.layers:
                fully_shard(layer)
            fully_shard(model)
        return model

    def no_sync(self, model: torch.nn.Module):
        """Skip the gradient all-reduce on all but the last micro-batch."""
        if self.mode == "ddp":
            return model.no_sync()
        if self.mode == "fsdp":
            return _fsdp_no_sync(model)
        return contextlib.nullcontext()

    def clip_grad_norm(self, model: torch.nn.Module, max_norm: float) -> torch.Tensor:
        """Clip in place; return the pre-clip global norm as a plain tensor."""
        norm = clip_grad_norm_(model.parameters(), max_norm)
        full = getattr(norm, "full_tensor", None)  # DTensor under FSDP2
        return full() if full is not None else norm

    # -- full state for checkpoints ----------------------------------------------------------

    def full_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None):
        """``(model_state, optimizer_state)`` unsharded, in single-process format (collective under FSDP)."""
        if self.mode != "fsdp":
            raw = getattr(model, "module", model)
            return raw.state_dict(), (optimizer.state_dict() if optimizer is not None else None)
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions, get_model_state_dict, get_optimizer_state_dict)

        # Collective on every rank; with cpu_offload only rank 0 receives the full tensors.
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        msd = get_model_state_dict(model, options=opts)
        osd = get_optimizer_state_dict(model, optimizer, options=opts) if optimizer is not None else None
        if not self.is_main:
            return {}, None
        return msd, (_to_positional(osd, optimizer) if osd is not None else None)

    def load_optimizer_state(self, model, optimizer: torch.optim.Optimizer, osd: dict) -> None:
        """Load a positional optimizer state, keeping this optimizer's own kernel choice.

        A saved group carries ``fused``/``foreach`` flags, and ``load_state_dict`` would adopt
        them; a checkpoint from a fused single-process run must not force the fused kernel
        onto FSDP's DTensors (or the reverse), so the live flags win.
        """
        osd = {**osd, "param_groups": [
            {**saved, **{k: live[k] for k in _IMPL_KEYS if k in live}}
            for saved, live in zip(osd["param_groups"], optimizer.param_groups)
        ]}
        if self.mode != "fsdp":
            optimizer.load_state_dict(osd)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, _to_named(osd),
                                 options=StateDictOptions(full_state_dict=True))


_IMPL_KEYS = ("fused", "foreach", "capturable", "differentiable")


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def _to_positional(named: dict, optimizer: torch.optim.Optimizer) -> dict:
    """FSDP's ``{state: {fqn: ...}, param_groups: [{params: [fqn]}]}`` → ``optimizer.state_dict()`` form."""
    state, groups, idx = {}, [], 0
    for saved, live in zip(named["param_groups"], optimizer.param_groups):
        names = list(live["param_names"])
        ids = []
        for name in names:
            if name in named["state"]:
                state[idx] = named["state"][name]
            ids.append(idx)
            idx += 1
        group = {k: v for k, v in saved.items() if k not in ("params", "param_names")}
        groups.append({**group, "params": ids, "param_names": names})
    return {"state": state, "param_groups": groups}


def _to_named(positional: dict) -> dict:
    state, groups = {}, []
    for group in positional["param_groups"]:
        names = group["param_names"]
        for i, name in zip(group["params"], names):
            if i in positional["state"]:
                state[name] = positional["state"][i]
        groups.append({**{k: v for k, v in group.items() if k not in ("params", "param_names")}, "params": list(names)})
    return {"state": state, "param_groups": groups}


def init_distributed(cfg: TrainConfig) -> Dist:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA), or stay single."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if cfg.distributed == "none":
        raise UserError(f"WORLD_SIZE={world} but train.distributed is 'none'; set 'ddp' or 'fsdp'")
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    created = False
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        created = True
    return Dist(rank=rank, world=world, local_rank=local_rank, mode=cfg.distributed, created=created)
