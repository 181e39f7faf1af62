"""``dtsim whatif``/``run``/``sweep`` outputs on the README's scenarios are byte-identical to
the committed ones (issue #12: a refactor must not move a number). A change that means to
move them regenerates ``tests/golden/expected`` with ``python tests/golden/scenarios.py``."""

from __future__ import annotations

import pytest
from golden.scenarios import EXPECTED, SCENARIOS, run_scenario

# Out of the quick subset (the README scenarios byte for byte: the full suite runs them).
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_outputs_are_byte_identical(name, tmp_path):
    got = run_scenario(name, tmp_path)
    assert got, name
    for fname, data in got.items():
        expected = (EXPECTED / f"{name}.{fname}").read_bytes()
        assert data == expected, f"{name}.{fname} differs from tests/golden/expected"
