"""Layers point one way (STYLE.md rule 1, issue #12).

- The simulator core imports no file formats, plotting or hardware access.
- Only the CLI (``sim/cli``) imports click or rich, and nothing imports the CLI.
- No library module (``sim`` outside ``sim/cli`` and ``sim/app``, ``workloads``,
  ``hardware_profiles``) imports ``calibrate``; the application layer (``sim/app``)
  may call calibrate's entry points, and ``calibrate`` may use the simulator.
- Module-level imports form no cycle.

The checks read every import statement with ``ast``, including those inside functions,
so a lazy import cannot hide an inversion.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "calibrate", "workloads", "hardware_profiles")

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


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = (
                    module.split(".")[: -node.level]
                    if path.name != "__init__.py"
                    else (module.split(".")[: len(module.split(".")) - node.level + 1])
                )
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
        if names:
            level = id(node) in top or _guarded_top(tree, node)
            found.extend((n, level) for n in names)
    return found


def _guarded_top(tree: ast.Module, node: ast.AST) -> bool:
    """An import inside a module-level ``if``/``try`` still runs at import time."""
    for stmt in tree.body:
        if isinstance(stmt, (ast.If, ast.Try)) and any(n is node for n in ast.walk(stmt)):
            return True
    return False


MODULES = _modules()
IMPORTS = {m: _imports(p, m) for m, p in MODULES.items()}


def _is(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_core_imports_no_edges():
    code = (
        "import json, sys\n"
        + "".join(f"import {m}\n" for m in CORE)
        + f"print(json.dumps([m for m in {FORBIDDEN!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_only_the_cli_imports_click_rich_or_the_cli():
    bad = [
        f"{m} imports {name}"
        for m, imports in IMPORTS.items()
        if not _is(m, "sim.cli")
        for name, _ in imports
        if any(_is(name, p) for p in ("click", "rich", "sim.cli"))
    ]
    assert bad == []


def test_library_modules_do_not_import_calibrate():
    library = [
        m
        for m in MODULES
        if (_is(m, "sim") and not _is(m, "sim.cli") and not _is(m, "sim.app"))
        or _is(m, "workloads")
        or _is(m, "hardware_profiles")
    ]
    bad = [
        f"{m} imports {name}" for m in library for name, _ in IMPORTS[m] if _is(name, "calibrate")
    ]
    assert bad == []


def test_no_import_cycles_at_module_level():
    graph = nx.DiGraph()
    for m, imports in IMPORTS.items():
        graph.add_node(m)
        for name, top in imports:
            if top:
                # "from pkg import name" names a module or an attribute: keep modules only.
                target = name if name in MODULES else None
                if target and target != m and not _is(m, target):
                    graph.add_edge(m, target)
    cycles = list(nx.simple_cycles(graph))
    assert cycles == []
