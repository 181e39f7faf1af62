"""Issue #4's calibration targets, measured and printed (never asserted in tests).

Runs ``dtsim calibrate all`` (CPU, small CNN, np=2, comm sweep 4 KiB..64 MiB) twice in a
row, as a user would, and prints:

- the wall time of each run against the 90 s target;
- every fitted parameter of both runs and their spread |a - b| / mean, against the 10%
  target (α and bandwidth per op, GEMM FLOP/s, copy bandwidth, interference, and the
  per-layer forward + backward times);
- the α-β fit's worst relative error per op against the 15% target, and whether the
  measured table is used instead.

    python benchmarks/calibration_repeatability.py [--np 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(out: Path, np_: int) -> tuple[dict, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sim.cli",
            "calibrate",
            "all",
            "--out",
            str(out),
            "--np",
            str(np_),
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"calibrate all failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout), wall


def parameters(doc: dict) -> dict[str, float]:
    out = {
        "GEMM GFLOP/s": doc["gemm_flops"] / 1e9,
        "copy GB/s": doc["memory_bandwidth_bytes_per_s"] / 1e9,
        "interference factor": doc["interference"]["factor"],
        "whole model ms": doc["compute"]["whole_model_s"] * 1e3,
    }
    for m in doc["measured_collectives"]:
        out[f"{m['op']} alpha us"] = m["alpha_us"]
        out[f"{m['op']} bandwidth GB/s"] = m["bandwidth_gb_per_s"]
    for layer in doc["compute"]["layers"]:
        out[f"layer {layer['name']} ms"] = (layer["forward_s"] + layer["backward_s"]) * 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--np", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="Keep the profiles here.")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"load average before: {load:.2f} on {os.cpu_count()} cores")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="dtsim-cal-"))
    docs, walls = [], []
    for i in (1, 2):
        doc, wall = run_once(folder / f"run{i}.yaml", args.np)
        docs.append(doc)
        walls.append(wall)
        print(
            f"run {i}: {wall:.1f} s wall (target <= 90 s): "
            f"{'met' if wall <= 90 else 'MISSED'}; internal timings {doc['timings_s']}"
        )
    a, b = (parameters(d) for d in docs)
    print(f"\n{'parameter':34s} {'run 1':>12s} {'run 2':>12s} {'spread':>8s}  (target <= 10%)")
    worst = 0.0
    misses = []
    for key in a:
        if key not in b:
            continue
        mean = (a[key] + b[key]) / 2
        spread = abs(a[key] - b[key]) / abs(mean) if mean else 0.0
        worst = max(worst, spread)
        flag = "" if spread <= 0.10 else "  > 10%"
        if flag:
            misses.append(key)
        print(f"{key:34s} {a[key]:12.4g} {b[key]:12.4g} {spread:8.1%}{flag}")
    print(f"\nworst spread {worst:.1%}; over 10%: {', '.join(misses) if misses else 'none'}")
    print("\nα-β fit, worst relative error over the measured points (target <= 15%):")
    for m in docs[0]["measured_collectives"]:
        e = m["fit_worst_error"]
        use = "fit" if e <= 0.15 else "measured table inside the range, fit outside"
        print(f"  {m['op']:16s} {e:7.1%}  -> the simulator uses: {use}")
    print(f"\nprofiles in {folder}")


if __name__ == "__main__":
    main()
