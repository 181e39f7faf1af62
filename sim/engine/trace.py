"""The Trace: the one output contract of a simulation (and of a real, measured run).

A Trace is an immutable sequence of spans plus memory samples and the scenario facts
that metrics need. Metrics, exports, plots and validation read a Trace and never reach
into the engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
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
class ExtrapolatedCollective:
    """An all-reduce a measured table costed beyond the sizes it holds: ``bytes`` (the
    collective's size) against ``nearest_measured_bytes``; ``factor``: its time over the
    nearest measured time (> 1 above the table, < 1 below it)."""

    op: str
    bytes: float
    nearest_measured_bytes: float
    factor: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "bytes": self.bytes,
            "nearest_measured_bytes": self.nearest_measured_bytes,
            "factor": self.factor,
        }


@dataclass(frozen=True)
class IterationWork:
    """What each iteration asks of each resource, from the task graph (the physical
    bounds of :mod:`sim.analysis.bounds`); lists are indexed by iteration, in seconds.

    ``forward_backward_s``, ``update_s``: rank 0's compute work at full speed (its jitter
    draws and speed applied). ``slowest_rank_factor``: the slowest rank's compute time
    over rank 0's, jitter aside (1 with no slow rank). ``comm_s``: latency plus
    bandwidth work of the iteration's collectives (the least time they hold their
    channel, ``t mod channels``). ``links_s``: per link class, the bandwidth work of the
    collectives that load it. ``staleness``: forward(t + 1 + staleness) waits for
    iteration t's updates. ``interference_factor``: the profile's compute slowdown while
    a collective runs (rate ``1/(1 + f)``).
    """

    interference_factor: float
    staleness: int
    channels: int
    forward_backward_s: tuple[float, ...]
    update_s: tuple[float, ...]
    slowest_rank_factor: float
    comm_s: tuple[float, ...]
    links_s: Mapping[str, tuple[float, ...]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "interference_factor": self.interference_factor,
            "staleness": self.staleness,
            "channels": self.channels,
            "forward_backward_s": list(self.forward_backward_s),
            "update_s": list(self.update_s),
            "slowest_rank_factor": self.slowest_rank_factor,
            "comm_s": list(self.comm_s),
            "links_s": {k: list(v) for k, v in self.links_s.items()},
        }


@dataclass(frozen=True)
class TraceMeta:
    """The facts about a run that its spans do not hold: what ran, how big, and what the
    metrics, bounds, timelines and validation need to read it.

    Every field may be absent (None): a span CSV carries only ``source``; each producer
    fills its own. In a trace file this is the ``meta`` object, one key per field, in
    this order, absent fields left out (:meth:`as_dict`; read back by
    :func:`sim.formats.trace_files.meta_from_dict`). ``extra``: keys no field names (a
    Chrome trace's ``otherData`` from another tool, a newer dtsim), kept as read and
    written back after the fields.
    """

    # -- every run (simulate, the real-run recorder, the Kineto reader) --
    strategy: str | None = None
    """The strategy's name (``delayed:2``; ``DDP`` or ``torch.profiler`` for Kineto)."""
    ranks_mode: str | None = None
    """``representative``: rank 0 stands for every device; ``explicit``: one per device."""
    global_batch: int | None = None
    """Samples per iteration over all devices (throughput = global_batch / iteration)."""
    batch_per_device: int | None = None
    devices: int | None = None
    iterations: int | None = None
    warmup_iterations: int | None = None
    """Iterations before the steady windows are measured (metrics take 1 when absent)."""
    period: int | None = None
    """Iterations over which the schedule can repeat (the strategy's period: its channels,
    k for local-sgd:k); a steady state is whole periods of it."""
    jitter: float | bool | None = None
    """σ of the lognormal compute-time noise (0: none); True for a measured trace,
    whose noise has no single size. Either way a noisy run repeats nothing exactly."""
    device_memory_bytes: float | None = None
    """One device's memory (0 for a measured run on CPUs: no limit checked)."""
    # -- simulated runs --
    static_memory_bytes: Mapping[str, float] | None = None
    """Per kind (weights, gradients, optimizer, buffers), bytes held from the start."""
    stragglers: Mapping[str, Any] | None = None
    """``Scenario.straggler_summary()``: jitter, jitter_cv, slow_ranks, slow_nics; shown,
    not computed with."""
    comm_links: Mapping[str, tuple[str, ...]] | None = None
    """Per collective label, the link classes it loads (the timeline's link rows)."""
    extrapolated_collectives: tuple[ExtrapolatedCollective, ...] | None = None
    scenario: Mapping[str, Any] | None = None
    """``Scenario.summary()``: what the scenario is, for messages (a bound's error)."""
    work: IterationWork | None = None
    # -- measured runs (the real-run recorder, the Kineto reader) --
    measured: bool | None = None
    source: str | None = None
    """Where the spans came from: ``kineto``, or the file name of a CSV or Chrome trace."""
    files: tuple[str, ...] | None = None
    """The Kineto files read, one per rank."""
    backend: str | None = None
    """torch.distributed's backend of a Kineto-traced job (gloo, nccl)."""
    device: str | None = None
    """The device model a Kineto trace names."""
    workload: str | None = None
    np: int | None = None
    """MPI ranks of a real run."""
    threads: int | None = None
    """Torch threads per rank of a real run."""
    repeat: int | None = None
    lr: float | None = None
    seed: int | None = None
    hosts: tuple[str, ...] | None = None
    """Per rank, its host name."""
    clock_offsets_s: tuple[float, ...] | None = None
    """Per rank, the offset to rank 0's clock subtracted from its times, in seconds."""
    clock_rtt_s: tuple[float, ...] | None = None
    """Per rank, the round trip the offset was measured with: it is within half of it."""
    comm_progress: str | None = None
    """How a real run progressed non-blocking collectives: ``test`` or ``none``."""
    buckets: tuple[tuple[str, int], ...] | None = None
    """Per collective of one iteration, its label and bytes."""
    mpi_library: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def as_dict(self) -> dict[str, Any]:
        """The ``meta`` object of a trace file: set fields in field order, then ``extra``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None:
                continue
            out[f.name] = _plain(value)
        for key, value in self.extra.items():
            out.setdefault(key, _plain(value))
        return out


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready data: records as dicts, tuples as lists, mappings as dicts."""
    if isinstance(value, (ExtrapolatedCollective, IterationWork)):
        return value.as_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Trace:
    """Spans in completion order, memory samples, and the facts about the run
    (:class:`TraceMeta`)."""

    spans: tuple[Span, ...]
    memory: tuple[MemorySample, ...] = ()
    meta: TraceMeta = field(default_factory=TraceMeta)

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
