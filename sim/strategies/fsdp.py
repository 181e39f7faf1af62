"""``fsdp[:N]``: PyTorch Fully Sharded Data Parallel, full shard (Zhao et al., "PyTorch
FSDP: Experiences on Scaling Fully Sharded Data Parallel", VLDB 2023).

Units as a transformer auto-wrap policy makes them: one per block (the layers that
share a ``<name>.<index>.`` prefix, e.g. ``model.layers.7.``), and the root unit that
holds every other layer (embeddings, final norm, output layer). Each unit's parameters
are one flat tensor, sharded over the D devices (``ShardingStrategy.FULL_SHARD``):

- forward: the host issues each unit's all-gather just before its forward (implicit
  prefetch: the all-gather stream runs ahead of the compute stream); the rate limiter
  (``limit_all_gathers=True``, FSDP's default since torch 2.1) makes the host wait, before
  an all-gather, until the unit N releases back has freed its parameters (N = 2: FSDP's
  two in-flight all-gathers). ``fsdp:0`` turns the limiter off. A block releases its
  gathered parameters after its forward; the root keeps them until after backward.
- backward (``BackwardPrefetch.BACKWARD_PRE``, the default): a unit's pre-backward hook
  all-gathers it if needed, then issues the next unit's all-gather, before the
  reduce-scatter of the unit now finishing; after its backward a unit reduce-scatters
  its gradients and frees its parameters.
- the optimizer steps each device's shard.

All collectives share the data-parallel communicator, so they run in the order the host
issues them (:mod:`sim.strategies._sharded`), which is what makes backward prefetching
matter (the paper's section 3.3.2). Sources: torch.distributed.fsdp's documentation
(FullyShardedDataParallel: ``limit_all_gathers``, ``backward_prefetch``) and the FSDP
notes (docs.pytorch.org/docs/stable/notes/fsdp.html: implicit forward prefetching).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from sim.engine.graph import TaskGraph
from sim.strategies._params import int_param
from sim.strategies._sharded import (
    GATHER_BACKWARD,
    GATHER_FORWARD,
    REDUCE,
    Issue,
    Step,
    Unit,
    build_sharded,
)
from sim.strategies.base import Bucket, BuildContext, StateShare, StrategyDefaults

DEFAULT_IN_FLIGHT = 2  # torch.distributed.fsdp: the rate limiter's two all-gathers
_BLOCK = re.compile(r"^(.*?\.\d+)\.")  # "model.layers.7.mlp" -> "model.layers.7"


def wrap_units(ctx: BuildContext) -> list[Unit]:
    """The root unit (layers outside any block, kept gathered from forward to the end of
    backward) first, then one unit per block, in forward order; units without
    parameters are dropped."""
    blocks: dict[str, list[int]] = {}
    root: list[int] = []
    for i, name in enumerate(ctx.names):
        m = _BLOCK.match(name)
        if m:
            blocks.setdefault(m.group(1), []).append(i)
        else:
            root.append(i)
    units = [Unit("root", tuple(root), reshard_after_forward=False)] if root else []
    units += [Unit(prefix, tuple(layers)) for prefix, layers in blocks.items()]
    return [u for u in units if sum(ctx.grad_bytes[i] for i in u.layers) > 0]


def program_order_plan(
    layers: int, units: list[Unit], in_flight: int, backward_prefetch: bool = True
) -> list[Issue]:
    """FSDP's collectives in the order the host issues them, each all-gather waiting
    (rate limiter) for the oldest recorded free when ``in_flight`` frees are pending."""
    # (when, sub-order, what, unit, step): when = (phase, position, pre 0 / post 1).
    events: list[tuple[tuple[int, int, int], int, str, int, Step | None]] = []
    for k, u in enumerate(units):
        events.append(((0, u.first_forward, 0), 0, GATHER_FORWARD, k, None))
        if u.reshard_after_forward:
            last: Step = ("forward", max(u.layers))
            events.append(((0, max(u.layers), 1), 0, "free", k, last))
    backward = sorted(range(len(units)), key=lambda k: -units[k].first_backward)
    for i, k in enumerate(backward):
        u = units[k]
        if u.reshard_after_forward:
            # Prefetched in the previous unit's pre-backward hook, after that unit's own.
            by = units[backward[i - 1]] if backward_prefetch and i > 0 else u
            sub = 1 if by is not u else 0
            events.append(((1, layers - 1 - by.first_backward, 0), sub, GATHER_BACKWARD, k, None))
        done: Step = ("backward", min(u.layers))
        events.append(((1, layers - 1 - min(u.layers), 1), 0, REDUCE, k, done))
        events.append(((1, layers - 1 - min(u.layers), 1), 1, "free", k, done))
    events.sort(key=lambda e: (e[0], e[1]))
    frees: deque[Step] = deque()
    plan = []
    for _, _, what, k, step in events:
        if what == "free":
            frees.append(step)  # type: ignore[arg-type]
        elif what == REDUCE:
            plan.append(Issue(REDUCE, k, step))
        else:
            wait = frees.popleft() if in_flight and len(frees) >= in_flight else None
            plan.append(Issue(what, k, wait))
    return plan


@dataclass(frozen=True)
class FSDP(StrategyDefaults):
    family = "fsdp"
    in_flight: int = DEFAULT_IN_FLIGHT
    backward_prefetch: bool = True
    name: str = "fsdp"

    def state_share(self, ctx: BuildContext) -> StateShare:
        d = ctx.scenario.devices
        return StateShare(1 / d, 1 / d, 1 / d)

    def build(self, ctx: BuildContext) -> TaskGraph:
        units = wrap_units(ctx)
        buckets = [
            Bucket(u.label, u.layers, sum(ctx.grad_bytes[i] for i in u.layers), min(u.layers))
            for u in units
        ]
        plan = program_order_plan(ctx.layers, units, self.in_flight, self.backward_prefetch)
        return build_sharded(ctx, units, buckets, plan, sharded_gradients=True)


def parse(spec: str, param: str | None, **_options) -> FSDP:
    n = int_param(
        spec,
        param,
        default=DEFAULT_IN_FLIGHT,
        minimum=0,
        meaning="the all-gathers in flight (0: no limit)",
    )
    return FSDP(in_flight=n, name="fsdp" if param in (None, "") else f"fsdp:{n}")
