"""Load hardware profiles from YAML into :class:`sim.model.hardware.HardwareProfile`.

The file format is documented in ``hardware_profiles/SCHEMA.md``. Keys carry their
unit (``_gb_per_s`` = 10^9 bytes/s per direction, ``_gbit_per_s`` = 10^9 bits/s,
``_us`` = microseconds, ``_tflops`` = 10^12 FLOP/s, ``_gib`` = 2^30 bytes); this is the
one place they are converted to SI. Every problem raises :class:`sim.errors.InputError`
naming the file, the key and what is wrong; nothing half-loaded is returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import networkx as nx
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sim.errors import InputError
from sim.formats.io import read_yaml_mapping, validation_problem
from sim.model.hardware import (
    EFFICIENCY_KEYS,
    Device,
    Fabric,
    HardwareProfile,
    IntraNode,
    LinkClassParams,
    MeasuredCollective,
    Nics,
    NvlinkMesh,
    unknown_kind,
)

GB = 1e9

# Bounds on every number and text, checked before anything is built: the SI values
# (x 1e9, x 1e12, x 1e-6) must stay finite and positive, and a profile must not ask for
# work no machine has (a million devices on a node, rings over them). Generous: the
# largest real values are within a factor of 1000 of no bound.
MAX_DEVICES_PER_NODE = 1024
MAX_NODES = 1_000_000
MIN_GB_PER_S, MAX_GB_PER_S = 1e-6, 1e9  # a link or NIC: 1 kB/s to 1 EB/s
MIN_TFLOPS, MAX_TFLOPS = 1e-9, 1e9  # 1 kFLOP/s to 1 ZFLOP/s
MAX_LATENCY_US = 1e6  # one second
MAX_NAME_CHARS = 200
MAX_TEXT_CHARS = 2000
MAX_ENTRIES = 1000  # sources, provenance, dtypes, measured points

Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


def _at_least(minimum: float, unit: str):
    def check(value: float) -> float:
        if value < minimum:
            raise ValueError(f"must be at least {minimum:g} {unit}, got {value:g}")
        return value

    return AfterValidator(check)


GBPerS = Annotated[float, Field(gt=0, le=MAX_GB_PER_S), _at_least(MIN_GB_PER_S, "GB/s (or Gbit/s)")]
LatencyUs = Annotated[float, Field(ge=0, le=MAX_LATENCY_US)]
Fraction = Annotated[float, Field(gt=0, le=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: object, info: ValidationInfo) -> object:
        """YAML's true/false is not a number: pydantic would read ``interference_factor:
        true`` as 1.0 (and ``memory_gib: true`` as 1 GiB) without a word."""
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and field.annotation not in (bool, "bool"):
            raise ValueError(f"must be a number, not {str(value).lower()}")
        return value


class DeviceSpec(_Strict):
    kind: Literal["gpu", "cpu"]
    model: Name
    count_per_node: int = Field(gt=0, le=MAX_DEVICES_PER_NODE)
    peak_tflops: dict[Name, float] = Field(max_length=MAX_ENTRIES)
    memory_gib: float = Field(gt=0, le=1e9)
    memory_bandwidth_gb_per_s: GBPerS
    efficiency: dict[Name, float] = Field(max_length=MAX_ENTRIES)
    efficiency_by_dtype: dict[Name, dict[Name, float]] = Field(
        default_factory=dict, max_length=MAX_ENTRIES
    )
    compute_capability: float | None = Field(default=None, ge=1.0, le=100.0)

    @model_validator(mode="after")
    def _check(self) -> DeviceSpec:
        if "fp32" not in self.peak_tflops:
            raise ValueError("peak_tflops must give at least fp32")
        for dtype, v in self.peak_tflops.items():
            if v <= 0:
                raise ValueError(f"peak_tflops.{dtype} must be > 0, got {v}")
            if not MIN_TFLOPS <= v <= MAX_TFLOPS:
                raise ValueError(
                    f"peak_tflops.{dtype} must be from {MIN_TFLOPS:g} to {MAX_TFLOPS:g}, got {v:g}"
                )
        if "default" not in self.efficiency:
            raise ValueError("efficiency must give a 'default' entry")
        for kind, v in self.efficiency.items():
            if not 0 < v <= 1:
                raise ValueError(f"efficiency.{kind} must be in (0, 1], got {v}")
        for dtype, table in self.efficiency_by_dtype.items():
            if dtype not in self.peak_tflops:
                raise ValueError(
                    f"efficiency_by_dtype.{dtype}: no peak_tflops.{dtype} to apply it to"
                )
            for kind, v in table.items():
                if not 0 < v <= 1:
                    raise ValueError(
                        f"efficiency_by_dtype.{dtype}.{kind} must be in (0, 1], got {v}"
                    )
        return self


class NvlinkSpec(_Strict):
    bandwidth_gb_per_s_per_link: GBPerS
    edges: list[tuple[int, int, Annotated[int, Field(le=MAX_ENTRIES)]]] = Field(
        max_length=MAX_DEVICES_PER_NODE * 8
    )


class NvswitchSpec(_Strict):
    bandwidth_gb_per_s_per_device: GBPerS
    nvlink_sharp: bool = False


class LinkSpec(_Strict):
    bandwidth_gb_per_s: GBPerS


class IntraNodeSpec(_Strict):
    nvlink: NvlinkSpec | None = None
    nvswitch: NvswitchSpec | None = None
    pcie: LinkSpec | None = None
    socket_link: LinkSpec | None = None


class NicSpec(_Strict):
    count_per_node: int = Field(ge=0, le=MAX_DEVICES_PER_NODE)
    bandwidth_gbit_per_s: GBPerS
    latency_us: LatencyUs
    devices: list[Annotated[list[int], Field(max_length=MAX_DEVICES_PER_NODE)]] | None = Field(
        default=None, max_length=MAX_DEVICES_PER_NODE
    )


class FabricSpec(_Strict):
    kind: Literal["switch", "fat-tree"]
    max_nodes: int = Field(gt=0, le=MAX_NODES)
    switch_latency_us: float = Field(ge=0, le=MAX_LATENCY_US, default=0.1)
    oversubscription: float = Field(ge=1.0, le=1e6, default=1.0)
    nodes_per_leaf: int = Field(gt=0, le=MAX_NODES, default=16)


class LinkClassSpec(_Strict):
    alpha_us: LatencyUs
    efficiency: Fraction


class CollectiveSpec(_Strict):
    nvlink: LinkClassSpec | None = None
    nvswitch: LinkClassSpec | None = None
    pcie: LinkClassSpec | None = None
    socket: LinkClassSpec | None = None
    network: LinkClassSpec


class MeasuredCollectiveSpec(_Strict):
    op: Literal["allreduce", "reduce-scatter", "allgather", "broadcast"]
    ranks: int = Field(ge=2, le=10_000_000)
    nodes: int = Field(default=1, gt=0, le=MAX_NODES)
    backend: Name
    alpha_us: LatencyUs
    bandwidth_gb_per_s: GBPerS
    fit_worst_error: float = Field(ge=0, le=1e6)
    # [bytes, microseconds]
    points: list[tuple[float, float]] = Field(min_length=2, max_length=MAX_ENTRIES)

    @model_validator(mode="after")
    def _check(self) -> MeasuredCollectiveSpec:
        sizes = [b for b, _ in self.points]
        if any(b <= 0 for b in sizes) or any(t <= 0 for _, t in self.points):
            raise ValueError("points: every [bytes, microseconds] must be > 0")
        if any(b > 2**50 for b in sizes) or any(t > 1e12 for _, t in self.points):
            raise ValueError("points: sizes must be at most 2^50 bytes and times 1e12 us")
        if any(b2 <= b1 for b1, b2 in zip(sizes, sizes[1:], strict=False)):
            raise ValueError("points: sizes must be strictly increasing")
        if self.nodes > self.ranks:
            raise ValueError(f"nodes ({self.nodes}) cannot exceed ranks ({self.ranks})")
        return self


class ProfileSpec(_Strict):
    name: Name
    description: Text
    ranks_per_node: int | None = Field(default=None, gt=0, le=MAX_DEVICES_PER_NODE)
    device: DeviceSpec
    intra_node: IntraNodeSpec
    nics: NicSpec
    fabric: FabricSpec
    collective: CollectiveSpec
    # Up to compute 100x slower: calibration has measured ~12 on a loaded 2-core box, and
    # caps what it writes at 100 (saying so); beyond it a run is not a what-if but a stall.
    interference_factor: float = Field(ge=0, le=100)
    sources: list[Text] = Field(min_length=1, max_length=MAX_ENTRIES)
    measured_collectives: list[MeasuredCollectiveSpec] = Field(
        default_factory=list, max_length=MAX_ENTRIES
    )
    provenance: dict[Name, Text | int | float] = Field(default_factory=dict, max_length=MAX_ENTRIES)
    host_cpu_vendor: Literal["intel", "amd", "other"] = "intel"
    comm_progress: Literal["thread", "polled"] = "thread"
    # As interference_factor: a collective up to 100x slower while its rank computes.
    comm_interference_factor: float = Field(default=0.0, ge=0, le=100)
    # polled: a collective's bandwidth part costs each member's thread this many times
    # its time alone, at the thread's polls (at least 1: never cheaper than alone).
    poll_work_factor: float = Field(default=1.0, ge=1, le=100)


def parse_profile(data: object, origin: str) -> HardwareProfile:
    """Validate a parsed YAML document and build the SI profile."""
    if not isinstance(data, dict):
        raise InputError("a profile must be a YAML mapping at the top level", file=origin)
    try:
        spec = ProfileSpec.model_validate(data)
    except ValidationError as err:
        key, reason = validation_problem(err, ProfileSpec)
        raise InputError(reason, file=origin, key=key) from None
    _check_kinds(spec.device, origin)
    profile = _build(spec, origin)
    _check_topology(profile, origin)
    return profile


def _check_kinds(d: DeviceSpec, origin: str) -> None:
    """Efficiency keys must be layer kinds (workloads.model.LAYER_KINDS) or "default":
    a misspelt kind would silently fall back to the default efficiency."""
    tables = [("device.efficiency", d.efficiency)] + [
        (f"device.efficiency_by_dtype.{dtype}", table)
        for dtype, table in d.efficiency_by_dtype.items()
    ]
    for where, table in tables:
        for kind in table:
            reason = unknown_kind(kind, EFFICIENCY_KEYS)
            if reason:
                raise InputError(reason, file=origin, key=f"{where}.{kind}")


def _check_progress(spec: ProfileSpec, origin: str) -> None:
    """Each progress model takes its own factor (:mod:`sim.engine.core`)."""
    if spec.comm_progress == "polled" and spec.comm_interference_factor:
        raise InputError(
            "comm_interference_factor applies to comm_progress: thread; with polled a "
            "collective's work runs on the computing thread at its polls, costing "
            "poll_work_factor times its time alone (a profile written before that model: "
            "remove the key and run dtsim calibrate all --progress test again; "
            "poll_work_factor is another quantity, 1 unless measured)",
            file=origin,
            key="comm_interference_factor",
        )
    if spec.comm_progress == "thread" and spec.poll_work_factor != 1.0:
        raise InputError(
            "poll_work_factor applies to comm_progress: polled (collectives progressed by "
            "the computing thread's polls); this profile's collectives have a thread of "
            "their own",
            file=origin,
            key="poll_work_factor",
        )


def _build(spec: ProfileSpec, origin: str) -> HardwareProfile:
    _check_progress(spec, origin)
    d = spec.device
    n_dev = d.count_per_node
    device = Device(
        kind=d.kind,
        model=d.model,
        count_per_node=n_dev,
        peak_flops={k: v * 1e12 for k, v in d.peak_tflops.items()},
        memory_bytes=d.memory_gib * 2**30,
        memory_bandwidth_bytes_per_s=d.memory_bandwidth_gb_per_s * GB,
        efficiency=dict(d.efficiency),
        efficiency_by_dtype={k: dict(v) for k, v in d.efficiency_by_dtype.items()},
        compute_capability=d.compute_capability,
    )
    intra = spec.intra_node
    nvlink = None
    if intra.nvlink is not None:
        for i, (a, b, count) in enumerate(intra.nvlink.edges):
            key = f"intra_node.nvlink.edges[{i}]"
            for dev in (a, b):
                if not 0 <= dev < n_dev:
                    raise InputError(
                        f"link to device {dev}, which does not exist "
                        f"(device.count_per_node is {n_dev}: devices 0..{n_dev - 1})",
                        file=origin,
                        key=key,
                    )
            if a == b:
                raise InputError(f"a link from device {a} to itself", file=origin, key=key)
            if count <= 0:
                raise InputError(f"link count must be > 0, got {count}", file=origin, key=key)
        nvlink = NvlinkMesh(
            bandwidth_bytes_per_s_per_link=intra.nvlink.bandwidth_gb_per_s_per_link * GB,
            edges=tuple(tuple(e) for e in intra.nvlink.edges),  # type: ignore[misc]
        )
    intra_node = IntraNode(
        nvlink=nvlink,
        nvswitch_bytes_per_s_per_device=(
            intra.nvswitch.bandwidth_gb_per_s_per_device * GB if intra.nvswitch else None
        ),
        pcie_bytes_per_s=intra.pcie.bandwidth_gb_per_s * GB if intra.pcie else None,
        socket_link_bytes_per_s=(
            intra.socket_link.bandwidth_gb_per_s * GB if intra.socket_link else None
        ),
        nvlink_sharp=bool(intra.nvswitch and intra.nvswitch.nvlink_sharp),
    )
    if intra_node.nvlink_sharp and (d.kind != "gpu" or (d.compute_capability or 0) < 9.0):
        # NCCL offers NVLS only on an NVSwitch with compute capability 9.0 or later
        # (src/graph/search.cc); SHARP arrived with Hopper's third-generation NVSwitch.
        raise InputError(
            "NVLink SHARP needs GPUs of compute capability 9.0 or later; give "
            "device.compute_capability",
            file=origin,
            key="intra_node.nvswitch.nvlink_sharp",
        )
    n = spec.nics
    if n.devices is None:
        # Spread devices evenly over the NICs, in device order.
        per = max(1, -(-n_dev // n.count_per_node)) if n.count_per_node else 0
        sharing = [list(range(i * per, min(n_dev, (i + 1) * per))) for i in range(n.count_per_node)]
    else:
        sharing = n.devices
        if len(sharing) != n.count_per_node:
            raise InputError(
                f"lists {len(sharing)} NICs but nics.count_per_node is {n.count_per_node}",
                file=origin,
                key="nics.devices",
            )
        for i, devs in enumerate(sharing):
            for dev in devs:
                if not 0 <= dev < n_dev:
                    raise InputError(
                        f"NIC {i} is shared by device {dev}, which does not exist "
                        f"(devices 0..{n_dev - 1})",
                        file=origin,
                        key=f"nics.devices[{i}]",
                    )
    nics = Nics(
        count_per_node=n.count_per_node,
        bandwidth_bytes_per_s=n.bandwidth_gbit_per_s * GB / 8,
        latency_s=n.latency_us * 1e-6,
        devices=tuple(tuple(x) for x in sharing),
    )
    f = spec.fabric
    fabric = Fabric(
        kind=f.kind,
        max_nodes=f.max_nodes,
        switch_latency_s=f.switch_latency_us * 1e-6,
        oversubscription=f.oversubscription,
        nodes_per_leaf=f.nodes_per_leaf if f.kind == "fat-tree" else 0,
    )
    coll = {
        cls: LinkClassParams(alpha_s=p.alpha_us * 1e-6, efficiency=p.efficiency)
        for cls, p in spec.collective
        if p is not None
    }
    for cls, present in (
        ("nvlink", intra_node.nvlink is not None),
        ("nvswitch", intra_node.nvswitch_bytes_per_s_per_device is not None),
        ("pcie", intra_node.pcie_bytes_per_s is not None),
        ("socket", intra_node.socket_link_bytes_per_s is not None),
    ):
        if present and cls not in coll:
            raise InputError(
                f"intra_node has {cls} links but collective.{cls} (alpha_us, efficiency) "
                "is missing",
                file=origin,
                key=f"collective.{cls}",
            )
    ranks_per_node = spec.ranks_per_node or n_dev
    if ranks_per_node > n_dev:
        raise InputError(
            f"ranks_per_node {ranks_per_node} exceeds device.count_per_node {n_dev}",
            file=origin,
            key="ranks_per_node",
        )
    measured = []
    seen: dict[tuple[str, int, int], int] = {}
    for i, m in enumerate(spec.measured_collectives):
        where = (m.op, m.ranks, m.nodes)
        if where in seen:
            raise InputError(
                f"a second {m.op} over {m.ranks} ranks on {m.nodes} node(s) "
                f"(first at measured_collectives[{seen[where]}])",
                file=origin,
                key=f"measured_collectives[{i}]",
            )
        seen[where] = i
        measured.append(
            MeasuredCollective(
                op=m.op,
                ranks=m.ranks,
                nodes=m.nodes,
                backend=m.backend,
                alpha_s=m.alpha_us * 1e-6,
                bandwidth_bytes_per_s=m.bandwidth_gb_per_s * GB,
                fit_worst_error=m.fit_worst_error,
                sizes_bytes=tuple(b for b, _ in m.points),
                times_s=tuple(t * 1e-6 for _, t in m.points),
            )
        )
    return HardwareProfile(
        name=spec.name,
        description=spec.description,
        device=device,
        intra_node=intra_node,
        nics=nics,
        fabric=fabric,
        collective=coll,
        interference_factor=spec.interference_factor,
        ranks_per_node=ranks_per_node,
        sources=tuple(spec.sources),
        origin=origin,
        measured_collectives=tuple(measured),
        provenance={k: str(v) for k, v in spec.provenance.items()},
        host_cpu_vendor=spec.host_cpu_vendor,
        comm_progress=spec.comm_progress,
        comm_interference_factor=spec.comm_interference_factor,
        poll_work_factor=spec.poll_work_factor,
    )


def _check_topology(profile: HardwareProfile, origin: str) -> None:
    from sim.model.topology import node_graph

    g = node_graph(profile)
    devices = [v for v, attrs in g.nodes(data=True) if attrs["role"] == "device"]
    reach = nx.node_connected_component(g, devices[0])
    cut_off = [d for d in devices if d not in reach]
    if cut_off:
        raise InputError(
            f"disconnected topology: devices {', '.join(cut_off)} have no path to "
            f"{devices[0]} (add nvlink edges, an nvswitch, pcie or socket_link)",
            file=origin,
            key="intra_node",
        )
    # Connected is not enough: the cost model runs rings over one link class, so a
    # chain of NVLinks with no PCIe would load here and fail at the first collective.
    from sim.model.topology import Placement, Topology

    rpn = profile.ranks_per_node
    try:
        Topology(profile, Placement(rpn, rpn)).intra_rings(tuple(range(rpn)))
    except InputError as err:
        if err.key == "intra_node.nvlink":
            raise  # the ring search's own limit: its message says what to do
        raise InputError(
            f"no ring runs through devices 0..{rpn - 1} over one intra-node link class; "
            "add pcie, an nvswitch, or nvlink edges that form a cycle through all of them",
            file=origin,
            key="intra_node",
        ) from None
    if profile.fabric.max_nodes > 1 and profile.nics.count_per_node == 0:
        raise InputError(
            f"disconnected topology: fabric.max_nodes is {profile.fabric.max_nodes} but the "
            "nodes have no NICs",
            file=origin,
            key="nics.count_per_node",
        )


def load_profile_file(path: str | Path) -> HardwareProfile:
    return parse_profile(read_yaml_mapping(path), str(path))
