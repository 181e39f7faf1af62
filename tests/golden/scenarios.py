"""The README's scenarios whose JSON and CSV outputs must stay byte-identical across
refactors (issue #12): ``python tests/golden/scenarios.py`` rewrites the expected files
under ``tests/golden/expected/``; ``tests/test_golden.py`` compares a fresh run with them.

Regenerate only when a change is *meant* to move the numbers, and say so in the commit.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPECTED = HERE / "expected"
EXAMPLES = HERE.parents[1] / "examples"

# name -> (dtsim arguments, files the command writes; "{out}" is the output folder).
# With no files, the command's stdout (one JSON document) is the output.
SCENARIOS: dict[str, tuple[list[str], list[str]]] = {
    "whatif-alexnet-p100": (
        "whatif --hardware dgx1-p100 --workload alexnet --devices 8 --global-batch 256 "
        "--json".split(),
        [],
    ),
    "whatif-resnet50-a100": (
        "whatif --hardware dgx-a100 --workload resnet50 --devices 64 --batch-per-device 32 "
        "--strategies sync,bucketed,horovod,delayed:1 --nic-gbps 100 --json".split(),
        [],
    ),
    "whatif-googlenet-sandybridge": (
        "whatif --hardware sandybridge-fdr --workload googlenet --devices 8 --global-batch 32 "
        "--iterations 6 --json".split(),
        [],
    ),
    "whatif-stragglers": (
        "whatif --hardware dgx1-p100 --workload alexnet --devices 16 --global-batch 256 "
        "--ranks explicit --strategies sync,delayed:1 --slow-rank 3:0.5 --jitter-cv 0.1 "
        "--json".split(),
        [],
    ),
    "whatif-sweep-devices": (
        "whatif --hardware dgx-a100 --workload resnet50 --batch-per-device 32 --devices 8 "
        "--nic-gbps 25 --strategies sync,bucketed,delayed:1 --sweep-devices 8,16,32 "
        "--json".split(),
        [],
    ),
    "run-alexnet-delayed": (
        "run --hardware dgx1-p100 --workload alexnet --devices 8 --global-batch 256 "
        "--strategy delayed:1 --iterations 6 --json --csv {out}/run.csv "
        "--chrome-trace {out}/run.json".split(),
        ["run.csv", "run.json"],
    ),
    "sweep-alexnet": (
        f"sweep {EXAMPLES / 'sweep-alexnet.yaml'} --executor serial --out {{out}}/sweep.csv "
        "--no-resume".split(),
        ["sweep.csv"],
    ),
}


def run_scenario(name: str, out: Path) -> dict[str, bytes]:
    """Run one scenario in-process; returns {file name: bytes} ('stdout' for the JSON)."""
    from click.testing import CliRunner

    from sim.cli.main import main

    args, files = SCENARIOS[name]
    args = [a.replace("{out}", str(out)) for a in args]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    if result.exit_code != 0:
        raise RuntimeError(f"{name}: exit {result.exit_code}: {result.output[-2000:]}")
    got = {f: _without_wall_time((out / f).read_bytes()) for f in files}
    if not files or "--json" in args:
        got["stdout"] = result.stdout_bytes
    return got


def _without_wall_time(data: bytes) -> bytes:
    """A sweep table's ``wall_s`` column is the one thing that is meant to differ."""
    lines = data.decode().splitlines(keepends=True)
    if not lines or "wall_s" not in lines[0].split(","):
        return data
    import csv
    import io

    rows = list(csv.reader(io.StringIO(data.decode())))
    col = rows[0].index("wall_s")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([r[:col] + r[col + 1 :] for r in rows])
    return buf.getvalue().encode()


def main() -> None:
    import tempfile

    EXPECTED.mkdir(exist_ok=True)
    for name in SCENARIOS:
        with tempfile.TemporaryDirectory() as tmp:
            for fname, data in run_scenario(name, Path(tmp)).items():
                (EXPECTED / f"{name}.{fname}").write_bytes(data)
        print(f"wrote {name}", file=sys.stderr)


if __name__ == "__main__":
    main()
