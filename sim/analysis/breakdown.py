"""Where an iteration goes, component by component, for a simulated or a measured Trace.

The error budget of ``dtsim validate`` reads both sides through this one function, with
the definitions of :mod:`sim.analysis.metrics`: the steady windows, communication as the
union of comm spans, exposed communication as the compute stream's idle time in a
window. Per window (then the mean over the steady windows):

- ``forward_s``, ``backward_s``, ``update_s``: the compute spans of each kind;
- ``comm_s`` and ``exposed_s``: as :func:`sim.analysis.metrics.comm_time_s` and
  :func:`~sim.analysis.metrics.exposed_comm_s`;
- ``blocked_s``: the union of ``wait`` spans of a measured run (its main thread blocked
  on a collective); in a measured run ``exposed_s - blocked_s`` is time spent outside
  every layer and every wait (framework bookkeeping), which a simulation has only as
  the calibrated time folded into the last layer's forward;
- ``polled_s``: the union of ``poll`` spans of a simulated run on a profile whose
  collectives progress by polling (``comm_progress: polled``): the thread's time in the
  polls between layers, which a measured run shows as time outside every layer and wait;
- ``collectives_s``: the mean duration of one collective, by its label (bucket name),
  from its last member's start to its first member's end. The ranks of a real run
  call a collective at different moments, and a blocking call's span on the rank that
  came first holds its wait for the others (its skew, not the collective's cost: on
  this project's VM, 0.4-1.1 ms of mlp's 2-3 ms all-reduce on the earlier rank). In
  the simulator a collective starts on every member when the last arrives, so there
  this is the span's duration. The wait stays in ``comm_s`` and the exposed time.
  A real rank sees a non-blocking collective complete only in a poll (a ``Test`` between
  layers, or its ``Wait``). So in a simulated trace whose collectives progress by
  polling (``poll`` spans), a collective's first return is :func:`seen_complete`, not
  its simulated end.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from sim.analysis import metrics as M
from sim.engine.trace import Trace

COMPONENTS = ("iteration_s", "forward_s", "backward_s", "update_s", "comm_s", "exposed_s")


@dataclass(frozen=True)
class Breakdown:
    iteration_s: float
    forward_s: float
    backward_s: float
    update_s: float
    comm_s: float
    exposed_s: float
    blocked_s: float
    polled_s: float = 0.0
    collectives_s: dict[str, float] = field(default_factory=dict)


def breakdown(trace: Trace, rank: int = 0) -> Breakdown:
    """The mean steady-state iteration of ``rank``, split into its components."""
    windows = M.steady_windows(trace, rank)
    if not windows:
        raise ValueError("the trace has fewer than two iterations on this rank")
    mine = [s for s in trace.spans if s.rank == rank]
    per_kind: dict[str, list[float]] = {k: [] for k in ("forward", "backward", "update")}
    blocked = []
    polled = []
    waits = sorted((s.start_s, s.end_s) for s in mine if s.kind == "wait")
    polls = sorted((s.start_s, s.end_s) for s in mine if s.kind == "poll")
    for _, lo, hi in windows:
        for kind, values in per_kind.items():
            values.append(
                sum(
                    min(s.end_s, hi) - max(s.start_s, lo)
                    for s in mine
                    if s.kind == kind and s.end_s > lo and s.start_s < hi
                )
            )
        blocked.append(M.union_in(waits, lo, hi))
        polled.append(M.union_in(polls, lo, hi) if polls else 0.0)
    lo, hi = windows[0][1], windows[-1][2]
    # Every member's span of one collective: (resource, label, iteration) -> spans.
    members: dict[tuple[str, str, int], list] = defaultdict(list)
    for s in trace.spans:
        if s.kind == "comm":
            members[(s.resource, s.label, s.iteration)].append(s)
    by_polls = not trace.meta.measured and any(s.kind == "poll" for s in trace.spans)
    threads = _compute_threads(trace) if by_polls else {}
    durations: dict[str, list[float]] = defaultdict(list)
    for s in mine:
        if s.kind == "comm" and lo <= s.start_s < hi:
            group = members[(s.resource, s.label, s.iteration)]
            last_start = max(x.start_s for x in group)
            first_end = min(x.end_s for x in group)
            if by_polls:
                first_end = seen_complete(first_end, [threads.get(x.rank, []) for x in group])
            durations[s.label].append(max(0.0, first_end - last_start))
    return Breakdown(
        iteration_s=(hi - lo) / len(windows),
        forward_s=statistics.fmean(per_kind["forward"]),
        backward_s=statistics.fmean(per_kind["backward"]),
        update_s=statistics.fmean(per_kind["update"]),
        comm_s=M.comm_time_s(trace, rank, windows),
        exposed_s=M.exposed_comm_s(trace, rank, windows),
        blocked_s=statistics.fmean(blocked),
        polled_s=statistics.fmean(polled),
        collectives_s={k: statistics.fmean(v) for k, v in sorted(durations.items())},
    )


def _compute_threads(trace: Trace) -> dict[int, list[tuple[float, float, str]]]:
    """Per rank, its compute stream's spans (start, end, kind) in time order."""
    out: dict[int, list[tuple[float, float, str]]] = defaultdict(list)
    for s in trace.spans:
        if s.resource == "compute" and s.kind != "wait":
            out[s.rank].append((s.start_s, s.end_s, s.kind))
    for spans in out.values():
        spans.sort()
    return out


def seen_complete(end: float, threads: list[list[tuple[float, float, str]]]) -> float:
    """When the first member of a polled collective that ended at ``end`` sees it done.

    Each member's thread (its compute spans, in time order) sees it at its next poll: at
    ``end`` if it is idle then (blocked in a wait, which returns at once), else at the end
    of the task it is running. The member whose part came last (its ``poll`` span ends at
    ``end``) is not counted: with two ranks, Open MPI's all-reduce sends a rank's reduced
    half only after it has the other's part, so the rank that polled first takes the
    other's half, reduces and finishes in its next poll, and the last one later still
    (a real run's traces show the completion seen at a later ``Test`` than the one that
    did the work). The earliest of the others."""
    seen: list[float] = []
    last: int | None = None
    for spans in threads:
        # The last span that began before ``end``: a task that begins at ``end`` itself
        # (made ready by the collective, or after a wait) does not hide it.
        i = bisect.bisect_left(spans, (end, -math.inf, "")) - 1
        running = spans[i] if i >= 0 and spans[i][1] > end else None
        if last is None and i >= 0 and spans[i][2] == "poll" and math.isclose(spans[i][1], end):
            last = len(seen)
        seen.append(running[1] if running is not None else end)
    others = [t for k, t in enumerate(seen) if k != last]
    return min(others) if others else end
