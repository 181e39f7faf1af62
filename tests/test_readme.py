"""The README's commands run as written (STYLE: documentation examples run as tests)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _dtsim_commands() -> list[tuple[int, str]]:
    """(block number, command): a block's commands run in order in one directory, so a
    later command can read what an earlier one wrote."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    commands = []
    for i, block in enumerate(blocks):
        for line in block.splitlines():
            # The install one-liners end with a dtsim command or with pytest.
            for part in line.split("&&"):
                part = part.split("#")[0].strip()
                if part.startswith("dtsim "):
                    commands.append((i, part))
    return commands


@pytest.fixture(scope="module")
def block_dirs(tmp_path_factory):
    dirs: dict[int, Path] = {}

    def get(block: int) -> Path:
        if block not in dirs:
            dirs[block] = tmp_path_factory.mktemp(f"readme-block{block}")
            # Commands name files under examples/ as a user in the repository would.
            shutil.copytree(ROOT / "examples", dirs[block] / "examples")
        return dirs[block]

    return get


def test_readme_has_the_two_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    install_and_run = [b for b in blocks if "pip install ." in b and "dtsim whatif" in b]
    install_and_test = [b for b in blocks if "pip install -e '.[dev]'" in b and "pytest" in b]
    assert install_and_run and install_and_test


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    test_line = next(
        b for b in re.findall(r"```bash\n(.*?)```", README, flags=re.S) if "pytest" in b
    ).strip()
    tail = test_line.split("&&", 1)[1].strip()  # after creating the venv
    assert tail in ci


@pytest.mark.slow
@pytest.mark.parametrize(("block", "command"), _dtsim_commands())
def test_readme_command_runs(block, command, block_dirs):
    args = shlex.split(command)[1:]
    if args[0] in ("calibrate", "validate") and not shutil.which("mpirun"):
        pytest.skip("calibration needs Open MPI's mpirun")
    proc = subprocess.run(
        [sys.executable, "-m", "sim.cli", *args],
        cwd=block_dirs(block),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_validation_command_prints_every_figure():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "validate_published.py"), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    tables = __import__("json").loads(proc.stdout)
    assert set(tables) == {"single_device", "multi_node", "collectives_and_one_node"}
    rows = [r for table in tables.values() for r in table]
    # Fitted rows and held-out rows are marked apart (and NCCL's own latency model), the
    # rows pre-registered before any prediction on them apart from the first held-out set.
    assert {r["kind"] for r in rows} == {
        "fitted",
        "held out",
        "held out (new, 2026-12-01)",
        "NCCL model",
    }
    for r in rows:
        assert r["published"] > 0 and r["predicted"] > 0 and r["source"]
        assert r["error"] == pytest.approx(r["predicted"] / r["published"] - 1)
