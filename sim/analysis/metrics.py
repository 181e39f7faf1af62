"""Metrics: pure functions of a Trace.

Iteration t spans from the start of forward(t, first layer) to the start of
forward(t+1, first layer) on rank 0. The reported iteration time is the mean over the
steady windows (see :func:`steady_state`): after ``warmup_iterations``, the last whole
period of a run that repeats with some period p, of any length (collectives of several
iterations that share links finish in bursts, so windows may go short, long, short, ...
or 11 alike then 3 others). Neither a median nor a part of a period is the throughput:
the mean over a whole period is. With jitter, the mean over all windows after warm-up.

Exposed communication is the time the compute stream sits idle inside an iteration
(it only ever waits on communication or on the timers that gate it); overlap
fraction = 1 - exposed / communication.

:func:`metrics` checks every result against the physical lower bounds of
:mod:`sim.analysis.bounds` before returning it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sim.engine.trace import Trace

COMPUTE_KINDS = ("forward", "backward", "update")
# Kinds that count as communication: collectives, and the timers that hold gradients
# back before a collective (Horovod's cycle).
COMM_KINDS = ("comm", "wait")
# Without jitter the engine is deterministic, so a settled run repeats exactly, up to float
# noise (about 1e-13 of a window: instants of up to ~1e3 s, windows of ~1e3 s / iterations)
# or an oscillation that dies out geometrically (links shared by collectives of several
# iterations); two iterations p apart must agree within this fraction of the mean window.
# Tight, so that the last period's mean is within float noise of the limit that the
# physical bounds (sim.analysis.bounds, 1e-9) hold for.
PERIOD_RTOL = 1e-10
# With jitter nothing repeats: the run has settled when the two halves of the windows
# after warm-up agree (mean window, and mean lag of the iterations' work) within this.
JITTER_STEADY_TOLERANCE = 0.05
JITTER_BLOCK_PERIODS = 5  # with jitter, each half holds at least this many channel periods


Window = tuple[int, float, float]  # (iteration, start_s, end_s)


@dataclass(frozen=True)
class Metrics:
    strategy: str
    iteration_time_s: float
    throughput_samples_per_s: float
    comm_s: float
    exposed_comm_s: float
    overlap_fraction: float
    compute_s: float
    peak_memory_bytes: float
    memory_exceeds_device: bool
    steady: bool  # whether the run settled (see is_steady); if not, run more iterations

    def as_dict(self) -> dict:
        return asdict(self)


def _first_layer_starts(trace: Trace, rank: int) -> dict[int, float]:
    starts: dict[int, float] = {}
    for s in trace.spans:
        if s.rank == rank and s.kind == "forward":
            if s.iteration not in starts or s.start_s < starts[s.iteration]:
                starts[s.iteration] = s.start_s
    return starts


def iteration_windows(trace: Trace, rank: int = 0) -> list[Window]:
    """(iteration, start, end) for every iteration that has a successor."""
    starts = _first_layer_starts(trace, rank)
    its = sorted(starts)
    return [(t, starts[t], starts[t + 1]) for t in its if t + 1 in starts]


@dataclass(frozen=True)
class SteadyState:
    """The windows every figure averages over, and whether they are a steady state.

    settled: without jitter, ``windows`` are the last period (``period`` iterations),
    which repeats the period before it; with jitter, the two halves of the windows after
    warm-up agree, and ``windows`` are all of them. When not settled, ``windows`` are
    all those after warm-up (the tail of the run), and ``period`` is 0.
    """

    windows: tuple[Window, ...]
    settled: bool
    period: int


def _ends(trace: Trace, rank: int, its: set[int]) -> dict[int, tuple[float, float]]:
    """Per iteration in ``its``, (latest end, mean end) of its spans on ``rank``."""
    last: dict[int, float] = {}
    total: dict[int, float] = {}
    count: dict[int, int] = {}
    for s in trace.spans:
        t = s.iteration
        if s.rank == rank and t in its:
            if s.end_s > last.get(t, -np.inf):
                last[t] = s.end_s
            total[t] = total.get(t, 0.0) + s.end_s
            count[t] = count.get(t, 0) + 1
    return {t: (last[t], total[t] / count[t]) for t in last}


def _trailing_period(rows: np.ndarray, tol: float, step: int = 1) -> int:
    """The smallest multiple p of ``step`` (the schedule's own period) such that the last
    p rows repeat the p before them (each within ``tol`` of the row p earlier); 0 if
    there is none. A shorter p can look repeated inside one period of the schedule
    (local-sgd:4's three iterations between averages) without being its steady state."""
    for p in range(step, len(rows) // 2 + 1, step):
        if np.all(np.abs(rows[-p:] - rows[-2 * p : -p]) <= tol):
            return p
    return 0


def steady_state(trace: Trace, rank: int = 0) -> SteadyState:
    """The steady windows of ``rank`` after ``meta.warmup_iterations`` (1 if absent).

    Each iteration is described by its window and by when its work ends relative to its
    start (latest and mean end of its spans): equal windows are not enough, since while
    a delay's backlog of collectives grows, the windows stay at the compute time and
    only the lag of the collectives shows that the run has not settled (BERT-large on a
    10 Gb/s NIC under ``delayed:2``: windows of 496.5 ms while each iteration's
    all-reduce needs 508.3 ms of the link). Iterations whose spans end after the last
    iteration starts are left out: the run's end, not the steady state, shaped them.

    Without jitter the engine is deterministic and a settled run repeats exactly: find
    the smallest period p (any length) such that the last p descriptions repeat the p
    before them within :data:`PERIOD_RTOL`; the steady windows are the last p. (Only
    the last: where an oscillation dies out geometrically, older periods are further
    from the limit, and averaging them in put a comm-bound run 1.4e-8 below its link's
    work.) With jitter
    nothing repeats (nor in a measured Trace, ``meta.measured``): the run has settled
    when the two halves of the windows after
    warm-up agree within :data:`JITTER_STEADY_TOLERANCE` (mean window and mean lag), and
    all of them are the steady windows: the tail of a long run.
    """
    windows = iteration_windows(trace, rank)
    warm = 1 if trace.meta.warmup_iterations is None else trace.meta.warmup_iterations
    after = [w for w in windows if w[0] >= warm]
    if not after:
        return SteadyState(tuple(windows), False, 0)
    last_start = max(_first_layer_starts(trace, rank).values())
    ends = _ends(trace, rank, {t for t, _, _ in after})
    usable: list[Window] = []
    for w in after:
        if w[0] not in ends or ends[w[0]][0] > last_start:
            break
        usable.append(w)
    if not usable:
        return SteadyState(tuple(after), False, 0)
    # Per iteration: its window, and the lags of its latest and mean end after its start.
    rows = np.array([(hi - lo, ends[t][0] - lo, ends[t][1] - lo) for t, lo, hi in usable])
    mean_window = float(rows[:, 0].mean())
    if trace.meta.jitter or trace.meta.measured:  # noisy: nothing repeats
        half = len(rows) // 2
        block = JITTER_BLOCK_PERIODS * max(1, trace.meta.period or 1)
        if half < block:
            return SteadyState(tuple(after), False, 0)
        first, second = rows[:half].mean(axis=0), rows[-half:].mean(axis=0)
        gap = np.abs(first - second)[[0, 2]]
        return SteadyState(
            tuple(after), bool(np.all(gap <= JITTER_STEADY_TOLERANCE * mean_window)), 0
        )
    p = _trailing_period(rows, PERIOD_RTOL * mean_window, max(1, trace.meta.period or 1))
    if not p:
        return SteadyState(tuple(after), False, 0)
    return SteadyState(tuple(usable[-p:]), True, p)


def is_steady(trace: Trace, rank: int = 0) -> bool:
    """Whether the run has settled (see :func:`steady_state`).

    A delay's pipeline (and, when communication outlasts compute, its backlog) takes
    longer than 1 + d iterations to fill; until it does, windows are too short.
    """
    return steady_state(trace, rank).settled


def steady_windows(trace: Trace, rank: int = 0) -> list[Window]:
    """The windows the figures average over (see :func:`steady_state`)."""
    return list(steady_state(trace, rank).windows)


def _mean_window_s(windows: Sequence[Window]) -> float:
    return (windows[-1][2] - windows[0][1]) / len(windows)


def iteration_time_s(trace: Trace, rank: int = 0) -> float:
    """Mean steady-state iteration time; with one iteration, the whole run."""
    windows = steady_windows(trace, rank)
    return _mean_window_s(windows) if windows else makespan_s(trace)


def makespan_s(trace: Trace) -> float:
    return max((s.end_s for s in trace.spans), default=0.0)


def _per_iteration(trace: Trace, rank: int, kinds: tuple[str, ...]) -> dict[int, float]:
    out: dict[int, float] = {}
    for s in trace.spans:
        if s.rank == rank and s.kind in kinds:
            out[s.iteration] = out.get(s.iteration, 0.0) + s.duration_s
    return out


def union_in(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of sorted ``intervals`` clipped to [lo, hi]."""
    total = 0.0
    cur_start = cur_end = -1.0
    for b, e in intervals:
        b, e = max(b, lo), min(e, hi)
        if e <= b:
            continue
        if b > cur_end:
            total += cur_end - cur_start
            cur_start, cur_end = b, e
        elif e > cur_end:
            cur_end = e
    return total + (cur_end - cur_start)


def comm_time_s(trace: Trace, rank: int = 0, windows: Sequence[Window] | None = None) -> float:
    """Mean over steady iterations of the time some collective is in progress.

    Concurrent collectives (d channels) count once: their spans are merged, so this is
    the communication the iteration has to hide, whichever iteration it belongs to.
    Timer waits before a collective (Horovod's cycle) are included; :func:`cycle_wait_s`
    is their part.
    """
    windows = steady_windows(trace, rank) if windows is None else windows
    comm = sorted(
        (s.start_s, s.end_s) for s in trace.spans if s.rank == rank and s.kind in COMM_KINDS
    )
    if not windows:
        return union_in(comm, 0.0, makespan_s(trace))
    return statistics.fmean(union_in(comm, lo, hi) for _, lo, hi in windows)


def cycle_wait_s(trace: Trace, rank: int = 0, windows: Sequence[Window] | None = None) -> float:
    """Mean over steady iterations of the time only timers hold gradients back (Horovod's
    cycle waits, ``wait`` spans) while no collective runs.

    :func:`comm_time_s` counts these waits as communication, since the gradients are in
    the communication pipeline; ``comm_time_s - cycle_wait_s`` is the collectives alone
    (ResNet-50 on 64 A100s under horovod: most of its comm is waiting for a tick).
    """
    windows = steady_windows(trace, rank) if windows is None else windows
    mine = [s for s in trace.spans if s.rank == rank and s.kind in COMM_KINDS]
    if not any(s.kind == "wait" for s in mine):
        return 0.0
    both = sorted((s.start_s, s.end_s) for s in mine)
    collectives = sorted((s.start_s, s.end_s) for s in mine if s.kind == "comm")
    if not windows:
        hi = makespan_s(trace)
        return union_in(both, 0.0, hi) - union_in(collectives, 0.0, hi)
    return statistics.fmean(
        union_in(both, lo, hi) - union_in(collectives, lo, hi) for _, lo, hi in windows
    )


def exposed_comm_s(trace: Trace, rank: int = 0, windows: Sequence[Window] | None = None) -> float:
    """Mean over steady iterations of the compute stream's idle time in the window."""
    windows = steady_windows(trace, rank) if windows is None else windows
    if not windows:
        busy = sum(s.duration_s for s in trace.spans if s.kind in COMPUTE_KINDS)
        return max(0.0, makespan_s(trace) - busy)
    compute = sorted(
        (s.start_s, s.end_s) for s in trace.spans if s.rank == rank and s.kind in COMPUTE_KINDS
    )
    idle = []
    for _, lo, hi in windows:
        busy = sum(min(e, hi) - max(b, lo) for b, e in compute if e > lo and b < hi)
        idle.append(max(0.0, (hi - lo) - busy))
    return statistics.fmean(idle)


def compute_time_s(trace: Trace, rank: int = 0, windows: Sequence[Window] | None = None) -> float:
    per = _per_iteration(trace, rank, COMPUTE_KINDS)
    windows = steady_windows(trace, rank) if windows is None else windows
    its = [t for t, _, _ in windows] or sorted(per)
    values = [per.get(t, 0.0) for t in its]
    return statistics.fmean(values) if values else 0.0


def peak_memory_bytes(trace: Trace) -> float:
    return max((m.bytes_in_use for m in trace.memory), default=0.0)


def metrics(trace: Trace) -> Metrics:
    """Every figure of one run, after checking it against the physical lower bounds
    (:func:`sim.analysis.bounds.check_bounds` raises PhysicalBoundError if one breaks):
    this is the one place a result is made from a Trace, so no result escapes the check.
    """
    from sim.analysis.bounds import check_bounds  # bounds reads this module's windows

    steady = steady_state(trace)
    check_bounds(trace, steady)
    windows = steady.windows
    it = _mean_window_s(windows) if windows else makespan_s(trace)
    comm = comm_time_s(trace, windows=windows)
    exposed = exposed_comm_s(trace, windows=windows)
    overlap = 1.0 if comm <= 0 else max(0.0, min(1.0, 1.0 - exposed / comm))
    peak = peak_memory_bytes(trace)
    if trace.meta.global_batch is None:
        raise ValueError("the Trace's meta has no global_batch: no throughput to give")
    batch = float(trace.meta.global_batch)
    device_memory = trace.meta.device_memory_bytes
    return Metrics(
        strategy=trace.meta.strategy or "",
        iteration_time_s=it,
        throughput_samples_per_s=batch / it if it > 0 else 0.0,
        comm_s=comm,
        exposed_comm_s=exposed,
        overlap_fraction=overlap,
        compute_s=compute_time_s(trace, windows=windows),
        peak_memory_bytes=peak,
        memory_exceeds_device=device_memory is not None and peak > device_memory,
        steady=steady.settled,
    )
