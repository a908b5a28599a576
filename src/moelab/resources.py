"""Will this run fit? Memory estimates and output-location checks, done before anything is written.

    from moelab.resources import check_fits, estimate_training_memory
    need = estimate_training_memory(cfg)          # bytes; pure arithmetic, allocates nothing
    check_fits(cfg, torch.device("cpu"))          # UserError naming the estimate when it cannot fit
    check_writable_dir(Path("runs/a"), "--out")   # UserError when the directory cannot be created/written

The training-memory estimate (:func:`memory_breakdown`) adds, per rank:

* **weights, gradients, AdamW moments**: fp32, 4 + 4 + 8 bytes per parameter (total parameters, every
  expert included; sharded over the ranks under FSDP);
* **activations** kept for the backward of one micro-batch (``batch_size / grad_accum / world`` rows
  of ``seq_len`` tokens), per layer and token: attention (norm in/out, q, k, v, attention output, the
  output projection; plus ``n_heads · seq_len`` probabilities, as the math SDPA path stores them) and
  the MoE block (norm in/out, router logits and probabilities, the k dispatched copies of the token,
  k × (gate, up, activation, product) expert hidden vectors, the k expert outputs, the combined output);
  4 bytes a value in fp32, 2 under bf16 autocast;
* **logits**: the trainer's fused LM head + cross-entropy (``moelab.train.linear_ce``) never holds
  the ``B·T·V`` logits: it keeps the loss's gradients for the hidden states (``B·T·D``) and the
  head (``V·D``, fp32), one chunk of fp32 logits (2²¹ values) and, under bf16, the bf16 logit
  gradients of one weight-gradient group (up to 2²⁵ values).

It is an estimate for refusing hopeless runs, not a promise: the check allows the run when the
estimate is at most the memory available now (free GPU memory on CUDA; ``MemAvailable`` on CPU).
It ignores allocator fragmentation, the CUDA context and temporary buffers, so a run that passes by
a thin margin can still run out of memory; a run it refuses would need at least the estimate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from moelab import accounting
from moelab.config import ModelConfig, RunConfig
from moelab.errors import UserError

_FP32 = 4


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per rank, by component; ``total`` is their sum."""

    weights: int
    grads: int
    optimizer: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer + self.activations + self.logits

    def describe(self) -> str:
        parts = (("weights", self.weights), ("grads", self.grads), ("Adam", self.optimizer),
                 ("activations", self.activations), ("logits", self.logits))
        return ", ".join(f"{name} {human_bytes(b)}" for name, b in parts)


def human_bytes(n: float) -> str:
    for unit, scale in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def effective_model(cfg: RunConfig) -> ModelConfig:
    """The model the trainer will build: ``vocab_size`` grows to a BPE tokenizer's size (an
    existing tokenizer's size is unknown before it is loaded; it is rarely much larger)."""
    vocab = cfg.model.vocab_size if cfg.data.tokenizer else max(cfg.model.vocab_size, cfg.data.vocab_size)
    return cfg.model.model_copy(update={"vocab_size": vocab})


def _bf16(cfg: RunConfig, device_type: str) -> bool:
    # 'auto' on CPU may resolve to bf16 by measurement (moelab.train.precision); fp32 activations
    # are the larger estimate, so the memory check keeps assuming them there.
    return cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device_type == "cuda")


def memory_breakdown(cfg: RunConfig, *, device_type: str = "cpu", world: int = 1) -> MemoryEstimate:
    """Peak training memory per rank, by component (see the module docstring). No torch, no allocation."""
    t = cfg.train
    shards = world if (world > 1 and t.distributed == "fsdp") else 1
    rows = max(1, t.batch_size // (t.grad_accum * max(world, 1)))
    return step_memory(effective_model(cfg), rows, cfg.data.seq_len, bf16=_bf16(cfg, device_type), shards=shards)


def step_memory(m: ModelConfig, rows: int, seq_len: int, *, bf16: bool = False, shards: int = 1) -> MemoryEstimate:
    """Peak memory of one training step of model ``m`` on ``rows`` sequences of ``seq_len`` tokens:
    the arithmetic behind :func:`memory_breakdown`, for callers that hold a model config rather than
    a run (the throughput probe, the precision measurement, ``bench``)."""
    n = accounting.total_params(m)
    weights = -(-n * _FP32 // shards)
    grads = weights
    optimizer = 2 * weights
    T = seq_len
    tokens = rows * T
    D, F, E, K = m.d_model, m.ffn_hidden, m.num_experts, m.top_k
    kv = m.kv_heads * m.head_dim
    attention = 5 * D + 2 * kv + m.n_heads * T
    moe = 3 * D + 2 * E + 2 * K * D + 4 * K * F
    act_bytes = 2 if bf16 else _FP32
    activations = tokens * m.n_layers * (attention + moe) * act_bytes + tokens * D * 2 * _FP32  # + final norm
    from moelab.train.linear_ce import CHUNK_ELEMENTS, GROUP_ELEMENTS

    logit_values = tokens * m.vocab_size
    group = 2 * min(GROUP_ELEMENTS, logit_values) if act_bytes == 2 else 0
    logits = _FP32 * (tokens * D + m.vocab_size * D + min(CHUNK_ELEMENTS, logit_values)) + group
    return MemoryEstimate(weights, grads, optimizer, activations, logits)


def estimate_training_memory(cfg: RunConfig, *, device_type: str = "cpu", world: int = 1) -> int:
    """Estimated peak bytes one rank needs to train ``cfg``: parameters, gradients, Adam states,
    the activations of one micro-batch and its logits."""
    return memory_breakdown(cfg, device_type=device_type, world=world).total


# ---------------------------------------------------------------- what is available


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_limit() -> int | None:
    """Bytes left under a cgroup v2/v1 memory limit (containers), or None when unlimited/unknown."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            raw = Path(limit_file).read_text().strip()
            if raw == "max":
                return None
            limit, usage = int(raw), int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit >= 2**60:  # cgroup v1's "unlimited"
            return None
        return max(0, limit - usage)
    return None


def available_memory(device) -> int | None:
    """Bytes available for a new run on ``device`` (a torch.device or its type), or None if unknown."""
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if kind != "cpu":
        return None  # mps and others: no reliable query
    try:
        import psutil

        avail = int(psutil.virtual_memory().available)
    except ImportError:
        avail = _meminfo_available()
    known = [b for b in (avail, _cgroup_limit(), _address_space_headroom()) if b is not None]
    return min(known) if known else None


def _address_space_headroom() -> int | None:
    """Bytes this process may still map under its own ``RLIMIT_AS`` (``ulimit -v``, a batch
    scheduler's limit), or None when unlimited: a model built past it dies with MemoryError, so it
    bounds what is available as much as the machine's free memory does."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (ImportError, OSError, ValueError, StopIteration):
        return None
    return max(0, soft - vm)


def shortfall(need: int, device) -> str | None:
    """``"needs 410.0 GiB, 23.0 GiB available"`` when ``need`` bytes exceed what ``device`` has
    available now; None when it fits or the amount available is unknown. Every probe, benchmark and
    measurement asks this before it allocates (the same arithmetic as :func:`check_fits`)."""
    have = available_memory(device)
    if have is None or need <= have:
        return None
    return f"needs {human_bytes(need)}, {human_bytes(have)} available"


def check_fits(cfg: RunConfig, device, *, world: int = 1, available: int | None = None) -> int:
    """Raise ``UserError`` (with the estimate) when training ``cfg`` on ``device`` cannot fit.

    ``available`` overrides the query (tests). Returns the estimate in bytes.
    """
    kind = getattr(device, "type", str(device).split(":")[0])
    est = memory_breakdown(cfg, device_type=kind, world=world)
    have = available if available is not None else available_memory(device)
    if have is not None and est.total > have:
        name = accounting.model_name(effective_model(cfg))
        raise UserError(
            f"{name} needs an estimated {human_bytes(est.total)} of memory to train ({est.describe()}, "
            f"micro-batch {max(1, cfg.train.batch_size // (cfg.train.grad_accum * max(world, 1)))}×{cfg.data.seq_len}) "
            f"but only {human_bytes(have)} is available on {kind}; use a smaller model, batch or seq_len, "
            "or raise train.grad_accum"
        )
    return est.total


# ---------------------------------------------------------------- output locations


def check_writable_dir(path: str | Path, what: str = "--out") -> None:
    """``UserError`` unless ``path`` is a writable directory or can be created as one.

    Checks without creating anything: an existing non-directory, a non-directory ancestor (the
    one failure that stops root too) and a non-writable nearest existing ancestor are refused.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{what} {path}: exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"{what} {path}: directory is not writable")
        return
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{what} {path}: cannot create it: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: cannot create it: {parent} is not writable")
