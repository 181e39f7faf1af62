"""Running ``dtsim`` as a user would, in a subprocess, for the CLI tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dtsim(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sim.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


def ok(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run, expect exit 0 and no traceback."""
    result = dtsim(*args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def ok_json(*args: str | Path) -> object:
    """Run with --json, expect exit 0; return the one JSON document on stdout."""
    return json.loads(ok(*args, "--json").stdout)


def bad(*args: str | Path, timeout: float = 60) -> str:
    """Run, expect exit 2 with one error line on stderr; return that line."""
    result = dtsim(*args, timeout=timeout)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]
