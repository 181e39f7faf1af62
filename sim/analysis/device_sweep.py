"""What-if over several device counts: the rows a scaling plot needs.

No plotting here (``--sweep-devices --json`` needs no plotly); see
:func:`sim.viz.figures.scaling_figure` for the plot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sim.analysis.whatif import run_whatif
from sim.app.spec import ScenarioSpec
from sim.errors import InputError
from sim.strategies.base import Strategy


def parse_device_counts(text: str, key: str = "sweep-devices") -> list[int]:
    """``"8,16,32"`` -> [8, 16, 32]: positive, distinct, in increasing order."""
    counts = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            n = int(part)
        except ValueError:
            raise InputError(f"'{part}' is not a whole number of devices", key=key) from None
        if n < 1:
            raise InputError(f"device counts must be at least 1 (got {n})", key=key)
        counts.append(n)
    if not counts:
        raise InputError("give device counts separated by commas, e.g. 8,16,32", key=key)
    return sorted(set(counts))


def sweep_devices(
    spec: ScenarioSpec,
    strategies: Sequence[Strategy],
    devices: Sequence[int],
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """:func:`sim.analysis.whatif.run_whatif` at each device count, every other option as in
    ``spec``. Each row gets a ``devices`` key; rows are ordered by devices, then as what-if
    sorts them.

    With ``global_batch`` (strong scaling) every count must divide it: the scenario's
    InputError says which does not.
    """
    rows: list[dict[str, Any]] = []
    for n in devices:
        scenario = spec.replace(devices=n).build()

        def step(name: str, n: int = n) -> None:
            if progress:
                progress(f"{name} on {n} devices")

        for row in run_whatif(scenario, strategies, progress=step):
            rows.append({"devices": n, **row})
    return rows
