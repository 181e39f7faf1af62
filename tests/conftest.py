"""Test selection: ``python -m pytest -m "not slow"`` is the quick subset (under a minute on
a 2-core machine); it leaves out real MPI jobs and the browser too, so those count as slow."""

from __future__ import annotations

import pytest


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("mpi") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)
