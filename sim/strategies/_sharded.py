"""The graph builder behind sharded data parallelism (``zero:1/2/3``, ``fsdp``).

Each device keeps a 1/D shard of the model state (ZeRO, Rajbhandari et al., SC'20) and
the collectives move the rest in and out around the computation:

- **gather-forward** / **gather-backward**: an all-gather of a unit's parameters (an
  FSDP unit, a DeepSpeed module) before its forward, and again before its backward if
  it was released after forward;
- **reduce**: a reduce-scatter of a bucket of gradients once backward has produced them,
  leaving each device the reduced gradients of its shard;
- **refresh**: an all-gather of updated parameters after the (sharded) optimizer step
  (ZeRO-1/2, whose devices keep every weight).

A strategy gives the collectives as a *plan*: one iteration's :class:`Issue` list in
the order the host issues them, each with the compute step whose end it waits for. One
NCCL communicator runs its collectives in issue order, whatever their readiness (FSDP's
and DeepSpeed's all-gathers and reduce-scatters share the data-parallel process group),
so each collective also waits for the one issued before it: the plan's order is the
channel's order. That is why FSDP's backward prefetch matters: issued after the
reduce-scatter of the unit just finished, the next unit's all-gather waits for it (Zhao
et al., "PyTorch FSDP", VLDB 2023, section 3.3.2).

The optimizer step updates this device's shard only: 1/D of the update work.

Memory, beyond the static share (:meth:`Strategy.state_share`): a gathered unit adds
its full parameter bytes when its all-gather ends and releases them after its last
use (its forward, when resharded after forward, else its backward); backward adds each
layer's full gradients, and the reduce-scatter of their bucket releases them. With one
device nothing is gathered or reduced into a separate buffer (FSDP and DeepSpeed use
the shard itself), so these buffers count only when D > 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sim.engine.graph import COMPUTE, TaskGraph, channel
from sim.strategies.base import Bucket, BuildContext

GATHER_FORWARD = "gather-forward"
GATHER_BACKWARD = "gather-backward"
REDUCE = "reduce"
REFRESH = "refresh"

# A compute step: ("forward", layer), ("backward", layer) or ("update", -1).
Step = tuple[str, int]
UPDATE: Step = ("update", -1)


@dataclass(frozen=True)
class Unit:
    """Parameters gathered and released together: an FSDP unit, a DeepSpeed module.

    layers: its layers in forward order (not necessarily adjacent: FSDP's root unit
    holds the embedding and the output layer). reshard_after_forward: released after
    its forward, so gathered again before its backward.
    """

    label: str
    layers: tuple[int, ...]
    reshard_after_forward: bool = True

    @property
    def first_forward(self) -> int:
        return min(self.layers)

    @property
    def first_backward(self) -> int:
        return max(self.layers)


@dataclass(frozen=True)
class Issue:
    """One collective of the plan: ``kind`` (GATHER_FORWARD, GATHER_BACKWARD, REDUCE or
    REFRESH), ``index`` (a unit for gathers, a bucket otherwise), and ``after``: the
    compute step of the same iteration whose end it waits for (None: none)."""

    kind: str
    index: int
    after: Step | None = None


def steps(layers: int) -> list[Step]:
    """One iteration's compute steps in execution order."""
    return (
        [("forward", i) for i in range(layers)]
        + [("backward", i) for i in reversed(range(layers))]
        + [UPDATE]
    )


def build_sharded(
    ctx: BuildContext,
    units: Sequence[Unit],
    buckets: Sequence[Bucket],
    plan: Sequence[Issue],
    *,
    sharded_gradients: bool,
    refresh_buckets: Sequence[Bucket] = (),
) -> TaskGraph:
    """The task graph of ``plan`` (see the module docstring). ``buckets``: the gradients
    each REDUCE reduce-scatters; ``refresh_buckets``: the parameters each REFRESH
    all-gathers; ``sharded_gradients``: full gradients live only until their
    reduce-scatter (ZeRO-2/3, FSDP), else they stay whole (ZeRO-1: static)."""
    return _Builder(ctx, units, buckets, plan, sharded_gradients, refresh_buckets).build()


class _Builder:
    """Everything that is the same in every iteration is computed here, once."""

    def __init__(
        self,
        ctx: BuildContext,
        units: Sequence[Unit],
        buckets: Sequence[Bucket],
        plan: Sequence[Issue],
        sharded_gradients: bool,
        refresh_buckets: Sequence[Bucket],
    ) -> None:
        self.ctx = ctx
        self.plan = plan
        self.order = steps(ctx.layers)
        devices = ctx.scenario.devices
        unit_bytes = [sum(ctx.grad_bytes[i] for i in u.layers) for u in units]
        gathered = unit_bytes if devices > 1 else [0.0] * len(units)
        buffered = devices > 1 and sharded_gradients
        self.grad_buffer = [b if buffered else 0.0 for b in ctx.grad_bytes]
        # Per collective: cost, label, memory its end adds, the step it waits for and
        # the step that needs it (len(order): the next iteration's first).
        self.costs = []
        self.labels: list[str] = []
        self.memory: list[float] = []
        self.after: list[int] = []
        self.consumer: list[int] = []
        for issue in plan:
            if issue.kind in (GATHER_FORWARD, GATHER_BACKWARD):
                u = units[issue.index]
                forward = issue.kind == GATHER_FORWARD
                use = ("forward", u.first_forward) if forward else ("backward", u.first_backward)
                self.costs.append(ctx.collective("allgather", unit_bytes[issue.index]))
                self.labels.append(("ag:" if forward else "ag-bwd:") + u.label)
                self.memory.append(gathered[issue.index])
                self.consumer.append(step_position(use, ctx.layers))
            elif issue.kind == REDUCE:
                b = buckets[issue.index]
                self.costs.append(ctx.collective("reduce-scatter", b.bytes))
                self.labels.append(f"rs:{b.label}")
                self.memory.append(-b.bytes if buffered else 0.0)
                self.consumer.append(step_position(UPDATE, ctx.layers))
            elif issue.kind == REFRESH:
                b = refresh_buckets[issue.index]
                self.costs.append(ctx.collective("allgather", b.bytes))
                self.labels.append(f"ag-params:{b.label}")
                self.memory.append(0.0)
                self.consumer.append(len(self.order))
            else:
                raise ValueError(f"unknown collective kind {issue.kind!r}")
            after = issue.after
            self.after.append(-1 if after is None else step_position(after, ctx.layers))
        _check_plan(units, buckets, refresh_buckets, plan, self.after, self.consumer)
        # What each step's end releases: a unit's gathered parameters after its last use.
        self.released_forward = [0.0] * ctx.layers
        self.released_backward = [0.0] * ctx.layers
        for u, nbytes in zip(units, gathered, strict=True):
            if u.reshard_after_forward:
                self.released_forward[max(u.layers)] += nbytes
            self.released_backward[min(u.layers)] += nbytes
        self.update_work = sum(ctx.update_s) / max(1, devices)
        self.graph = TaskGraph(channels=1)
        self.last_comm: int | None = None
        self.prev_update: int | None = None
        self.prev_refresh: list[int] = []

    def build(self) -> TaskGraph:
        for t in range(self.ctx.iterations):
            self.iteration(t)
        return self.graph

    def iteration(self, t: int) -> None:
        ctx, g = self.ctx, self.graph
        needs: dict[int, list[int]] = {}  # step position -> collectives it waits for
        refresh: list[int] = []
        step_task: list[int] = []
        k = 0  # next collective of the plan to add
        for si in range(len(self.order) + 1):
            # Add, in plan order, the collectives whose ``after`` step exists by now.
            while k < len(self.plan) and self.after[k] < si:
                cid = self.collective(t, k, step_task)
                needs.setdefault(self.consumer[k], []).append(cid)
                if self.plan[k].kind == REFRESH:
                    refresh.append(cid)
                k += 1
            if si == len(self.order):
                break
            deps = needs.pop(si, [])
            if si > 0:
                deps.append(step_task[-1])
            elif self.prev_update is not None:
                deps += [self.prev_update, *self.prev_refresh]
            phase, layer = self.order[si]
            if phase == "forward":
                tid = g.add(
                    "forward",
                    COMPUTE,
                    t,
                    ctx.names[layer],
                    ctx.forward_s[layer],
                    deps,
                    (t, 0, layer),
                    memory_bytes=ctx.activation_bytes[layer] - self.released_forward[layer],
                )
            elif phase == "backward":
                freed = ctx.activation_bytes[layer] + self.released_backward[layer]
                tid = g.add(
                    "backward",
                    COMPUTE,
                    t,
                    ctx.names[layer],
                    ctx.backward_s[layer],
                    deps,
                    (t, 1, ctx.layers - 1 - layer),
                    memory_bytes=self.grad_buffer[layer] - freed,
                )
            else:
                tid = g.add("update", COMPUTE, t, "shard", self.update_work, deps, (t, 2, 0))
            step_task.append(tid)
        self.prev_update = step_task[-1]
        self.prev_refresh = refresh

    def collective(self, t: int, k: int, step_task: list[int]) -> int:
        """Add the plan's k-th collective of iteration t: after the one issued before it
        (one communicator), its ``after`` step and, for a forward gather, the update
        whose shards it gathers."""
        deps = [] if self.last_comm is None else [self.last_comm]
        if self.after[k] >= 0:
            deps.append(step_task[self.after[k]])
        if self.plan[k].kind == GATHER_FORWARD and self.prev_update is not None:
            deps.append(self.prev_update)
        cost = self.costs[k]
        self.last_comm = self.graph.add(
            "comm",
            channel(0),
            t,
            self.labels[k],
            cost.bandwidth_s,
            deps,
            (t, k),
            latency_s=cost.latency_s,
            links=cost.links,
            nbytes=cost.bytes,
            memory_bytes=self.memory[k],
        )
        return self.last_comm


def _check_plan(
    units: Sequence[Unit],
    buckets: Sequence[Bucket],
    refresh_buckets: Sequence[Bucket],
    plan: Sequence[Issue],
    after: Sequence[int],
    consumer: Sequence[int],
) -> None:
    """A programming error unless every unit is gathered before its forward (and its
    backward, if resharded) and every bucket reduced and refreshed, each once, and no
    collective is needed before it can run: in issue order a collective starts after
    every earlier one's ``after`` step, which must precede the step that needs it."""
    ready = -1
    for k, issue in enumerate(plan):
        ready = max(ready, after[k])
        if ready >= consumer[k]:
            raise ValueError(
                f"{issue} is needed before a collective issued ahead of it can start: "
                "the plan would deadlock"
            )
    seen = sorted((i.kind, i.index) for i in plan)
    want = sorted(
        [(GATHER_FORWARD, k) for k in range(len(units))]
        + [(GATHER_BACKWARD, k) for k, u in enumerate(units) if u.reshard_after_forward]
        + [(REDUCE, k) for k in range(len(buckets))]
        + [(REFRESH, k) for k in range(len(refresh_buckets))]
    )
    if seen != want:
        raise ValueError(
            "the plan must issue each unit's gathers and each bucket's collective once"
        )


def step_position(step: Step, layers: int) -> int:
    """Index of ``step`` in :func:`steps` (forward layers, backward layers, update)."""
    phase, layer = step
    if phase == "forward":
        return layer
    if phase == "backward":
        return 2 * layers - 1 - layer
    return 2 * layers


def step_before(step: Step, layers: int) -> Step | None:
    """The compute step that runs just before ``step`` in an iteration (None: the first)."""
    i = step_position(step, layers) - 1
    if i < 0:
        return None
    if i < layers:
        return ("forward", i)
    return ("backward", 2 * layers - 1 - i) if i < 2 * layers else UPDATE


def hook_key(step: Step | None, layers: int, pre: bool) -> tuple[int, int]:
    """Where a host-side hook falls in an iteration: after ``step`` ends (None: at the
    start). A unit's post-forward/post-backward hook fires before the next unit's
    pre-hook at the same boundary, so posts sort first."""
    return (-1 if step is None else step_position(step, layers), 1 if pre else 0)
