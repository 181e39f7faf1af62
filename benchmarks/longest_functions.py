"""The longest functions and methods of dtsim at a git revision (issue #12's closing note).

Reads every ``.py`` file under ``sim/``, ``calibrate/`` and ``workloads/`` as it is at
``REV`` (``git ls-tree`` and ``git show``: the working tree is not read, so any commit can
be measured from any checkout) and prints the ``N`` longest functions, methods and nested
functions, longest first: lines from the ``def`` (decorators not counted) to the last line
of the body, docstring and comments included, as an editor shows them.

    python benchmarks/longest_functions.py [REV] [-n N] [--json]
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "calibrate", "workloads")


class Function(NamedTuple):
    lines: int
    path: str
    name: str  # qualified: Class.method, outer.<locals>.inner
    line: int  # the def's line


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def python_files(rev: str) -> list[str]:
    """The ``.py`` files of :data:`PACKAGES` at ``rev``."""
    names = _git("ls-tree", "-r", "--name-only", rev, "--", *PACKAGES).splitlines()
    return sorted(n for n in names if n.endswith(".py"))


def functions(source: str, path: str) -> list[Function]:
    """Every function of one module, nested ones and methods included."""
    out: list[Function] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                end = child.end_lineno or child.lineno
                out.append(Function(end - child.lineno + 1, path, name, child.lineno))
                visit(child, f"{name}.<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=path), "")
    return out


def longest(rev: str, n: int) -> list[Function]:
    """The ``n`` longest functions at ``rev`` (ties: by path and line)."""
    found = [
        f for path in python_files(rev) for f in functions(_git("show", f"{rev}:{path}"), path)
    ]
    return sorted(found, key=lambda f: (-f.lines, f.path, f.line))[:n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", nargs="?", default="HEAD", help="a git revision (default HEAD)")
    parser.add_argument("-n", type=int, default=15, help="how many (default 15)")
    parser.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    args = parser.parse_args(argv)
    rev = _git("rev-parse", "--short", args.rev).strip()
    rows = longest(rev, args.n)
    if args.json:
        print(json.dumps([{"rev": rev, **f._asdict()} for f in rows]))
        return 0
    print(f"{args.n} longest functions in {', '.join(PACKAGES)} at {rev}:")
    for i, f in enumerate(rows, 1):
        print(f"{i:3d}. {f.lines:4d} lines  {f.path}:{f.line}  {f.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
