"""Simulator speed: ResNet-50, 20 iterations, every strategy, at 8, 1,024 and 16,384
devices in representative mode, and the explicit-mode event rate.

    python benchmarks/bench_engine.py [--hardware dgx-a100] [--repeat 3]

Prints wall times (best of --repeat, to damp a shared machine's noise), the load average
before and after, and the targets from issue #3: all strategies at 1,024 devices in
<= 2 s; time(16,384) / time(8) <= 1.5; explicit mode >= 300,000 events/s.
Events are task starts, task ends and latency-phase ends processed by the engine.
"""

from __future__ import annotations

import argparse
import os
import time

from hardware_profiles import load_profile
from sim.engine.simulate import build_context, simulate
from sim.model.scenario import make_scenario
from sim.strategies import ALL, parse_strategy
from workloads import load_workload


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def time_all_strategies(
    hw, wl, devices: int, ranks: str = "representative", iterations: int = 20
) -> tuple[float, int]:
    """Wall seconds to simulate every strategy (context building included), and events."""
    t0 = time.perf_counter()
    sc = make_scenario(wl, hw, devices, batch_per_device=32, iterations=iterations, ranks=ranks)
    ctx = build_context(sc)
    events = 0
    for spec in ALL:
        _, stats = simulate(sc, parse_strategy(spec), ctx)
        events += stats.events
    return time.perf_counter() - t0, events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hardware", default="dgx-a100")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--explicit-devices", type=int, default=8)
    args = ap.parse_args()
    hw = load_profile(args.hardware)
    wl = load_workload("resnet50")
    print(f"before: {_load()}")
    print(f"ResNet-50, 20 iterations, {len(ALL)} strategies ({', '.join(ALL)}) on {hw.name}")
    best: dict[int, float] = {}
    for devices in (8, 1024, 16384):
        runs = [time_all_strategies(hw, wl, devices)[0] for _ in range(args.repeat)]
        best[devices] = min(runs)
        print(
            f"  representative, {devices:>6} devices: {best[devices]:.3f} s "
            f"(runs: {', '.join(f'{r:.3f}' for r in runs)})"
        )
    rates = []
    for _ in range(args.repeat):
        wall, events = time_all_strategies(hw, wl, args.explicit_devices, ranks="explicit")
        rates.append((events / wall, events, wall))
    rate, events, wall = max(rates)
    print(
        f"  explicit, {args.explicit_devices} devices: {events:,} events in {wall:.3f} s "
        f"= {rate:,.0f} events/s"
    )
    ratio = best[16384] / best[8]
    print("targets:")
    print(
        f"  all strategies at 1,024 devices <= 2 s: {best[1024]:.3f} s "
        f"{'OK' if best[1024] <= 2 else 'MISSED'}"
    )
    print(f"  time(16,384) / time(8) <= 1.5: {ratio:.2f} {'OK' if ratio <= 1.5 else 'MISSED'}")
    print(f"  explicit >= 300,000 events/s: {rate:,.0f} {'OK' if rate >= 3e5 else 'MISSED'}")
    print(f"after: {_load()}")


if __name__ == "__main__":
    main()
