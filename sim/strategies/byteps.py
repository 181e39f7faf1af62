"""``byteps[:k]``: BytePS (Jiang et al., "A Unified Architecture for Accelerating
Distributed DNN Training in Heterogeneous GPU/CPU Clusters", OSDI'20), with k CPU-only
server machines of one NIC each (default: one per worker NIC, BytePS's advice in
docs/best-practice.md that "the total bandwidth of the servers must be equal or larger
than the total bandwidth of workers").

The GPUs of a node reduce their gradients first; one communication service per node
pushes to the summation services, which run on the k CPU machines and on the worker
nodes' own CPUs, and pulls the sums back (the traffic split of
:meth:`sim.model.collectives.CostModel.parameter_server` with ``colocated``). Servers
only add: the workers run the optimizer once every pull is back, as
``byteps.torch.DistributedOptimizer`` does. Tensors are cut into partitions of
BYTEPS_PARTITION_BYTES (default 4,096,000 bytes, BytePS's docs/env.md) so that a
partition's pull overlaps the next partition's push on the full-duplex NIC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.engine.graph import TaskGraph
from sim.model.collectives import CollectiveCost
from sim.strategies._params import int_param
from sim.strategies.base import (
    Bucket,
    BuildContext,
    StrategyDefaults,
    build_data_parallel,
    check_collective_count,
    copy_buffer_bytes,
)
from sim.strategies.ps import push_pull_model

PARTITION_BYTES = 4_096_000


def partitions(ctx: BuildContext, partition_bytes: float = PARTITION_BYTES) -> list[Bucket]:
    """Each parameter tensor cut into pieces of at most ``partition_bytes``, in backward
    order."""
    out: list[Bucket] = []
    for i in reversed(ctx.param_layers):
        for j, size in reversed(list(enumerate(ctx.tensor_bytes[i] or (ctx.grad_bytes[i],)))):
            pieces = max(1, math.ceil(size / partition_bytes))
            check_collective_count(len(out) + pieces)
            for k in range(pieces):
                part = min(partition_bytes, size - k * partition_bytes)
                out.append(Bucket(f"{ctx.names[i]}.{j}.{k}", (i,), part, i))
    return out


@dataclass(frozen=True)
class BytePS(StrategyDefaults):
    family = "byteps"
    cpu_servers: int | None = None
    name: str = "byteps"

    def server_count(self, ctx: BuildContext) -> int:
        if self.cpu_servers is not None:
            return self.cpu_servers
        return ctx.scenario.placement.nodes * ctx.scenario.hardware.nics.count_per_node

    def extra_buffer_bytes(self, ctx: BuildContext) -> float:
        return copy_buffer_bytes(ctx)  # the buffers its gradients are copied into

    def build(self, ctx: BuildContext) -> TaskGraph:
        model = push_pull_model(ctx)
        servers = self.server_count(ctx)
        devices = ctx.scenario.devices
        cache: dict[float, CollectiveCost] = {}

        def cost(nbytes: float) -> CollectiveCost:
            if nbytes not in cache:
                cache[nbytes] = model.parameter_server(
                    nbytes, devices, servers, node_aggregation=True, colocated=True
                )
            return cache[nbytes]

        return build_data_parallel(
            ctx,
            partitions(ctx),
            updates="single",
            push_pull_servers=max(1, servers),
            push_pull=cost,
            full_duplex=True,
        )


def parse(spec: str, param: str | None, **_options) -> BytePS:
    if param in (None, ""):
        return BytePS()
    k = int_param(spec, param, default=0, minimum=0, meaning="the number of CPU servers k")
    return BytePS(cpu_servers=k, name=f"byteps:{k}")
