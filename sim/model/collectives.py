"""Collective costs (one collective alone on idle links): NCCL's tuning model on GPUs,
MPI's α-β forms on CPUs, and calibrated tables where a profile has them.

A collective over p ranks, g per node on N nodes, sees two levels of links
(:class:`Span`): the intra-node ring (per-step latency α_intra, effective bandwidth
B_intra) and the network (α_net = the profile's network α + NIC latency + switch hops,
B_net = the node's NICs serving the group, after oversubscription). Each algorithm is a
small class below with its formula and where it comes from.

**GPUs follow NCCL's tuner** (NVIDIA/nccl ``src/graph/tuning.cc``, read at master
5067397c, the v2.30 line; the constants have stood since about 2.19). For each
algorithm and protocol (LL, LL128, Simple) NCCL predicts ``latency + bytes / algbw`` and
runs the fastest; ``auto`` does the same over ring, tree, NVLS, NVLS tree (and dtsim's
hierarchical). Its latency is a base per algorithm and protocol plus a hardware latency
per hop and link type (NVLink, PCI, network):

- ring: ``base + (nsteps − nInter)·intraLat + nInter·interLat``, nsteps = 2(p−1) for
  all-reduce, of which nInter = 2(N−1) cross nodes (p−1 and N−1 for reduce-scatter and
  all-gather); across nodes each intra step costs at least NCCL's per-step network
  overhead (1 µs on Intel hosts, 2 µs on AMD, ×3 for Simple);
- tree: ``base + 2·((g−1)·intraLat + ⌊log2 N⌋·interLat)``: a chain inside each node
  and a binary tree across nodes;
- NVLS (NVLink SHARP, one node): ``intraLat`` alone; NVLS tree: ``intraLat +
  2·⌊log2 N⌋·interLat``;
- interLat is NCCL's network hardware latency plus the NIC's own latency (NCCL's
  ``latencyInter``, twice for Simple); with one rank per node NCCL charges the tree's.

The profile's α per link class is NCCL's hwLat for Ring/LL128 on that link (NVLink
1.9 µs, PCI 2.5 µs, network 4.0 µs); every other algorithm and protocol keeps NCCL's
proportion to it, so a built-in profile reproduces NCCL's table and a calibrated α
scales it. Bandwidths: Simple runs at the profile's effective bandwidth; LL at half
(capped per GPU generation and host), LL128 at 0.92 of it (tree all-reduce: 0.92 for
Simple, 1/3.8 for LL, 7/9 or 120/128 for LL128, and NCCL's per-size tree correction).
Where dtsim departs from the tuner (no channel counts; a physical bound where NCCL
guesses; NVLS traffic) the class says so.

**CPUs follow MPI** (Thakur, Rabenseifner & Gropp, "Optimization of Collective
Communication Operations in MPICH", IJHPCA 2005): ring, tree, recursive
halving-doubling, hierarchical; each step costs α of the link it crosses plus its
bytes over that link's bandwidth.

**NIC sharing.** When a node's members send across the network at the same step, they
share its NICs: a step is charged with every sharing rank's bytes
(``GroupLinks.rank_network_share_bytes_per_s``). A ring (one ring per NIC, as NCCL's
channels) and NCCL's tree (one chain end per node and channel) send one flow per NIC,
so they get the node's NICs whole; halving-doubling's inter-node steps, MPI's two-tree
over rank numbers, hierarchical's inter-node phase and a parameter server's push and
pull send from every rank at once, so each rank gets its NIC over the ranks on it.

A calibrated profile's measured table (``MeasuredCollective``) replaces the closed forms
for its op and group under ``auto``; :func:`measured_time` makes it a continuous,
non-decreasing function of bytes inside, below and above the measured sizes, and marks
the costs outside them as extrapolated.

Every cost is split into a latency part and a bandwidth part: the engine shares the
bandwidth part of concurrent collectives on the links they cross. Busbw follows
nccl-tests (PERFORMANCE.md): all-reduce algbw·2(p-1)/p, reduce-scatter and all-gather
algbw·(p-1)/p, broadcast algbw.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import ClassVar

from sim.errors import InputError
from sim.model.hardware import HardwareProfile, MeasuredCollective
from sim.model.topology import GroupLinks, Topology

OPS = ("allreduce", "reduce-scatter", "allgather", "broadcast")
ALGORITHMS = ("ring", "tree", "halving-doubling", "hierarchical", "nvls", "nvls-tree")
# Which algorithms each op supports (a profile may lack some: see CostModel.available).
SUPPORTED = {
    "allreduce": ("ring", "tree", "halving-doubling", "hierarchical", "nvls", "nvls-tree"),
    "reduce-scatter": ("ring", "halving-doubling", "hierarchical"),
    "allgather": ("ring", "halving-doubling", "hierarchical"),
    "broadcast": ("ring", "tree", "hierarchical"),
}
PROTOCOLS = ("LL", "LL128", "Simple")
US = 1e-6
GB = 1e9


@dataclass(frozen=True, slots=True)
class CollectiveCost:
    """The cost of one collective; ``time_s = latency_s + bandwidth_s``.

    ``links`` names the link classes the collective loads ("nvlink", "network", ...):
    concurrent collectives that load the same class on the same rank share it.
    ``extrapolated_from_bytes``: for a cost a measured table gave outside its size range,
    the measured size it was extrapolated from (the table's first or last); else None.
    ``protocol``: NCCL's protocol (LL, LL128, Simple; "+"-joined for the phases of a
    hierarchical collective) on GPUs, None for MPI's forms and measured tables.
    """

    op: str
    algorithm: str
    bytes: float
    devices: int
    latency_s: float
    bandwidth_s: float
    links: tuple[str, ...]
    extrapolated_from_bytes: float | None = None
    protocol: str | None = None

    @property
    def time_s(self) -> float:
        return self.latency_s + self.bandwidth_s

    @property
    def extrapolation_factor(self) -> float:
        """bytes / the nearest measured size (> 1 above the table, < 1 below it); 1.0 for
        a cost that was not extrapolated."""
        if self.extrapolated_from_bytes is None:
            return 1.0
        return self.bytes / self.extrapolated_from_bytes

    @property
    def algbw_bytes_per_s(self) -> float:
        return self.bytes / self.time_s if self.time_s > 0 else 0.0

    @property
    def busbw_bytes_per_s(self) -> float:
        return self.algbw_bytes_per_s * bus_factor(self.op, self.devices)

    def as_dict(self) -> dict:
        return {
            "op": self.op,
            "algorithm": self.algorithm,
            "bytes": self.bytes,
            "devices": self.devices,
            "time_s": self.time_s,
            "algbw_bytes_per_s": self.algbw_bytes_per_s,
            "busbw_bytes_per_s": self.busbw_bytes_per_s,
            **(
                {
                    "extrapolated_from_bytes": self.extrapolated_from_bytes,
                    "extrapolation_factor": self.extrapolation_factor,
                }
                if self.extrapolated_from_bytes is not None
                else {}
            ),
        }


def bus_factor(op: str, p: int) -> float:
    """nccl-tests' busbw / algbw for ``op`` over ``p`` ranks."""
    if p <= 1:
        return 0.0
    if op == "allreduce":
        return 2 * (p - 1) / p
    if op in ("reduce-scatter", "allgather"):
        return (p - 1) / p
    return 1.0


@dataclass(frozen=True, slots=True)
class _Level:
    """One level of links a step crosses: alpha and effective bandwidth."""

    alpha_s: float
    bandwidth_bytes_per_s: float
    link: str


# -- NCCL's tuning constants (src/graph/tuning.cc) -----------------------------------------
# Columns are the protocols LL, LL128, Simple; latencies in µs, bandwidths in GB/s.
NCCL_BASE_LATENCY_US = {
    "tree": (6.8, 14.0, 8.4),
    "ring": (6.6, 14.0, 8.4),
    "nvls": (0.0, 0.0, 0.0),
    "nvls-tree": (0.0, 0.0, 0.0),
}
NCCL_HW_LATENCY_US = {
    "nvlink": {
        "tree": (0.6, 1.25, 4.0),
        "ring": (0.6, 1.9, 3.4),
        "nvls": (0.0, 0.0, 25.0),
        "nvls-tree": (0.0, 0.0, 25.0),
    },
    "pci": {
        "tree": (1.0, 1.9, 4.0),
        "ring": (1.0, 2.5, 5.7),
        "nvls": (0.0, 0.0, 0.0),
        "nvls-tree": (0.0, 0.0, 0.0),
    },
    "net": {
        "tree": (5.0, 8.5, 14.0),
        "ring": (2.7, 4.0, 14.0),
        "nvls": (0.0, 0.0, 18.0),
        "nvls-tree": (0.0, 0.0, 20.9),
    },
}
# A profile's α is the Ring/LL128 entry of its link type; the table scales with it.
NCCL_REFERENCE_ALPHA_US = {"nvlink": 1.9, "pci": 2.5, "net": 4.0}
# llMaxBws: one node by GPU generation (Volta, Ampere, Hopper, Blackwell); across nodes
# by host CPU (row 0 Intel, row 1 AMD), 2 nodes or more.
NCCL_LL_MAX_BW_GB = (
    (39.0, 39.0, 20.4),
    (87.7, 22.5, 19.0),
    (141.0, 45.0, 35.0),
    (282.0, 90.0, 70.0),
)
NCCL_NVLS_EFFICIENCY = (0.0, 0.0, 0.85, 0.74)  # nvlsEfficiency per generation
# ncclTopoGetAlgoTime's treeCorrectionFactor: tree all-reduce bandwidth by protocol
# and ⌊log2(bytes / 64)⌋ (the tuner uses the first 23 bins: below 512 MiB).
# fmt: off
NCCL_TREE_CORRECTION = (
    (1.0, 1.0, 1.0, 1.0, .9, .8, .7, .7, .7, .7, .6, .5,
     .4, .4, .5, .6, .7, .8, .9, 1.0, 1.0, 1.0, 1.0, 1.0),
    (1.0, 1.0, 1.0, 1.0, 1.0, .9, .8, .8, .8, .7, .6, .6,
     .6, .6, .6, .6, .8, .9, .9, .9, .9, 1.0, 1.0, 1.0),
    (.9, .9, .9, .9, .9, .9, .9, .8, .7, .6, .6, .5,
     .5, .5, .5, .6, .7, .8, .7, .7, .8, .9, .9, .9),
)
# fmt: on
NCCL_TREE_CORRECTED_BINS = 23  # the tuner applies bins 0..22 (64 B to 512 MiB)
NCCL_NET_OVERHEAD_US = {"intel": 1.0, "amd": 2.0, "other": 1.0}  # getNetOverhead
DEFAULT_COMPUTE_CAPABILITY = 8.0  # a GPU profile that gives none: NCCL's Ampere row


def _log2i(n: int) -> int:
    """NCCL's log2i: ⌊log2 n⌋ (0 for n < 2)."""
    return max(0, n.bit_length() - 1)


def _proto(protocol: str | None) -> int:
    return PROTOCOLS.index(protocol or "Simple")


@dataclass(frozen=True, slots=True)
class NcclSystem:
    """What NCCL's tuner reads from a node: GPU generation, link types, host CPU, and
    how the profile's α compare with NCCL's (``*_scale``)."""

    compute_capability: float
    host_cpu_vendor: str
    intra_hw: str  # "nvlink" (NVLink or NVSwitch) or "pci"
    intra_scale: float
    net_scale: float
    net_extra_us: float  # NIC and switch latency: NCCL's graph latencyInter
    nvls: bool

    @property
    def generation(self) -> int:
        """NCCL's compCapIndex: 0 Volta (and older), 1 Ampere, 2 Hopper, 3 Blackwell."""
        cc = self.compute_capability
        return 3 if cc >= 10 else 2 if cc >= 9 else 1 if cc >= 8 else 0

    def hw_latency_us(self, hw: str, algorithm: str, protocol: str) -> float:
        scale = self.net_scale if hw == "net" else self.intra_scale
        return NCCL_HW_LATENCY_US[hw][algorithm][_proto(protocol)] * scale

    def inter_latency_us(self, algorithm: str, protocol: str, per_node: int) -> float:
        """interLat: a network hop, with NCCL's latencyInter (twice for Simple, the
        flush); one rank per node exposes the tree's latency whatever the algorithm."""
        row = "tree" if per_node == 1 else algorithm
        extra = self.net_extra_us * (2 if protocol == "Simple" else 1)
        return self.hw_latency_us("net", row, protocol) + extra

    def net_overhead_us(self, protocol: str) -> float:
        return NCCL_NET_OVERHEAD_US[self.host_cpu_vendor] * (3 if protocol == "Simple" else 1)

    def ll_max_bytes_per_s(self, nodes: int) -> float:
        if nodes == 1:
            return NCCL_LL_MAX_BW_GB[self.generation][0] * GB
        row = 1 if self.host_cpu_vendor == "amd" else 0
        return NCCL_LL_MAX_BW_GB[row][1 if nodes == 2 else 2] * GB

    def protocols(self, per_node: int) -> tuple[str, ...]:
        """LL128 runs only on compute capability 7.0 and later, over NVLink (NCCL turns
        it off past PATH_NVB); LL and Simple always."""
        ll128 = self.compute_capability >= 7.0 and (per_node == 1 or self.intra_hw == "nvlink")
        return PROTOCOLS if ll128 else ("LL", "Simple")

    @property
    def nvls_efficiency(self) -> float:
        return NCCL_NVLS_EFFICIENCY[self.generation]


def tree_correction(protocol: str, nbytes: float) -> float:
    """NCCL's tree correction factor at ``nbytes``. NCCL takes it per power-of-two bin;
    here it runs linearly in log2(bytes) from each bin's first size to the next, so a
    cost never falls as bytes grow (no two neighbouring factors differ by 2x)."""
    row = NCCL_TREE_CORRECTION[_proto(protocol)]
    x = math.log2(max(nbytes, 128.0) / 64.0)  # NCCL's bin 0 holds everything below 128 B
    i = int(x)
    if i >= NCCL_TREE_CORRECTED_BINS:
        return 1.0
    nxt = row[i + 1] if i + 1 < NCCL_TREE_CORRECTED_BINS else 1.0
    return row[i] + (nxt - row[i]) * (x - i)


@dataclass(frozen=True, slots=True)
class Span:
    """A collective's group as the formulas see it: p ranks, g per node on N nodes."""

    ranks: int
    nodes: int
    per_node: int
    intra: _Level
    net: _Level  # the node's NICs (effective); infinite on one node
    rank_share_bytes_per_s: float  # one rank's NIC share when every rank sends at once
    nccl: NcclSystem | None  # None: MPI's α-β forms

    @property
    def flat_bytes_per_s(self) -> float:
        """A ring or chain through every node is bound by its slowest level."""
        if self.nodes == 1:
            return self.intra.bandwidth_bytes_per_s
        return min(self.intra.bandwidth_bytes_per_s, self.net.bandwidth_bytes_per_s)

    @property
    def links(self) -> tuple[str, ...]:
        if self.nodes == 1:
            return (self.intra.link,)
        return (self.intra.link, "network") if self.per_node > 1 else ("network",)

    def within_node(self) -> Span:
        """The members on one node, as their own group."""
        return Span(
            self.per_node,
            1,
            self.per_node,
            self.intra,
            _Level(0.0, math.inf, "network"),
            self.rank_share_bytes_per_s,
            self.nccl,
        )

    def across_nodes(self, bandwidth_bytes_per_s: float) -> Span:
        """One rank per node, each on ``bandwidth_bytes_per_s`` of the network."""
        return Span(
            self.nodes,
            self.nodes,
            1,
            _Level(0.0, math.inf, "local"),
            _Level(self.net.alpha_s, bandwidth_bytes_per_s, "network"),
            bandwidth_bytes_per_s,
            self.nccl,
        )


Terms = tuple[float, float]  # (latency_s, bandwidth_s)


class Algorithm:
    """One collective algorithm: which ops it runs, on which groups, and its cost."""

    name: ClassVar[str]
    ops: ClassVar[tuple[str, ...]]

    def unavailable(self, s: Span, profile: HardwareProfile) -> str | None:
        """Why this group cannot run it (None: it can)."""
        return None

    def protocols(self, s: Span) -> tuple[str | None, ...]:
        return (None,) if s.nccl is None else s.nccl.protocols(s.per_node)

    def terms(self, op: str, n: float, s: Span, protocol: str | None) -> Terms:
        raise NotImplementedError

    def best(self, op: str, n: float, s: Span) -> tuple[Terms, str | None]:
        """The fastest protocol's terms, as NCCL's tuner picks (ties: LL first)."""
        options = [(self.terms(op, n, s, proto), proto) for proto in self.protocols(s)]
        return min(options, key=lambda o: o[0][0] + o[0][1])


def _ring_fraction(op: str, p: int) -> float:
    """Bytes each rank sends per byte of the buffer: 2(p-1)/p, (p-1)/p, or 1."""
    return bus_factor(op, p)


class Ring(Algorithm):
    """Ring (Patarasuk & Yuan, JPDC 2009; NCCL's rings, one per NIC and channel).

    MPI: each step costs the α of the link it crosses; a ring visits the nodes in turn,
    so of its 2(p-1) all-reduce steps 2(N-1) cross the network:
    ``(2(p-1) - 2(N-1))·α_intra + 2(N-1)·α_net + 2(p-1)/p · n/B``.
    NCCL: the same structure with the tuner's latencies (module docstring), LL at half
    the bandwidth capped by llMaxBw, LL128 at 0.92, and ×1.4 (×1.9 before Ampere) on a
    multi-node Simple all-reduce's latency (the tuner's ring "plateau"). NCCL's model
    takes the intra-node bandwidth for rings over 2 nodes; dtsim keeps the slower of the
    two levels, which is what a ring over the NICs can carry.
    """

    name = "ring"
    ops = ("allreduce", "reduce-scatter", "allgather", "broadcast")

    def terms(self, op: str, n: float, s: Span, protocol: str | None) -> Terms:
        p, nodes = s.ranks, s.nodes
        if op == "allreduce":
            steps, inter = 2 * (p - 1), 2 * (nodes - 1)
        else:
            steps, inter = p - 1, nodes - 1
        bus = s.flat_bytes_per_s
        if s.nccl is None or protocol is None:
            lat = (steps - inter) * s.intra.alpha_s + inter * s.net.alpha_s
            return lat, _ring_fraction(op, p) * n / bus
        nc = s.nccl
        if op == "broadcast":
            # NCCL: p steps at the hop latency of the ring's link type (network across
            # nodes), Simple at the tree's.
            hw = "net" if nodes > 1 else nc.intra_hw
            row = "tree" if protocol == "Simple" else "ring"
            lat_us = NCCL_BASE_LATENCY_US["ring"][_proto(protocol)]
            lat_us += p * nc.hw_latency_us(hw, row, protocol)
        else:
            intra_us = nc.hw_latency_us(nc.intra_hw, "ring", protocol)
            if nodes > 1:
                intra_us = max(intra_us, nc.net_overhead_us(protocol))
            lat_us = NCCL_BASE_LATENCY_US["ring"][_proto(protocol)]
            lat_us += (steps - inter) * intra_us
            lat_us += inter * nc.inter_latency_us("ring", protocol, s.per_node)
            if op == "allreduce" and nodes > 1 and protocol == "Simple":
                lat_us *= 1.4 if nc.compute_capability >= 8.0 else 1.9
        if protocol == "LL":
            bus = min(nc.ll_max_bytes_per_s(nodes), 0.5 * bus)
        elif protocol == "LL128":
            bus *= 0.92
        return lat_us * US, _ring_fraction(op, p) * n / bus


class Tree(Algorithm):
    """Tree all-reduce (and broadcast): reduce up, broadcast down, pipelined.

    NCCL (double binary tree, Sanders, Speck & Träff 2009): a chain through each node
    and two complementary binary trees across nodes, one per half of the data. Every
    GPU sends 2n along its chain; a node's NICs carry 2n per direction (n on two nodes,
    where each node is the other's only child and parent: NCCL's model then takes the
    intra-node bandwidth). So busBw = 0.92·min(B_intra, B_net, or 2·B_net on two
    nodes), algbw = busBw/2, with the tuner's protocol factors and size correction.

    MPI: the two trees are built over rank numbers, not nodes, so a rank's tree traffic
    crosses the network from every rank of a node at once: each rank has its NIC
    share. ``2(⌈log2 g⌉·α_intra + ⌈log2 N⌉·α_net) + 2n / min(B_intra, share)``.
    """

    name = "tree"
    ops = ("allreduce", "broadcast")

    def terms(self, op: str, n: float, s: Span, protocol: str | None) -> Terms:
        g, nodes = s.per_node, s.nodes
        phases = 2 if op == "allreduce" else 1
        if s.nccl is None or protocol is None:
            lat = math.ceil(math.log2(g)) * s.intra.alpha_s
            bw = s.intra.bandwidth_bytes_per_s
            if nodes > 1:
                lat += math.ceil(math.log2(nodes)) * s.net.alpha_s
                bw = min(bw, s.rank_share_bytes_per_s)
            return phases * lat, phases * n / bw
        nc = s.nccl
        i = _proto(protocol)
        hop_us = (g - 1) * nc.hw_latency_us(nc.intra_hw, "tree", protocol)
        hop_us += _log2i(nodes) * nc.inter_latency_us("tree", protocol, g)
        lat_us = NCCL_BASE_LATENCY_US["tree"][i] + phases * hop_us
        bus = s.intra.bandwidth_bytes_per_s
        if nodes > 1:
            bus = min(bus, s.net.bandwidth_bytes_per_s * (2 if nodes == 2 else 1))
        if op == "allreduce":
            bus *= 0.92
        if protocol == "LL":
            bus = min(bus / 3.8, nc.ll_max_bytes_per_s(nodes))
        elif protocol == "LL128":
            bus *= 7 / 9 if nodes == 1 else 120 / 128
        algbw = bus / phases
        if op == "allreduce":
            algbw *= tree_correction(protocol, n)
        return lat_us * US, n / algbw


class HalvingDoubling(Algorithm):
    """Recursive halving then doubling (Rabenseifner; MPICH's
    ``allreduce_intra_reduce_scatter_allgather.c``): step k exchanges n/2^(k+1) with the
    rank at distance 2^k, distance 1 first, then the all-gather in reverse.

    With g ranks per node in order, a step stays inside the node when 2^(k+1) divides g;
    otherwise every rank of the node sends at once and shares its NIC:
    ``Σ_k α_k + (n/2^(k+1)) / B_k`` per phase, B_k = B_intra or the rank's NIC share.
    A group that is not a power of two first folds its extra ranks into their right
    neighbours (one step of n, and one back at the end); after the fold the ranks no
    longer line up with nodes, so every later step across nodes counts as inter-node.
    """

    name = "halving-doubling"
    ops = ("allreduce", "reduce-scatter", "allgather")

    def protocols(self, s: Span) -> tuple[str | None, ...]:
        return (None,)  # an MPI algorithm; NCCL has none like it

    def terms(self, op: str, n: float, s: Span, protocol: str | None) -> Terms:
        p, g = s.ranks, s.per_node
        pof2 = 1 << (p.bit_length() - 1)
        folded = pof2 != p
        phases = 2 if op == "allreduce" else 1
        lat = bw = 0.0
        for k in range(pof2.bit_length() - 1):
            inside = s.nodes == 1 or (not folded and g % (2 << k) == 0)
            level_alpha = s.intra.alpha_s if inside else s.net.alpha_s
            level_bw = s.intra.bandwidth_bytes_per_s if inside else s.rank_share_bytes_per_s
            lat += level_alpha
            bw += n / (2 << k) / level_bw
        lat, bw = phases * lat, phases * bw
        if folded:
            # rank 2i hands its n to rank 2i+1 (and gets the result back for all-reduce)
            inside = s.nodes == 1 or g % 2 == 0
            level_alpha = s.intra.alpha_s if inside else s.net.alpha_s
            level_bw = s.intra.bandwidth_bytes_per_s if inside else s.rank_share_bytes_per_s
            lat += phases * level_alpha
            bw += phases * n / level_bw
        return lat, bw


class Hierarchical(Algorithm):
    """Intra-node reduce-scatter, the inter-node op on n/g per rank (each rank on its
    share of the node's NICs: every rank sends at once), intra-node all-gather; for
    broadcast, across nodes on the whole NIC then within each node (Horovod's
    hierarchical all-reduce; 2D all-reduce). Each phase is a ring, costed as NCCL (each
    phase its own launch and fastest protocol) or as MPI. One node: the intra ring;
    one rank per node: the network ring.
    """

    name = "hierarchical"
    ops = ("allreduce", "reduce-scatter", "allgather", "broadcast")

    def phases(self, op: str, n: float, s: Span) -> list[tuple[str, float, Span]]:
        inside = s.within_node()
        across = s.across_nodes(s.rank_share_bytes_per_s)
        shard = n / s.per_node
        if op == "allreduce":
            return [
                ("reduce-scatter", n, inside),
                ("allreduce", shard, across),
                ("allgather", n, inside),
            ]
        if op == "reduce-scatter":
            return [("reduce-scatter", n, inside), ("reduce-scatter", shard, across)]
        if op == "allgather":
            return [("allgather", shard, across), ("allgather", n, inside)]
        whole_nics = s.across_nodes(s.net.bandwidth_bytes_per_s)
        return [("broadcast", n, whole_nics), ("broadcast", n, inside)]

    def terms(self, op: str, n: float, s: Span, protocol: str | None) -> Terms:
        """Every phase on ``protocol``."""
        if s.nodes == 1 or s.per_node == 1:
            return RING.terms(op, n, s, protocol)
        lat = bw = 0.0
        for sub_op, size, sub in self.phases(op, n, s):
            a, b = RING.terms(sub_op, size, sub, protocol)
            lat, bw = lat + a, bw + b
        return lat, bw

    def best(self, op: str, n: float, s: Span) -> tuple[Terms, str | None]:
        """Each phase is its own NCCL launch, on its own fastest protocol."""
        if s.nodes == 1 or s.per_node == 1:
            return RING.best(op, n, s)
        lat = bw = 0.0
        chosen: list[str] = []
        for sub_op, size, sub in self.phases(op, n, s):
            (a, b), proto = RING.best(sub_op, size, sub)
            lat, bw = lat + a, bw + b
            if proto is not None:
                chosen.append(proto)
        return (lat, bw), "+".join(chosen) if chosen else None


class Nvls(Algorithm):
    """NVLink SHARP all-reduce inside one node (NCCL's NVLS, Hopper and later).

    The NVSwitch reduces: each GPU reads its 1/g of the result reduced from all g
    (multimem.ld_reduce) and writes it once for the switch to multicast, so a GPU
    sends and receives (1 + 1/g)·n where a ring moves 2(g-1)/g·n (nccl-tests#238;
    nccl#2140). At NCCL's nvlsEfficiency (0.85 on Hopper) of the effective NVLink
    bandwidth: ``hwLat(NVLink, NVLS) + (1 + 1/g)·n / (0.85·B_intra)``. (NCCL's own
    model takes 2·0.85·B busBw, which overstates H100's measured 480 GB/s busbw; the
    traffic above gives 490.)
    """

    name = "nvls"
    ops = ("allreduce",)

    def unavailable(self, s: Span, profile: HardwareProfile) -> str | None:
        if s.nccl is None or not s.nccl.nvls:
            return (
                f"nvls needs an NVSwitch with NVLink SHARP (intra_node.nvswitch.nvlink_sharp) "
                f"and NCCL; '{profile.name}' has none"
            )
        if s.nodes > 1:
            return "nvls runs inside one node (across nodes NCCL needs CollNet); use nvls-tree"
        if s.per_node < 2:
            return "nvls needs at least 2 GPUs on the node"
        return None

    def protocols(self, s: Span) -> tuple[str | None, ...]:
        return ("Simple",)

    def intra_s(self, n: float, s: Span) -> float:
        assert s.nccl is not None
        g = s.per_node
        return (1 + 1 / g) * n / (s.intra.bandwidth_bytes_per_s * s.nccl.nvls_efficiency)

    def terms(self, op: str, n: float, s: Span, protocol: str | None) -> Terms:
        assert s.nccl is not None
        lat_us = s.nccl.hw_latency_us("nvlink", "nvls", "Simple")
        return lat_us * US, self.intra_s(n, s)


class NvlsTree(Nvls):
    """NVLS inside each node, NCCL's tree across nodes: ``hwLat(NVLink, NVLS tree) +
    2·⌊log2 N⌋·interLat``, and the slower of the NVLS traffic in the node and the
    tree's network traffic (2n per node per direction, n on two nodes; NCCL's model
    doubles the network bandwidth on two nodes likewise)."""

    name = "nvls-tree"

    def unavailable(self, s: Span, profile: HardwareProfile) -> str | None:
        if s.nccl is None or not s.nccl.nvls:
            return super().unavailable(s, profile)
        if s.nodes == 1:
            return "nvls-tree spans nodes (NCCL disables it on one node); use nvls"
        if s.per_node < 2:
            return "nvls-tree needs at least 2 GPUs per node"
        return None

    def terms(self, op: str, n: float, s: Span, protocol: str | None) -> Terms:
        assert s.nccl is not None
        lat_us = s.nccl.hw_latency_us("nvlink", "nvls-tree", "Simple")
        lat_us += 2 * _log2i(s.nodes) * s.nccl.inter_latency_us("nvls-tree", "Simple", s.per_node)
        net_s = (1 if s.nodes == 2 else 2) * n / s.net.bandwidth_bytes_per_s
        return lat_us * US, max(self.intra_s(n, s), net_s)


RING = Ring()
REGISTRY: dict[str, Algorithm] = {
    a.name: a for a in (RING, Tree(), HalvingDoubling(), Hierarchical(), Nvls(), NvlsTree())
}
# NCCL's algorithms (and dtsim's hierarchical) on GPUs, MPI's on CPUs.
GPU_AUTO = ("ring", "tree", "hierarchical", "nvls", "nvls-tree")
CPU_AUTO = ("ring", "tree", "halving-doubling", "hierarchical")


class CostModel:
    """Collective costs on a :class:`Topology` (efficiencies from the profile)."""

    def __init__(self, topology: Topology):
        self.topology = topology
        self.profile = topology.profile

    # -- the two levels ---------------------------------------------------------------
    def _intra(self, g: GroupLinks) -> _Level:
        if g.intra_class is None:
            return _Level(0.0, math.inf, "local")
        p = self.profile.collective[g.intra_class]
        return _Level(p.alpha_s, g.intra_bandwidth_bytes_per_s * p.efficiency, g.intra_class)

    def _inter_alpha_s(self, g: GroupLinks) -> float:
        p = self.profile.collective["network"]
        return p.alpha_s + self._net_extra_s(g)

    def _net_extra_s(self, g: GroupLinks) -> float:
        """The NIC's and switches' own latency on a node-to-node step."""
        return self.profile.nics.latency_s + g.inter_hops * self.profile.fabric.switch_latency_s

    def _nccl(self, g: GroupLinks) -> NcclSystem | None:
        hw = self.profile
        if hw.device.kind != "gpu":
            return None
        intra_hw = "nvlink" if g.intra_class in ("nvlink", "nvswitch") else "pci"
        intra_alpha = hw.collective[g.intra_class].alpha_s if g.intra_class else 0.0
        ref = NCCL_REFERENCE_ALPHA_US
        return NcclSystem(
            compute_capability=hw.device.compute_capability or DEFAULT_COMPUTE_CAPABILITY,
            host_cpu_vendor=hw.host_cpu_vendor,
            intra_hw=intra_hw,
            intra_scale=intra_alpha / US / ref[intra_hw] if g.intra_class else 1.0,
            net_scale=hw.collective["network"].alpha_s / US / ref["net"],
            net_extra_us=self._net_extra_s(g) / US if g.nodes > 1 else 0.0,
            nvls=(
                hw.intra_node.nvlink_sharp
                and g.intra_class == "nvswitch"
                and (hw.device.compute_capability or 0.0) >= 9.0
            ),
        )

    def span(self, ranks: tuple[int, ...] | None = None) -> Span:
        """The group of ``ranks`` (default: all) as the cost formulas see it."""
        g = self.topology.group(ranks)
        eff = self.profile.collective["network"].efficiency
        if g.nodes > 1:
            net = _Level(self._inter_alpha_s(g), g.inter_bandwidth_bytes_per_s * eff, "network")
            share = g.rank_network_share_bytes_per_s * eff
        else:
            net, share = _Level(0.0, math.inf, "network"), math.inf
        return Span(g.ranks, g.nodes, g.per_node, self._intra(g), net, share, self._nccl(g))

    # -- public -------------------------------------------------------------------------
    def available(self, op: str, ranks: tuple[int, ...] | None = None) -> tuple[str, ...]:
        """The algorithms this group can run ``op`` with (``--algorithm`` choices)."""
        s = self.span(ranks)
        return tuple(a for a in SUPPORTED[op] if REGISTRY[a].unavailable(s, self.profile) is None)

    def algorithms(self, op: str, ranks: tuple[int, ...] | None = None) -> tuple[str, ...]:
        """The candidates ``auto`` chooses among: NCCL's for GPUs, MPI's for CPUs."""
        pool = GPU_AUTO if self.profile.device.kind == "gpu" else CPU_AUTO
        return tuple(a for a in self.available(op, ranks) if a in pool)

    def cost(
        self,
        op: str,
        nbytes: float,
        ranks: tuple[int, ...] | None = None,
        algorithm: str = "auto",
    ) -> CollectiveCost:
        if op not in OPS:
            raise InputError(f"unknown op '{op}'; choose one of {', '.join(OPS)}", key="op")
        if nbytes < 0:
            raise InputError(f"bytes must be >= 0, got {nbytes}", key="bytes")
        g = self.topology.group(ranks)
        if algorithm in ("auto", "measured") and g.ranks > 1 and nbytes > 0:
            measured = self.profile.measured(op, g.ranks, g.nodes)
            if measured is not None:
                return self._measured(measured, nbytes, ranks)
        if algorithm == "measured":
            raise InputError(
                f"the profile has no measured {op} over {g.ranks} ranks on {g.nodes} node(s) "
                "(dtsim calibrate comm writes them); use auto or a closed form",
                key="algorithm",
            )
        if algorithm == "auto":
            options = [self.cost(op, nbytes, ranks, a) for a in self.algorithms(op, ranks)]
            return min(options, key=lambda c: (c.time_s, ALGORITHMS.index(c.algorithm)))
        if algorithm not in SUPPORTED[op]:
            raise InputError(
                f"algorithm '{algorithm}' does not implement {op}; choose one of "
                f"{', '.join(SUPPORTED[op])} or auto",
                key="algorithm",
            )
        s = self.span(ranks)
        algo = REGISTRY[algorithm]
        why = algo.unavailable(s, self.profile)
        if why is not None:
            raise InputError(why, key="algorithm")
        p = g.ranks
        if p <= 1 or nbytes == 0:
            return CollectiveCost(op, algorithm, nbytes, p, 0.0, 0.0, ())
        (lat, bw), protocol = algo.best(op, nbytes, s)
        links = ("nvswitch",) if algorithm == "nvls" else s.links
        return CollectiveCost(op, algorithm, nbytes, p, lat, bw, links, None, protocol)

    def _measured(
        self, m: MeasuredCollective, n: float, ranks: tuple[int, ...] | None
    ) -> CollectiveCost:
        """The measured table's cost (:func:`measured_time`) on the group's links."""
        t = measured_time(m, n)
        inside = t.extrapolated_from_bytes is None
        return CollectiveCost(
            m.op,
            f"{'measured' if inside else 'extrapolated'}:{m.backend}",
            n,
            m.ranks,
            t.latency_s,
            t.time_s - t.latency_s,
            self.span(ranks).links,
            t.extrapolated_from_bytes,
        )

    def parameter_server(
        self,
        nbytes: float,
        workers: int,
        servers: int,
        *,
        node_aggregation: bool = False,
        colocated: bool = False,
    ) -> CollectiveCost:
        """Push n bytes to S servers and pull n back (each server holds n/S).

        Servers are dedicated hosts with one NIC each. A server carries p·n/S in and
        p·n/S out; a worker carries n each way, and every worker of a node pushes at
        once, so it has its NIC's bandwidth over the workers on that NIC. The slower of
        the two bounds each phase. The cost is both phases, push then pull, for one
        tensor alone; NICs are full duplex, so a caller may run one tensor's pull while
        the next one's push goes the other way (each phase is half of this cost).

        node_aggregation: the GPUs of a node reduce their gradients first and one
        worker per node pushes (MXNet's ``dist_device_sync`` kvstore; BytePS, Jiang et
        al., OSDI'20, §4): servers carry N·n/S for N nodes, a node sends n over all its
        NICs, and an intra-node reduce (ring, (g-1)/g·n) precedes the push and a
        broadcast follows the pull.

        colocated (with node_aggregation): BytePS's summation service also runs on the
        worker nodes' CPUs, beside S CPU-only servers (one NIC each, bandwidth b; a node
        has B over all its NICs). Node i keeps a share y of the sums: it sends and
        receives n - y and serves (N-1)·y each way, n + (N-2)·y in all; each CPU server
        takes x = (n - N·y)/S from N nodes. Balancing (n + (N-2)·y)/B = N·x/b gives
        y = n·(N·B - S·b) / (S·b·(N-2) + N²·B), within [0, n/N] (equal bandwidths: the
        paper's y = (N-S)·n / (N² + S·N - 2S); y = 0 once the servers' bandwidth S·b
        reaches N·B: they carry everything, n per node, the bound BytePS reaches; S = 0:
        y = n/N, 2(N-1)/N·n, all-reduce's traffic).
        """
        if servers < 0 or (servers == 0 and not colocated):
            raise InputError(f"parameter servers must be >= 1, got {servers}", key="servers")
        if self.profile.nics.count_per_node == 0:
            raise InputError(
                f"a parameter server is a host reached over NICs, and profile "
                f"'{self.profile.name}' has none (one node); pick another strategy",
                key="strategies",
            )
        if colocated and not node_aggregation:
            raise ValueError("colocated summation servers need node aggregation (BytePS)")
        label = f"{'byteps' if colocated else 'ps'}:{servers}" + (
            ":node" if node_aggregation and not colocated else ""
        )
        if workers <= 0 or nbytes == 0:
            return CollectiveCost("push-pull", label, nbytes, workers, 0.0, 0.0, ())
        net = self.profile.collective["network"]
        nic_bw = self.profile.nics.bandwidth_bytes_per_s * net.efficiency
        g = self.topology.group()
        alpha = net.alpha_s + self.profile.nics.latency_s + self.profile.fabric.switch_latency_s
        if not node_aggregation:
            if g.nodes > 1:
                worker_bw = g.rank_network_share_bytes_per_s * net.efficiency
            else:  # the workers' one node: its NICs without a fat-tree's spine
                worker_bw = nic_bw / g.ranks_per_nic
            server_s = workers * nbytes / servers / nic_bw
            worker_s = nbytes / worker_bw
            phase = max(server_s, worker_s)
            return CollectiveCost(
                "push-pull", label, nbytes, workers, 2 * alpha, 2 * phase, ("network",)
            )
        nodes = max(1, g.nodes)
        if g.nodes > 1:
            node_bw = g.inter_bandwidth_bytes_per_s * net.efficiency
        else:
            node_bw = nic_bw * self.profile.nics.count_per_node
        if colocated:
            k = servers
            own = nbytes / nodes  # k = 0: every sum on the worker nodes
            if k:
                num = nodes * node_bw - k * nic_bw
                den = k * nic_bw * (nodes - 2) + nodes * nodes * node_bw
                own = min(nbytes / nodes, max(0.0, nbytes * num / den))
            node_s = (nbytes + (nodes - 2) * own) / node_bw
            server_s = nodes * (nbytes - nodes * own) / k / nic_bw if k else 0.0
        else:
            node_s = nbytes / node_bw
            server_s = nodes * nbytes / servers / nic_bw
        intra_s = intra_alpha = 0.0
        if g.per_node > 1 and g.intra_class is not None:
            intra = self.profile.collective[g.intra_class]
            intra_bw = g.intra_bandwidth_bytes_per_s * intra.efficiency
            intra_s = (g.per_node - 1) / g.per_node * nbytes / intra_bw
            intra_alpha = (g.per_node - 1) * intra.alpha_s
        phase = max(node_s, server_s) + intra_s
        return CollectiveCost(
            "push-pull",
            label,
            nbytes,
            workers,
            2 * (alpha + intra_alpha),
            2 * phase,
            ("network",),
        )


@dataclass(frozen=True, slots=True)
class TableTime:
    """A measured table's time for one size: ``time_s`` in all, ``latency_s`` of it not
    shared with concurrent collectives, and the measured size it was extrapolated from
    (None inside the table)."""

    time_s: float
    latency_s: float
    extrapolated_from_bytes: float | None


def measured_time(m: MeasuredCollective, n: float) -> TableTime:
    """The time of ``m.op`` over ``n`` > 0 bytes from a measured table: continuous and
    non-decreasing in ``n`` everywhere.

    With the table's times raised to their running maximum (``m.envelope_times_s``),
    first size x0 at time T0 and last size xk at Tk:

    - inside [x0, xk]: the envelope interpolated linearly in log(bytes) and log(time);
    - below x0: the line from the latency part L (at 0 bytes) to T0 (at x0),
      L + (T0 - L)·n/x0: an α-β line through the first point with the fit's α;
    - above xk: Tk + (n - xk)·s, continuing from the last point at the slower of two
      per-byte rates the measurements ground: the largest size's own, s = Tk/xk (its
      algbw, latency included, so never faster than the table's end ran), and the
      α-β fit's bandwidth term (when the fit, over all sizes, says the link is slower).
      Where the last point's rate is the slower, Tk + (n - xk)·Tk/xk = Tk·n/xk: the
      algbw stays at its largest measured value. The last segment's own slope is not
      used: it is the difference of two noisy times and can be zero or negative.

    The latency part is the fit's α term (2(p-1)·α for a ring all-reduce), capped at the
    total, so concurrent collectives share the rest.
    """
    lat_coef, bw_coef = _flat_terms(m.op, "ring", 1.0, m.ranks, _Level(1.0, 1.0, "fit"))
    alpha_part = lat_coef * m.alpha_s
    xs, ys = m.sizes_bytes, m.envelope_times_s
    x0, t0, xk, tk = xs[0], ys[0], xs[-1], ys[-1]
    nearest: float | None = None
    if n < x0:
        floor = min(alpha_part, t0)
        # min(): n/x0 < 1, but rounding must not lift the line above the first point.
        total = min(t0, floor + (t0 - floor) * (n / x0))
        nearest = x0
    elif n > xk:
        per_byte_s = max(tk / xk, bw_coef / m.bandwidth_bytes_per_s)
        total = tk + (n - xk) * per_byte_s
        nearest = xk
    else:
        total = _loglog_interp(n, xs, ys)
    return TableTime(total, min(alpha_part, total), nearest)


def _loglog_interp(x: float, xs: tuple[float, ...], ys: tuple[float, ...]) -> float:
    """Piecewise-linear interpolation of log(y) against log(x); xs increasing, ys
    non-decreasing, x inside. The result is clamped to its segment's ends so rounding
    never lets it step past a table point (the cost must not fall as x grows)."""
    i = bisect.bisect_left(xs, x)
    if xs[i] == x:
        return ys[i]
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    t = math.log(x / x0) / math.log(x1 / x0)
    return min(y1, max(y0, math.exp(math.log(y0) + t * math.log(y1 / y0))))


def _flat_terms(op: str, algorithm: str, n: float, p: int, level: _Level) -> tuple[float, float]:
    """(latency part, bandwidth part) of a ring over ``p`` ranks on one level of links:
    the α-β model calibration fits (``calibrate/measure/fit.py``) and measured tables
    read their latency part from. ``algorithm`` must be "ring"."""
    if algorithm != "ring":
        raise InputError(f"the one-level form is the ring's, not '{algorithm}'", key="algorithm")
    if p <= 1:
        return 0.0, 0.0
    a, b = level.alpha_s, level.bandwidth_bytes_per_s
    if op == "allreduce":
        return 2 * (p - 1) * a, 2 * (p - 1) / p * n / b
    if op in ("reduce-scatter", "allgather"):
        return (p - 1) * a, (p - 1) / p * n / b
    return (p - 1) * a, n / b
