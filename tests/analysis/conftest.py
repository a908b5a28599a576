"""Fixtures for the analysis tests: synthetic rows (no training: end-to-end runs are tested elsewhere)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from analysis_synth import make_rows, with_failures  # noqa: E402


@pytest.fixture
def synthetic_rows() -> list[dict]:
    return make_rows()


@pytest.fixture
def failing_rows() -> list[dict]:
    return with_failures(make_rows(budgets=(1e12,), experts=(1, 2, 4, 8, 16)))
