"""``layerwise``: wait-free backprop. Each layer's gradient is all-reduced as soon as its
backward ends (Poseidon, ATC'17; the study's layer-wise GD), so communication hides
only behind the rest of the backward pass.

``apply`` is the study's three variants: ``wait-all`` (apply after every reduction of
the iteration), ``in-order`` (apply layer by layer in backprop order) or ``as-ready``
(apply each layer as its reduction completes). ``per_tensor`` reduces weights and
biases separately, one collective per parameter tensor, as the study's Caffe code did.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.engine.graph import TaskGraph
from sim.errors import InputError
from sim.strategies._params import no_param
from sim.strategies.base import (
    BuildContext,
    RealRunPlan,
    StrategyDefaults,
    build_data_parallel,
    copy_buffer_bytes,
    layer_buckets,
    tensor_buckets,
)

APPLY = ("wait-all", "in-order", "as-ready")


@dataclass(frozen=True)
class Layerwise(StrategyDefaults):
    family = "layerwise"
    tunes = "apply"
    apply: str = "wait-all"
    per_tensor: bool = False
    name: str = "layerwise"

    def extra_buffer_bytes(self, ctx: BuildContext) -> float:
        return copy_buffer_bytes(ctx)  # the buffers its gradients are copied into

    def build(self, ctx: BuildContext) -> TaskGraph:
        buckets = tensor_buckets(ctx) if self.per_tensor else layer_buckets(ctx)
        updates = "single" if self.apply == "wait-all" else self.apply
        return build_data_parallel(ctx, buckets, updates=updates)

    def real_run_plan(self) -> RealRunPlan | None:
        # The real runs implement the study's default: one reduction per layer, applied
        # after all of them.
        if self.apply == "wait-all" and not self.per_tensor:
            return RealRunPlan("layerwise")
        return None


def parse(
    spec: str, param: str | None, *, apply: str = "wait-all", per_tensor: bool = False, **_options
) -> Layerwise:
    no_param(spec, param)
    if apply not in APPLY:
        raise InputError(f"--apply must be one of {', '.join(APPLY)}, got '{apply}'", key="apply")
    # The name shows a non-default variant, so tables and traces say which one ran.
    variant = [v for v in (apply if apply != "wait-all" else "", "per-tensor" * per_tensor) if v]
    name = f"layerwise({','.join(variant)})" if variant else "layerwise"
    return Layerwise(apply=apply, per_tensor=per_tensor, name=name)
