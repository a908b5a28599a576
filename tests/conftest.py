"""Fixtures shared across test folders."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are dominated by threading overhead: one torch thread is several times faster
    on a 2-core CPU, and much steadier when the machine is loaded. Restores the old setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
