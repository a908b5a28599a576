"""keep_freed_memory: large tensors come from the heap and their memory stays with the process.

Checked through glibc's own accounting (``mallinfo2``: ``hblkhd`` = bytes in mmapped blocks, which
``free`` hands back to the kernel; ``arena`` = heap bytes, kept) in a fresh interpreter, because
the setting is process-wide. The speed effect is measured in benchmarks/RESULTS.md, not here: page
fault counts on this shared VM are too noisy for a test.
"""

import subprocess
import sys

import pytest

SCRIPT = """
import ctypes, sys

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = False
if sys.argv[1] == "on":
    from moelab.cpu_alloc import keep_freed_memory
    applied = keep_freed_memory()
import torch
before = libc.mallinfo2()
x = torch.ones(16 << 20)  # 64 MB
during = libc.mallinfo2()
del x
after = libc.mallinfo2()
print(applied, (during.hblkhd - before.hblkhd) >> 20, (after.arena - before.arena) >> 20)
"""


def _run(mode: str) -> tuple[bool, int, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": ""}, timeout=120)
    applied, mmapped_mb, heap_growth_mb = out.stdout.split()
    return applied == "True", int(mmapped_mb), int(heap_growth_mb)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_large_blocks_come_from_the_heap_and_stay_after_free():
    try:
        _, mmapped_off, heap_off = _run("off")
    except subprocess.CalledProcessError as err:
        if "mallinfo2" in err.stderr:
            pytest.skip("not glibc >= 2.33")
        raise
    applied, mmapped_on, heap_on = _run("on")
    assert applied
    assert mmapped_off >= 64 and heap_off < 64  # default: the 64 MB tensor is an mmapped block, unmapped on free
    assert mmapped_on < 64 and heap_on >= 64  # now: carved from the heap, which keeps it after the free


def test_it_is_idempotent():
    from moelab.cpu_alloc import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() == first
