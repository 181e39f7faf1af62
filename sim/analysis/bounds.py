"""Physical lower bounds on a steady iteration: pure functions of a Trace.

Whatever the strategy, an iteration cannot be shorter than the work it asks of any one
resource. Per steady iteration (the windows of :func:`sim.analysis.metrics.steady_state`,
iterations t0 .. t1-1, K of them, rank 0's clock):

- **compute**: the compute stream runs one task at a time, at full speed except while a
  collective runs on its rank, when interference slows it to s = 1 / (1 + f). If U is
  the time some collective runs inside the K windows, the stream gets at most
  (K·T - U) + s·U seconds of work done, so K·T >= C + (1 - s)·U, C being the compute
  work (at full speed) done inside. Compute that overlaps communication is not free:
  with f = 1.2 each second of it costs 2.2.
- **channels**: a channel runs one collective at a time, each for at least its latency
  plus its bandwidth part at a full share of its links; with c channels, K·T·c >= the
  sum of those over the iterations (each channel at most K·T busy).
- **links**: a link class delivers at most one second of bandwidth work per second, so
  K·T >= the bandwidth work of the collectives that load it.

Which work lies inside the K windows: when the steady state repeats exactly (no jitter,
settled), the windows are whole periods, so the work done inside is exactly K
iterations' worth (of every rank: the slowest rank bounds too). Otherwise (jitter, or
a run that has not settled) only what the graph forces inside counts: forward and
backward of t0 .. t1-1 (forward(t+1, first) waits for backward(t, first)), and the
collectives and updates of t0 .. t1-2-d, which forward(t+1+d) waits for (d: staleness),
on rank 0. Both are true inequalities, so a result below one is a bug, never a finding.

The work per iteration comes from the graph, not from the spans (``meta.work``,
written by :func:`sim.engine.simulate.work_per_iteration`); a Trace without it (a
measured run, a hand-made trace) has no bounds to check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median_high

from sim.analysis.metrics import SteadyState, steady_state, union_in
from sim.engine.trace import Trace
from sim.errors import PhysicalBoundError

# Float noise: the engine adds and subtracts instants of up to ~1e3 s and rates, so a
# window that exactly meets a bound can come out ~1e-13 relatively short; 1e-9 is far
# above that and far below anything a table shows (4 significant digits).
REL_TOL = 1e-9


@dataclass(frozen=True)
class Bound:
    """``name`` (what it bounds, for a person) and ``seconds`` per iteration."""

    name: str
    seconds: float


def _sum(values: Sequence[float], its: range) -> float:
    return float(sum(values[t] for t in its))


def lower_bounds(trace: Trace, steady: SteadyState | None = None) -> list[Bound]:
    """The lower bounds on the mean of ``steady``'s windows (default: the Trace's steady
    state), in seconds per iteration; empty if the Trace carries no ``meta.work``."""
    work = trace.meta.work
    steady = steady or steady_state(trace)
    windows = steady.windows
    if not work or not windows:
        return []
    t0, t1 = windows[0][0], windows[-1][0] + 1
    lo, hi = windows[0][1], windows[-1][2]
    k = len(windows)
    repeats = steady.settled and not trace.meta.jitter
    every = range(t0, t1)
    forced = range(t0, max(t0, t1 - 1 - work.staleness))
    done = every if repeats else forced  # whose collectives and updates lie inside
    comm = sorted((s.start_s, s.end_s) for s in trace.spans if s.rank == 0 and s.kind == "comm")
    slowdown = 1.0 - 1.0 / (1.0 + work.interference_factor)
    interfered = slowdown * union_in(comm, lo, hi) if comm else 0.0
    compute = _sum(work.forward_backward_s, every) + _sum(work.update_s, done)
    out = [Bound("compute (with interference)", (compute + interfered) / k)]
    if repeats and work.slowest_rank_factor > 1:
        slowest = compute * work.slowest_rank_factor
        out.append(
            Bound("the slowest rank's compute (with interference)", (slowest + interfered) / k)
        )
    channels = work.channels
    if repeats:
        name = "channel comm0" if channels == 1 else f"each of the {channels} channels (mean)"
        out.append(Bound(name, _sum(work.comm_s, done) / (k * channels)))
    else:
        for c in range(channels):
            its = [t for t in done if t % channels == c]
            out.append(Bound(f"channel comm{c}", float(sum(work.comm_s[t] for t in its)) / k))
    for link, per in work.links_s.items():
        out.append(Bound(f"link class '{link}'", _sum(per, done) / k))
    return out


def sustained_bounds(trace: Trace) -> list[Bound]:
    """What each resource carries per iteration once the run repeats: the median over
    the run's iterations of its compute, channel and link work (edges such as a delayed
    run's last, unapplied updates do not pull it down). A settled iteration is at
    least each of these. A run that has not settled can average less over its last
    windows while a backlog builds on a link (its collectives finish after the run's
    last iteration): that is a transient, not a bound broken, and this is what it is
    heading for. Empty if the Trace carries no ``meta.work``."""
    work = trace.meta.work
    if not work or not work.forward_backward_s:
        return []
    compute = [f + u for f, u in zip(work.forward_backward_s, work.update_s, strict=True)]
    out = [Bound("compute", median_high(compute))]
    if work.comm_s:
        name = "channel comm0" if work.channels == 1 else f"each of the {work.channels} channels"
        out.append(Bound(name, median_high(work.comm_s) / work.channels))
    for link, per in work.links_s.items():
        if per:
            out.append(Bound(f"link class '{link}'", median_high(per)))
    return out


def _scenario_text(trace: Trace) -> str:
    sc = trace.meta.scenario or {}
    work = trace.meta.work
    parts = [
        f"{sc.get('workload', '?')} on {sc.get('devices', '?')} x {sc.get('hardware', '?')}",
        f"batch {sc.get('batch_per_device', '?')} per device",
        f"{sc.get('iterations', '?')} iterations",
        f"ranks {sc.get('ranks', '?')}",
        f"NIC {float(sc.get('nic_bandwidth_bytes_per_s', 0)) * 8e-9:g} Gb/s",
        f"interference {work.interference_factor if work else '?'}",
    ]
    if sc.get("stragglers"):
        parts.append(f"stragglers {sc['stragglers']}")
    return ", ".join(parts)


def check_bounds(trace: Trace, steady: SteadyState | None = None) -> None:
    """Raise :class:`PhysicalBoundError` if the mean steady iteration of ``trace`` is
    shorter than one of :func:`lower_bounds` (beyond :data:`REL_TOL`)."""
    steady = steady or steady_state(trace)
    if not steady.windows:
        return
    windows = steady.windows
    it = (windows[-1][2] - windows[0][1]) / len(windows)
    for bound in lower_bounds(trace, steady):
        if it < bound.seconds * (1 - REL_TOL):
            raise PhysicalBoundError(
                f"{trace.meta.strategy or '?'}: the iteration time {it * 1e3:.6g} ms is "
                f"shorter than {bound.name} needs, {bound.seconds * 1e3:.6g} ms per iteration "
                f"({'settled' if steady.settled else 'not settled'}, iterations "
                f"{windows[0][0]}-{windows[-1][0]}; scenario: {_scenario_text(trace)})"
            )
