"""Shared test configuration.

Every test starts from the same numerical state: mpmath at its default precision and torch seeded,
so that no test depends on what ran before it (mpmath's own conftest does the same).
"""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _reset_numerical_state():
    import mpmath

    saved = (mpmath.mp.prec, mpmath.mp.pretty)
    mpmath.mp.dps = 15
    mpmath.mp.pretty = False
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # pragma: no cover - theory tests do not need torch
        pass
    yield
    mpmath.mp.prec, mpmath.mp.pretty = saved
