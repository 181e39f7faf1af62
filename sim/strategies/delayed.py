"""``delayed:d``: iteration t's gradient is applied d iterations late.

The study's delayed (asynchronous) GD: the all-reduce of iteration t hides behind the
forward, backward and apply of the next d iterations; forward(t+1) waits only for the
update of iteration t-d. Each level of delay adds one communication channel and one
gradient buffer. ``delayed:0`` builds exactly the ``sync`` graph.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.engine.graph import TaskGraph
from sim.strategies._params import MAX_DELAY, int_param
from sim.strategies.base import (
    BuildContext,
    RealRunPlan,
    StrategyDefaults,
    build_data_parallel,
    copy_buffer_bytes,
)
from sim.strategies.sync import all_gradients


@dataclass(frozen=True)
class Delayed(StrategyDefaults):
    family = "delayed"
    tunes = "delay"
    delay: int
    name: str = "delayed"

    @property
    def staleness(self) -> int:
        return self.delay

    def real_run_plan(self) -> RealRunPlan:
        return RealRunPlan("delayed", self.delay)

    @property
    def channels(self) -> int:
        return max(1, self.delay)

    def build(self, ctx: BuildContext) -> TaskGraph:
        return build_data_parallel(
            ctx, all_gradients(ctx), delay=self.delay, channels=self.channels
        )

    def extra_buffer_bytes(self, ctx: BuildContext) -> float:
        # the d deferred gradients, and the buffer the newest is copied into
        return self.delay * sum(ctx.grad_bytes) + copy_buffer_bytes(ctx)


def parse(spec: str, param: str | None, **_options) -> Delayed:
    d = int_param(
        spec, param, default=1, minimum=0, meaning="the delay d (iterations)", maximum=MAX_DELAY
    )
    return Delayed(d, name=f"delayed:{d}")
