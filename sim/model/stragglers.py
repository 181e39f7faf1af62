"""Slow links: a topology whose named nodes' NICs run at a fraction of their bandwidth.

Why the whole collective slows. Every data-parallel collective spans all nodes. A ring
all-reduce (Patarasuk & Yuan, "Bandwidth optimal all-reduce algorithms for clusters of
workstations", JPDC 2009) moves one chunk per step over every link of the ring at once,
and a step ends when its slowest link has delivered, so the ring runs at the pace of
its slowest link; NCCL's double binary tree pipelines chunks through every
node, so its rate is that of the slowest node's links; halving-doubling pairs every node
with a partner at each step, so each step waits for the degraded node. Each closed form
in :mod:`sim.model.collectives` therefore takes the group's inter-node bandwidth as the
*minimum* over its nodes: ``min(nominal per-node share, fraction x raw NIC bandwidth)``.
The raw bandwidth is the NICs the node's members use, before any fat-tree
oversubscription; if the spine is already the tighter limit, a mildly slower NIC changes
nothing. A parameter server's workers push and pull over their own NICs, so the slowest
worker bounds each phase the same way (the servers' NICs are not degraded).

Intra-node links are untouched: the NVLink/NVSwitch/PCIe part of a hierarchical
collective runs as before. ``auto`` picks the algorithm on the degraded costs, as a
tuned NCCL would after re-measuring. Sharing between concurrent collectives is
unchanged (the engine's links are keyed by rank and link class).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from sim.model.hardware import HardwareProfile
from sim.model.topology import GroupLinks, Placement, Topology


class SlowNicTopology(Topology):
    """:class:`Topology` with ``slow_nics`` ``{node: fraction of NIC bandwidth}``."""

    def __init__(
        self, profile: HardwareProfile, placement: Placement, slow_nics: Mapping[int, float]
    ):
        super().__init__(profile, placement)
        self.slow_nics = dict(slow_nics)
        self._slow_cache: dict[tuple[int, ...], GroupLinks] = {}

    def group(self, ranks: tuple[int, ...] | None = None) -> GroupLinks:
        key = tuple(range(self.placement.devices)) if ranks is None else ranks
        cached = self._slow_cache.get(key)
        if cached is not None:
            return cached
        g = super().group(ranks)
        nodes = {self.placement.node_of(r) for r in key}
        worst = min((f for n, f in self.slow_nics.items() if n in nodes), default=1.0)
        if g.nodes > 1 and worst < 1.0:
            fabric = self.profile.fabric
            raw = g.inter_bandwidth_bytes_per_s
            if fabric.kind == "fat-tree" and g.nodes > fabric.nodes_per_leaf:
                raw *= fabric.oversubscription  # undo the share of the spine
            g = dataclasses.replace(
                g, inter_bandwidth_bytes_per_s=min(g.inter_bandwidth_bytes_per_s, worst * raw)
            )
        self._slow_cache[key] = g
        return g
