"""What every strategy shares: the build context and the one data-parallel graph builder.

A strategy module only chooses buckets, delay, gating, update style and channel order,
then calls :func:`build_data_parallel`. The engine never sees strategy names.

Graph shape for iteration t (L layers, forward order 0..L-1):

    forward(t, 0) -> ... -> forward(t, L-1) -> backward(t, L-1) -> ... -> backward(t, 0)
    backward(t, l) ready a bucket  ->  comm(t, bucket)  ->  update(t, ...)
    forward(t+1, 0) follows backward(t, 0) and waits for the updates its gating names.
    With a delay d, update(t) is made while building pass t + d and waits for its
    backward, so no pass ever reads two weight versions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from sim.engine.graph import COMPUTE, NO_RESOURCE, TaskGraph, channel
from sim.errors import InputError
from sim.model.collectives import CollectiveCost
from sim.model.scenario import Scenario

# A guard against specs like priority:0.001 on GPT-2 XL (hundreds of thousands of
# partitions per iteration): minutes of simulation for a configuration nobody runs.
MAX_COLLECTIVES_PER_ITERATION = 20_000
# The first item of a gradient copy's priority: below every iteration number, so a ready
# copy runs before any other ready compute task (see build_data_parallel).
COPY_FIRST = -1


@dataclass(frozen=True)
class Bucket:
    """Gradients communicated together: which layers they finish, and their bytes.

    ready_layer: the layer whose backward completes the bucket (the lowest index in it,
    since backward runs from the last layer to the first).
    """

    label: str
    layers: tuple[int, ...]
    bytes: float
    ready_layer: int


def _no_collectives(op: str, nbytes: float) -> CollectiveCost:
    raise ValueError(
        f"this BuildContext has no {op} costs (sim.engine.simulate.build_context gives them)"
    )


@dataclass(frozen=True)
class BuildContext:
    """Costs a strategy needs, per layer in forward order (seconds, bytes).

    ``collective(op, nbytes)``: the cost of ``op`` (``reduce-scatter``, ``allgather``,
    ``allreduce``, ``broadcast``) over all devices, ``nbytes`` being the whole buffer
    (nccl-tests' size: a reduce-scatter's input, an all-gather's output).
    ``copy_s(nbytes)``: the copy of gradients into a communication buffer.
    """

    scenario: Scenario
    names: tuple[str, ...]
    forward_s: tuple[float, ...]
    backward_s: tuple[float, ...]
    update_s: tuple[float, ...]
    grad_bytes: tuple[float, ...]
    tensor_bytes: tuple[tuple[float, ...], ...]
    activation_bytes: tuple[float, ...]
    allreduce: Callable[[float], CollectiveCost]
    push_pull: Callable[[float, int], CollectiveCost]
    iterations: int
    collective: Callable[[str, float], CollectiveCost] = _no_collectives
    # Seconds to copy n gradient bytes into a communication buffer
    # (:func:`sim.model.costs.buffer_copy_s`); none in a context built by hand.
    copy_s: Callable[[float], float] = lambda nbytes: 0.0
    # Per layer, a delayed update's cost: its gradient's buffer was last written an
    # iteration or more before (the workload's measured stale step); None: update_s.
    stale_update_s: tuple[float, ...] | None = None

    @property
    def layers(self) -> int:
        return len(self.names)

    @property
    def param_layers(self) -> tuple[int, ...]:
        return tuple(i for i, b in enumerate(self.grad_bytes) if b > 0)


def copy_buffer_bytes(ctx: BuildContext, buffers: int = 1) -> float:
    """Memory of ``buffers`` communication buffers of every gradient, the buffers
    :func:`build_data_parallel`'s copies fill; none where no copy is charged (one device,
    times read from a DDP trace, a context built by hand)."""
    return buffers * sum(ctx.grad_bytes) if ctx.copy_s(1.0) > 0 else 0.0


@dataclass(frozen=True)
class StateShare:
    """The fraction of each full copy of the model state a device keeps between
    iterations: weights, gradients, and optimizer state with its fp32 master weights.

    1 everywhere for data parallelism; ZeRO's stages shard the optimizer state (1/D),
    then the gradients, then the weights over D devices (Rajbhandari et al., "ZeRO:
    Memory Optimizations Toward Training Trillion Parameter Models", SC'20, Figure 1).
    What a strategy gathers for a while (a sharded layer's full weights, its full
    gradients before the reduce-scatter) is memory its tasks add and release.
    """

    weights: float = 1.0
    gradients: float = 1.0
    optimizer_state: float = 1.0


@dataclass(frozen=True)
class RealRunPlan:
    """How a real MPI run executes a strategy (``calibrate.realrun`` implements the
    kinds): ``sync``, ``layerwise``, ``bucketed`` (caps in bytes), ``delayed`` (delay)."""

    kind: str
    delay: int = 0
    cap_bytes: float = 25 * 2**20
    first_cap_bytes: float = 2**20


class Strategy(Protocol):
    """A gradient-synchronisation strategy: what it is, and its graph builder.

    Everything outside a strategy's module reads these, never its class or its name:
    ``family`` (the registry name, e.g. ``delayed``), ``staleness`` (iterations between
    computing a gradient and applying it: the convergence module's d), ``size_mib``
    (its bucket/fusion/partition size, if it has one), ``tunes`` (what ``dtsim tune``
    searches for the family: ``size``, ``delay``, ``apply`` or None), ``channels`` (concurrent
    communication channels; also the period the steady state is averaged over),
    ``update_rule`` (the strategy whose convergence figures apply: ``sync`` for every
    strategy that applies iteration t's averaged gradient before forward(t+1),
    ``delayed:d`` for a staleness of d, or its own name), ``per_layer_staleness``
    (whether convergence runs may give each layer its own staleness),
    ``workers_hold_optimizer_state``, :meth:`state_share` (sharded model state) and
    :meth:`real_run_plan`.
    """

    @property
    def family(self) -> str: ...

    @property
    def tunes(self) -> str | None: ...

    @property
    def per_layer_staleness(self) -> bool: ...

    @property
    def name(self) -> str: ...

    @property
    def channels(self) -> int: ...

    @property
    def period(self) -> int:
        """Iterations after which its task graph repeats (its channels; k for a strategy
        that synchronises every k iterations): a steady state is whole periods of it."""
        ...

    @property
    def staleness(self) -> int: ...

    @property
    def update_rule(self) -> str: ...

    @property
    def size_mib(self) -> float | None: ...

    @property
    def workers_hold_optimizer_state(self) -> bool: ...

    def build(self, ctx: BuildContext) -> TaskGraph: ...

    def extra_buffer_bytes(self, ctx: BuildContext) -> float:
        """Device memory beyond weights, gradients, optimizer state and activations."""
        ...

    def state_share(self, ctx: BuildContext) -> StateShare:
        """How much of the weights, gradients and optimizer state a device keeps."""
        ...

    def real_run_plan(self) -> RealRunPlan | None:
        """How ``dtsim validate`` runs it for real; None if it has no real implementation."""
        ...


class StrategyDefaults:
    """The common answers to :class:`Strategy`'s questions; a strategy class derives
    from it and overrides what differs (its dataclass fields may override properties)."""

    tunes: ClassVar[str | None] = None
    per_layer_staleness: ClassVar[bool] = False

    @property
    def channels(self) -> int:
        return 1

    @property
    def period(self) -> int:
        return self.channels

    @property
    def staleness(self) -> int:
        return 0

    @property
    def update_rule(self) -> str:
        return f"delayed:{self.staleness}" if self.staleness else "sync"

    @property
    def size_mib(self) -> float | None:
        return None

    @property
    def workers_hold_optimizer_state(self) -> bool:
        return True

    def extra_buffer_bytes(self, ctx: BuildContext) -> float:
        return 0.0

    def state_share(self, ctx: BuildContext) -> StateShare:
        return StateShare()

    def real_run_plan(self) -> RealRunPlan | None:
        return None


def layer_buckets(ctx: BuildContext) -> list[Bucket]:
    """One bucket per layer with parameters, in backward order."""
    return [Bucket(ctx.names[i], (i,), ctx.grad_bytes[i], i) for i in reversed(ctx.param_layers)]


def tensor_buckets(ctx: BuildContext) -> list[Bucket]:
    """One bucket per parameter tensor (weights and biases apart), in backward order."""
    out = []
    for i in reversed(ctx.param_layers):
        tensors = ctx.tensor_bytes[i] or (ctx.grad_bytes[i],)
        for j, size in reversed(list(enumerate(tensors))):
            out.append(Bucket(f"{ctx.names[i]}.{j}", (i,), size, i))
    return out


def fill_buckets(
    ctx: BuildContext, cap_bytes: float, first_cap_bytes: float | None = None
) -> list[Bucket]:
    """Fill parameter tensors, in backward order, into buckets of at most ``cap_bytes``.

    PyTorch DDP semantics (Li et al., VLDB 2020; torch reducer.hpp): tensors are taken in
    reverse registration order; a bucket closes once it reaches the cap; the first
    bucket has its own, smaller cap. A tensor larger than the cap gets a bucket alone.
    """
    buckets: list[Bucket] = []
    cur_layers: list[int] = []
    cur_bytes = 0.0
    cap = first_cap_bytes if first_cap_bytes is not None else cap_bytes

    def close() -> None:
        nonlocal cur_layers, cur_bytes, cap
        if cur_layers:
            layers = tuple(sorted(set(cur_layers)))
            buckets.append(Bucket(f"bucket{len(buckets)}", layers, cur_bytes, min(layers)))
        cur_layers, cur_bytes, cap = [], 0.0, cap_bytes

    for i in reversed(ctx.param_layers):
        for size in reversed(ctx.tensor_bytes[i] or (ctx.grad_bytes[i],)):
            cur_layers.append(i)
            cur_bytes += size
            if cur_bytes >= cap:
                close()
    close()
    return buckets


def check_collective_count(count: int) -> None:
    """Refuse more than :data:`MAX_COLLECTIVES_PER_ITERATION` collectives per iteration
    (a strategy that can count its pieces calls this before making them)."""
    if count > MAX_COLLECTIVES_PER_ITERATION:
        raise InputError(
            f"this strategy would issue {count:,} collectives per iteration (more than "
            f"{MAX_COLLECTIVES_PER_ITERATION:,}); the simulation would take minutes and no "
            "real system sends gradients in pieces that small: use a larger bucket or "
            "partition size",
            key="strategy",
        )


@dataclass
class _Ids:
    forward: list[int] = field(default_factory=list)
    backward: list[int] = field(default_factory=list)
    updates: dict[int, int] = field(default_factory=dict)  # layer -> update task
    all_updates: list[int] = field(default_factory=list)
    comm_of_layer: dict[int, list[int]] = field(default_factory=dict)
    comms: list[int] = field(default_factory=list)


def build_data_parallel(
    ctx: BuildContext,
    buckets: Sequence[Bucket],
    *,
    delay: int = 0,
    channels: int = 1,
    updates: str = "single",
    per_layer_gating: bool = False,
    front_first: bool = False,
    hold_s: Sequence[float] | None = None,
    push_pull_servers: int = 0,
    push_pull: Callable[[float], CollectiveCost] | None = None,
    full_duplex: bool = False,
) -> TaskGraph:
    """The one builder behind every strategy.

    delay: forward(t+1) waits for updates of iteration t - delay, and (delay > 0) the
      update of iteration t waits for pass t + delay to stop reading the weights it
      changes (see :func:`_add_updates`): pass s reads w_s = w_0 - η·Σ_{u<s-delay} g_u.
    channels: comm(t, .) runs on channel t mod channels.
    updates: "single" (one update after all comms of t), "as-ready" (one per layer, as
      its gradients arrive), "in-order" (one per layer, in backprop order), or "none"
      (a parameter server applies them; forward waits for the pull).
    per_layer_gating: forward(t+1, l) waits only for layer l's update (else forward(t+1,
      0) waits for all of them).
    front_first: a channel sends the ready bucket of the frontmost layer first
      (ByteScheduler/P3) instead of in the order gradients became ready.
    hold_s: per bucket, how long its gradients wait after the last one is ready before
      the collective may start (Horovod's cycle): a timer task, counted as
      communication, since the gradients are in the communication pipeline.
    push_pull_servers: >0 means comm is a parameter-server push and pull, costed by
      ``push_pull`` (default ``ctx.push_pull`` with that many servers); the servers apply
      the update (costed as the worker's, over S) unless ``updates`` names a worker update.
    full_duplex: a push-pull runs as two tasks, the push on channel comm0 and the pull
      (after the push and the servers' apply) on comm1, each half the push-pull's cost on
      its own direction of the NIC (link classes ``network:out`` and ``network:in``): one
      tensor's pull overlaps the next one's push, as on a full-duplex NIC.
    """
    check_collective_count(len(buckets))
    # Each bucket's gradients are copied into its communication buffer on the compute
    # stream once they are all ready, just before its collective (a task of kind
    # "backward" labelled "copy:<bucket>", right after the backward that completes the
    # bucket). DDP and dtsim's real runs copy each gradient as it is accumulated, inside
    # the backward of its layer: the same work, at the bucket's end instead of spread
    # over its layers. A copy goes before any other ready task (COPY_FIRST), an older
    # iteration's update included, as a hook runs inside the backward it follows: with
    # a delay, the collective of iteration t starts before the update of t - d (dtsim's
    # real delayed runs start the all-reduce, then wait for and apply the older one).
    copies = [ctx.copy_s(b.bytes) for b in buckets]
    duplex = bool(push_pull_servers) and full_duplex
    g = TaskGraph(channels=2 if duplex else channels)
    L = ctx.layers
    history: list[_Ids] = []
    bucket_of_layer: dict[int, list[int]] = {}
    for bi, b in enumerate(buckets):
        for layer in b.layers:
            bucket_of_layer.setdefault(layer, []).append(bi)
    if push_pull_servers and push_pull is None:

        def push_pull(nbytes: float) -> CollectiveCost:
            return ctx.push_pull(nbytes, push_pull_servers)

    costs = [
        push_pull(b.bytes) if push_pull is not None else ctx.allreduce(b.bytes) for b in buckets
    ]
    # Parameter servers apply the update to their 1/S shard between push and pull; the
    # worker waits for it (costed like the worker's own update, split over S servers).
    server_apply_s = [
        sum(ctx.update_s[layer] for layer in b.layers) / push_pull_servers
        if push_pull_servers and updates == "none"
        else 0.0
        for b in buckets
    ]
    prev_tail: int | None = None
    for t in range(ctx.iterations):
        ids = _Ids()
        gated = t - 1 - delay
        source = history[gated] if gated >= 0 else None
        for layer in range(L):
            deps: list[int] = []
            if layer == 0:
                if prev_tail is not None:
                    deps.append(prev_tail)
            else:
                deps.append(ids.forward[-1])
            if source is not None:
                if updates == "none":
                    if per_layer_gating:
                        deps.extend(source.comm_of_layer.get(layer, ()))
                    elif layer == 0:
                        deps.extend(c for cs in source.comm_of_layer.values() for c in cs)
                elif per_layer_gating:
                    if layer in source.updates:
                        deps.append(source.updates[layer])
                elif layer == 0:
                    deps.extend(source.all_updates)
            ids.forward.append(
                g.add(
                    "forward",
                    COMPUTE,
                    t,
                    ctx.names[layer],
                    ctx.forward_s[layer],
                    deps,
                    (t, 0, layer),
                    memory_bytes=ctx.activation_bytes[layer],
                )
            )
        backward = [0] * L
        for k, layer in enumerate(reversed(range(L))):
            dep = ids.forward[-1] if k == 0 else backward[layer + 1]
            backward[layer] = g.add(
                "backward",
                COMPUTE,
                t,
                ctx.names[layer],
                ctx.backward_s[layer],
                [dep],
                (t, 1, k),
                memory_bytes=-ctx.activation_bytes[layer],
            )
        ids.backward = backward
        prev_tail = backward[0]

        res = channel(t % channels)
        for bi, (b, cost, apply_s) in enumerate(zip(buckets, costs, server_apply_s, strict=True)):
            deps = [backward[b.ready_layer]]
            if copies[bi] > 0:
                deps = [
                    g.add(
                        "backward",
                        COMPUTE,
                        t,
                        f"copy:{b.label}",
                        copies[bi],
                        deps,
                        (COPY_FIRST, t, L - 1 - b.ready_layer, bi),
                        nbytes=b.bytes,
                    )
                ]
            if hold_s is not None:
                deps = [
                    g.add(
                        "wait",
                        NO_RESOURCE,
                        t,
                        f"cycle:{b.label}",
                        hold_s[bi],
                        deps,
                        (t, 3, bi),
                    )
                ]
            prio = (t, min(b.layers), bi) if front_first else (t, bi)
            if duplex:
                push = g.add(
                    "comm",
                    channel(0),
                    t,
                    f"{b.label}:push",
                    cost.bandwidth_s / 2,
                    deps,
                    prio,
                    latency_s=cost.latency_s / 2,
                    links=tuple(f"{link}:out" for link in cost.links),
                    nbytes=b.bytes,
                )
                cid = g.add(
                    "comm",
                    channel(1),
                    t,
                    f"{b.label}:pull",
                    cost.bandwidth_s / 2,
                    [push],
                    prio,
                    latency_s=cost.latency_s / 2 + apply_s,
                    links=tuple(f"{link}:in" for link in cost.links),
                    nbytes=b.bytes,
                )
                ids.comms.append(push)
                ids.comms.append(cid)
                for layer in b.layers:
                    ids.comm_of_layer.setdefault(layer, []).append(cid)
                continue
            cid = g.add(
                "comm",
                res,
                t,
                b.label,
                cost.bandwidth_s,
                deps,
                prio,
                latency_s=cost.latency_s + apply_s,
                links=cost.links,
                nbytes=b.bytes,
            )
            ids.comms.append(cid)
            for layer in b.layers:
                ids.comm_of_layer.setdefault(layer, []).append(cid)

        history.append(ids)
        if delay == 0:
            _add_updates(g, ctx, history, t, updates, None)
        elif t >= delay:
            _add_updates(g, ctx, history, t - delay, updates, backward)
    # The last d iterations' gradients would be applied after passes the run never
    # makes: apply them after its last backward, so that every comm has its update.
    for u in range(max(0, ctx.iterations - delay), ctx.iterations):
        if delay:
            _add_updates(g, ctx, history, u, updates, history[-1].backward)
    return g


def _add_updates(
    g: TaskGraph,
    ctx: BuildContext,
    history: list[_Ids],
    u: int,
    updates: str,
    after_backward: list[int] | None,
) -> None:
    """Create the update task(s) that apply iteration ``u``'s reduced gradient.

    after_backward: with a delay d > 0, the backward tasks of pass u + d (or of the
    run's last pass). The update of gradient u must not change weights that pass u + d
    still reads, or that pass would mix two weight versions and pass u + d already
    see g_u: a single update waits for backward(u + d, 0), the end of the pass; a
    per-layer update of layer l waits for backward(u + d, l), after which that pass no
    longer reads layer l's weights. forward(u + d + 1) waits for it, so pass s reads
    w_s = w_0 - η·(g_0 + ... + g_{s-1-d}): the rule w_{t+1} = w_t - η·g_{t-d} of
    ``calibrate.convergence.runs.apply_schedule``.
    """
    ids = history[u]
    prev = history[u - 1] if u > 0 else None
    # A delayed update (after_backward given) applies a gradient reduced iterations ago.
    cost = ctx.update_s
    if after_backward is not None and ctx.stale_update_s is not None:
        cost = ctx.stale_update_s
    if updates == "single":
        deps = list(ids.comms)
        if after_backward is not None:
            deps.append(after_backward[0])
        if prev is not None:
            deps.extend(prev.all_updates)
        work = sum(cost)
        uid = g.add("update", COMPUTE, u, "all", work, deps, (u, 2, 0))
        ids.all_updates = [uid]
        ids.updates = {layer: uid for layer in ctx.param_layers}
    elif updates in ("as-ready", "in-order"):
        previous_in_order: int | None = None
        for k, layer in enumerate(reversed(ctx.param_layers)):
            deps = list(ids.comm_of_layer[layer])
            if after_backward is not None:
                deps.append(after_backward[layer])
            if updates == "in-order" and previous_in_order is not None:
                deps.append(previous_in_order)
            if prev is not None and layer in prev.updates:
                deps.append(prev.updates[layer])
            uid = g.add("update", COMPUTE, u, ctx.names[layer], cost[layer], deps, (u, 2, k))
            ids.updates[layer] = uid
            ids.all_updates.append(uid)
            previous_in_order = uid
    elif updates != "none":
        raise ValueError(f"unknown update style {updates!r}")
