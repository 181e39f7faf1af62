"""Cluster topology as a networkx graph, and what a collective over a group crosses.

Graph vertices are named ``n{node}/dev{i}``, ``n{node}/nvswitch``, ``n{node}/pcie``,
``n{node}/nic{k}``, ``leaf{j}``, ``spine`` and ``switch``. Every edge carries
``link_class`` (one of :data:`sim.model.hardware.LINK_CLASSES`), ``bandwidth_bytes_per_s``
(per direction, all parallel links together) and ``links`` (how many physical links).

Ranks are placed in order: rank r runs on node r // g, device r % g, with g devices
used per node.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import networkx as nx

from sim.errors import InputError
from sim.model.hardware import HardwareProfile


def _dev(node: int, i: int) -> str:
    return f"n{node}/dev{i}"


def node_graph(profile: HardwareProfile, node: int = 0, g: nx.Graph | None = None) -> nx.Graph:
    """The graph of one node: its devices, NVLinks, NVSwitch, PCIe, socket links, NICs."""
    g = nx.Graph() if g is None else g
    dev = profile.device
    intra = profile.intra_node
    for i in range(dev.count_per_node):
        g.add_node(_dev(node, i), role="device", node=node, index=i)
    if intra.nvlink is not None:
        for a, b, count in intra.nvlink.edges:
            u, v = _dev(node, a), _dev(node, b)
            links = count + (g.edges[u, v]["links"] if g.has_edge(u, v) else 0)
            g.add_edge(
                u,
                v,
                link_class="nvlink",
                links=links,
                bandwidth_bytes_per_s=links * intra.nvlink.bandwidth_bytes_per_s_per_link,
            )
    if intra.nvswitch_bytes_per_s_per_device is not None:
        sw = f"n{node}/nvswitch"
        g.add_node(sw, role="switch", node=node)
        for i in range(dev.count_per_node):
            g.add_edge(
                _dev(node, i),
                sw,
                link_class="nvswitch",
                links=1,
                bandwidth_bytes_per_s=intra.nvswitch_bytes_per_s_per_device,
            )
    if intra.pcie_bytes_per_s is not None:
        host = f"n{node}/pcie"
        g.add_node(host, role="switch", node=node)
        for i in range(dev.count_per_node):
            g.add_edge(
                _dev(node, i),
                host,
                link_class="pcie",
                links=1,
                bandwidth_bytes_per_s=intra.pcie_bytes_per_s,
            )
    if intra.socket_link_bytes_per_s is not None:
        for a, b in itertools.combinations(range(dev.count_per_node), 2):
            g.add_edge(
                _dev(node, a),
                _dev(node, b),
                link_class="socket",
                links=1,
                bandwidth_bytes_per_s=intra.socket_link_bytes_per_s,
            )
    nics = profile.nics
    for k, devices in enumerate(nics.devices):
        nic = f"n{node}/nic{k}"
        g.add_node(nic, role="nic", node=node)
        # A NIC hangs off the PCIe switch of the devices it serves (GPUDirect RDMA);
        # the device-to-NIC hop is as fast as the NIC, so it is never the bottleneck.
        for i in devices:
            g.add_edge(
                _dev(node, i),
                nic,
                link_class="pcie",
                links=1,
                bandwidth_bytes_per_s=max(nics.bandwidth_bytes_per_s, intra.pcie_bytes_per_s or 0),
            )
    return g


def cluster_graph(profile: HardwareProfile, nodes: int) -> nx.Graph:
    """The whole cluster: ``nodes`` copies of the node graph joined by the fabric."""
    g = nx.Graph()
    for node in range(nodes):
        node_graph(profile, node, g)
    if nodes <= 1:
        return g
    nics = profile.nics
    fabric = profile.fabric
    if fabric.kind == "switch":
        g.add_node("switch", role="switch", node=-1)
        for node in range(nodes):
            for k in range(nics.count_per_node):
                g.add_edge(
                    f"n{node}/nic{k}",
                    "switch",
                    link_class="network",
                    links=1,
                    bandwidth_bytes_per_s=nics.bandwidth_bytes_per_s,
                )
        return g
    leaves = -(-nodes // fabric.nodes_per_leaf)
    g.add_node("spine", role="switch", node=-1)
    for j in range(leaves):
        leaf = f"leaf{j}"
        g.add_node(leaf, role="switch", node=-1)
        down = 0.0
        for node in range(j * fabric.nodes_per_leaf, min(nodes, (j + 1) * fabric.nodes_per_leaf)):
            for k in range(nics.count_per_node):
                g.add_edge(
                    f"n{node}/nic{k}",
                    leaf,
                    link_class="network",
                    links=1,
                    bandwidth_bytes_per_s=nics.bandwidth_bytes_per_s,
                )
                down += nics.bandwidth_bytes_per_s
        g.add_edge(
            leaf,
            "spine",
            link_class="network",
            links=1,
            bandwidth_bytes_per_s=fabric.nodes_per_leaf
            * nics.count_per_node
            * nics.bandwidth_bytes_per_s
            / fabric.oversubscription,
        )
    return g


# Exhaustive ring search over (p-1)!/2 orderings: 10 devices is 181,440, about a second.
MAX_RING_SEARCH_DEVICES = 10


def hamiltonian_ring_packing(
    devices: tuple[int, ...], edges: tuple[tuple[int, int, int], ...]
) -> list[tuple[int, ...]]:
    """The largest set of link-disjoint rings through all ``devices`` over direct links.

    This is how NCCL builds rings on a DGX-1 hybrid cube-mesh: each ring visits every
    GPU once using NVLinks only, and no two rings share a physical link. Each ring is
    then run in both directions, so every link carries traffic both ways. ``edges`` are
    ``(a, b, links)``. Returns rings as device tuples (empty if none exists).
    """
    p = len(devices)
    cap: dict[frozenset[int], int] = {}
    for a, b, n in edges:
        if a in devices and b in devices:
            key = frozenset((a, b))
            cap[key] = cap.get(key, 0) + n
    if p < 2:
        return []
    if p == 2:
        n = cap.get(frozenset(devices), 0)
        return [devices] * n
    first, rest = devices[0], devices[1:]
    cycles = []
    for perm in itertools.permutations(rest):
        if perm[0] > perm[-1]:
            continue  # the same ring reversed
        ring = (first, *perm)
        pairs = [frozenset((ring[i], ring[(i + 1) % p])) for i in range(p)]
        if all(cap.get(pair, 0) > 0 for pair in pairs):
            cycles.append((ring, pairs))
    best: list[tuple[int, ...]] = []
    max_rings = min(sum(n for pair, n in cap.items() if d in pair) for d in devices) // 2

    def search(start: int, chosen: list[tuple[int, ...]], left: dict) -> bool:
        nonlocal best
        if len(chosen) > len(best):
            best = list(chosen)
            if len(best) >= max_rings:
                return True
        for i in range(start, len(cycles)):
            ring, pairs = cycles[i]
            if all(left.get(pair, 0) > 0 for pair in pairs):
                for pair in pairs:
                    left[pair] -= 1
                chosen.append(ring)
                done = search(i, chosen, left)
                chosen.pop()
                for pair in pairs:
                    left[pair] += 1
                if done:
                    return True
        return False

    search(0, [], dict(cap))
    return best


@dataclass(frozen=True, slots=True)
class Placement:
    devices: int
    devices_per_node: int

    @property
    def nodes(self) -> int:
        return -(-self.devices // self.devices_per_node)

    def node_of(self, rank: int) -> int:
        return rank // self.devices_per_node

    def local_of(self, rank: int) -> int:
        return rank % self.devices_per_node


def make_placement(
    profile: HardwareProfile, devices: int, devices_per_node: int | None = None
) -> Placement:
    """Validate a request for ``devices`` ranks, ``devices_per_node`` per node."""
    if devices <= 0:
        raise InputError(f"--devices must be >= 1, got {devices}", key="devices")
    g = devices_per_node if devices_per_node is not None else min(devices, profile.ranks_per_node)
    if g <= 0:
        raise InputError(f"--devices-per-node must be >= 1, got {g}", key="devices-per-node")
    if g > profile.device.count_per_node:
        raise InputError(
            f"--devices-per-node {g} exceeds the {profile.device.count_per_node} devices "
            f"per node of '{profile.name}'",
            key="devices-per-node",
        )
    if devices > g and devices % g:
        raise InputError(
            f"--devices {devices} is not a multiple of {g} devices per node",
            key="devices",
        )
    place = Placement(devices=devices, devices_per_node=min(g, devices))
    if place.nodes > profile.fabric.max_nodes:
        raise InputError(
            f"{devices} devices need {place.nodes} nodes of {place.devices_per_node}, but "
            f"'{profile.name}' has at most {profile.fabric.max_nodes} nodes "
            f"({profile.fabric.max_nodes * place.devices_per_node} devices)",
            key="devices",
        )
    if place.nodes > 1 and profile.nics.count_per_node == 0:
        raise InputError(
            f"'{profile.name}' nodes have no NICs, so {devices} devices cannot span "
            f"{place.nodes} nodes",
            key="devices",
        )
    return place


@dataclass(frozen=True, slots=True)
class GroupLinks:
    """What a collective over a group of ranks crosses, for the closed-form costs.

    intra_*: the ring through one node's members (NCCL-style rings over the best link
    class; ``intra_bandwidth`` is the aggregate of all parallel rings, per direction).
    inter_*: one node's share of the network (its NICs serving the members), after any
    fat-tree oversubscription; ``nics_used``/``ranks_per_nic`` say how the members share
    those NICs. Bandwidths here are raw; efficiencies are applied by the
    cost model from the profile's collective parameters.
    """

    ranks: int
    nodes: int
    per_node: int
    intra_class: str | None
    intra_bandwidth_bytes_per_s: float
    rings: int
    inter_bandwidth_bytes_per_s: float
    inter_hops: int  # switch hops a node-to-node step crosses
    device_injection_bytes_per_s: float  # all of one device's links, per direction
    # NIC sharing: how many NICs serve the members on a node, and the most members one
    # NIC serves. A step in which every member sends across the network at once
    # (halving-doubling, the inter-node phase of hierarchical, a parameter server's
    # push) gives each member 1 / (nics_used × ranks_per_nic) of the node's share.
    nics_used: int = 1
    ranks_per_nic: int = 1

    @property
    def rank_network_share_bytes_per_s(self) -> float:
        """One member's share of the network (raw, per direction) when every member of
        its node sends across nodes at once: its NIC's bandwidth over the members that
        NIC serves (after fat-tree oversubscription, and any slow NIC)."""
        return self.inter_bandwidth_bytes_per_s / (max(1, self.nics_used) * self.ranks_per_nic)


class Topology:
    """A profile placed on ``placement``: the graph and the group queries."""

    def __init__(self, profile: HardwareProfile, placement: Placement):
        self.profile = profile
        self.placement = placement
        self._group_cache: dict[tuple[int, ...], GroupLinks] = {}

    @cached_property
    def graph(self) -> nx.Graph:
        return cluster_graph(self.profile, self.placement.nodes)

    def rank_vertex(self, rank: int) -> str:
        return _dev(self.placement.node_of(rank), self.placement.local_of(rank))

    def intra_rings(self, local: tuple[int, ...]) -> tuple[str | None, float, int]:
        """(link class, aggregate ring bandwidth per direction, number of rings)."""
        intra = self.profile.intra_node
        if len(local) <= 1:
            return None, float("inf"), 0
        if intra.nvswitch_bytes_per_s_per_device is not None:
            return "nvswitch", intra.nvswitch_bytes_per_s_per_device, 1
        if intra.nvlink is not None:
            if len(local) > MAX_RING_SEARCH_DEVICES:
                raise InputError(
                    f"'{self.profile.name}': the NVLink ring search tries every ordering of "
                    f"a node's devices and supports at most {MAX_RING_SEARCH_DEVICES}; "
                    f"{len(local)} devices per node with point-to-point NVLinks only is not "
                    "supported (describe the node's nvswitch instead)",
                    file=self.profile.origin,
                    key="intra_node.nvlink",
                )
            rings = hamiltonian_ring_packing(local, intra.nvlink.edges)
            if rings:
                directed = len(rings) if len(local) == 2 else 2 * len(rings)
                bw = directed * intra.nvlink.bandwidth_bytes_per_s_per_link
                return "nvlink", bw, directed
        if intra.socket_link_bytes_per_s is not None and self.profile.device.kind == "cpu":
            return "socket", intra.socket_link_bytes_per_s, 1
        if intra.pcie_bytes_per_s is not None:
            return "pcie", intra.pcie_bytes_per_s, 1
        if intra.socket_link_bytes_per_s is not None:
            return "socket", intra.socket_link_bytes_per_s, 1
        raise InputError(
            f"'{self.profile.name}': devices {list(local)} have no common intra-node path",
            file=self.profile.origin,
            key="intra_node",
        )

    def group(self, ranks: tuple[int, ...] | None = None) -> GroupLinks:
        """Resolve the links a collective over ``ranks`` (default: all) crosses."""
        if ranks is None:
            ranks = tuple(range(self.placement.devices))
        cached = self._group_cache.get(ranks)
        if cached is not None:
            return cached
        by_node: dict[int, list[int]] = {}
        for r in ranks:
            by_node.setdefault(self.placement.node_of(r), []).append(self.placement.local_of(r))
        sizes = {len(v) for v in by_node.values()}
        if len(sizes) != 1:
            raise InputError("a collective group must use the same number of devices per node")
        per_node = sizes.pop()
        # Symmetric placement: every node uses the same local devices, so node 0 speaks
        # for all of them.
        local = tuple(sorted(next(iter(by_node.values()))))
        cls, intra_bw, rings = self.intra_rings(local)
        nics = self.profile.nics
        used_nics = [k for k, devs in enumerate(nics.devices) if set(devs) & set(local)]
        inter_bw = len(used_nics) * nics.bandwidth_bytes_per_s
        sharing = max((len(set(nics.devices[k]) & set(local)) for k in used_nics), default=1)
        fabric = self.profile.fabric
        nodes = len(by_node)
        hops = 1
        if fabric.kind == "fat-tree" and nodes > fabric.nodes_per_leaf:
            inter_bw /= fabric.oversubscription
            hops = 3
        injection = self._injection(local[0])
        out = GroupLinks(
            ranks=len(ranks),
            nodes=nodes,
            per_node=per_node,
            intra_class=cls,
            intra_bandwidth_bytes_per_s=intra_bw,
            rings=rings,
            inter_bandwidth_bytes_per_s=inter_bw if nodes > 1 else float("inf"),
            inter_hops=hops if nodes > 1 else 0,
            device_injection_bytes_per_s=injection,
            nics_used=len(used_nics),
            ranks_per_nic=sharing,
        )
        self._group_cache[ranks] = out
        return out

    def _injection(self, local: int) -> float:
        g = node_graph(self.profile)
        v = _dev(0, local)
        # The NIC hop is counted once, as the NIC's own bandwidth.
        total = 0.0
        for _, w, attrs in g.edges(v, data=True):
            if g.nodes[w]["role"] == "nic":
                total += self.profile.nics.bandwidth_bytes_per_s
            else:
                total += attrs["bandwidth_bytes_per_s"]
        return total

    def ring_order(self, ranks: tuple[int, ...] | None = None) -> list[int]:
        """One ring through ``ranks``: node by node, each node's members in ring order."""
        if ranks is None:
            ranks = tuple(range(self.placement.devices))
        g = self.group(ranks)
        local = sorted({self.placement.local_of(r) for r in ranks})
        mesh = self.profile.intra_node.nvlink
        if g.intra_class == "nvlink" and mesh is not None:
            local = list(hamiltonian_ring_packing(tuple(local), mesh.edges)[0])
        by_node: dict[int, list[int]] = {}
        for r in ranks:
            by_node.setdefault(self.placement.node_of(r), []).append(r)
        order: list[int] = []
        for node in sorted(by_node):
            base = node * self.placement.devices_per_node
            order.extend(base + i for i in local)
        return order

    def links_crossed(self, ranks: tuple[int, ...] | None = None) -> list[tuple[str, str, str]]:
        """The edges (u, v, link class) a ring over ``ranks`` crosses, in ring order."""
        order = self.ring_order(ranks)
        g = self.graph
        klass = self.group(tuple(order) if ranks is None else ranks).intra_class
        out: list[tuple[str, str, str]] = []
        for a, b in zip(order, order[1:] + order[:1], strict=True):
            if a == b:
                continue
            u, v = self.rank_vertex(a), self.rank_vertex(b)
            if g.has_edge(u, v) and self.placement.node_of(a) == self.placement.node_of(b):
                path = [u, v]
            elif self.placement.node_of(a) == self.placement.node_of(b) and klass:
                sub = g.edge_subgraph(
                    [(x, y) for x, y, c in g.edges(data="link_class") if c == klass]
                )
                path = nx.shortest_path(sub, u, v) if sub.has_node(u) else nx.shortest_path(g, u, v)
            else:
                path = nx.shortest_path(g, u, v)
            for x, y in zip(path, path[1:], strict=False):
                out.append((x, y, g.edges[x, y]["link_class"]))
            if len(order) == 2:
                break
        return out
