"""The Trace: the one output contract of a simulation (and of a real, measured run).

A Trace is an immutable sequence of spans plus memory samples and the scenario facts
that metrics need. Metrics, exports, plots and validation read a Trace and never reach
into the engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

SPAN_FIELDS = ("rank", "resource", "kind", "iteration", "label", "start_s", "end_s", "bytes")


class Span(NamedTuple):
    """One interval of activity on one resource of one rank.

    resource: "compute", "comm0", "comm1", ... ; kind: "forward", "backward", "comm",
    "update" (or "wait" for a timer such as Horovod's cycle). label: the layer or bucket.
    bytes: bytes communicated (comm spans), else 0.
    """

    rank: int
    resource: str
    kind: str
    iteration: int
    label: str
    start_s: float
    end_s: float
    bytes: float = 0.0

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


class MemorySample(NamedTuple):
    """Bytes in use on one device from ``time_s`` on. (Tuples: cheap to make in bulk.)"""

    rank: int
    time_s: float
    bytes_in_use: float


@dataclass(frozen=True)
class Trace:
    """Spans in completion order, memory samples, and the facts metrics need.

    meta keys used by :mod:`sim.analysis.metrics`: ``global_batch``, ``iterations``,
    ``warmup_iterations``, ``device_memory_bytes``, ``strategy``, ``ranks_mode``.
    """

    spans: tuple[Span, ...]
    memory: tuple[MemorySample, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __iter__(self) -> Iterator[Span]:
        return iter(self.spans)

    def __len__(self) -> int:
        return len(self.spans)

    def for_rank(self, rank: int) -> tuple[Span, ...]:
        return tuple(s for s in self.spans if s.rank == rank)

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(sorted({s.rank for s in self.spans}))

    def rows(self) -> list[dict]:
        return [{f: getattr(s, f) for f in SPAN_FIELDS} for s in self.spans]
