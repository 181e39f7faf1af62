"""``horovod[:MB[:MS]]``: Horovod tensor fusion with a background cycle.

Every ``cycle`` (HOROVOD_CYCLE_TIME) the background thread fuses the gradients that
became ready since the last cycle, up to the fusion threshold (HOROVOD_FUSION_THRESHOLD),
and all-reduces each fused buffer. Defaults are v0.21's: 128 MiB and 1 ms (horovod
CHANGELOG v0.21.0: "Changed default cycle time from 5ms to 1ms and fusion threshold from
64MB to 128MB").

Model: cycle ticks are counted from the start of each iteration's backward pass.
Which gradients share a cycle is decided from the backward timeline alone (compute
times from the context, without the slow-down communication may cause); each fused
all-reduce waits, from its last gradient's readiness, for the first tick after it (a
timer task, counted as communication), then queues on the one channel behind earlier
fused buffers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.engine.graph import TaskGraph
from sim.strategies._params import MAX_TIME_MS, MIN_TIME_MS, float_param
from sim.strategies.base import Bucket, BuildContext, StrategyDefaults, build_data_parallel

MIB = 2**20


@dataclass(frozen=True)
class Horovod(StrategyDefaults):
    family = "horovod"
    tunes = "size"
    fusion_mib: float = 128.0
    cycle_ms: float = 1.0
    name: str = "horovod"

    @property
    def size_mib(self) -> float:
        return self.fusion_mib

    def fused(self, ctx: BuildContext) -> tuple[list[Bucket], list[float]]:
        """Fused buffers in send order, and how long each waits, once its last gradient is
        ready, for the cycle tick that picks it up."""
        cycle = self.cycle_ms * 1e-3
        cap = self.fusion_mib * MIB
        ready_at: dict[int, float] = {}
        clock = 0.0
        for layer in reversed(range(ctx.layers)):
            clock += ctx.backward_s[layer]
            ready_at[layer] = clock
        by_tick: dict[int, list[int]] = {}
        for layer in reversed(ctx.param_layers):
            tick = max(1, math.ceil(ready_at[layer] / cycle - 1e-9))
            by_tick.setdefault(tick, []).append(layer)
        buckets: list[Bucket] = []
        release: list[float] = []
        for tick in sorted(by_tick):
            group: list[int] = []
            size = 0.0
            for layer in by_tick[tick]:
                if group and size + ctx.grad_bytes[layer] > cap:
                    buckets.append(
                        Bucket(f"fused{len(buckets)}", tuple(sorted(group)), size, min(group))
                    )
                    release.append(max(0.0, tick * cycle - ready_at[min(group)]))
                    group, size = [], 0.0
                group.append(layer)
                size += ctx.grad_bytes[layer]
            if group:
                buckets.append(
                    Bucket(f"fused{len(buckets)}", tuple(sorted(group)), size, min(group))
                )
                release.append(max(0.0, tick * cycle - ready_at[min(group)]))
        return buckets, release

    def build(self, ctx: BuildContext) -> TaskGraph:
        buckets, release = self.fused(ctx)
        return build_data_parallel(ctx, buckets, hold_s=release)

    def extra_buffer_bytes(self, ctx: BuildContext) -> float:
        return min(self.fusion_mib * MIB, sum(ctx.grad_bytes))


def parse(spec: str, param: str | None, **_options) -> Horovod:
    fusion_text, _, cycle_text = (param or "").partition(":")
    fusion = float_param(spec, fusion_text, default=128.0, meaning="the fusion threshold in MiB")
    cycle = float_param(
        spec,
        cycle_text,
        default=1.0,
        meaning="the cycle time in ms",
        minimum=MIN_TIME_MS,
        maximum=MAX_TIME_MS,
    )
    return Horovod(
        fusion_mib=fusion, cycle_ms=cycle, name="horovod" if not param else f"horovod:{param}"
    )
