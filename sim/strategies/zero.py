"""``zero:1``, ``zero:2``, ``zero:3``: DeepSpeed's Zero Redundancy Optimizer stages.

Rajbhandari, Rasley, Ruwase, He, "ZeRO: Memory Optimizations Toward Training Trillion
Parameter Models", SC'20: each of D data-parallel devices keeps 1/D of the optimizer
state (stage 1), of the gradients too (stage 2), and of the weights too (stage 3), and
updates its own shard. The arithmetic is that of synchronous data parallelism (the
update rule is ``sync``); what changes is memory and communication:

- **zero:1, zero:2**: gradients are reduce-scattered in buckets of
  ``reduce_bucket_size`` as backward produces them (DeepSpeed's ``overlap_comm``), the
  optimizer steps its shard (1/D of the work), and the updated parameters are
  all-gathered in buckets of ``allgather_bucket_size`` before the next forward: the
  volume of one all-reduce (2Ψ, section 7.2.1 of the paper). Stage 1 keeps whole
  gradients; stage 2 keeps only its shard after each bucket's reduce-scatter.
- **zero:3**: every module with at least ``stage3_param_persistence_threshold``
  parameters is sharded and all-gathered before its forward and again before its
  backward, unless it is reused within ``stage3_max_reuse_distance`` parameters (the
  last modules of forward stay for backward); gradients are reduce-scattered in
  buckets: 3Ψ per iteration (1.5x data parallelism, section 7.2.2). Smaller modules
  (norms, biases) stay whole on every device. All-gathers run ahead of compute along
  the recorded module trace, as long as the gathered, unreleased parameters stay
  within ``stage3_max_live_parameters``; a prefetch that does not fit, or of a module
  not yet released after its forward, is issued at the first later hook where it can.

Defaults are DeepSpeed's (https://www.deepspeed.ai/docs/config-json/, "ZeRO
Optimizations"), in parameters (elements). Departures: hooks run when the step before
them ends (the host waits for the device, as DeepSpeed's fetches do); the prefetch
budget per hook (``stage3_prefetch_bucket_size``) is not modelled, only the live limit
that bounds it in steady state; all collectives share the data-parallel communicator
and run in issue order (see :mod:`sim.strategies._sharded`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.engine.graph import TaskGraph
from sim.errors import InputError
from sim.strategies._params import int_param
from sim.strategies._sharded import (
    GATHER_BACKWARD,
    GATHER_FORWARD,
    REDUCE,
    REFRESH,
    UPDATE,
    Issue,
    Step,
    Unit,
    build_sharded,
    hook_key,
    step_before,
)
from sim.strategies.base import Bucket, BuildContext, StateShare, StrategyDefaults, fill_buckets

REDUCE_BUCKET_ELEMENTS = 500_000_000  # reduce_bucket_size
ALLGATHER_BUCKET_ELEMENTS = 500_000_000  # allgather_bucket_size
PERSISTENCE_THRESHOLD_ELEMENTS = 100_000  # stage3_param_persistence_threshold
MAX_LIVE_ELEMENTS = 1_000_000_000  # stage3_max_live_parameters
MAX_REUSE_DISTANCE_ELEMENTS = 1_000_000_000  # stage3_max_reuse_distance


@dataclass(frozen=True)
class Zero(StrategyDefaults):
    """A ZeRO stage with DeepSpeed's ``zero_optimization`` settings (in parameters)."""

    family = "zero"
    stage: int = 1
    name: str = "zero:1"
    reduce_bucket_elements: int = REDUCE_BUCKET_ELEMENTS
    allgather_bucket_elements: int = ALLGATHER_BUCKET_ELEMENTS
    persistence_threshold: int = PERSISTENCE_THRESHOLD_ELEMENTS
    max_live: int = MAX_LIVE_ELEMENTS
    max_reuse_distance: int = MAX_REUSE_DISTANCE_ELEMENTS

    def state_share(self, ctx: BuildContext) -> StateShare:
        d = ctx.scenario.devices
        if self.stage == 1:
            return StateShare(optimizer_state=1 / d)
        if self.stage == 2:
            return StateShare(gradients=1 / d, optimizer_state=1 / d)
        total = sum(ctx.grad_bytes)
        sharded = sum(ctx.grad_bytes[u.layers[0]] for u in self.units(ctx))
        weights = ((total - sharded) + sharded / d) / total if total else 1.0
        return StateShare(weights, 1 / d, 1 / d)

    def units(self, ctx: BuildContext) -> list[Unit]:
        """ZeRO-3's sharded modules: one per layer with at least the persistence
        threshold of parameters, kept from forward to backward when the parameters of
        the modules after it (what runs before its reuse) are within the reuse distance."""
        params = [layer.params for layer in ctx.scenario.workload.layers]
        sharded = [i for i, n in enumerate(params) if n > 0 and n >= self.persistence_threshold]
        out = []
        later = sum(params[i] for i in sharded)
        for i in sharded:
            later -= params[i]
            out.append(Unit(ctx.names[i], (i,), later > self.max_reuse_distance))
        return out

    def build(self, ctx: BuildContext) -> TaskGraph:
        cap = self.reduce_bucket_elements * ctx.scenario.dtype_bytes
        buckets = fill_buckets(ctx, cap, cap)
        reduces = [Issue(REDUCE, k, ("backward", b.ready_layer)) for k, b in enumerate(buckets)]
        if self.stage < 3:
            cap = self.allgather_bucket_elements * ctx.scenario.dtype_bytes
            params = fill_buckets(ctx, cap, cap)
            refresh = [Issue(REFRESH, k, UPDATE) for k in range(len(params))]
            return build_sharded(
                ctx,
                (),
                buckets,
                reduces + refresh,
                sharded_gradients=self.stage == 2,
                refresh_buckets=params,
            )
        units = self.units(ctx)
        numel = [ctx.scenario.workload.layers[u.layers[0]].params for u in units]
        plan = trace_window_plan(ctx.layers, units, numel, buckets, self.max_live)
        return build_sharded(ctx, units, buckets, plan, sharded_gradients=True)


def trace_window_plan(
    layers: int,
    units: list[Unit],
    numel: list[int],
    buckets: list[Bucket],
    max_live: int,
) -> list[Issue]:
    """DeepSpeed ZeRO-3's fetch order: at each module's pre-forward/pre-backward hook,
    gather it if it is not yet, then prefetch the next modules of the trace while the
    parameters gathered and not yet released stay within ``max_live``; release a
    module after its forward (if resharded) or its backward; reduce-scatter each bucket
    at the post-backward hook of the layer that completes it. A hook runs when ``step``
    (the compute step before it, for a pre-hook; its own, for the others) ends."""
    # (when, what, unit or bucket, step)
    hooks: list[tuple[tuple[int, int], str, int, Step | None]] = []
    for k, u in enumerate(units):
        before = step_before(("forward", u.first_forward), layers)
        hooks.append((hook_key(before, layers, True), GATHER_FORWARD, k, before))
        if u.reshard_after_forward:
            done: Step = ("forward", max(u.layers))
            hooks.append((hook_key(done, layers, False), "release", k, done))
            before = step_before(("backward", u.first_backward), layers)
            hooks.append((hook_key(before, layers, True), GATHER_BACKWARD, k, before))
        done = ("backward", min(u.layers))
        hooks.append((hook_key(done, layers, False), "release", k, done))
    for k, b in enumerate(buckets):
        done = ("backward", b.ready_layer)
        hooks.append((hook_key(done, layers, False), REDUCE, k, done))
    hooks.sort(key=lambda h: h[0])  # stable: a reduce after the release at its step

    forward = sorted(range(len(units)), key=lambda k: units[k].first_forward)
    backward = sorted(range(len(units)), key=lambda k: -units[k].first_backward)
    trace = [(GATHER_FORWARD, k) for k in forward]
    trace += [(GATHER_BACKWARD, k) for k in backward if units[k].reshard_after_forward]
    issued: set[tuple[str, int]] = set()
    released: set[int] = set()  # units released after their forward
    plan: list[Issue] = []
    live = 0
    nxt = 0

    def issue(item: tuple[str, int], at: Step | None) -> None:
        nonlocal live
        issued.add(item)
        plan.append(Issue(item[0], item[1], at))
        live += numel[item[1]]

    for _, what, k, step in hooks:
        if what == REDUCE:
            plan.append(Issue(REDUCE, k, step))
            continue
        if what == "release":
            live -= numel[k]
            released.add(k)
            continue
        if (what, k) not in issued:
            issue((what, k), step)
        while nxt < len(trace):
            item = trace[nxt]
            if item not in issued:
                if item[0] == GATHER_BACKWARD and item[1] not in released:
                    break  # still gathered from its forward: fetched once released
                if live + numel[item[1]] > max_live:
                    break
                issue(item, step)
            nxt += 1
    return plan


def parse(spec: str, param: str | None, **_options) -> Zero:
    stage = int_param(spec, param, default=1, minimum=1, meaning="the ZeRO stage (1, 2 or 3)")
    if stage > 3:
        raise InputError(f"'{spec}': the ZeRO stage must be 1, 2 or 3, got {stage}", key="strategy")
    return Zero(stage=stage, name=f"zero:{stage}")
