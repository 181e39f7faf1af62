"""Hardware profile data types, in SI units (bytes, seconds, bytes/s, FLOP/s).

These frozen dataclasses are what the simulator core reads. They are built from
YAML by :mod:`hardware_profiles.loader`, which converts file units (``_gb_per_s``,
``_us``, ``_tflops``) once. Bandwidths are per direction.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

LINK_CLASSES = ("nvlink", "nvswitch", "pcie", "socket", "network")

# Every layer kind a workload may name, with what it is. Hardware profiles key their
# per-kind efficiencies on these (plus "default"); a kind not listed here is a typo.
# The first group is what the built-in models use (workloads/algebra.py,
# workloads/transformer.py); the second is what calibration writes for a user's
# nn.Module and for a torch.profiler trace, where only the family is known
# (calibrate/measure/models.py, sim/formats/kineto.py).
LAYER_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "conv": "convolution (any dimension, grouped or not)",
        "linear": "fully connected layer / matrix multiply",
        "attention": (
            "self-attention: Q/K/V/output projections and the QK^T, softmax, AV core "
            "(BERT, GPT-2), or the core alone (Llama-style decoders, whose projections "
            "are linear)"
        ),
        "embedding": "embedding lookup (token, position, segment)",
        "batchnorm": "batch normalisation",
        "layernorm": "layer normalisation",
        "rmsnorm": "RMS normalisation",
        "lrn": "local response normalisation",
        "maxpool": "max pooling",
        "avgpool": "average pooling (also global)",
        "elementwise": "elementwise activation (GELU, SwiGLU)",
        "norm": "a normalisation of unknown type (calibration of a user's model, traces)",
        "pool": "a pooling of unknown type (calibration of a user's model, traces)",
        "other": "anything else calibration or a trace found",
    }
)
# Keys a profile's efficiency tables may hold: the layer kinds and the fallback.
EFFICIENCY_KEYS = (*LAYER_KINDS, "default")


def unknown_kind(kind: str, known: tuple[str, ...] = tuple(LAYER_KINDS)) -> str | None:
    """None if ``kind`` is one of ``known``, else the reason, naming the closest kinds."""
    if kind in known:
        return None
    close = difflib.get_close_matches(kind, known, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return f"unknown layer kind {kind!r}: {hint}known kinds: {', '.join(known)}"


@dataclass(frozen=True, slots=True)
class Device:
    kind: str  # "gpu" or "cpu"
    model: str
    count_per_node: int
    peak_flops: Mapping[str, float]  # dtype -> FLOP/s
    memory_bytes: float
    memory_bandwidth_bytes_per_s: float
    efficiency: Mapping[str, float]  # layer kind -> achievable fraction of peak; "default"
    # dtype -> layer kind -> fraction, overriding ``efficiency`` for that dtype: tensor-core
    # dtypes reach a smaller fraction of their (much higher) peak than fp32 does.
    efficiency_by_dtype: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # CUDA compute capability (9.0 = Hopper): NCCL's tuner keys its per-generation
    # constants on it (protocol bandwidth caps, LL128, NVLink SHARP). None: not a GPU,
    # or not given (the cost model then uses NCCL's Ampere row).
    compute_capability: float | None = None

    def efficiency_for(self, layer_kind: str, dtype: str | None = None) -> float:
        table = self.efficiency_by_dtype.get(dtype) if dtype else None
        if table:
            value = table.get(layer_kind, table.get("default"))
            if value is not None:
                return value
        return self.efficiency.get(layer_kind, self.efficiency["default"])


@dataclass(frozen=True, slots=True)
class NvlinkMesh:
    """Point-to-point NVLinks: edges (a, b, number of links), bandwidth per link."""

    bandwidth_bytes_per_s_per_link: float
    edges: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class IntraNode:
    nvlink: NvlinkMesh | None = None
    nvswitch_bytes_per_s_per_device: float | None = None
    pcie_bytes_per_s: float | None = None
    socket_link_bytes_per_s: float | None = None  # QPI/UPI between CPU sockets
    # The NVSwitch reduces in the switch (NVLink SHARP, NCCL's NVLS algorithms).
    nvlink_sharp: bool = False


@dataclass(frozen=True, slots=True)
class Nics:
    count_per_node: int
    bandwidth_bytes_per_s: float
    latency_s: float
    devices: tuple[tuple[int, ...], ...]  # devices sharing each NIC


@dataclass(frozen=True, slots=True)
class Fabric:
    kind: str  # "switch" or "fat-tree"
    max_nodes: int
    switch_latency_s: float
    oversubscription: float = 1.0  # fat-tree: downlink / uplink bandwidth at a leaf
    nodes_per_leaf: int = 0  # fat-tree only


@dataclass(frozen=True, slots=True)
class LinkClassParams:
    """Per link class: per-step latency alpha and achievable fraction of bandwidth."""

    alpha_s: float
    efficiency: float


@dataclass(frozen=True, slots=True)
class MeasuredCollective:
    """One collective measured by calibration on ``ranks`` ranks over ``nodes`` nodes.

    ``sizes_bytes``/``times_s``: the measured table, sizes strictly increasing (total
    bytes as nccl-tests counts them). ``alpha_s``/``bandwidth_bytes_per_s``: the
    least-squares fit of the ring model; it gives the latency part of every cost and
    bounds the rate at which costs grow beyond the table (``sim.model.collectives``).
    """

    op: str
    ranks: int
    nodes: int
    backend: str
    alpha_s: float
    bandwidth_bytes_per_s: float
    fit_worst_error: float
    sizes_bytes: tuple[float, ...]
    times_s: tuple[float, ...]

    @property
    def envelope_times_s(self) -> tuple[float, ...]:
        """``times_s`` raised to their running maximum, so time never falls as bytes grow.

        A measured table can dip from noise (a larger size timed faster than a smaller
        one). The running maximum is the least non-decreasing sequence that is never
        below a measurement: it keeps every point that is already in order and raises a
        dip to the slowest smaller size, never lowering a measured time (isotonic
        regression would average the two and report a measured size faster than it ran).
        """
        out: list[float] = []
        top = 0.0
        for t in self.times_s:
            top = max(top, t)
            out.append(top)
        return tuple(out)

    @property
    def raised_points(self) -> int:
        """How many points :attr:`envelope_times_s` raised above their measured time."""
        return sum(e > t for e, t in zip(self.envelope_times_s, self.times_s, strict=True))


@dataclass(frozen=True, slots=True)
class HardwareProfile:
    name: str
    description: str
    device: Device
    intra_node: IntraNode
    nics: Nics
    fabric: Fabric
    collective: Mapping[str, LinkClassParams]
    interference_factor: float
    ranks_per_node: int
    sources: tuple[str, ...] = ()
    origin: str = field(default="builtin")  # file path or "builtin"
    measured_collectives: tuple[MeasuredCollective, ...] = ()
    provenance: Mapping[str, str] = field(default_factory=dict)  # calibration: host, date...
    # The hosts' CPU vendor ("intel", "amd", "other"): NCCL charges a per-step network
    # overhead and caps its LL protocol by it across nodes (src/graph/tuning.cc).
    host_cpu_vendor: str = "intel"
    # How a rank's non-blocking collectives progress while it computes: "thread" (a
    # communication thread or engine of their own: NCCL, gloo, Horovod, MPI progress
    # threads) or "polled" (only inside the Test calls the computing thread makes between
    # layers: plain MPI non-blocking collectives on CPUs). ``comm_interference_factor``
    # (thread only): while the rank computes, a collective's bandwidth part progresses at
    # 1/(1 + it).
    comm_progress: str = "thread"
    comm_interference_factor: float = 0.0
    # With "polled": a collective's bandwidth part is work on each member's computing
    # thread, done at its polls, this many times its cost alone (>= 1; measured by
    # ``calibrate all --progress test``). See :mod:`sim.engine.core`.
    poll_work_factor: float = 1.0

    def measured(self, op: str, ranks: int, nodes: int) -> MeasuredCollective | None:
        for m in self.measured_collectives:
            if m.op == op and m.ranks == ranks and m.nodes == nodes:
                return m
        return None

    @property
    def max_devices(self) -> int:
        return self.fabric.max_nodes * self.ranks_per_node
