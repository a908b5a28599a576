"""Keep freed memory in the process on Linux/glibc, so training steps stop page-faulting.

Why: glibc serves large blocks (a cast copy of the expert weights, a chunk of logits, an
activation) with ``mmap`` and returns them to the kernel on ``free``; the next step maps them
again and touches every page afresh. A 20-minute CPU sweep of ours took 128 million minor page
faults and 11 % of its CPU time in the kernel, and the reference training step ran 8–13 % faster
with the two settings below (measured alternately, benchmarks/RESULTS.md). PyTorch's CPU
performance guide recommends the same cure (jemalloc/tcmalloc or these glibc settings); doing it
with ``mallopt`` needs no preload and no extra package.

The price: memory freed by the process stays in it (its resident size stays at its peak), which
is what a training or evaluation process wants. Elsewhere (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_MAX = -4
_applied = False


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and never trim it; True when glibc took the settings."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; the trim threshold is a C int, so 2 GiB - 1 is its ceiling
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
