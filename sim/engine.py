"""The SimPy engine: runs a task graph on compute streams, channels and fluid links.

Resources per rank: one exclusive compute stream, ``graph.channels`` exclusive
communication channels, and fluid links (one per link class) shared by the collectives
that load them. Sharing is processor sharing: a collective's bandwidth part progresses
at ``1 / max(load of each link it crosses)``, recomputed whenever a collective or a
compute task starts or ends. While any collective runs on a rank, that rank's compute
progresses at ``1 / (1 + interference_factor)``.

Ranks: in representative mode ``ranks=1`` and the one rank stands for all (every
collective was costed for the whole group). In explicit mode every rank runs its own
copy of the graph, and a collective starts when its last member arrives on its channel;
it then loads the links of every member.

The engine is deterministic: SimPy orders simultaneous events by insertion, and every
choice here (heaps keyed by priority then task id) is a pure function of the graph.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import simpy

from sim.graph import COMPUTE, NO_RESOURCE, TaskGraph
from sim.trace import MemorySample, Span

_REL_TOL = 1e-9


class _Activity:
    """Work in progress on the fluid system: compute on a rank, or a collective."""

    __slots__ = ("remaining", "work", "rate", "rank", "links", "on_done")

    def __init__(self, work, rank, links, on_done):
        self.work = work
        self.remaining = work
        self.rate = 1.0
        self.rank = rank  # compute: the rank; collective: -1
        self.links = links  # collective: link keys; compute: None
        self.on_done = on_done


@dataclass(frozen=True)
class EngineStats:
    events: int  # activity starts, activity ends and latency-phase ends processed
    tasks: int


class Engine:
    """Run ``graph`` on ``ranks`` ranks. Use :meth:`run` once."""

    def __init__(
        self,
        graph: TaskGraph,
        *,
        ranks: int = 1,
        interference_factor: float = 0.0,
        base_memory_bytes: float = 0.0,
        jitter: float = 0.0,
        seed: int = 0,
    ):
        self.graph = graph
        self.ranks = ranks
        self.slow = 1.0 / (1.0 + interference_factor)
        self.base_memory = base_memory_bytes
        self.env = simpy.Environment()
        n = len(graph.tasks)
        self.n = n
        children: list[list[int]] = [[] for _ in range(n)]
        for t in graph.tasks:
            for d in t.deps:
                children[d].append(t.id)
        self.children = children
        self.scale = None
        if jitter > 0:
            rng = np.random.default_rng(seed)
            # Per (rank, task) compute-time multipliers, lognormal with the given spread.
            self.scale = rng.lognormal(0.0, jitter, size=(ranks, n))
        self.events = 0

    # -- fluid system -------------------------------------------------------------------
    def _advance(self) -> None:
        now = self.env.now
        dt = now - self._last
        if dt > 0:
            for a in self._active:
                a.remaining -= a.rate * dt
        self._last = now

    def _reschedule(self) -> None:
        if self._batch:
            return  # the enclosing wake-up reschedules once at its end
        active = self._active
        if not active:
            return
        load = self._link_load
        comm_on = self._comm_active
        best = float("inf")
        for a in active:
            if a.links is None:
                a.rate = self.slow if comm_on[a.rank] else 1.0
            else:
                worst = 1
                for key in a.links:
                    c = load[key]
                    if c > worst:
                        worst = c
                a.rate = 1.0 / worst
            t = a.remaining / a.rate
            if t < best:
                best = t
        self._version += 1
        version = self._version
        ev = self.env.timeout(best if best > 0 else 0.0)
        ev.callbacks.append(lambda _e: self._wake(version))

    def _wake(self, version: int) -> None:
        if version != self._version:
            return  # superseded by a later change
        self._advance()
        done = []
        keep = []
        for a in self._active:
            if a.remaining <= _REL_TOL * a.work + 1e-15:
                done.append(a)
            else:
                keep.append(a)
        self._active = keep
        for a in done:
            if a.links is not None:
                for key in a.links:
                    self._link_load[key] -= 1
        self.events += len(done)
        self._batch += 1
        for a in done:
            a.on_done()
        self._batch -= 1
        self._reschedule()

    def _start_activity(self, a: _Activity) -> None:
        self._advance()
        self._active.append(a)
        if a.links is not None:
            for key in a.links:
                self._link_load[key] = self._link_load.get(key, 0) + 1
        self.events += 1
        self._reschedule()

    # -- tasks --------------------------------------------------------------------------
    def _ready(self, gid: int) -> None:
        rank, tid = divmod(gid, self.n)
        task = self.graph.tasks[tid]
        if task.resource == NO_RESOURCE:
            self._start[gid] = self.env.now
            ev = self.env.timeout(task.work_s)
            ev.callbacks.append(lambda _e: self._finish(gid))
            self.events += 1
            return
        key = (rank, task.resource)
        heapq.heappush(self._queues.setdefault(key, []), (task.priority, tid, gid))
        if key not in self._busy:
            self._dispatch(key)

    def _dispatch(self, key) -> None:
        queue = self._queues.get(key)
        if not queue:
            return
        _, tid, gid = heapq.heappop(queue)
        self._busy.add(key)
        task = self.graph.tasks[tid]
        rank = key[0]
        if task.resource == COMPUTE:
            self._start[gid] = self.env.now
            work = task.work_s if self.scale is None else task.work_s * self.scale[rank, tid]
            self._start_activity(_Activity(work, rank, None, lambda: self._finish(gid)))
            return
        # A communication channel: wait here until every member has arrived.
        count = self._arrived.get(tid, 0) + 1
        self._arrived[tid] = count
        if count == self.ranks:
            del self._arrived[tid]
            self._start_collective(tid)

    def _start_collective(self, tid: int) -> None:
        task = self.graph.tasks[tid]
        members = [r * self.n + tid for r in range(self.ranks)]
        self._advance()
        for gid in members:
            self._start[gid] = self.env.now
        for r in range(self.ranks):
            self._comm_active[r] += 1
        links = tuple((r, c) for r in range(self.ranks) for c in task.links)

        def done() -> None:
            for r in range(self.ranks):
                self._comm_active[r] -= 1
            for gid in members:
                self._finish(gid)

        def flow() -> None:
            if task.work_s <= 0:
                self._advance()
                self._batch += 1
                done()
                self._batch -= 1
                self._reschedule()
                return
            self._start_activity(_Activity(task.work_s, -1, links, done))

        self._reschedule()  # interference starts now
        if task.latency_s > 0:
            ev = self.env.timeout(task.latency_s)
            ev.callbacks.append(lambda _e: (self._count(), flow()))
        else:
            flow()

    def _count(self) -> None:
        self.events += 1

    def _finish(self, gid: int) -> None:
        rank, tid = divmod(gid, self.n)
        task = self.graph.tasks[tid]
        now = self.env.now
        self._spans.append(
            Span(rank, task.resource or "timer", task.kind, task.iteration, task.label,
                 self._start[gid], now, task.bytes)
        )
        if task.memory_bytes:
            self._mem[rank] += task.memory_bytes
            self._memory.append(MemorySample(rank, now, self._mem[rank]))
        self._done += 1
        base = rank * self.n
        for child in self.children[tid]:
            g = base + child
            self._deps_left[g] -= 1
            if self._deps_left[g] == 0:
                self._ready(g)
        if task.resource != NO_RESOURCE:
            key = (rank, task.resource)
            self._busy.discard(key)
            self._dispatch(key)

    def run(self) -> tuple[list[Span], list[MemorySample], EngineStats]:
        self._active: list[_Activity] = []
        self._last = 0.0
        self._version = 0
        self._batch = 0
        self._link_load: dict = {}
        self._comm_active = [0] * self.ranks
        self._queues: dict = {}
        self._busy: set = set()
        self._arrived: dict[int, int] = {}
        self._start = [0.0] * (self.n * self.ranks)
        self._deps_left = [len(t.deps) for t in self.graph.tasks] * self.ranks
        self._spans: list[Span] = []
        self._mem = [self.base_memory] * self.ranks
        self._memory = [MemorySample(r, 0.0, self.base_memory) for r in range(self.ranks)]
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
