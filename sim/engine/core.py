"""The SimPy engine: runs a task graph on compute streams, channels and fluid links.

Resources per rank: one exclusive compute stream, ``graph.channels`` exclusive
communication channels, and fluid links (one per link class) shared by the collectives
that load them. Sharing is processor sharing: a collective's bandwidth part progresses
at ``1 / max(load of each link it crosses)``, recomputed whenever a collective or a
compute task starts or ends. While any collective runs on a rank, that rank's compute
progresses at ``1 / (1 + interference_factor)``; while a rank computes, the bandwidth
part of its collectives progresses at ``1 / (1 + comm_interference_factor)`` (a
profile's, 0 unless set). ``polled``: collectives advance only inside the polls the
computing thread makes between layers (plain MPI non-blocking collectives on CPUs, as
``dtsim validate``'s real runs). There a collective's bandwidth part is work on each
member's own thread, not a flow: once the collective has started (its last member
arrived, its channel free, its latency spent), each member does it at its next poll:
the end of the compute task it is running, if another task is ready then (``poll_work``
times its time alone; every collective pending when the task ended, in one poll, a
``poll`` span on the compute stream; one started by that very end waits for the next,
as one with any latency would), or, with no task ready, while the thread waits (one
collective at a time, oldest first, each at its time alone as a blocking call, idle,
no span; a task made ready meanwhile runs before the next). The collective ends when
its last member is done.
Nothing advances inside a compute task (an optimizer step is one task and has no poll,
as in a real run), and compute still runs at ``1 / (1 + interference_factor)`` while a
collective is in flight on its rank. A real run's trace shows why: the whole all-reduce
of a delayed:1 step ran in one ``Test`` after the next forward's first layer.

Ranks: in representative mode ``ranks=1`` and the one rank stands for all (every
collective was costed for the whole group). In explicit mode every rank runs its own
copy of the graph, and a collective starts when its last member arrives (has its input
ready) and its channel is free; it then loads the links of every member. A channel is
one queue shared by all ranks, so they agree on the order of collectives.
Lanes: in representative mode a task may name its ``rank`` (a pipeline stage): each
such rank is a lane with its own compute stream, channels, links and memory, and its
collectives stand for their whole group as in representative mode (nothing waits for
other members). Explicit mode refuses such tasks.
Stragglers exist only in explicit mode: a compute task's work on rank r is multiplied
by its jitter draw for (r, task) and by 1 / (rank r's speed); a slow NIC is in the
collective costs the strategy was built with (:mod:`sim.model.stragglers`), not here.

The engine is deterministic: SimPy orders simultaneous events by insertion, and every
choice here (heaps keyed by priority then task id) is a pure function of the graph.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import simpy

from sim.engine.graph import COMPUTE, NO_RESOURCE, TaskGraph
from sim.engine.trace import MemorySample, Span


class _Activity:
    """Work in progress: compute on one rank (``links is None``), or a collective.

    ``remaining`` is work in seconds at full rate, as of time ``last``. Each activity
    has its own finish timer; a change of rate re-arms it and the stale one is ignored.
    """

    __slots__ = ("remaining", "rate", "last", "version", "rank", "links", "on_done", "ranks")

    def __init__(self, work, rank, links, on_done, ranks=()):
        self.remaining = work
        self.rate = 1.0
        self.last = 0.0
        self.version = 0
        self.rank = rank
        self.links = links
        self.on_done = on_done
        self.ranks = ranks  # a collective's member ranks (their compute slows it)


@dataclass(frozen=True)
class EngineStats:
    events: int  # task starts, task ends and latency-phase ends processed
    tasks: int


class Engine:
    """Run ``graph`` on ``ranks`` ranks. Use :meth:`run` once."""

    def __init__(
        self,
        graph: TaskGraph,
        *,
        ranks: int = 1,
        interference_factor: float = 0.0,
        comm_interference_factor: float = 0.0,
        polled: bool = False,
        poll_work: float = 1.0,
        base_memory_bytes: float | Sequence[float] = 0.0,
        jitter: float = 0.0,
        seed: int = 0,
        jitter_mu: float = 0.0,
        rank_speeds: Sequence[float] | None = None,
    ):
        """``jitter``, ``jitter_mu``: σ and μ of the log of a per-(rank, task) compute-time
        multiplier (σ = 0: none). ``rank_speeds``: each rank's compute speed as a fraction
        of full speed (its compute tasks take 1/speed as long). ``base_memory_bytes``: one
        figure for every rank, or one per rank (lane)."""
        self.graph = graph
        self.ranks = ranks
        top = max((t.rank for t in graph.tasks), default=0)
        if top and ranks > 1:
            raise ValueError("tasks pinned to a rank need representative mode (ranks=1)")
        # Ranks that own compute streams, channels, links and memory: the explicit ranks,
        # or the lanes of one representative copy.
        self.width = ranks if ranks > 1 else top + 1
        self.slow = 1.0 / (1.0 + interference_factor)
        self.comm_slow = 1.0 / (1.0 + comm_interference_factor)
        self.polled = polled
        if polled and comm_interference_factor:
            raise ValueError("comm_interference_factor applies to thread progress, not polled")
        if not (poll_work >= 1.0 and np.isfinite(poll_work)):
            # Below 1 a collective would finish faster polled than alone.
            raise ValueError(f"poll_work must be a finite number >= 1, got {poll_work}")
        self.poll_work = poll_work
        if isinstance(base_memory_bytes, int | float):
            self.base_memory = [base_memory_bytes] * self.width
        else:
            self.base_memory = list(base_memory_bytes)
            if len(self.base_memory) != self.width:
                raise ValueError(f"{len(self.base_memory)} base memories for {self.width} ranks")
        self.env = simpy.Environment()
        n = len(graph.tasks)
        self.n = n
        children: list[list[int]] = [[] for _ in range(n)]
        for t in graph.tasks:
            for d in t.deps:
                children[d].append(t.id)
        self.children = children
        self.tasks = graph.tasks
        # Resources as small integers: queue of (rank, resource) is rank * R + index.
        names = sorted({t.resource for t in graph.tasks if t.resource != NO_RESOURCE})
        self.res_index = {name: i for i, name in enumerate(names)}
        self.n_res = max(1, len(names))
        self.task_res = [self.res_index.get(t.resource, -1) for t in graph.tasks]
        self._compute_res = self.res_index.get(COMPUTE)  # None: a graph without compute
        self.scale = None
        if jitter > 0:
            rng = np.random.default_rng(seed)
            # Per (rank, task) compute-time multipliers, lognormal with the given spread.
            self.scale = rng.lognormal(jitter_mu, jitter, size=(ranks, n))
        self.rank_factor: list[float] | None = None
        if rank_speeds is not None:
            if len(rank_speeds) != ranks:
                raise ValueError(f"{len(rank_speeds)} rank speeds for {ranks} ranks")
            if any(not s > 0 for s in rank_speeds):
                raise ValueError("rank speeds must be > 0")
            self.rank_factor = [1.0 / s for s in rank_speeds]
        self.events = 0

    # -- fluid system -------------------------------------------------------------------
    def _arm(self, a: _Activity) -> None:
        """Bring ``a`` up to now at its old rate, take its new rate, re-arm its timer."""
        now = self.env.now
        if now > a.last:
            a.remaining -= a.rate * (now - a.last)
            if a.remaining < 0:
                a.remaining = 0.0
            a.last = now
        if a.links is None:
            a.rate = self.slow if self._comm_active[a.rank] else 1.0
        else:
            worst = 1
            load = self._link_load
            for key in a.links:
                c = load[key]
                if c > worst:
                    worst = c
            a.rate = 1.0 / worst
            if self.comm_slow < 1.0 and any(self._compute_act[r] is not None for r in a.ranks):
                a.rate *= self.comm_slow
        a.version += 1
        version = a.version
        ev = self.env.timeout(a.remaining / a.rate)
        ev.callbacks.append(lambda _e: self._maybe_done(a, version))

    def _maybe_done(self, a: _Activity, version: int) -> None:
        if version != a.version:
            return  # re-armed since
        a.version += 1
        if a.links is None:
            self._compute_act[a.rank] = None
            self._rearm_flows(a.rank)
        else:
            self._end_flow(a)
        a.on_done()

    def _start_compute(self, rank: int, work: float, on_done) -> None:
        a = _Activity(work, rank, None, on_done)
        a.last = self.env.now
        self._compute_act[rank] = a
        self._arm(a)
        self._rearm_flows(rank)

    def _rearm_flows(self, rank: int) -> None:
        """A rank's compute started or ended: its collectives change speed."""
        if self.comm_slow < 1.0:
            for flow in sorted(self._rank_flows[rank], key=self._flow_order.__getitem__):
                self._arm(flow)

    def _start_flow(self, work: float, links: tuple, on_done, ranks: range) -> None:
        a = _Activity(work, -1, links, on_done, ranks)
        if self.comm_slow < 1.0:  # only then does a rank's compute change a flow's rate
            for r in ranks:
                self._rank_flows[r].append(a)
        a.last = self.env.now
        touched = set()
        for key in links:
            self._link_load[key] = self._link_load.get(key, 0) + 1
            flows = self._link_flows.setdefault(key, [])
            touched.update(flows)
            flows.append(a)
        for other in sorted(touched, key=self._flow_order.__getitem__):
            self._arm(other)
        self._flow_order[a] = len(self._flow_order)
        self._arm(a)

    def _end_flow(self, a: _Activity) -> None:
        if self.comm_slow < 1.0:
            for r in a.ranks:
                self._rank_flows[r].remove(a)
        touched = set()
        for key in a.links:
            self._link_load[key] -= 1
            flows = self._link_flows[key]
            flows.remove(a)
            touched.update(flows)
        del self._flow_order[a]
        for other in sorted(touched, key=self._flow_order.__getitem__):
            self._arm(other)

    def _set_comm_active(self, ranks: range, delta: int) -> None:
        for r in ranks:
            self._comm_active[r] += delta
            a = self._compute_act[r]
            if a is not None:
                self._arm(a)

    # -- tasks --------------------------------------------------------------------------
    def _ready(self, gid: int) -> None:
        rank, tid = divmod(gid, self.n)
        task = self.tasks[tid]
        rank += task.rank  # a lane (representative mode), else 0 + the explicit rank
        res = self.task_res[tid]
        if res < 0:
            self._start[gid] = self.env.now
            ev = self.env.timeout(task.work_s)
            ev.callbacks.append(lambda _e: self._finish(gid))
            self.events += 1
            return
        if task.resource == COMPUTE:
            q = rank * self.n_res + res
        else:
            # A collective is ready once every member rank has produced its input. All
            # ranks take part in every collective and issue them on the same channels,
            # so a channel is one queue shared by the ranks: they agree on the order
            # (as NCCL requires, and as Horovod's and ByteScheduler's coordinators
            # ensure), and the best globally ready collective goes first.
            count = self._arrived.get(tid, 0) + 1
            if count < self.ranks:
                self._arrived[tid] = count
                return
            self._arrived.pop(tid, None)
            q = res if self.ranks > 1 else rank * self.n_res + res
            gid = tid
        heapq.heappush(self._queues[q], (task.priority, tid, gid))
        if not self._busy[q]:
            self._dispatch(q)

    def _dispatch(self, q: int) -> None:
        queue = self._queues[q]
        if not queue:
            return
        _, tid, gid = heapq.heappop(queue)
        self._busy[q] = True
        task = self.tasks[tid]
        if task.resource == COMPUTE:
            rank = q // self.n_res
            self._start[gid] = self.env.now
            self.events += 1
            work = task.work_s
            if self.scale is not None:
                work *= self.scale[rank, tid]
            if self.rank_factor is not None:
                work *= self.rank_factor[rank]
            self._start_compute(rank, work, lambda: self._finish(gid))
            return
        self._start_collective(tid, q)

    def _start_collective(self, tid: int, q: int) -> None:
        task = self.graph.tasks[tid]
        members = [r * self.n + tid for r in range(self.ranks)]
        now = self.env.now
        for gid in members:
            self._start[gid] = now
        self.events += len(members)
        everyone = range(task.rank, task.rank + self.ranks)
        self._set_comm_active(everyone, +1)  # interference starts with the collective
        links = tuple((r, c) for r in everyone for c in task.links)

        def done() -> None:
            self._set_comm_active(everyone, -1)
            for gid in members:
                self._finish(gid)
            self._busy[q] = False
            self._dispatch(q)

        def flow() -> None:
            if task.work_s <= 0:
                done()
            elif self.polled:
                self._post_poll_work(task.work_s, tid, everyone, done)
            else:
                self._start_flow(task.work_s, links, done, everyone)

        if task.latency_s > 0:
            ev = self.env.timeout(task.latency_s)

            def after_latency(_e: object) -> None:
                self.events += 1
                flow()

            ev.callbacks.append(after_latency)
        else:
            flow()

    # -- polled progress (module docstring) -------------------------------------------
    def _post_poll_work(self, work: float, tid: int, ranks: range, done) -> None:
        """A started collective's part for each member's thread, done at its next poll."""
        left = [len(ranks)]

        def one_done() -> None:
            left[0] -= 1
            if left[0] == 0:
                done()

        for r in ranks:
            self._pending[r].append((work, tid, one_done))
            if not self._thread_busy(r):
                # Idle now; the end of this instant tells whether it waits (a compute task
                # made ready at the same moment runs first, as a thread with work to do).
                ev = self.env.timeout(0)
                ev.callbacks.append(self._waiting_check(r))

    def _thread_busy(self, rank: int) -> bool:
        q = self._thread(rank)
        return self._polling[rank] or (q is not None and self._busy[q])

    def _waiting_check(self, rank: int):
        """A callback: if ``rank``'s thread is still idle, it waits and progresses."""

        def check(_e: object) -> None:
            if self._pending[rank] and not self._thread_busy(rank):
                self._poll(rank, 1, waiting=True)

        return check

    def _thread(self, rank: int) -> int | None:
        """The queue index of ``rank``'s compute stream (its thread), if it has one."""
        c = self._compute_res
        return None if c is None else rank * self.n_res + c

    def _poll(self, rank: int, count: int, waiting: bool = False) -> None:
        """``rank``'s thread polls the first ``count`` pending parts, then takes its next
        task. After a compute task they take one poll, each costing ``poll_work`` times
        its time alone, a ``poll`` span. A thread that was ``waiting`` (blocked in a Wait;
        ``count`` 1) progresses the oldest part alone, at its time alone, as a blocking
        call would, its time idle (a wait); it then looks for a ready task before the
        next part, so a collective ends when its own part is done."""
        pending = self._pending[rank]
        items, self._pending[rank] = pending[:count], pending[count:]
        self._polling[rank] = True
        q = self._thread(rank)
        if q is not None:
            self._busy[q] = True  # no compute task starts during the poll
        start = self.env.now
        self.events += 1
        scale = 1.0 if waiting else self.poll_work
        ev = self.env.timeout(scale * sum(w for w, _, _ in items))

        def polled(_e: object) -> None:
            if not waiting:
                first = self.tasks[items[0][1]]
                self._spans.append(
                    Span(rank, COMPUTE, "poll", first.iteration, first.label, start, self.env.now)
                )
            for _, _, one_done in items:
                one_done()
            self._next_on_thread(rank)

        ev.callbacks.append(polled)

    def _next_on_thread(self, rank: int, after_compute: bool = False) -> None:
        """A compute task (``after_compute``) or a poll ended on ``rank``'s thread. After a
        task with another one ready, its hook polls whatever is pending; then the best
        ready compute task runs, or, with none ready, the thread waits and progresses
        what is pending at its time alone (a blocking call's cost)."""
        self._polling[rank] = False
        q = self._thread(rank)
        # The hook polls what was pending when the task ended, not what the task's end
        # itself started (a zero-latency collective): that waits for the next task's end,
        # as a collective with any latency does.
        due = self._due[rank] if after_compute else 0
        if due and q is not None and self._queues[q]:
            self._poll(rank, due)
            return
        if q is not None:
            self._busy[q] = False
            self._dispatch(q)
        if self._pending[rank] and not self._thread_busy(rank):
            self._poll(rank, 1, waiting=True)

    def _finish(self, gid: int) -> None:
        copy, tid = divmod(gid, self.n)
        task = self.tasks[tid]
        rank = copy + task.rank
        now = self.env.now
        if self.polled and task.resource == COMPUTE:
            self._due[rank] = len(self._pending[rank])  # before the children start anything
        self._spans.append(
            Span(
                rank,
                task.resource or "timer",
                task.kind,
                task.iteration,
                task.label,
                self._start[gid],
                now,
                task.bytes,
            )
        )
        if task.memory_bytes:
            self._mem[rank] += task.memory_bytes
            self._memory.append(MemorySample(rank, now, self._mem[rank]))
        self._done += 1
        self.events += 1
        base = copy * self.n
        deps_left = self._deps_left
        for child in self.children[tid]:
            g = base + child
            deps_left[g] -= 1
            if deps_left[g] == 0:
                self._ready(g)
        res = self.task_res[tid]
        if res >= 0 and task.resource == COMPUTE:
            if self.polled:
                self._next_on_thread(rank, after_compute=True)
                return
            q = rank * self.n_res + res
            self._busy[q] = False
            self._dispatch(q)

    def run(self) -> tuple[list[Span], list[MemorySample], EngineStats]:
        self._link_load: dict = {}
        self._link_flows: dict = {}
        self._flow_order: dict = {}
        width = self.width
        self._compute_act: list[_Activity | None] = [None] * width
        self._comm_active = [0] * width
        self._rank_flows: list[list[_Activity]] = [[] for _ in range(width)]
        self._queues: list[list] = [[] for _ in range(width * self.n_res)]
        self._busy = [False] * (width * self.n_res)
        self._arrived: dict[int, int] = {}
        self._pending: list[list] = [[] for _ in range(width)]  # polled: work per rank
        self._polling = [False] * width
        self._due = [0] * width  # pending parts when the rank's last compute task ended
        self._start = [0.0] * (self.n * self.ranks)
        self._deps_left = [len(t.deps) for t in self.graph.tasks] * self.ranks
        self._spans: list[Span] = []
        self._mem = list(self.base_memory)
        self._memory = [MemorySample(r, 0.0, self.base_memory[r]) for r in range(width)]
        self._done = 0
        for r in range(self.ranks):
            for t in self.graph.tasks:
                if not t.deps:
                    self._ready(r * self.n + t.id)
        self.env.run()
        if self._done != self.n * self.ranks:
            stuck = [t.label for t in self.graph.tasks if self._deps_left[t.id] > 0][:5]
            raise RuntimeError(
                f"simulation deadlocked: {self.n * self.ranks - self._done} tasks never ran "
                f"(first: {stuck}); the strategy built a cyclic or unsatisfiable graph"
            )
        return self._spans, self._memory, EngineStats(self.events, self.n * self.ranks)
