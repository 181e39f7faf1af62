"""Closed forms of a layout, for the search in ``dtsim tune --layouts``: memory per GPU
without costing anything, and the iteration time from the stage plans.

Memory (per stage s, one GPU): static (weights, gradients, fp32 master weights and
optimizer state, the last two over D with ZeRO-1) + micro-batches in flight × the
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
                2 * params * size
                + params * FP32_BYTES * ((1 if size < FP32_BYTES else 0) + self.copies) / shard
            )
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


def estimate(plans: Plans, layout: Layout) -> Estimate:
    stages = plans.stages
    m = layout.num_micro_batches
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
    tail = _exposed_buckets(mine, P) + sum(
        sum(s.seconds for s in p.dp_before_update)
        + p.update_s
        + sum(s.seconds for s in p.dp_after_update)
        for p in mine
    )
    busy = m * sum(p.forward_s + p.backward_s for p in mine)
    bubble = 1.0 - busy / pipeline if pipeline > 0 else 0.0
    return Estimate(pipeline, tail, pipeline + tail, bubble)


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
