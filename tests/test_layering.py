"""Layers point one way: the simulator core imports no file formats, plotting or hardware
access (STYLE.md rule 1)."""

from __future__ import annotations

import json
import subprocess
import sys

CORE = [
    "sim.engine.core",
    "sim.engine.graph",
    "sim.engine.trace",
    "sim.analysis.metrics",
    "sim.model.collectives",
    "sim.model.topology",
    "sim.strategies",
    "sim.engine.simulate",
    "sim.model.costs",
    "sim.model.scenario",
    "sim.model.hardware",
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
