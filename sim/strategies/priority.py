"""``priority[:MB]``: priority scheduling of gradient partitions (ByteScheduler, SOSP'19;
P3, MLSys'19).

Each layer's gradient is split into partitions of at most MB MiB (default 4). A ready
partition of a front layer is sent before those of later layers, so the next forward
pass, which needs the front layers first, can start early: forward(t+1, l) waits only
for layer l's update. Sends are not pre-empted once started.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.engine.graph import TaskGraph
from sim.strategies._params import float_param
from sim.strategies.base import (
    Bucket,
    BuildContext,
    StrategyDefaults,
    build_data_parallel,
    check_collective_count,
    copy_buffer_bytes,
)

MIB = 2**20


@dataclass(frozen=True)
class Priority(StrategyDefaults):
    family = "priority"
    tunes = "size"
    partition_mib: float = 4.0
    name: str = "priority"

    @property
    def size_mib(self) -> float:
        return self.partition_mib

    def partitions(self, ctx: BuildContext) -> list[Bucket]:
        cap = self.partition_mib * MIB
        # Counted before they are made: priority:1e-6 on a large model is 10^8 of them.
        check_collective_count(
            sum(max(1, math.ceil(ctx.grad_bytes[layer] / cap)) for layer in ctx.param_layers)
        )
        out = []
        for layer in reversed(ctx.param_layers):
            size = ctx.grad_bytes[layer]
            parts = max(1, math.ceil(size / cap))
            for j in range(parts):
                part = min(cap, size - j * cap)
                out.append(Bucket(f"{ctx.names[layer]}#{j}", (layer,), part, layer))
        return out

    def build(self, ctx: BuildContext) -> TaskGraph:
        return build_data_parallel(
            ctx,
            self.partitions(ctx),
            updates="as-ready",
            per_layer_gating=True,
            front_first=True,
        )

    def extra_buffer_bytes(self, ctx: BuildContext) -> float:
        return copy_buffer_bytes(ctx)  # the partitions' buffers


def parse(spec: str, param: str | None, **_options) -> Priority:
    mib = float_param(spec, param, default=4.0, meaning="the partition size in MiB")
    return Priority(partition_mib=mib, name="priority" if not param else f"priority:{param}")
