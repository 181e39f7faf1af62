"""``sync``: one blocking all-reduce of all gradients after the backward pass, then apply.

The study's synchronous GD: no overlap at all. It is ``delayed:0`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.engine.graph import TaskGraph
from sim.strategies._params import no_param
from sim.strategies.base import (
    Bucket,
    BuildContext,
    RealRunPlan,
    StrategyDefaults,
    build_data_parallel,
    copy_buffer_bytes,
)


def all_gradients(ctx: BuildContext) -> list[Bucket]:
    """One contiguous buffer of every gradient, ready when backward(t, 0) ends."""
    return [Bucket("all", ctx.param_layers, sum(ctx.grad_bytes), 0)]


@dataclass(frozen=True)
class Sync(StrategyDefaults):
    family = "sync"
    name: str = "sync"

    def build(self, ctx: BuildContext) -> TaskGraph:
        return build_data_parallel(ctx, all_gradients(ctx))

    def real_run_plan(self) -> RealRunPlan:
        return RealRunPlan("sync")

    def extra_buffer_bytes(self, ctx: BuildContext) -> float:
        return copy_buffer_bytes(ctx)  # the one contiguous buffer it reduces


def parse(spec: str, param: str | None, **_options) -> Sync:
    no_param(spec, param)
    return Sync()
