"""Compare a real, measured data-parallel run with dtsim's prediction of the same scenario.

Measured side (a Trace recorded by :mod:`calibrate.realrun.training`, rank 0), read by
:func:`sim.analysis.breakdown.breakdown` exactly as a simulated Trace is: the mean over
the steady windows after the warm-up (1 + d iterations) of the iteration time, each
compute kind, communication (the union of comm spans); a repeat's figure, then the
median and interquartile range over repeats. Exposed communication is the time the
compute stream waits on communication: in the simulator its idle time, in a real run
the union of the ``wait`` spans (the main thread blocked on a collective; its other
idle time is its polls of MPI's non-blocking collectives and bookkeeping between layers,
reported apart). On a profile whose collectives progress by polling the simulator's idle
time holds its polls too (``poll`` spans): they are taken out of the predicted exposed
time the same way, so both sides count only blocking. Overlap = 1 - exposed /
communication.

The error budget (:func:`error_budget`) sets each component beside its prediction, so
errors that cancel in the iteration time are seen. Each collective's row is the
collective alone, from its last member's call to its first member's return, on both
sides (:func:`sim.analysis.breakdown.breakdown`): rank 0's blocking call also holds its
wait for a later rank, which is skew, not the collective's cost, and is in ``comm`` and
``exposed``.

Predicted side: the same workload (with the per-layer times measured on this machine),
ranks, per-rank batch, plain SGD, simulated with the calibrated profile until it
settles; the simulator's own metrics.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sim.analysis import metrics as M
from sim.analysis.breakdown import Breakdown, breakdown
from sim.engine.trace import Trace
from sim.model.hardware import HardwareProfile
from sim.stats import iqr
from workloads.model import Workload

RESULT_KEYS = (
    "strategy",
    "measured_iteration_time_s",
    "measured_iqr_s",
    "predicted_iteration_time_s",
    "error_fraction",
    "measured_speedup_vs_sync",
    "predicted_speedup_vs_sync",
    "measured_overlap_fraction",
    "predicted_overlap_fraction",
)


@dataclass(frozen=True)
class Measured:
    iteration_s: float
    comm_s: float
    exposed_s: float
    parts: Breakdown | None = None

    @property
    def overlap(self) -> float:
        if self.comm_s <= 0:
            return 1.0
        return max(0.0, min(1.0, 1.0 - self.exposed_s / self.comm_s))


def measured_stats(trace: Trace, rank: int = 0) -> Measured:
    """Steady-state figures of one measured Trace (see the module docstring)."""
    b = breakdown(trace, rank)
    return Measured(iteration_s=b.iteration_s, comm_s=b.comm_s, exposed_s=b.blocked_s, parts=b)


def measured_jitter(workload: Workload, device_model: str) -> float:
    """Per-task noise for the simulator (the coefficient of variation of its
    mean-preserving lognormal jitter, ``jitter_cv``) from the spread the calibration
    measured: each layer's interquartile range / 1.349 (the IQR of a normal distribution
    in σ) over its time, weighted by the layers' times. Ranks whose layers take noisy
    times arrive at a blocking collective at different moments; with jitter the
    simulated ranks do too. Mean-preserving, because the measured times are means
    (:func:`calibrate.measure.compute.expected_time`)."""
    weighted = total = 0.0
    for layer in workload.layers:
        for m in layer.measured.get(device_model, ()):
            t = m.forward_s + m.backward_s
            if t > 0:
                weighted += (m.forward_iqr_s + m.backward_iqr_s) / 1.349
                total += t
    return weighted / total if total else 0.0


def predict(
    hardware: HardwareProfile,
    workload: Workload,
    *,
    ranks: int,
    batch_per_rank: int,
    strategies: Sequence[str],
    iterations: int,
    optimizer: str = "sgd",
) -> dict[str, tuple[M.Metrics, Trace]]:
    """The simulator's metrics and Trace per strategy for the validated scenario."""
    from sim.engine.simulate import simulate_steady
    from sim.model.scenario import make_scenario
    from sim.strategies import parse_strategy

    scenario = make_scenario(
        workload,
        hardware,
        ranks,
        batch_per_device=batch_per_rank,
        iterations=max(iterations, 8),
        optimizer=optimizer,
        ranks="explicit",
        jitter_cv=measured_jitter(workload, hardware.device.model),
        seed=0,
    )
    out = {}
    for name in strategies:
        trace, _, _ = simulate_steady(scenario, parse_strategy(name))
        out[name] = (M.metrics(trace), trace)
    return out


def compare(
    measured: dict[str, list[Measured]], predicted: Mapping[str, tuple[M.Metrics, Trace | None]]
) -> list[dict[str, Any]]:
    """One row per strategy with :data:`RESULT_KEYS` (+ comm figures)."""
    med = {s: statistics.median(m.iteration_s for m in runs) for s, runs in measured.items()}
    pred = {s: predicted[s][0].iteration_time_s for s in measured}
    sync_m = med.get("sync")
    sync_p = pred.get("sync")
    rows = []
    for s, runs in measured.items():
        m_it, p_it = med[s], pred[s]
        pm = predicted[s][0]
        # Blocked on communication, as the measured side counts it (module docstring).
        trace = predicted[s][1]
        parts = breakdown(trace) if trace is not None else None
        polled = parts.polled_s if parts is not None else 0.0
        p_exposed, p_overlap = pm.exposed_comm_s, pm.overlap_fraction
        if polled > 0:
            p_exposed = max(0.0, p_exposed - polled)
            p_overlap = max(0.0, min(1.0, 1.0 - p_exposed / pm.comm_s)) if pm.comm_s > 0 else 1.0
        rows.append(
            {
                "strategy": s,
                "measured_iteration_time_s": m_it,
                "measured_iqr_s": iqr([m.iteration_s for m in runs]),
                "predicted_iteration_time_s": p_it,
                "error_fraction": p_it / m_it - 1 if m_it > 0 else float("nan"),
                "measured_speedup_vs_sync": sync_m / m_it if sync_m else None,
                "predicted_speedup_vs_sync": sync_p / p_it if sync_p else None,
                "measured_overlap_fraction": statistics.median(m.overlap for m in runs),
                "predicted_overlap_fraction": p_overlap,
                "measured_comm_s": statistics.median(m.comm_s for m in runs),
                "predicted_comm_s": pm.comm_s,
                "measured_exposed_s": statistics.median(m.exposed_s for m in runs),
                "predicted_exposed_s": p_exposed,
                "repeats": len(runs),
                "budget": _budget(runs, parts),
            }
        )
    return rows


BUDGET_PARTS = ("forward_s", "backward_s", "update_s", "comm_s", "exposed_s", "iteration_s")


def error_budget(runs: Sequence[Measured], trace: Trace | None) -> list[dict[str, Any]]:
    """Per component: the measured median over repeats and its IQR, the prediction, and
    the error. Components are :data:`BUDGET_PARTS`, then each collective (its mean
    duration, by bucket label), then the time outside every layer and wait (``outside_s``:
    a real run's polls of MPI's non-blocking collectives and its bookkeeping; predicted
    as the simulated polls when the profile's collectives progress by polling).
    Empty without the predicted Trace or the measured breakdowns."""
    return _budget(runs, breakdown(trace) if trace is not None else None)


def _budget(runs: Sequence[Measured], predicted: Breakdown | None) -> list[dict[str, Any]]:
    """:func:`error_budget` from the prediction's breakdown, read once by the caller."""
    parts = [m.parts for m in runs if m.parts is not None]
    if predicted is None or not parts:
        return []
    rows = []

    def row(name: str, values: list[float], p: float | None) -> None:
        med = statistics.median(values)
        rows.append(
            {
                "component": name,
                "measured_s": med,
                "measured_iqr_s": iqr(values),
                "measured_repeats": len(values),  # an IQR needs two or more
                "predicted_s": p,
                "error_fraction": (p / med - 1) if (p is not None and med > 0) else None,
            }
        )

    for name in BUDGET_PARTS:
        pred = getattr(predicted, name)
        if name == "exposed_s":  # blocked on a collective; polling is "outside" below
            pred = max(0.0, pred - predicted.polled_s)
        values = [m.blocked_s if name == "exposed_s" else getattr(m, name) for m in parts]
        row(name, values, pred)
    for label in sorted({k for m in parts for k in m.collectives_s}):
        values = [m.collectives_s[label] for m in parts if label in m.collectives_s]
        row(f"collective {label}", values, predicted.collectives_s.get(label))
    # Outside every layer and wait: a measured run's polls and bookkeeping; predicted only
    # on a profile whose collectives progress by polling (the simulated polls).
    row(
        "outside_s",
        [max(0.0, m.exposed_s - m.blocked_s) for m in parts],
        predicted.polled_s if predicted.polled_s > 0 else None,
    )
    return rows


def same_ranking(rows: list[dict[str, Any]], tolerance: float = 0.0) -> bool:
    """Whether measured and predicted iteration times order the strategies alike.

    Pairs whose measured times differ by no more than ``tolerance`` (relative) or than
    the larger of their interquartile ranges over repeats are ties: the measurement
    cannot order them, so the prediction may too come in either order."""
    for a in rows:
        for b in rows:
            ma, mb = a["measured_iteration_time_s"], b["measured_iteration_time_s"]
            noise = max(a.get("measured_iqr_s", 0.0), b.get("measured_iqr_s", 0.0))
            if abs(ma - mb) <= max(tolerance * max(ma, mb), noise):
                continue
            pa, pb = a["predicted_iteration_time_s"], b["predicted_iteration_time_s"]
            if (ma < mb) != (pa < pb):
                return False
    return True


def compare_trace(
    measured: Trace,
    hardware: HardwareProfile,
    workload: Workload,
    *,
    strategy: str = "bucketed",
    iterations: int = 20,
    optimizer: str = "sgd",
) -> tuple[list[dict[str, Any]], Trace]:
    """:func:`compare`'s row, and the predicted Trace, for a job traced by its own
    profiler (a Trace from :mod:`sim.formats.kineto`; DDP's bucketed all-reduce is
    ``bucketed``) against the prediction of the same scenario: its ranks
    (``meta.devices``), per-rank batch (``meta.batch_per_device``), ``workload``,
    ``hardware`` and ``optimizer``. Nothing runs for real. Every traced rank counts as one
    repeat: the measured figures are the median over ranks (rank 0 alone is what
    ``dtsim validate`` reads of its own runs).

    The prediction is :func:`predict`'s without its jitter: the layer times of a traced
    job are means over its iterations, so they already hold its noise, and the lognormal
    jitter sized from their spread would add it again (on the CPU DDP job of the tests,
    σ = 0.51: forward +11%, and the ranks drifted apart until nothing overlapped)."""
    from sim.engine.simulate import simulate_steady
    from sim.model.scenario import make_scenario
    from sim.strategies import parse_strategy

    ranks = measured.ranks
    if not ranks:
        raise ValueError("the measured trace has no spans")
    if measured.meta.batch_per_device is None:
        raise ValueError("the measured trace's meta has no batch_per_device")
    batch = measured.meta.batch_per_device
    runs = [measured_stats(measured, r) for r in ranks]
    scenario = make_scenario(
        workload,
        hardware,
        measured.meta.devices or len(ranks),
        batch_per_device=batch,
        iterations=max(iterations, 8),
        optimizer=optimizer,
        seed=0,
    )
    trace, _, _ = simulate_steady(scenario, parse_strategy(strategy))
    return compare({strategy: runs}, {strategy: (M.metrics(trace), trace)}), trace
