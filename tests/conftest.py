"""Test selection: ``python -m pytest -m "not slow"`` is the quick subset (under a minute on
a 2-core machine); it leaves out real MPI jobs and the browser too, so those count as slow."""

from __future__ import annotations

import os

import pytest

# The load guard (calibrate.measure.loadguard) still measures and marks disturbed
# sections in tests, but re-measures at once instead of waiting up to 30 s for a quiet
# second: a test checks what the code does, and a busy CI machine must not add minutes.
os.environ.setdefault("DTSIM_SETTLE_S", "0")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("mpi") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)
