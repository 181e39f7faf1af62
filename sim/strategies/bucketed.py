"""``bucketed[:MB]``: PyTorch DDP gradient bucketing (Li et al., VLDB 2020).

Parameter tensors fill buckets in backward order up to ``bucket_cap_mb`` (25 MiB by
default; the first bucket 1 MiB: torch/csrc/distributed/c10d/reducer.hpp,
kDefaultFirstBucketBytes and kDefaultBucketBytesCap). Each bucket is all-reduced as soon
as its last gradient is ready, while backward continues; the optimizer steps after all
buckets are reduced. DDP keeps the buckets as one extra copy of the gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.engine.graph import TaskGraph
from sim.strategies._params import float_param
from sim.strategies.base import (
    BuildContext,
    RealRunPlan,
    StrategyDefaults,
    build_data_parallel,
    fill_buckets,
)

MIB = 2**20


@dataclass(frozen=True)
class Bucketed(StrategyDefaults):
    family = "bucketed"
    tunes = "size"
    cap_mib: float = 25.0
    first_cap_mib: float = 1.0
    name: str = "bucketed"

    @property
    def size_mib(self) -> float:
        return self.cap_mib

    def real_run_plan(self) -> RealRunPlan:
        return RealRunPlan("bucketed", 0, self.cap_mib * MIB, self.first_cap_mib * MIB)

    def buckets(self, ctx: BuildContext):
        return fill_buckets(ctx, self.cap_mib * MIB, self.first_cap_mib * MIB)

    def build(self, ctx: BuildContext) -> TaskGraph:
        return build_data_parallel(ctx, self.buckets(ctx))

    def extra_buffer_bytes(self, ctx: BuildContext) -> float:
        return sum(ctx.grad_bytes)


def parse(spec: str, param: str | None, **_options) -> Bucketed:
    cap = float_param(spec, param, default=25.0, meaning="the bucket cap in MiB")
    return Bucketed(
        cap_mib=cap,
        first_cap_mib=min(1.0, cap),
        name="bucketed" if param in (None, "") else f"bucketed:{param}",
    )
