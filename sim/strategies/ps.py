"""``ps[:S[:node]]``: parameter servers. Each layer's gradient is pushed to S dedicated
servers as soon as its backward ends; each server applies the update to its 1/S shard
(costed like a worker's update, over S) and the worker pulls the new parameters;
forward(t+1, l) waits for layer l's pull. Servers hold n/S each and carry p·n/S in and
out, so their NICs bound the time (Li et al., OSDI'14). S defaults to the number of
worker nodes.

NICs are full duplex: pushes go out on one channel and pulls come in on another, so one
layer's pull overlaps the next layer's push (ps-lite sends and receives on separate
threads over one connection). Every GPU is a worker unless ``:node`` is given: then the
GPUs of a node reduce first and one worker per node pushes (MXNet's ``dist_device_sync``
kvstore, which aggregates on the devices of a machine before pushing; the servers see N
flows, not p).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.engine.graph import TaskGraph
from sim.errors import InputError
from sim.model.collectives import CollectiveCost, CostModel
from sim.model.stragglers import SlowNicTopology
from sim.model.topology import Topology
from sim.strategies._params import int_param
from sim.strategies.base import (
    BuildContext,
    StrategyDefaults,
    build_data_parallel,
    copy_buffer_bytes,
    layer_buckets,
)


def push_pull_model(ctx: BuildContext) -> CostModel:
    """The cost model of the scenario's placed cluster (as ``build_context`` makes it), for
    push-pull variants that ``ctx.push_pull`` does not cost."""
    sc = ctx.scenario
    topology = (
        SlowNicTopology(sc.hardware, sc.placement, dict(sc.slow_nics))
        if sc.slow_nics
        else Topology(sc.hardware, sc.placement)
    )
    return CostModel(topology)


@dataclass(frozen=True)
class ParameterServer(StrategyDefaults):
    family = "ps"
    servers: int | None = None
    node_aggregation: bool = False
    name: str = "ps"

    @property
    def workers_hold_optimizer_state(self) -> bool:
        return False  # the servers keep it

    def server_count(self, ctx: BuildContext) -> int:
        return self.servers or ctx.scenario.placement.nodes

    def extra_buffer_bytes(self, ctx: BuildContext) -> float:
        return copy_buffer_bytes(ctx)  # the buffers its gradients are copied into

    def build(self, ctx: BuildContext) -> TaskGraph:
        servers = self.server_count(ctx)
        cost = None
        if self.node_aggregation:
            model = push_pull_model(ctx)
            devices = ctx.scenario.devices
            cache: dict[float, CollectiveCost] = {}

            def cost(nbytes: float) -> CollectiveCost:
                if nbytes not in cache:
                    cache[nbytes] = model.parameter_server(
                        nbytes, devices, servers, node_aggregation=True
                    )
                return cache[nbytes]

        return build_data_parallel(
            ctx,
            layer_buckets(ctx),
            updates="none",
            per_layer_gating=True,
            push_pull_servers=servers,
            push_pull=cost,
            full_duplex=True,
        )


def parse(spec: str, param: str | None, **_options) -> ParameterServer:
    if param in (None, ""):
        return ParameterServer()
    count, _, mode = (param or "").partition(":")
    if mode not in ("", "node"):
        raise InputError(
            f"'{spec}': the worker mode is 'node' (aggregate a node's GPUs first), got '{mode}'",
            key="strategy",
        )
    s = (
        int_param(spec, count, default=1, minimum=1, meaning="the number of servers S")
        if count
        else None
    )
    return ParameterServer(servers=s, node_aggregation=mode == "node", name=f"ps:{param}")
