"""``ps[:S]``: parameter servers. Each layer's gradient is pushed to S dedicated servers
as soon as its backward ends; each server applies the update to its 1/S shard (costed
like a worker's update, over S) and the worker pulls the new parameters;
forward(t+1, l) waits for layer l's pull. Servers hold n/S each and carry p·n/S in and
out, so their NICs bound the time (Li et al., OSDI'14). S defaults to the number of
worker nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.engine.graph import TaskGraph
from sim.strategies._params import int_param
from sim.strategies.base import BuildContext, StrategyDefaults, build_data_parallel, layer_buckets


@dataclass(frozen=True)
class ParameterServer(StrategyDefaults):
    family = "ps"
    servers: int | None = None
    name: str = "ps"

    @property
    def workers_hold_optimizer_state(self) -> bool:
        return False  # the servers keep it

    def server_count(self, ctx: BuildContext) -> int:
        return self.servers or ctx.scenario.placement.nodes

    def build(self, ctx: BuildContext) -> TaskGraph:
        return build_data_parallel(
            ctx,
            layer_buckets(ctx),
            updates="none",
            per_layer_gating=True,
            push_pull_servers=self.server_count(ctx),
        )


def parse(spec: str, param: str | None, **_options) -> ParameterServer:
    if param in (None, ""):
        return ParameterServer()
    s = int_param(spec, param, default=1, minimum=1, meaning="the number of servers S")
    return ParameterServer(servers=s, name=f"ps:{s}")
