"""Shared test configuration.

Every test starts from the same numerical state: mpmath at its default precision and torch seeded,
so that no test depends on what ran before it (mpmath's own conftest does the same).
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config):
    # Under pytest-xdist every worker would start two intra-op threads on a 2-core machine; the
    # oversubscribed OpenMP barriers then spin, and small tensor ops slow down by 50x. One thread
    # per worker keeps parallel runs fast (the numbers do not depend on the thread count).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:  # pragma: no cover
            pass


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
