"""Layers point one way: the simulator core imports no file formats, plotting or hardware
access (STYLE.md rule 1)."""

from __future__ import annotations

import json
import subprocess
import sys

CORE = [
    "sim.engine",
    "sim.graph",
    "sim.trace",
    "sim.metrics",
    "sim.collectives",
    "sim.topology",
    "sim.strategies",
    "sim.simulate",
    "sim.costs",
    "sim.scenario",
    "sim.hardware",
    "workloads.model",
]
FORBIDDEN = ["yaml", "pydantic", "plotly", "pandas", "torch", "mpi4py", "click", "rich"]


def test_core_imports_no_edges():
    code = (
        "import json, sys\n"
        + "".join(f"import {m}\n" for m in CORE)
        + f"print(json.dumps([m for m in {FORBIDDEN!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
