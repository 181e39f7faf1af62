"""Random what-if scenarios against the physical lower bounds (issue #13).

Runs N random scenarios (default 10,000) the way ``dtsim whatif`` and ``dtsim run`` do
(``simulate_steady`` or a plain ``simulate``, then ``metrics``) over every built-in and
measured hardware profile, interference 0-2 (and in 30% of them polled progress, its
poll work factor 1-5), jitter (explicit ranks, few devices), delays 1-3 and bucket
sizes, and prints counts: scenarios, violations (a reported iteration below one of
:func:`sim.analysis.bounds.lower_bounds`, or ``check_bounds`` firing), unsettled runs,
and the wall time.

    python benchmarks/bounds_fuzz.py [N] [--seed S] [--show K]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hardware_profiles import load_profile  # noqa: E402
from sim.analysis import metrics as M  # noqa: E402
from sim.analysis.bounds import lower_bounds  # noqa: E402
from sim.engine.simulate import MAX_STEADY_ITERATIONS, simulate, simulate_steady  # noqa: E402
from sim.errors import InputError, PhysicalBoundError  # noqa: E402
from sim.model.scenario import (  # noqa: E402
    make_scenario,
    with_interference,
    with_nic_bandwidth,
    with_polled_progress,
)
from sim.strategies import parse_strategy  # noqa: E402
from workloads import load_workload  # noqa: E402

BUILTIN = ("dgx-a100", "dgx-h100", "dgx1-p100", "dgx1-v100", "sandybridge-fdr")
MEASURED = tuple(
    str(p)
    for p in sorted((ROOT / "hardware_profiles" / "measured").glob("*.yaml"))
    if "name: small-cnn" not in p.read_text()[:400]  # a workload written by calibration
)
MEASURED_WORKLOADS = tuple(
    str(p)
    for p in sorted((ROOT / "hardware_profiles" / "measured").glob("*.yaml"))
    if str(p) not in MEASURED
)
# Small and mid-sized models mostly: the simulation's cost is layers x iterations.
WORKLOADS = ("mlp", "small-cnn", "alexnet", "googlenet", "resnet50", "vgg16", "bert-large")
WORKLOAD_WEIGHTS = (4, 4, 4, 2, 1, 2, 1)
STRATEGY_FAMILIES = ("sync", "delayed", "async-layerwise", "bucketed", "layerwise", "horovod")
FAMILY_WEIGHTS = (1, 4, 3, 1, 1, 1)


def random_case(rng: np.random.Generator) -> dict:
    """One scenario as plain data (printable, reproducible)."""
    profile = str(rng.choice(BUILTIN + MEASURED, p=_weights(len(BUILTIN), len(MEASURED))))
    measured = profile in MEASURED
    pool = WORKLOADS + MEASURED_WORKLOADS
    weights = np.array(WORKLOAD_WEIGHTS + (3,) * len(MEASURED_WORKLOADS), dtype=float)
    workload = str(rng.choice(pool, p=weights / weights.sum()))
    explicit = bool(rng.random() < 0.25)
    if measured:
        devices = int(rng.choice((1, 2)))
    elif explicit:
        devices = int(rng.choice((2, 3, 4, 8)))
    else:
        devices = int(2 ** rng.integers(0, 13))
    family = str(rng.choice(STRATEGY_FAMILIES, p=np.array(FAMILY_WEIGHTS) / sum(FAMILY_WEIGHTS)))
    if family in ("delayed", "async-layerwise"):
        spec = f"{family}:{int(rng.integers(1, 4))}"
    elif family == "bucketed":
        spec = f"bucketed:{float(np.round(10 ** rng.uniform(-1, 2), 2)):g}"
    else:
        spec = family
    return {
        "hardware": profile,
        "workload": workload,
        "devices": devices,
        "batch_per_device": int(rng.choice((1, 2, 4, 8, 16, 32, 64))),
        "interference": float(np.round(rng.uniform(0, 2), 3)) if rng.random() < 0.7 else None,
        # collectives progressed by the thread's polls (plain MPI on CPUs)
        "poll_work": float(np.round(rng.uniform(1, 5), 3)) if rng.random() < 0.3 else None,
        "nic_gbps": float(np.round(10 ** rng.uniform(0, 2.6), 1))
        if not measured and rng.random() < 0.5
        else None,
        "ranks": "explicit" if explicit else "representative",
        "jitter": float(np.round(rng.uniform(0.02, 0.3), 3))
        if explicit and rng.random() < 0.7
        else 0.0,
        "iterations": int(rng.choice((20, 20, 20, 6, 12, 40))),
        "strategy": spec,
        "steady": bool(rng.random() < 0.8),  # as whatif (extends the run) or as run
        "seed": int(rng.integers(0, 2**16)),
    }


def _weights(builtin: int, measured: int) -> np.ndarray:
    w = np.array([1.0] * builtin + [builtin / max(1, measured) * 0.5] * measured)
    return w / w.sum()


@functools.cache
def _profile(name: str):
    return load_profile(name)


@functools.cache
def _workload(name: str):
    return load_workload(name)


def build(case: dict):
    hw = _profile(case["hardware"])
    if case["nic_gbps"] is not None:
        hw = with_nic_bandwidth(hw, case["nic_gbps"])
    if case["interference"] is not None:
        hw = with_interference(hw, case["interference"])
    if case.get("poll_work") is not None:
        hw = with_polled_progress(hw, case["poll_work"])
    return make_scenario(
        _workload(case["workload"]),
        hw,
        case["devices"],
        batch_per_device=case["batch_per_device"],
        iterations=case["iterations"],
        ranks=case["ranks"],
        jitter=case["jitter"],
        seed=case["seed"],
    )


def run_case(case: dict) -> str:
    """'ok', 'unsettled', 'violation: ...' or 'refused' (the scenario is invalid input)."""
    try:
        sc = build(case)
        strategy = parse_strategy(case["strategy"])
        if case["steady"]:
            trace, _, _ = simulate_steady(sc, strategy)
        else:
            trace, _ = simulate(sc, strategy)
    except InputError:
        return "refused"
    try:
        m = M.metrics(trace)
    except PhysicalBoundError as e:
        return f"violation: {e}"
    for bound in lower_bounds(trace):
        if m.iteration_time_s < bound.seconds * (1 - 1e-9):
            return f"violation (unchecked): {bound.name} {bound.seconds} > {m.iteration_time_s}"
    if m.steady:
        return "ok"
    return "unsettled (extended to its limit)" if case["steady"] else "unsettled (as run)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--show", type=int, default=5, help="print the first K violations")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    counts: Counter[str] = Counter()
    shown = 0
    start = time.perf_counter()
    for i in range(args.n):
        case = random_case(rng)
        outcome = run_case(case)
        counts[outcome.split(":")[0]] += 1
        if outcome.startswith("violation") and shown < args.show:
            shown += 1
            print(f"#{i} {case}\n  {outcome}", flush=True)
        if (i + 1) % 500 == 0:
            print(f"  ... {i + 1} scenarios, {dict(counts)}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - start
    violations = counts["violation"] + counts["violation (unchecked)"]
    print(f"scenarios:  {args.n}")
    print(f"violations: {violations}")
    print(
        f"unsettled:  {counts['unsettled (extended to its limit)'] + counts['unsettled (as run)']} "
        f"({counts['unsettled (extended to its limit)']} as whatif runs them, extended up to "
        f"{MAX_STEADY_ITERATIONS} iterations; {counts['unsettled (as run)']} as run runs them, "
        "at their --iterations)"
    )
    print(
        f"refused:    {counts['refused']} (invalid input, e.g. more devices than the profile has)"
    )
    print(f"wall time:  {wall:.1f} s")
    return 1 if violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
