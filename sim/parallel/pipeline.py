"""Pipeline schedules and the task graph of a 3D layout.

One representative GPU per pipeline stage: stage s is rank (lane) s of the engine's
representative copy (:class:`sim.engine.graph.Task` ``rank``), with its own compute
stream, channels, links and memory. Its data-parallel peers and tensor-parallel peers
do the same work at the same time, so every collective is costed for its whole group
and nothing waits for them: a 4,096-GPU layout costs what its P stages cost.

Schedules, per stage s of P with m micro-batches (F: forward, B: backward):

- GPipe (Huang et al., NeurIPS 2019): F0 .. F(m-1), then B(m-1) .. B0.
- 1F1B (PipeDream-Flush, Narayanan et al., SC'21, §2.2.1): min(P-s-1, m) warm-up
  forwards, then one forward and one backward alternating, then the remaining
  backwards; at most P - s micro-batches are in flight on stage s.

Each stage runs its schedule in order (every op waits for the one before), a forward
also waits for the activations sent by stage s-1, a backward for the gradient sent by
stage s+1. Channels per stage: ``comm0`` the blocking tensor-parallel all-reduces (on
the chain of compute), ``comm1`` activations sent forward, ``comm2`` gradients sent
back, ``comm3`` the data-parallel gradient synchronisation after the flush (all-reduce,
or ZeRO-1's reduce-scatter, update, all-gather), and ZeRO-2/3's collectives of every
micro-batch (a plan's ``dp`` segments: issued there when the stage's chain reaches them,
in that order; a compute segment that ``waits`` for one also depends on it; the update
waits for all of them). The next iteration's first forward on a stage waits for that
stage's update (and all-gather).

``delayed:d`` (d >= 1, PipeDream-2BW's delayed weight update, Narayanan et al.,
"Memory-Efficient Pipeline-Parallel DNN Training", ICML 2021, §3.1, for d = 1): a
stage's data-parallel collective of iteration t leaves the stage's chain, and the update
with those gradients runs after the stage's last backward of iteration t + d, once the
collective has ended; the all-gather of ZeRO-1 follows it. At the flush of iteration t
the stage first applies g_{t-d} (and all-gathers), then issues the collective of g_t:
one communicator runs them in issue order, so under ZeRO-1 the reduce-scatter of g_t
waits for that all-gather. So iteration t's collective overlaps iterations t+1 .. t+d,
and iteration t+d+1's first forward on the stage waits for the update of g_t. The
update task carries iteration t (the gradients it applies), as the bounds
(:mod:`sim.analysis.bounds`) read a staleness of d.
"""

from __future__ import annotations

from sim.engine.graph import COMPUTE, TaskGraph, channel
from sim.parallel.layout import Layout
from sim.parallel.stages import Plans, Segment

TP_CHANNEL = channel(0)
SEND_FORWARD = channel(1)
SEND_BACKWARD = channel(2)
DP_CHANNEL = channel(3)


def stage_order(
    schedule: str, stage: int, stages: int, micro_batches: int, virtual: int = 1
) -> list[tuple[str, int, int]]:
    """The order of ("F" | "B", micro-batch, model chunk) on GPU ``stage``.

    Interleaved (Megatron-LM's ``forward_backward_pipelining_with_interleaving``): the
    k-th forward runs chunk (k mod P·v) // P on micro-batch (k // P·v)·P + k mod P, the
    k-th backward the chunks in reverse; (P - s - 1)·2 + (v - 1)·P warm-up forwards
    (all of them when m = P), then one forward and one backward alternating."""
    m = micro_batches
    if schedule == "gpipe":
        return [("F", i, 0) for i in range(m)] + [("B", i, 0) for i in reversed(range(m))]
    if virtual == 1:
        warm = min(stages - stage - 1, m)
        order = [("F", i, 0) for i in range(warm)]
        for i in range(m - warm):
            order += [("F", warm + i, 0), ("B", i, 0)]
        return order + [("B", i, 0) for i in range(m - warm, m)]
    group = stages * virtual
    total = m * virtual

    def op(kind: str, k: int) -> tuple[str, int, int]:
        chunk = (k % group) // stages
        if kind == "B":
            chunk = virtual - 1 - chunk
        return (kind, (k // group) * stages + k % stages, chunk)

    warm = total if m == stages else min((stages - stage - 1) * 2 + (virtual - 1) * stages, total)
    order = [op("F", k) for k in range(warm)]
    for k in range(total - warm):
        order += [op("F", warm + k), op("B", k)]
    return order + [op("B", k) for k in range(total - warm, total)]


def build_graph(plans: Plans, layout: Layout, iterations: int) -> TaskGraph:
    """The task graph of ``iterations`` iterations (see the module docstring)."""
    g = TaskGraph()
    g.channels = 4
    P, m, v = layout.pp, layout.num_micro_batches, layout.virtual_stages
    K = P * v  # model stages: chunk c of GPU s is model stage c·P + s
    orders = [stage_order(layout.schedule, s, P, m, v) for s in range(P)]
    # Where each model stage's last backward sits in its GPU's order: its gradient
    # buckets are reduced as that backward completes them.
    last_backward: dict[int, int] = {}
    for s, order in enumerate(orders):
        for at, (op, _, chunk) in enumerate(order):
            if op == "B":
                last_backward[chunk * P + s] = at

    def add_segment(seg: Segment, s: int, it: int, mb: int | None, dep: list[int | None]) -> int:
        label = seg.label if mb is None else f"mb{mb} {seg.label}"
        if seg.is_comm:
            res = TP_CHANNEL
            return g.add(
                "comm",
                res,
                it,
                label,
                seg.bandwidth_s,
                [d for d in dep if d is not None],
                latency_s=seg.latency_s,
                links=seg.links,
                nbytes=seg.nbytes,
                memory_bytes=seg.memory_bytes,
                rank=s,
            )
        kind = "backward" if seg.kind == "recompute" else seg.kind
        return g.add(
            kind,
            COMPUTE,
            it,
            label,
            seg.seconds,
            [d for d in dep if d is not None],
            memory_bytes=seg.memory_bytes,
            rank=s,
        )

    def add_comm(seg: Segment, res: str, s: int, it: int, label: str, deps: list[int]) -> int:
        return g.add(
            "comm",
            res,
            it,
            label,
            seg.bandwidth_s,
            deps,
            latency_s=seg.latency_s,
            links=seg.links,
            nbytes=seg.nbytes,
            memory_bytes=seg.memory_bytes,
            rank=s,
        )

    chain: list[int | None] = [None] * P  # last task of each stage's chain
    # (iteration, model stage) -> the tasks its update waits for: the stage's chain at
    # its flush, its data-parallel collectives (delayed:d keeps d iterations of them)
    pending: dict[tuple[int, int], list[int]] = {}
    for it in range(iterations):
        sent_f: dict[tuple[int, int], int] = {}
        sent_b: dict[tuple[int, int], int] = {}
        done_f: dict[tuple[int, int], int] = {}
        bucket_tasks: dict[int, list[int]] = {}
        pos = [0] * P
        left = sum(len(o) for o in orders)
        while left:
            progressed = False
            for s in range(P):
                while pos[s] < len(orders[s]):
                    op, mb, chunk = orders[s][pos[s]]
                    k = chunk * P + s
                    plan = plans.stages[k]
                    if op == "F":
                        need = sent_f.get((k - 1, mb)) if k > 0 else None
                        if k > 0 and need is None:
                            break
                        segs = plan.forward
                    else:
                        need = sent_b.get((k + 1, mb)) if k < K - 1 else done_f.get((k, mb))
                        if need is None:
                            break
                        segs = plan.backward
                    last = chain[s]
                    flushing = op == "B" and last_backward[k] == pos[s]
                    issued: list[int] = []  # this op's dp segments (ZeRO-2/3)
                    first = True
                    for seg in segs:
                        deps = [last, need] if first else [last]
                        if seg.dp:
                            label = f"mb{mb} {seg.label}"
                            live = [d for d in deps if d is not None]
                            issued.append(add_comm(seg, DP_CHANNEL, s, it, label, live))
                            continue
                        if seg.waits >= 0:
                            deps.append(issued[seg.waits])
                        last = add_segment(seg, s, it, mb, deps)
                        first = False
                        if flushing and seg.bucket >= 0:
                            bucket = plan.dp_buckets[seg.bucket]
                            bucket_tasks.setdefault(k, []).append(
                                add_comm(bucket, DP_CHANNEL, s, it, bucket.label, [last])
                            )
                    if issued:
                        bucket_tasks.setdefault(k, []).extend(issued)
                    chain[s] = last
                    assert last is not None
                    if op == "F":
                        done_f[(k, mb)] = last
                        if plan.send_forward is not None:
                            sent_f[(k, mb)] = add_comm(
                                plan.send_forward,
                                SEND_FORWARD,
                                s,
                                it,
                                f"mb{mb} send activations",
                                [last],
                            )
                    elif plan.send_backward is not None:
                        sent_b[(k, mb)] = add_comm(
                            plan.send_backward,
                            SEND_BACKWARD,
                            s,
                            it,
                            f"mb{mb} send gradients",
                            [last],
                        )
                    pos[s] += 1
                    left -= 1
                    progressed = True
            if not progressed:
                raise RuntimeError("pipeline schedule deadlocked (a bug in stage_order)")
        flush = list(chain)  # each GPU's last backward of this iteration
        for k, plan in enumerate(plans.stages):
            s = k % P
            if layout.delay == 0:
                last = chain[s]
                assert last is not None
                for seg in plan.dp_before_update:
                    last = add_comm(seg, DP_CHANNEL, s, it, seg.label, [last])
                pending[(it, k)] = [last, *bucket_tasks.get(k, [])]
            src = it - layout.delay  # whose gradients this update applies
            if src >= 0:
                head = chain[s]
                assert head is not None
                last = g.add(
                    "update",
                    COMPUTE,
                    src,
                    "optimizer update",
                    plan.update_s,
                    # delay 0: the chain through the collectives (or the flush)
                    [*([head] if layout.delay else []), *pending.pop((src, k))],
                    rank=s,
                )
                for seg in plan.dp_after_update:
                    last = add_comm(seg, DP_CHANNEL, s, src, seg.label, [last])
                chain[s] = last
        if layout.delay:
            # Issued after every update of older gradients and its all-gather (ZeRO-1):
            # one communicator runs them in issue order.
            for k, plan in enumerate(plans.stages):
                s = k % P
                gate = chain[s] if it >= layout.delay and plan.dp_after_update else flush[s]
                assert gate is not None
                last = gate
                for seg in plan.dp_before_update:
                    last = add_comm(seg, DP_CHANNEL, s, it, seg.label, [last])
                pending[(it, k)] = [last, *bucket_tasks.get(k, [])]
    return g
