"""Closed forms of a layout, for the search in ``dtsim tune --layouts``: memory per GPU
without costing anything, and the iteration time from the stage plans.

Memory (per stage s, one GPU): static (weights, gradients, fp32 master weights and
optimizer state, the last two over D with ZeRO-1, the gradients too with ZeRO-2, and
the weights too with ZeRO-3, which adds the two largest adjacent units' parameters,
gathered at once) + micro-batches in flight × the
activations one keeps + the transient of full recomputation (one block's activations).
In flight: 1F1B min(P - s, m); GPipe m. The task graph's memory samples give the same
peak (``tests/test_pipeline.py`` checks it).

Time: the pipeline phase, first forward on stage 0 to its last backward, is
``Σ_s (F_s + B_s) + (m - 1)·max_s (F_s + B_s) + Σ (sends between neighbours, both
ways)``: every micro-batch crosses every stage once, and the slowest stage paces the
other m - 1 (with uniform stages and free sends, (m + P - 1)(F + B): the bubble of
Narayanan et al., SC'21, §2.2). Stage 0 finishes last, so the iteration adds its
data-parallel synchronisation, update and all-gather. Not in the closed form: the
interference of collectives with compute, and sends queueing behind one another (the
engine has both; the search reports the closed form and says so).

ZeRO-2/3 (P = 1): their collectives run on every micro-batch beside the compute, so the
closed form walks the one stage's micro-batches in schedule order with two clocks, the
compute stream's and the data-parallel channel's (:func:`_walk`): a collective starts
when the stream reaches it and the channel is free; a compute segment that waits for
one starts no earlier than its end; the update after both. That is the engine's graph
without interference; iterations do not overlap (the next one waits for the update).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sim.model.scenario import OPTIMIZER_STATE_COPIES
from sim.parallel.layout import Layout, stage_blocks
from sim.parallel.stages import FP32_BYTES, Plans, StagePlan
from sim.parallel.tensor import role, split_layer
from sim.units import DTYPE_BYTES
from workloads.model import Layer, Workload


def in_flight(layout: Layout, stage: int) -> int:
    """Micro-batches whose activations stage ``stage`` holds at once, at most (one
    chunk per GPU)."""
    if layout.schedule == "gpipe":
        return layout.num_micro_batches
    return min(layout.pp - stage, layout.num_micro_batches)


def activation_peaks(
    layout: Layout, kept: Sequence[float], transient: Sequence[float]
) -> list[float]:
    """Per GPU, the most activation bytes it holds: ``kept[k]`` per micro-batch of model
    stage k from its forward's end to its backward's end, ``transient[k]`` more during
    that backward. One chunk per GPU: in_flight × kept + transient; interleaved: the
    schedule walked op by op (:func:`sim.parallel.pipeline.stage_order`)."""
    P = layout.pp
    if layout.virtual_stages == 1:
        return [in_flight(layout, s) * kept[s] + transient[s] for s in range(P)]
    from sim.parallel.pipeline import stage_order

    out = []
    for s in range(P):
        live = peak = 0.0
        order = stage_order(layout.schedule, s, P, layout.num_micro_batches, layout.virtual_stages)
        for op, _, chunk in order:
            k = chunk * P + s
            if op == "F":
                live += kept[k]
                peak = max(peak, live)
            else:
                peak = max(peak, live + transient[k])
                live -= kept[k]
        out.append(peak)
    return out


@dataclass(frozen=True)
class _Parts:
    pre: tuple[Layer, ...]
    block: tuple[Layer, ...]  # block 0's layers
    post: tuple[Layer, ...]
    blocks: int
    hidden_values: float  # s·h per sample


def _parts(workload: Workload) -> _Parts:
    layers = workload.layers
    in_block = [layer.name.startswith("model.layers.") for layer in layers]
    first = in_block.index(True)
    last = len(in_block) - in_block[::-1].index(True)
    block = tuple(layer for layer in layers if layer.name.startswith("model.layers.0."))
    blocks = (last - first) // len(block)
    return _Parts(
        layers[:first], block, layers[last:], blocks, layers[0].activation_elements_per_sample
    )


class MemoryModel:
    """Memory per GPU of any layout of one workload, dtype and optimizer (split layers
    cached by T)."""

    def __init__(self, workload: Workload, dtype: str, optimizer: str):
        self.parts = _parts(workload)
        self.size = DTYPE_BYTES[dtype]
        self.copies = OPTIMIZER_STATE_COPIES[optimizer]
        self._split: dict[tuple[int, bool], tuple[tuple[Layer, ...], ...]] = {}

    def _layers(self, tp: int, sp: bool) -> tuple[tuple[Layer, ...], ...]:
        hit = self._split.get((tp, sp))
        if hit is None:
            p = self.parts
            hit = tuple(
                tuple(split_layer(x, tp, sp) for x in group) for group in (p.pre, p.block, p.post)
            )
            self._split[(tp, sp)] = hit
        return hit

    def stage_bytes(self, layout: Layout) -> list[float]:
        """Peak bytes per GPU of every stage."""
        sp = layout.sequence_parallel and layout.tp > 1
        pre, block, post = self._layers(layout.tp, sp)
        size, b = self.size, layout.micro_batch
        counts = stage_blocks(self.parts.blocks, layout.chunks)
        block_params = sum(x.params for x in block)
        block_act_all = sum(x.activation_elements_per_sample for x in block) * b * size
        if layout.recompute == "selective":
            kept_block = (
                block_act_all
                - sum(
                    x.activation_elements_per_sample
                    for x in block
                    if role(x.name) == "self_attn.core"
                )
                * b
                * size
            )
        elif layout.recompute == "full":
            kept_block = self.parts.hidden_values * b * size / (layout.tp if sp else 1)
        else:
            kept_block = block_act_all
        shard = layout.dp if layout.zero else 1
        weight_shard = shard if layout.zero >= 3 else 1
        grad_shard = shard if layout.zero >= 2 else 1
        zero3 = layout.zero == 3 and layout.dp > 1
        pre_p, post_p = sum(x.params for x in pre), sum(x.params for x in post)
        static = [0.0] * layout.pp
        kept: list[float] = []
        transient: list[float] = []
        for k, n in enumerate(counts):
            extra = (pre if k == 0 else ()) + (post if k == layout.chunks - 1 else ())
            params = n * block_params + sum(x.params for x in extra)
            kept.append(
                n * kept_block + sum(x.activation_elements_per_sample for x in extra) * b * size
            )
            static[k % layout.pp] += (
                params * size / weight_shard
                + params * size / grad_shard
                + layout.delay * params * size  # delayed:d's pending gradients
                + params * FP32_BYTES * ((1 if size < FP32_BYTES else 0) + self.copies) / shard
            )
            if zero3:  # ZeRO-3's units gathered at once: the two largest adjacent ones
                units = (
                    ([pre_p] if k == 0 else [])
                    + [block_params] * n
                    + ([post_p] if k == layout.chunks - 1 else [])
                )
                pairs = [a + b for a, b in zip(units, units[1:], strict=False)]
                static[k % layout.pp] += max(pairs or units) * size
            transient.append(block_act_all if layout.recompute == "full" and n else 0.0)
        peaks = activation_peaks(layout, kept, transient)
        return [a + b for a, b in zip(static, peaks, strict=True)]


def plan_memory(plans: Plans, layout: Layout) -> list[float]:
    """The same peak per GPU (pipeline stage), from the stage plans."""
    static = [0.0] * layout.pp
    for p in plans.stages:
        static[p.stage % layout.pp] += sum(p.static_bytes.values())
    peaks = activation_peaks(
        layout,
        [p.activation_bytes for p in plans.stages],
        [p.transient_bytes for p in plans.stages],
    )
    return [a + b for a, b in zip(static, peaks, strict=True)]


@dataclass(frozen=True)
class Estimate:
    """Closed-form figures of one layout; seconds."""

    pipeline_s: float
    tail_s: float
    iteration_s: float
    bubble_fraction: float  # stage 0's idle share of the pipeline phase


def estimate(plans: Plans, layout: Layout, interference_factor: float = 0.0) -> Estimate:
    """The closed form (module docstring). ``interference_factor``: compute's slowdown
    while a collective runs (the profile's), counted by the ZeRO-2/3 walk only."""
    stages = plans.stages
    m = layout.num_micro_batches
    if layout.zero >= 2 and layout.dp > 1:
        return _walk(stages[0], layout, interference_factor)
    per = [p.forward_s + p.backward_s for p in stages]
    sends = sum(
        (p.send_forward.seconds if p.send_forward else 0.0)
        + (p.send_backward.seconds if p.send_backward else 0.0)
        for p in stages
    )
    P = layout.pp
    if layout.virtual_stages == 1:
        pipeline = sum(per) + (m - 1) * max(per) + sends
    else:
        # Interleaved: each GPU's m micro-batches over its chunks, and a bubble of P - 1
        # chunks' forward and backward (SC'21 §2.2.2: (p - 1)(t_f + t_b) / v).
        work = [sum(per[k] for k in range(s, len(per), P)) for s in range(P)]
        hop = max(
            (p.send_forward.seconds if p.send_forward else 0.0)
            + (p.send_backward.seconds if p.send_backward else 0.0)
            for p in stages
        )
        pipeline = m * max(work) + (P - 1) * (max(per) + hop)
    mine = [p for p in stages if p.stage % P == 0]
    exposed = _exposed_buckets(mine, P)
    tail = exposed + sum(
        sum(s.seconds for s in p.dp_before_update)
        + p.update_s
        + sum(s.seconds for s in p.dp_after_update)
        for p in mine
    )
    busy = m * sum(p.forward_s + p.backward_s for p in mine)
    bubble = 1.0 - busy / pipeline if pipeline > 0 else 0.0
    if layout.delay:
        iteration = _delayed(pipeline, tail, mine, stages, layout, interference_factor)
        return Estimate(pipeline, iteration - pipeline, iteration, bubble)
    return Estimate(pipeline, tail, pipeline + tail, bubble)


def _delayed(
    pipeline: float,
    tail: float,
    mine: list[StagePlan],
    stages: Sequence[StagePlan],
    layout: Layout,
    interference_factor: float,
) -> float:
    """The steady iteration of ``delayed:d`` (:mod:`sim.parallel.pipeline`): the longest
    cycle mean of the graph's recurrence, a max-plus system. With S_t the start of
    iteration t on GPU 0, U its update (and ZeRO-1's all-gather) and R its collective:
    S_{t+1} >= S_t + pipeline + U (the chain); S_{t+d+1} >= S_t + pipeline + U' + R + U,
    where U' = U when the collective of t is issued after an update's all-gather
    (ZeRO-1), else 0 (the collective of t runs before the update of g_t); and each GPU's
    DP channel carries one iteration's collectives per iteration, and under ZeRO-1 the
    cycle RS(t), update(t), AG(t), RS(t+d) spans d iterations (the busiest GPU's paces
    all: they meet in every micro-batch's sends). d = 0 is the sync form
    (pipeline + R + U). The chain's term adds the interference of the collective with
    the compute it now overlaps: for min(R, what follows it on the chain) seconds, GPU
    0's compute share of that time runs 1 + f slower (f: the profile's factor). Not
    counted: links the collective shares with TP all-reduces."""
    update = sum(p.update_s + sum(s.seconds for s in p.dp_after_update) for p in mine)
    gated = update if any(p.dp_after_update for p in mine) else 0.0
    m = layout.num_micro_batches
    compute = sum(m * (p.compute_forward_s + p.compute_backward_s) + p.update_s for p in mine)
    share = compute / (pipeline + update) if pipeline + update > 0 else 0.0
    # ZeRO-1's reduce-scatter starts after the update and all-gather; an all-reduce with it
    overlap = min(tail - update, pipeline + update - gated)
    chain = pipeline + update + interference_factor * max(0.0, overlap) * share
    busy: dict[int, float] = {}
    waits: dict[int, float] = {}
    for p in stages:
        gpu = p.stage % layout.pp
        work = sum(s.seconds for s in (*p.dp_before_update, *p.dp_buckets, *p.dp_after_update))
        busy[gpu] = busy.get(gpu, 0.0) + work
        if p.dp_after_update:  # ZeRO-1: the update between the reduce-scatter and gather
            waits[gpu] = waits.get(gpu, 0.0) + p.update_s
    # ZeRO-1's channel cycle: RS(t), update(t), AG(t), then RS(t+d) (issued after it).
    channel = max(
        max(work, (work + waits.get(gpu, 0.0)) / layout.delay) for gpu, work in busy.items()
    )
    return max(chain, channel, (pipeline + gated + tail) / (layout.delay + 1))


def _exposed_buckets(mine: list[StagePlan], pp: int) -> float:
    """How long GPU 0's gradient buckets' collectives run past its last backward (model
    stage 0's): each starts when its bucket is complete and the channel is free. A bucket
    of chunk c completes within chunk c's last backward, which (interleaved) ends about
    c·P chunk-backwards before the last one (the cool-down runs the chunks down in
    groups of P)."""
    ready: list[tuple[float, float]] = []  # (when complete, relative to the end; cost)
    for c, plan in enumerate(mine):
        total = sum(seg.seconds for seg in plan.backward)
        end = -c * pp * total
        clock = end - total
        for seg in plan.backward:
            clock += seg.seconds
            if seg.bucket >= 0:
                ready.append((clock, plan.dp_buckets[seg.bucket].seconds))
    done = -float("inf")
    for at, cost in sorted(ready):
        done = max(done, at) + cost
    return max(0.0, done)


def _walk(plan: StagePlan, layout: Layout, interference_factor: float) -> Estimate:
    """ZeRO-2/3 on one stage (P = 1): the micro-batches in schedule order on two clocks,
    the compute stream's and the data-parallel channel's (module docstring). Every
    collective issued so far was gated at or before the stream's clock, so from there the
    channel is busy without a gap until ``channel``: compute runs at 1 / (1 + f) until
    then, as the engine runs it (:mod:`sim.engine.core`). A TP collective on a link class
    the ZeRO collectives also cross (a DP group with ranks in one node) shares it as the
    engine's links do, both at half rate while they overlap (processor sharing); the
    channel's queued latencies are counted as if shared too (a small overestimate)."""
    from sim.parallel.pipeline import stage_order

    slow = 1.0 + interference_factor
    stream = channel = idle = 0.0
    dp_links: set[str] = set()
    for op, _, _ in stage_order(layout.schedule, 0, 1, layout.num_micro_batches):
        issued: list[float] = []  # when each of this op's dp collectives ends
        for seg in plan.forward if op == "F" else plan.backward:
            if seg.dp:
                channel = max(stream, channel) + seg.seconds
                issued.append(channel)
                dp_links.update(seg.links)
                continue
            if seg.waits >= 0 and issued[seg.waits] > stream:
                idle += issued[seg.waits] - stream
                stream = issued[seg.waits]
            overlap = channel - stream  # the channel's busy time ahead
            if seg.is_comm and overlap > seg.latency_s and dp_links.intersection(seg.links):
                start = stream + seg.latency_s
                ahead, work = channel - start, seg.bandwidth_s
                stream = start + 2 * work if work <= ahead else channel + work
                channel += min(work, ahead)
            elif seg.is_comm or overlap <= 0:
                stream += seg.seconds
            elif seg.seconds * slow <= overlap:
                stream += seg.seconds * slow
            else:
                stream = channel + seg.seconds - overlap / slow
    pipeline = stream
    end = (
        max(stream, channel)
        + sum(s.seconds for s in plan.dp_before_update)
        + plan.update_s
        + sum(s.seconds for s in plan.dp_after_update)
    )
    bubble = idle / pipeline if pipeline > 0 else 0.0  # waiting for gathered parameters
    return Estimate(pipeline, end - pipeline, end, bubble)
