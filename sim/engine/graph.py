"""Task graphs: what a strategy builds and the engine runs.

A strategy only says *what depends on what* and which resource a task occupies; the
engine decides *when*. Tasks are ``forward``, ``backward``, ``update`` (on the exclusive
compute stream), ``comm`` (on an exclusive communication channel, loading link classes
that concurrent collectives share) and ``wait`` (a timer that occupies nothing).

Among the ready tasks of one resource, the lowest ``priority`` runs first; ties go to
the task added first. Priorities are tuples compared element by element.
"""

from __future__ import annotations

from dataclasses import dataclass, field

COMPUTE = "compute"
NO_RESOURCE = ""


def channel(i: int) -> str:
    return f"comm{i}"


@dataclass(frozen=True, slots=True)
class Task:
    """One unit of work.

    work_s: for compute, the time at full speed; for comm, the bandwidth part at a full
    share of its links; for wait, the delay. latency_s: the comm latency part (α terms),
    not shared. links: link classes a comm loads. bytes: bytes a comm moves.
    group: for comm in explicit mode, which collective the task is a member of.
    rank: in representative mode, the rank (lane) the task runs on: a pipeline's stages
    are ranks 0 .. P-1 of one representative copy, each with its own compute stream,
    channels, links and memory (every other graph leaves it 0).
    """

    id: int
    kind: str
    resource: str
    iteration: int
    label: str
    work_s: float
    deps: tuple[int, ...]
    priority: tuple
    latency_s: float = 0.0
    links: tuple[str, ...] = ()
    bytes: float = 0.0
    memory_bytes: float = 0.0  # change in the device's bytes in use when the task ends
    rank: int = 0


@dataclass
class TaskGraph:
    """An append-only list of tasks; ids are positions. Deps must point backwards."""

    tasks: list[Task] = field(default_factory=list)
    channels: int = 1

    def add(
        self,
        kind: str,
        resource: str,
        iteration: int,
        label: str,
        work_s: float,
        deps: tuple[int, ...] | list[int] = (),
        priority: tuple = (),
        *,
        latency_s: float = 0.0,
        links: tuple[str, ...] = (),
        nbytes: float = 0.0,
        memory_bytes: float = 0.0,
        rank: int = 0,
    ) -> int:
        tid = len(self.tasks)
        clean = tuple(sorted({d for d in deps if d is not None}))
        if clean and clean[-1] >= tid:
            raise ValueError(f"task {tid} depends on a later task {clean[-1]}")
        self.tasks.append(
            Task(
                tid,
                kind,
                resource,
                iteration,
                label,
                work_s,
                clean,
                priority,
                latency_s,
                links,
                nbytes,
                memory_bytes,
                rank,
            )
        )
        return tid

    def __len__(self) -> int:
        return len(self.tasks)
