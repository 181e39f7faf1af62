"""The installed ``dtsim`` script and ``python -m sim.cli``, each in a real process, run
from a folder outside the repository; and the in-process runner the other CLI tests use
(tests/cli_helpers.py) prints what the script prints."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import dtsim

WHATIF = (
    "whatif",
    "--hardware",
    "dgx1-p100",
    "--workload",
    "alexnet",
    "--devices",
    "8",
    "--global-batch",
    "256",
)


def script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    path = Path(sys.executable).with_name("dtsim")
    exe = str(path) if path.exists() else shutil.which("dtsim")
    assert exe, "the dtsim script is not installed: pip install -e '.[dev]'"
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_help_names_the_commands(tmp_path):
    result = script("--help", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("Usage: dtsim [OPTIONS] COMMAND [ARGS]...")
    for command in ("whatif", "run", "sweep", "profiles", "workloads", "calibrate"):
        assert f"\n  {command} " in result.stdout, command
    in_process = dtsim("--help")
    assert (in_process.returncode, in_process.stdout, in_process.stderr) == (0, result.stdout, "")


def test_a_usage_error_is_one_line_and_exit_2(tmp_path):
    result = script("whatif", "--devcies", "8", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    # click words the message; dtsim makes it one line that says where help is.
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and "--devcies" in line and "--devices" in line
    assert line.endswith("(see 'dtsim whatif --help')")
    in_process = dtsim("whatif", "--devcies", "8")
    assert (in_process.returncode, in_process.stdout, in_process.stderr) == (2, "", result.stderr)


def test_whatif_json_is_one_document(tmp_path):
    result = script(*WHATIF, "--json", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["scenario"]["devices"] == 8 and doc["scenario"]["global_batch"] == 256
    assert {r["strategy"] for r in doc["results"]} >= {"sync", "bucketed"}
    assert dtsim(*WHATIF, "--json").stdout == result.stdout


@pytest.mark.slow
def test_python_dash_m_sim_cli_is_the_same_command(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "sim.cli", *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=60)

    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("python -m sim.cli, version ")
    wrong = run("nosuch")
    assert wrong.returncode == 2 and wrong.stdout == ""
    (line,) = wrong.stderr.splitlines()
    assert line.startswith("error: ") and "nosuch" in line
    assert line.endswith("(see 'python -m sim.cli --help')")
