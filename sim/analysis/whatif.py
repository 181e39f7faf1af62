"""What-if: every requested strategy on one scenario, compared with sync and one device."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sim.analysis.metrics import Metrics, cycle_wait_s, metrics
from sim.engine.simulate import build_context, simulate_steady
from sim.engine.trace import Trace
from sim.model.scenario import Scenario
from sim.model.topology import make_placement
from sim.strategies import parse_strategy
from sim.strategies.base import Strategy
from sim.units import fmt_time

RESULT_KEYS = (
    "strategy",
    "iteration_time_s",
    "throughput_samples_per_s",
    "speedup_vs_sync",
    "parallel_efficiency",
    "comm_s",
    "exposed_comm_s",
    "overlap_fraction",
    "peak_memory_bytes",
)


def single_device_time_s(scenario: Scenario) -> float:
    """Iteration time of one device on the same per-device batch: no communication.

    With per-task jitter the one device draws the same noise (same jitter, same seed,
    explicit ranks): a jittered cluster compared with a noiseless device could come out
    "faster than one device" by chance (the fuzz suite found 100.1% on one jittered
    device). Slow ranks, nodes and NICs belong to the cluster and are left out."""
    jittered = scenario.ranks == "explicit" and (scenario.jitter or scenario.jitter_cv)
    one = dataclasses.replace(
        scenario,
        devices=1,
        placement=make_placement(scenario.hardware, 1, 1),
        ranks="explicit" if jittered else "representative",
        jitter=scenario.jitter if jittered else 0.0,
        jitter_cv=scenario.jitter_cv if jittered else 0.0,
        slow_ranks=(),
        slow_nics=(),
    )
    trace, _, _ = simulate_steady(one, parse_strategy("sync"))
    return metrics(trace).iteration_time_s


def run_whatif(
    scenario: Scenario,
    strategies: Sequence[Strategy],
    progress: Callable[[str], None] | None = None,
    traces: dict[str, Trace] | None = None,
) -> list[dict]:
    """Results sorted by iteration time; each row has :data:`RESULT_KEYS` and more.
    ``traces``, if given, receives each strategy's Trace (the run its row came from)."""
    ctx = build_context(scenario)
    baseline = parse_strategy("sync")
    runs: list[tuple[Strategy, Metrics, int]] = []
    waits: dict[str, float] = {}
    sync_time = None
    for strategy in strategies:
        if progress:
            progress(strategy.name)
        trace, _, iterations = simulate_steady(scenario, strategy, ctx)
        m = metrics(trace)
        runs.append((strategy, m, iterations))
        waits[strategy.name] = cycle_wait_s(trace)
        if traces is not None:
            traces[strategy.name] = trace
        if strategy.name == "sync":
            sync_time = m.iteration_time_s
    if sync_time is None:
        trace, _, _ = simulate_steady(scenario, baseline, ctx)
        sync_time = metrics(trace).iteration_time_s
    t1 = single_device_time_s(scenario)
    rows = []
    for strategy, m, iterations in runs:
        it = m.iteration_time_s
        rows.append(
            {
                "strategy": strategy.name,
                "iteration_time_s": it,
                "throughput_samples_per_s": m.throughput_samples_per_s,
                "speedup_vs_sync": sync_time / it if it > 0 else 0.0,
                # Time per sample on one device / (time per sample on N devices x N).
                "parallel_efficiency": t1 / it if it > 0 else 0.0,
                "comm_s": m.comm_s,
                "exposed_comm_s": m.exposed_comm_s,
                # The part of comm_s where only a cycle timer (Horovod) holds gradients.
                "cycle_wait_s": waits[strategy.name],
                "overlap_fraction": m.overlap_fraction,
                "peak_memory_bytes": m.peak_memory_bytes,
                "compute_s": m.compute_s,
                "memory_exceeds_device": m.memory_exceeds_device,
                "staleness": strategy.staleness,
                "update_rule": strategy.update_rule,
                "iterations_simulated": iterations,
                "steady": m.steady,
                # Each device runs only part of the optimizer update (servers, shards).
                "update_shared": not strategy.workers_hold_optimizer_state
                or strategy.state_share(ctx).optimizer_state < 1,
            }
        )
    rows.sort(key=lambda r: (r["iteration_time_s"], r["strategy"]))
    return rows


def recommend(rows: list[dict], scenario: Scenario) -> str:
    """One line: the strategy to use, and why.

    Among the strategies that settled (a run that has not is an estimate, never a
    recommendation), fit in device memory and are within 1% of the fastest, the one
    with the least gradient staleness, then the least memory: a delay that buys
    nothing measurable is not worth its convergence risk.
    """
    unsettled = [r["strategy"] for r in rows if not r["steady"]]
    excluded = (
        f" ({', '.join(unsettled)} not considered: not settled, so only an estimate)"
        if unsettled
        else ""
    )
    settled = [r for r in rows if r["steady"]]
    if not settled:
        return (
            "No recommendation: no strategy settled to a steady state within the iterations "
            "simulated, so every figure is an estimate; raise --iterations."
        )
    fitting = [r for r in settled if not r["memory_exceeds_device"]]
    if not fitting:
        return (
            "No strategy fits in device memory at this batch; lower the per-device batch "
            f"or use a larger device{excluded}."
        )
    fastest = fitting[0]["iteration_time_s"]
    near = [r for r in fitting if r["iteration_time_s"] <= fastest * 1.01]
    best = min(near, key=lambda r: (r["staleness"], r["peak_memory_bytes"], r["iteration_time_s"]))
    sync = next((r for r in rows if r["strategy"] == "sync"), None)
    hidden = (
        f"{best['overlap_fraction']:.0%} of its {best['comm_s'] * 1e3:.2f} ms communication hidden"
        if best["comm_s"] > 0
        else "no communication"
    )
    why = (
        f"{best['iteration_time_s'] * 1e3:.2f} ms per iteration, {hidden}, "
        f"parallel efficiency {best['parallel_efficiency']:.0%}"
    )
    if sync is not None and best["strategy"] != "sync":
        why += f", {best['speedup_vs_sync']:.2f}x sync"
    note = ""
    name = best["strategy"]
    if best["staleness"] > 0:
        note = (
            "; it applies stale gradients, so check that convergence holds "
            "(time-to-accuracy, not only time per iteration)"
        )
    close = [r["strategy"] for r in near if r is not best]
    if close:
        note += f"; within 1%: {', '.join(close)}"
    return f"Use {name}: {why}{note}{excluded}."


def run_notes(rows: list[dict], scenario: Scenario) -> list[str]:
    """What the reader should know about how the numbers were obtained."""
    notes = []
    longer = [
        f"{r['strategy']} ({r['iterations_simulated']})"
        for r in rows
        if r["iterations_simulated"] > scenario.iterations and r["steady"]
    ]
    if longer:
        notes.append(
            f"ran more than --iterations {scenario.iterations} to reach steady state: "
            + ", ".join(longer)
        )
    unsettled = [r["strategy"] for r in rows if not r["steady"]]
    if unsettled:
        notes.append(
            "not settled even after extending the run (iteration times still drift); "
            "treat these as estimates: " + ", ".join(unsettled)
        )
    above = [r for r in rows if r["parallel_efficiency"] > 1 + 1e-9]
    shared = [r["strategy"] for r in above if r["update_shared"]]
    if shared:
        notes.append(
            f"parallel efficiency above 100% for {', '.join(shared)}: each device runs only "
            "its share of the optimizer update (sharded optimizer state, or servers that "
            "update for the workers), which one device runs whole"
        )
    noisy = [r["strategy"] for r in above if not r["update_shared"]]
    if noisy and scenario.has_stragglers:
        notes.append(
            f"parallel efficiency above 100% for {', '.join(noisy)} is jitter's noise: its "
            "tasks draw other random times than the one-device run's (same seed); treat "
            "efficiencies within a few percent of 100% as equal"
        )
    return notes


def polling_notes(traces: Mapping[str, Trace], scenario: Scenario) -> list[str]:
    """On a profile whose collectives progress by polling, what that means for the table
    and each strategy's polling time per iteration (its ``poll`` spans)."""
    hw = scenario.hardware
    if hw.comm_progress != "polled":
        return []
    from sim.analysis.breakdown import breakdown

    polls = []
    for name, trace in traces.items():
        try:
            polled = breakdown(trace).polled_s
        except ValueError:  # fewer than two iterations: no steady window
            continue
        if polled > 0:
            polls.append(f"{name} {fmt_time(polled)}")
    text = (
        "collectives progress only in the computing thread's polls between layers (profile "
        "comm_progress: polled): their work runs on that thread, at the poll after a layer "
        f"{hw.poll_work_factor:g}x their time alone, while it waits (sync) their time alone, "
        f"and compute runs at 1/(1 + {hw.interference_factor:g}) while one is in flight; the "
        "polls count as exposed communication, and the overlap column counts a collective's "
        "time in flight between polls (nothing advances then) as hidden"
    )
    if polls:
        text += "; polling per iteration: " + ", ".join(polls)
    return [text]


# -- time to accuracy -------------------------------------------------------------------------
TTA_KEYS = ("iterations_to_target", "time_to_target_s", "speedup_to_target_vs_sync")


def convergence_entry(strategy: str, update_rule: str, table: Mapping[str, Any]) -> Any:
    """The convergence figures that apply to ``strategy``: its own entry, else the entry
    of its update rule (:attr:`sim.strategies.base.Strategy.update_rule`). Strategies that
    wait for iteration t's updates before forward(t+1) (layerwise, bucketed, horovod,
    priority, ps) do sync's arithmetic; async-layerwise:d does delayed:d's
    (calibrate/convergence/runs.py shows why); local-sgd:k has its own."""
    if strategy in table:
        return table[strategy]
    names = ("sync", "delayed:0") if update_rule == "sync" else (update_rule,)
    return next((table[n] for n in names if n in table), None)


def add_time_to_accuracy(rows: list[dict], iterations: Mapping[str, float | None]) -> list[dict]:
    """Rows with :data:`TTA_KEYS` added: iterations to the target accuracy (median over
    seeds, from a convergence run; None if it was not reached or not measured), time to
    target = iterations x predicted iteration time, and speedup in time to target vs
    sync. Sorted by time to target (unknown last)."""
    out = []
    for r in rows:
        its = convergence_entry(r["strategy"], r["update_rule"], iterations)
        tta = its * r["iteration_time_s"] if its is not None else None
        out.append({**r, "iterations_to_target": its, "time_to_target_s": tta})
    sync = next((r for r in out if r["strategy"] == "sync"), None)
    base = sync["time_to_target_s"] if sync else None
    for r in out:
        t = r["time_to_target_s"]
        r["speedup_to_target_vs_sync"] = base / t if (base and t) else None
    return sorted(out, key=lambda r: (r["time_to_target_s"] is None, r["time_to_target_s"] or 0))


def recommend_time_to_accuracy(rows: list[dict], target: float | None = None) -> str:
    """The strategy that reaches the target accuracy soonest (among those that settled,
    fit in memory and reached it), with its margin; rows from :func:`add_time_to_accuracy`.
    A run that has not settled is an estimate, never a recommendation."""
    ok = [
        r
        for r in rows
        if r["time_to_target_s"] is not None
        and not r["memory_exceeds_device"]
        and r.get("steady", True)
    ]
    goal = f"accuracy {target:g}" if target is not None else "the target accuracy"
    if not ok:
        if any(r["time_to_target_s"] is not None and not r.get("steady", True) for r in rows):
            return f"No recommendation: the strategies that reached {goal} have not settled."
        return f"No strategy reached {goal} in the convergence runs; run them longer."
    best = min(ok, key=lambda r: (r["time_to_target_s"], r["staleness"]))
    why = (
        f"reaches {goal} in {best['time_to_target_s']:.3g} s "
        f"({best['iterations_to_target']:g} iterations x {best['iteration_time_s'] * 1e3:.2f} ms)"
    )
    if best["speedup_to_target_vs_sync"] and best["strategy"] != "sync":
        why += f", {best['speedup_to_target_vs_sync']:.2f}x sync"
    others = [r for r in ok if r is not best]
    if others:
        nxt = min(others, key=lambda r: r["time_to_target_s"])
        margin = nxt["time_to_target_s"] / best["time_to_target_s"] - 1
        why += f"; next: {nxt['strategy']} ({margin:+.1%} slower)"
    return f"Use {best['strategy']} (optimising time to accuracy, not time per iteration): {why}."


# -- extrapolated collectives -----------------------------------------------------------------
def extrapolation_notes(runs: Iterable[Trace | Mapping[str, Any]]) -> list[str]:
    """Notes on the collectives a measured table costed outside its sizes: empty when none.

    ``runs``: Traces (read from ``meta.extrapolated_collectives``, written by
    ``simulate``) or rows/dicts carrying an ``"extrapolated_collectives"`` list of
    ``{"op", "bytes", "nearest_measured_bytes", "factor"}``. Sizes several runs share are
    noted once. At most two lines: above the table (the time grows from the largest
    measured size at a measured rate, a guess the further it goes) and below it (between
    the fit's latency and the smallest measured size).
    """
    from sim.units import fmt_bytes

    def _factor(f: float) -> str:  # 1.0005 must not print as "1x"
        short = f"{f:.3g}"
        return f"{short if short != '1' else f'{f:.6g}'}x"

    seen: dict[tuple[str, float], Mapping[str, Any]] = {}
    for run in runs:
        entries = (
            [e.as_dict() for e in run.meta.extrapolated_collectives or ()]
            if isinstance(run, Trace)
            else run.get("extrapolated_collectives", ())
        )
        for e in entries or ():
            seen.setdefault((e["op"], e["bytes"]), e)
    notes = []
    above = sorted((e for e in seen.values() if e["factor"] > 1), key=lambda e: e["bytes"])
    if above:
        top = above[-1]
        sizes = ", ".join(f"{fmt_bytes(e['bytes'])} ({_factor(e['factor'])})" for e in above[-3:])
        measure_to = 1 << math.ceil(math.log2(top["bytes"]))
        notes.append(
            f"extrapolated beyond the profile's measured table (largest measured size "
            f"{fmt_bytes(top['nearest_measured_bytes'])}): {len(above)} collective size(s), "
            f"{'the largest ' if len(above) > 3 else ''}{sizes}; measure up to "
            f"{fmt_bytes(measure_to)} (`dtsim calibrate comm --sizes MIN:MAX`) to replace "
            "the guess"
        )
    below = [e for e in seen.values() if e["factor"] < 1]
    if below:
        low = min(below, key=lambda e: e["factor"])
        notes.append(
            f"{len(below)} collective size(s) below the profile's smallest measured size "
            f"({fmt_bytes(low['nearest_measured_bytes'])}) are costed between the fitted "
            f"latency and that size's time (down to {_factor(low['factor'])} it)"
        )
    return notes
