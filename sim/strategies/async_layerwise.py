"""``async-layerwise:d``: layer-wise reduction with per-layer, d-late application.

Each layer's gradient is all-reduced as its backward ends; forward(t+1, l) waits only
for layer l's update from iteration t-d, so the next forward starts on the front
layers while the back layers' gradients are still in flight. ``async-layerwise:0`` is
layer-wise with per-layer forward gating. Each level of delay adds a channel and a
gradient buffer, as in ``delayed:d``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.engine.graph import TaskGraph
from sim.strategies._params import MAX_DELAY, int_param
from sim.strategies.base import (
    BuildContext,
    StrategyDefaults,
    build_data_parallel,
    copy_buffer_bytes,
    layer_buckets,
)


@dataclass(frozen=True)
class AsyncLayerwise(StrategyDefaults):
    family = "async-layerwise"
    tunes = "delay"
    per_layer_staleness = True
    delay: int
    name: str = "async-layerwise"

    @property
    def staleness(self) -> int:
        return self.delay

    @property
    def channels(self) -> int:
        return max(1, self.delay)

    def build(self, ctx: BuildContext) -> TaskGraph:
        return build_data_parallel(
            ctx,
            layer_buckets(ctx),
            delay=self.delay,
            channels=self.channels,
            updates="as-ready",
            per_layer_gating=True,
        )

    def extra_buffer_bytes(self, ctx: BuildContext) -> float:
        # the d deferred gradients, and the buffers the newest are copied into
        return self.delay * sum(ctx.grad_bytes) + copy_buffer_bytes(ctx)


def parse(spec: str, param: str | None, **_options) -> AsyncLayerwise:
    d = int_param(
        spec, param, default=1, minimum=0, meaning="the delay d (iterations)", maximum=MAX_DELAY
    )
    return AsyncLayerwise(d, name=f"async-layerwise:{d}")
