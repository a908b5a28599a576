"""Fixtures shared across test folders."""

import os

import pytest
import torch

# CPU 'auto' precision is chosen by timing both precisions (moelab.train.precision); the suite's
# exact-numerics tests (resume, determinism, HF parity at 'auto') need one fixed precision, so it
# runs under the fixed fp32 rule. tests/train/test_precision.py exercises the measured default.
os.environ.setdefault("MOELAB_AUTO_PRECISION", "fp32")

# Token streams are cached between runs (moelab.data.cache); the suite keeps its own cache, shared by
# its tests and their subprocesses, out of the user's ~/.cache.
if "MOELAB_CACHE" not in os.environ:
    import tempfile

    os.environ["MOELAB_CACHE"] = tempfile.mkdtemp(prefix="moelab-test-cache-")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are dominated by threading overhead: one torch thread is several times faster
    on a 2-core CPU, and much steadier when the machine is loaded. Restores the old setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _sigkill_when(proc, ready, timeout: float = 120.0) -> None:
    """SIGKILL the process ``proc`` as soon as ``ready()`` holds (polled every 10 ms), after
    checking that it is still running then; the process is gone when this returns."""
    import signal
    import time

    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.01)
        assert proc.poll() is None, f"finished or crashed before the kill: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture
def sigkill_when():
    """:func:`_sigkill_when`: a real SIGKILL at a chosen moment of a real process."""
    return _sigkill_when
