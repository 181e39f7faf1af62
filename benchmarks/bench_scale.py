"""Speed at scale: one scenario, a 1,000-point sweep, and explicit mode at 1,024 ranks.

    python benchmarks/bench_scale.py [--repeat 7] [--executor local] [--workers N]
        [--skip-sweep] [--skip-explicit] [--profile]

Prints, never asserts (STYLE.md rule 9), with the load average before and after:

(a) ResNet-50 on 64 A100s, sync, 20 iterations, representative mode: the median wall
    time of ``--repeat`` runs of simulate_steady + metrics (context building included
    and shown apart). Target: <= 50 ms.
(b) A 1,000-point sweep (2 workloads x 5 device counts x 5 NIC speeds x 4 batches x 5
    strategies) with the executor used. Target: <= 2 minutes on a 2-core machine.
(c) Explicit mode, 1,024 ranks, ResNet-50, 5 iterations, sync: wall time, events and the
    event rate; ``--profile`` adds a cProfile summary of where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import time

from hardware_profiles import load_profile
from sim.analysis.grid_sweep import expand, load_spec, run_sweep
from sim.analysis.metrics import metrics
from sim.engine.simulate import build_context, simulate, simulate_steady
from sim.model.scenario import make_scenario
from sim.strategies import parse_strategy
from workloads import load_workload

SWEEP = {
    "hardware": "dgx-a100",
    "workload": ["resnet50", "alexnet"],
    "devices": [8, 32, 128, 512, 2048],
    "nic_gbps": [10, 25, 50, 100, 200],
    "batch_per_device": [16, 32, 64, 128],
    "strategy": ["sync", "bucketed", "horovod", "delayed:1", "layerwise"],
}


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def single_scenario(repeat: int) -> None:
    hw, wl = load_profile("dgx-a100"), load_workload("resnet50")
    sc = make_scenario(wl, hw, 64, batch_per_device=32, iterations=20)
    strategy = parse_strategy("sync")
    builds, runs = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ctx = build_context(sc)
        t1 = time.perf_counter()
        trace, stats, _ = simulate_steady(sc, strategy, ctx)
        metrics(trace)
        t2 = time.perf_counter()
        builds.append(t1 - t0)
        runs.append(t2 - t0)
    med = statistics.median(runs)
    print(
        f"(a) ResNet-50, 64 x A100, sync, 20 iterations, representative: median "
        f"{med * 1e3:.1f} ms of {repeat} runs (context {statistics.median(builds) * 1e3:.1f} ms; "
        f"runs {', '.join(f'{r * 1e3:.1f}' for r in runs)} ms; {stats.events:,} events); "
        f"target <= 50 ms: {'OK' if med <= 0.05 else 'MISSED'}"
    )


def sweep(executor: str, workers: int | None) -> None:
    points = len(expand(load_spec(SWEEP)))
    done = [0]

    def progress(n: int, total: int, row: dict | None) -> None:
        done[0] = n

    t0 = time.perf_counter()
    df = run_sweep(SWEEP, executor=executor, n_workers=workers, progress=progress)
    wall = time.perf_counter() - t0
    failed = int(df["error"].notna().sum())
    extended = int((df["iterations_simulated"] > 20).sum())
    cpu = df["wall_s"].sum()
    print(
        f"(b) {points:,}-point sweep on {df.attrs['executor']}: {wall:.1f} s wall "
        f"({points / wall:.1f} points/s; {cpu:.1f} s of simulation summed over points; "
        f"{failed} failed, {extended} ran past 20 iterations to settle); "
        f"target <= 120 s: {'OK' if wall <= 120 else 'MISSED'}"
    )


def explicit(devices: int, profile: bool) -> None:
    hw, wl = load_profile("dgx-a100"), load_workload("resnet50")
    sc = make_scenario(wl, hw, devices, batch_per_device=32, iterations=5, ranks="explicit")
    ctx = build_context(sc)
    prof = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    trace, stats = simulate(sc, parse_strategy("sync"), ctx)
    if prof:
        prof.disable()
    wall = time.perf_counter() - t0
    print(
        f"(c) explicit, {devices:,} ranks, ResNet-50, 5 iterations, sync: {wall:.2f} s, "
        f"{stats.events:,} events ({stats.tasks:,} task instances, {len(trace):,} spans) = "
        f"{stats.events / wall:,.0f} events/s{' (under cProfile)' if prof else ''}"
    )
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
        print(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--executor", default="local", choices=["local", "serial"])
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--explicit-devices", type=int, default=1024)
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-explicit", action="store_true")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    print(f"before: {_load()}")
    single_scenario(args.repeat)
    if not args.skip_sweep:
        sweep(args.executor, args.workers)
    if not args.skip_explicit:
        explicit(args.explicit_devices, args.profile)
    print(f"after: {_load()}")


if __name__ == "__main__":  # Dask's worker processes re-import this module
    main()
