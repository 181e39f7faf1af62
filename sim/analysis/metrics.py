"""Metrics: pure functions of a Trace.

Iteration t spans from the start of forward(t, first layer) to the start of
forward(t+1, first layer) on rank 0. Steady state drops ``warmup_iterations`` and
averages over a whole number of ``period`` iterations: with d channels (``delayed:d``)
the collectives of d iterations share the links and finish in bursts, so consecutive
windows alternate (long, short, ...) and neither a median nor a partial period is the
throughput; the mean over whole periods is.

Exposed communication is the time the compute stream sits idle inside an iteration
(it only ever waits on communication or on the timers that gate it); overlap
fraction = 1 - exposed / communication.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

from sim.engine.trace import Trace

COMPUTE_KINDS = ("forward", "backward", "update")
# Kinds that count as communication: collectives, and the timers that hold gradients
# back before a collective (Horovod's cycle).
COMM_KINDS = ("comm", "wait")
STEADY_TOLERANCE = 0.01  # relative agreement of period means that counts as settled
JITTER_STEADY_TOLERANCE = 0.05
JITTER_BLOCK_PERIODS = 5  # with jitter, a block is this many periods


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


def iteration_windows(trace: Trace, rank: int = 0) -> list[tuple[int, float, float]]:
    """(iteration, start, end) for every iteration that has a successor."""
    starts = _first_layer_starts(trace, rank)
    its = sorted(starts)
    return [(t, starts[t], starts[t + 1]) for t in its if t + 1 in starts]


def _steady_blocks(trace: Trace, rank: int) -> list[list[tuple[int, float, float]]]:
    """Trailing blocks of ``period`` windows after warm-up whose mean agrees with the
    last block's (within ``STEADY_TOLERANCE``, wider with jitter)."""
    windows = iteration_windows(trace, rank)
    warm = int(trace.meta.get("warmup_iterations", 1))
    period = max(1, int(trace.meta.get("period", 1)))
    if trace.meta.get("jitter"):
        # With per-task noise one window is a noisy sample: compare means over blocks of
        # several periods, else the trailing "agreeing" blocks are a biased few.
        period *= JITTER_BLOCK_PERIODS
    after = [w for w in windows if w[0] >= warm]
    full = len(after) - len(after) % period
    blocks = [
        after[len(after) - full + i : len(after) - full + i + period]
        for i in range(0, full, period)
    ]
    if not blocks:
        return []
    tol = STEADY_TOLERANCE if not trace.meta.get("jitter") else JITTER_STEADY_TOLERANCE

    def mean(block: list[tuple[int, float, float]]) -> float:
        return (block[-1][2] - block[0][1]) / len(block)

    last = mean(blocks[-1])
    kept = [blocks[-1]]
    for block in reversed(blocks[:-1]):
        if abs(mean(block) - last) > tol * last:
            break
        kept.insert(0, block)
    return kept


def is_steady(trace: Trace, rank: int = 0) -> bool:
    """Whether at least two whole periods after warm-up agree: the run has settled.

    A delay's pipeline (and, when communication outlasts compute, its backlog) takes
    longer than 1 + d iterations to fill; until it does, windows are too short.
    """
    return len(_steady_blocks(trace, rank)) >= 2


def steady_windows(trace: Trace, rank: int = 0) -> list[tuple[int, float, float]]:
    """The settled windows (see :func:`is_steady`); if none, whatever windows there are."""
    blocks = _steady_blocks(trace, rank)
    if blocks:
        return [w for block in blocks for w in block]
    windows = iteration_windows(trace, rank)
    warm = int(trace.meta.get("warmup_iterations", 1))
    return [w for w in windows if w[0] >= warm] or windows


def iteration_time_s(trace: Trace, rank: int = 0) -> float:
    """Mean steady-state iteration time; with one iteration, the whole run."""
    windows = steady_windows(trace, rank)
    if not windows:
        return makespan_s(trace)
    return (windows[-1][2] - windows[0][1]) / len(windows)


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


def comm_time_s(trace: Trace, rank: int = 0) -> float:
    """Mean over steady iterations of the time some collective is in progress.

    Concurrent collectives (d channels) count once: their spans are merged, so this is
    the communication the iteration has to hide, whichever iteration it belongs to.
    """
    windows = steady_windows(trace, rank)
    comm = sorted(
        (s.start_s, s.end_s) for s in trace.spans if s.rank == rank and s.kind in COMM_KINDS
    )
    if not windows:
        return union_in(comm, 0.0, makespan_s(trace))
    return statistics.fmean(union_in(comm, lo, hi) for _, lo, hi in windows)


def exposed_comm_s(trace: Trace, rank: int = 0) -> float:
    """Mean over steady iterations of the compute stream's idle time in the window."""
    windows = steady_windows(trace, rank)
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


def compute_time_s(trace: Trace, rank: int = 0) -> float:
    per = _per_iteration(trace, rank, COMPUTE_KINDS)
    its = [t for t, _, _ in steady_windows(trace, rank)] or sorted(per)
    values = [per.get(t, 0.0) for t in its]
    return statistics.fmean(values) if values else 0.0


def peak_memory_bytes(trace: Trace) -> float:
    return max((m.bytes_in_use for m in trace.memory), default=0.0)


def metrics(trace: Trace) -> Metrics:
    it = iteration_time_s(trace)
    comm = comm_time_s(trace)
    exposed = exposed_comm_s(trace)
    overlap = 1.0 if comm <= 0 else max(0.0, min(1.0, 1.0 - exposed / comm))
    peak = peak_memory_bytes(trace)
    return Metrics(
        strategy=str(trace.meta.get("strategy", "")),
        iteration_time_s=it,
        throughput_samples_per_s=float(trace.meta["global_batch"]) / it if it > 0 else 0.0,
        comm_s=comm,
        exposed_comm_s=exposed,
        overlap_fraction=overlap,
        compute_s=compute_time_s(trace),
        peak_memory_bytes=peak,
        memory_exceeds_device=peak > float(trace.meta.get("device_memory_bytes", float("inf"))),
        steady=is_steady(trace),
    )
