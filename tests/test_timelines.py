"""Hand-checkable timelines with exact times (the arithmetic is written beside each).

A 3-layer toy with round numbers, built straight into a BuildContext so that every cost
is chosen by hand:

    layer   forward  backward  gradient  all-reduce of its gradient alone
    L0      1 s      2 s       1 MiB     1 s
    L1      1 s      2 s       2 MiB     2 s
    L2      1 s      2 s       3 MiB     3 s

All-reduce time = bytes / (1 MiB/s), no latency. The optimizer update costs 0.5 s per
layer (1.5 s for all three at once). Compute per iteration: 3 + 6 + 1.5 = 10.5 s.
"""

from __future__ import annotations

import dataclasses

import pytest

from hardware_profiles import load_profile
from sim.analysis.metrics import exposed_comm_s, iteration_time_s
from sim.engine.core import Engine
from sim.engine.graph import COMPUTE, TaskGraph
from sim.engine.trace import Trace, TraceMeta
from sim.model.collectives import CollectiveCost
from sim.model.scenario import make_scenario
from sim.strategies import parse_strategy
from sim.strategies.base import BuildContext
from workloads.model import Layer, Workload

MIB = 2**20


def _toy_context(iterations: int = 3, latency_s: float = 0.0) -> BuildContext:
    layers = tuple(
        Layer(f"L{i}", "linear", (i + 1) * MIB // 4, 1.0, 2.0, 1.0, 2.0, ((i + 1) * MIB // 4,))
        for i in range(3)
    )
    workload = Workload("toy", "three layers", layers)
    scenario = make_scenario(
        workload,
        load_profile("dgx-a100"),
        8,
        batch_per_device=1,
        iterations=iterations,
        optimizer="sgd",
    )

    def allreduce(nbytes: float) -> CollectiveCost:
        return CollectiveCost("allreduce", "toy", nbytes, 8, latency_s, nbytes / MIB, ("net",))

    def push_pull(nbytes: float, servers: int) -> CollectiveCost:
        return CollectiveCost("push-pull", "toy", nbytes, 8, 0.0, 2 * nbytes / MIB, ("net",))

    return BuildContext(
        scenario=scenario,
        names=("L0", "L1", "L2"),
        forward_s=(1.0, 1.0, 1.0),
        backward_s=(2.0, 2.0, 2.0),
        update_s=(0.5, 0.5, 0.5),
        grad_bytes=(1.0 * MIB, 2.0 * MIB, 3.0 * MIB),
        tensor_bytes=((1.0 * MIB,), (2.0 * MIB,), (3.0 * MIB,)),
        activation_bytes=(0.0, 0.0, 0.0),
        allreduce=allreduce,
        push_pull=push_pull,
        iterations=iterations,
    )


def _run(
    spec: str,
    iterations: int = 3,
    interference: float = 0.0,
    poll_work: float = 1.0,
    polled: bool = False,
    **options,
) -> Trace:
    ctx = _toy_context(iterations)
    graph = parse_strategy(spec, **options).build(ctx)
    spans, memory, _ = Engine(
        graph,
        interference_factor=interference,
        polled=polled,
        poll_work=poll_work,
    ).run()
    return Trace(tuple(spans), tuple(memory), TraceMeta(warmup_iterations=1, global_batch=8))


def _timeline(trace: Trace, resource: str, iterations: tuple[int, ...] = (0,)):
    return sorted(
        (s.start_s, s.end_s, s.kind, s.label)
        for s in trace.spans
        if s.resource == resource and s.iteration in iterations
    )


def _assert_timeline(actual, expected):
    assert len(actual) == len(expected), actual
    for (s, e, kind, label), (xs, xe, xkind, xlabel) in zip(actual, expected, strict=True):
        assert (kind, label) == (xkind, xlabel), actual
        assert s == pytest.approx(xs, abs=1e-12), (kind, label, s, xs)
        assert e == pytest.approx(xe, abs=1e-12), (kind, label, e, xe)


FWD_BWD_IT0 = [
    # forward 0..2, one second each; backward 2..0, two seconds each
    (0, 1, "forward", "L0"),
    (1, 2, "forward", "L1"),
    (2, 3, "forward", "L2"),
    (3, 5, "backward", "L2"),
    (5, 7, "backward", "L1"),
    (7, 9, "backward", "L0"),
]


def test_sync_timeline():
    t = _run("sync")
    # backward ends at 9; one all-reduce of 1+2+3 = 6 MiB takes 6 s: [9, 15];
    # the update of all layers (1.5 s) follows: [15, 16.5]; iteration 1 starts at 16.5.
    _assert_timeline(_timeline(t, COMPUTE), FWD_BWD_IT0 + [(15, 16.5, "update", "all")])
    _assert_timeline(_timeline(t, "comm0"), [(9, 15, "comm", "all")])
    assert iteration_time_s(t) == pytest.approx(16.5, abs=1e-12)
    # The stream idles for the whole all-reduce: 6 s exposed.
    assert exposed_comm_s(t) == pytest.approx(6.0, abs=1e-12)


def test_layerwise_timeline():
    t = _run("layerwise")
    # L2's gradient is ready at 5 (3 s): [5, 8]; L1's at 7 but the channel is busy until
    # 8: [8, 10]; L0's at 9, channel free at 10: [10, 11]. Wait-all update: [11, 12.5].
    _assert_timeline(_timeline(t, COMPUTE), FWD_BWD_IT0 + [(11, 12.5, "update", "all")])
    _assert_timeline(
        _timeline(t, "comm0"),
        [(5, 8, "comm", "L2"), (8, 10, "comm", "L1"), (10, 11, "comm", "L0")],
    )
    # Iteration = 12.5 s; the stream waits 9 -> 11: 2 s exposed of 6 s of comm.
    assert iteration_time_s(t) == pytest.approx(12.5, abs=1e-12)
    assert exposed_comm_s(t) == pytest.approx(2.0, abs=1e-12)


def test_layerwise_in_order_applies_layer_by_layer():
    t = _run("layerwise", apply="in-order")
    # Updates of 0.5 s each, in backprop order, each after its own reduction:
    # L2's comm ends at 8 but the stream is in backward until 9 -> [9, 9.5];
    # L1's ends at 10 -> [10, 10.5]; L0's at 11 -> [11, 11.5]. Next forward at 11.5.
    _assert_timeline(
        _timeline(t, COMPUTE),
        FWD_BWD_IT0
        + [(9, 9.5, "update", "L2"), (10, 10.5, "update", "L1"), (11, 11.5, "update", "L0")],
    )
    assert iteration_time_s(t) == pytest.approx(11.5, abs=1e-12)


def test_bucketed_timeline():
    t = _run("bucketed:4")
    # DDP buckets in backward order: first cap 1 MiB -> bucket0 = {L2} (3 MiB >= 1 MiB);
    # then cap 4 MiB -> bucket1 = {L1, L0} (2 + 1 = 3 MiB, closed at the end).
    # bucket0 ready at 5: [5, 8]; bucket1 ready when L0's backward ends at 9: [9, 12];
    # update [12, 13.5].
    _assert_timeline(_timeline(t, COMPUTE), FWD_BWD_IT0 + [(12, 13.5, "update", "all")])
    _assert_timeline(_timeline(t, "comm0"), [(5, 8, "comm", "bucket0"), (9, 12, "comm", "bucket1")])
    assert iteration_time_s(t) == pytest.approx(13.5, abs=1e-12)


def test_delayed_1_timeline():
    t = _run("delayed:1", iterations=4)
    # Iteration 0: compute [0, 9], its all-reduce [9, 15]. Iteration 1 does not wait
    # for it: forward [9, 12], backward [12, 18]. The update of iteration 0's gradient
    # waits for its all-reduce (15) and for pass 1 to finish reading the weights it
    # changes (issue #14: w_{t+1} = w_t - lr * g_{t-d}, as the convergence module
    # applies it): [18, 19.5]. Iteration 1's all-reduce [18, 24]; iteration 2 starts
    # after update(0) at 19.5: compute [19.5, 28.5], update(1) [28.5, 30].
    # Steady iteration: 9 + 1.5 = 10.5 s.
    _assert_timeline(
        _timeline(t, COMPUTE, (0, 1)),
        FWD_BWD_IT0
        + [
            (9, 10, "forward", "L0"),
            (10, 11, "forward", "L1"),
            (11, 12, "forward", "L2"),
            (12, 14, "backward", "L2"),
            (14, 16, "backward", "L1"),
            (16, 18, "backward", "L0"),
            (18, 19.5, "update", "all"),
            (28.5, 30, "update", "all"),
        ],
    )
    _assert_timeline(
        _timeline(t, "comm0", (0, 1)), [(9, 15, "comm", "all"), (18, 24, "comm", "all")]
    )
    assert iteration_time_s(t) == pytest.approx(10.5, abs=1e-12)
    assert exposed_comm_s(t) == pytest.approx(0.0, abs=1e-12)


def test_delayed_starts_its_collective_before_the_older_update():
    """With a copy into the buffer (6 MiB at 8 MiB/s = 0.75 s), iteration 1's copy and
    collective go before the update of iteration 0, as dtsim's real delayed runs start
    the all-reduce and then wait for and apply the older one: the copy is part of the
    backward it follows (build_data_parallel's COPY_FIRST)."""
    ctx = dataclasses.replace(_toy_context(4), copy_s=lambda nbytes: nbytes / (8 * MIB))
    spans, memory, _ = Engine(parse_strategy("delayed:1").build(ctx)).run()
    t = Trace(tuple(spans), tuple(memory), TraceMeta(warmup_iterations=1, global_batch=8))
    # Iteration 0: compute [0, 9], copy [9, 9.75], all-reduce [9.75, 15.75]; pass 1
    # [9.75, 18.75]; at 18.75 copy(1) and update(0) are both ready: the copy goes first
    # [18.75, 19.5], all-reduce(1) [19.5, 25.5] beside update(0) [19.5, 21]; pass 2 from
    # 21: [21, 30], copy(2) [30, 30.75], update(1) [30.75, 32.25]. Steady iteration:
    # 9 + 0.75 + 1.5 = 11.25 s.
    compute = [x for x in _timeline(t, COMPUTE, (0, 1)) if x[2] != "forward"]
    _assert_timeline(
        compute,
        [
            (3, 5, "backward", "L2"),
            (5, 7, "backward", "L1"),
            (7, 9, "backward", "L0"),
            (9, 9.75, "backward", "copy:all"),
            (12.75, 14.75, "backward", "L2"),
            (14.75, 16.75, "backward", "L1"),
            (16.75, 18.75, "backward", "L0"),
            (18.75, 19.5, "backward", "copy:all"),
            (19.5, 21, "update", "all"),
            (30.75, 32.25, "update", "all"),
        ],
    )
    _assert_timeline(
        _timeline(t, "comm0", (0, 1)), [(9.75, 15.75, "comm", "all"), (19.5, 25.5, "comm", "all")]
    )
    assert iteration_time_s(t) == pytest.approx(11.25, abs=1e-12)


def test_a_delayed_update_costs_the_stale_step_and_sync_the_hot_one():
    """A delayed update applies a gradient whose buffer passes have left untouched: it
    costs the workload's stale step (here 1 s per layer, 3 s), sync's the hot one."""
    ctx = dataclasses.replace(_toy_context(4), stale_update_s=(1.0, 1.0, 1.0))
    spans, memory, _ = Engine(parse_strategy("delayed:1").build(ctx)).run()
    t = Trace(tuple(spans), tuple(memory), TraceMeta(warmup_iterations=1, global_batch=8))
    # As test_delayed_1_timeline with 3 s updates: update(0) [18, 21], pass 2 [21, 30],
    # update(1) [30, 33]. Steady iteration: 9 + 3 = 12 s.
    updates = [x for x in _timeline(t, COMPUTE, (0, 1)) if x[2] == "update"]
    _assert_timeline(updates, [(18, 21, "update", "all"), (30, 33, "update", "all")])
    assert iteration_time_s(t) == pytest.approx(12.0, abs=1e-12)
    spans, memory, _ = Engine(parse_strategy("sync").build(ctx)).run()
    t = Trace(tuple(spans), tuple(memory), TraceMeta(warmup_iterations=1, global_batch=8))
    _assert_timeline(
        [x for x in _timeline(t, COMPUTE) if x[2] == "update"], [(15, 16.5, "update", "all")]
    )


def test_delayed_0_is_sync_exactly():
    assert _run("delayed:0").spans == _run("sync").spans


def test_interference_slows_compute_while_communication_runs():
    t = _run("layerwise", interference=0.5)
    # Compute runs at 1/1.5 while a collective is active.
    # L2's comm [5, 8] overlaps backward L1 (2 s of work): 3 s at 2/3 -> ends at 8.
    # L1's comm [8, 10] overlaps backward L0: 2 s at 2/3 = 4/3 done, 2/3 left at full
    # speed -> ends at 10 + 2/3. L0's comm [10 2/3, 11 2/3]; update [11 2/3, 13 1/6].
    end_b0 = 10 + 2 / 3
    _assert_timeline(
        _timeline(t, COMPUTE),
        FWD_BWD_IT0[:4]
        + [
            (5, 8, "backward", "L1"),
            (8, end_b0, "backward", "L0"),
            (end_b0 + 1, end_b0 + 2.5, "update", "all"),
        ],
    )
    _assert_timeline(
        _timeline(t, "comm0"),
        [(5, 8, "comm", "L2"), (8, 10, "comm", "L1"), (end_b0, end_b0 + 1, "comm", "L0")],
    )


def test_polled_collectives_run_on_the_thread_at_its_polls():
    # Polled progress (plain MPI non-blocking collectives on a CPU): a collective's work
    # runs on the computing thread at the hook after a layer, poll_work = 2 times its
    # time alone, while compute runs at 1/(1 + 1) with one in flight.
    t = _run("layerwise", interference=1.0, poll_work=2.0, polled=True)
    # L2's comm (3 s) starts at 5, when backward L2 ends; the hook at that end polls only
    # what was pending before it, so L2's part waits for the next task's end: backward
    # L1 runs beside it at 1/2, [5, 9], and its hook polls L2's part, [9, 15]. L1's comm
    # (2 s) then starts and backward L0 runs beside it at 1/2, [15, 19]. Nothing is ready
    # after it (the update needs every comm), so the thread waits and progresses L1's
    # part at its time alone, [19, 21], then L0's (1 s), which starts at 21: [21, 22]
    # (idle, not polls). Update [22, 23.5].
    _assert_timeline(
        _timeline(t, COMPUTE),
        FWD_BWD_IT0[:4]
        + [
            (5, 9, "backward", "L1"),
            (9, 15, "poll", "L2"),
            (15, 19, "backward", "L0"),
            (22, 23.5, "update", "all"),
        ],
    )
    _assert_timeline(
        _timeline(t, "comm0"),
        [(5, 15, "comm", "L2"), (15, 21, "comm", "L1"), (21, 22, "comm", "L0")],
    )
    # Polling is not compute: the stream's idle time counts it as exposed communication.
    # Iteration 1 repeats iteration 0 shifted by 23.5 s; compute (slowed) 14.5 s of it.
    assert iteration_time_s(t) == pytest.approx(23.5, abs=1e-12)
    assert exposed_comm_s(t) == pytest.approx(23.5 - 14.5, abs=1e-12)


def test_polled_collective_after_backward_runs_at_its_own_cost():
    # sync: the thread waits for the all-reduce with nothing to compute, so it progresses
    # it as the blocking call it is: polled progress changes nothing.
    plain, polled = _run("sync"), _run("sync", interference=1.0, poll_work=3.0, polled=True)
    assert sorted(plain.spans) == sorted(polled.spans)


def test_horovod_cycle_fuses_gradients_ready_in_one_cycle():
    t = _run("horovod:128:5000")
    # Cycle 5 s from the start of backward (3). Ready after backward start: L2 at 2,
    # L1 at 4 -> both in tick 1 (released at 3 + 5 = 8) as one 5 MiB buffer: [8, 13];
    # L0 at 6 -> tick 2 (3 + 10 = 13): [13, 14]. Update [14, 15.5].
    # The gradients wait for their tick on a timer, from their last gradient's
    # readiness: fused0 from 3 + 4 = 7 to 8; fused1 from 3 + 6 = 9 to 13.
    _assert_timeline(
        _timeline(t, "timer"), [(7, 8, "wait", "cycle:fused0"), (9, 13, "wait", "cycle:fused1")]
    )
    _assert_timeline(_timeline(t, "comm0"), [(8, 13, "comm", "fused0"), (13, 14, "comm", "fused1")])
    _assert_timeline(_timeline(t, COMPUTE), FWD_BWD_IT0 + [(14, 15.5, "update", "all")])


def test_priority_sends_front_layers_first_and_gates_per_layer():
    t = _run("priority:8", iterations=3)
    # One partition per layer (all under 8 MiB). Iteration 0: L2 [5, 8] (only one
    # ready), then at 8 only L1 is ready [8, 10], then L0 [10, 11]. Updates as ready:
    # L2 at 9 (stream busy with backward until 9) [9, 9.5], L1 [10, 10.5], L0 [11, 11.5].
    # forward(1, L0) waits only for L0's update: [11.5, 12.5].
    comp = _timeline(t, COMPUTE, (0, 1))
    assert comp[6:9] == [
        (9, 9.5, "update", "L2"),
        (10, 10.5, "update", "L1"),
        (11, 11.5, "update", "L0"),
    ]
    assert comp[9][:3] == (11.5, 12.5, "forward")


def test_fluid_links_share_bandwidth():
    # Two collectives ready at 0 on two channels over the same link: 1 s and 3 s of
    # work. Shared, each runs at 1/2 until the short one ends at 2 (1 s of work each);
    # the long one then has 2 s left at full rate and ends at 4. A third collective on
    # another link is unaffected: [0, 3].
    g = TaskGraph(channels=3)
    g.add("comm", "comm0", 0, "a", 1.0, links=("x",))
    g.add("comm", "comm1", 0, "b", 3.0, links=("x",))
    g.add("comm", "comm2", 0, "c", 3.0, links=("y",))
    spans, _, _ = Engine(g).run()
    ends = {s.label: (s.start_s, s.end_s) for s in spans}
    assert ends["a"] == pytest.approx((0.0, 2.0), abs=1e-12)
    assert ends["b"] == pytest.approx((0.0, 4.0), abs=1e-12)
    assert ends["c"] == pytest.approx((0.0, 3.0), abs=1e-12)


def test_explicit_collective_starts_when_last_member_arrives():
    # Two ranks; rank work is jittered, so they reach the all-reduce at different
    # times. The collective must start at the later arrival on both ranks.
    g = TaskGraph()
    f = g.add("forward", COMPUTE, 0, "f", 1.0)
    g.add("comm", "comm0", 0, "all", 1.0, [f], latency_s=0.25, links=("x",))
    engine = Engine(g, ranks=2, jitter=0.3, seed=7)
    spans, _, _ = engine.run()
    arrivals = [engine.scale[r, f] * 1.0 for r in range(2)]
    comm = [s for s in spans if s.kind == "comm"]
    assert arrivals[0] != pytest.approx(arrivals[1])
    for s in comm:
        assert s.start_s == pytest.approx(max(arrivals), abs=1e-12)
        # 0.25 s latency + 1 s of bandwidth at a full share (each rank's own link).
        assert s.end_s == pytest.approx(max(arrivals) + 1.25, abs=1e-12)


def test_parameter_server_gates_forward_on_each_pull():
    t = _run("ps:1", iterations=2)
    # NICs are full duplex (issue #14): pushes go out on comm0, pulls come back on comm1,
    # 1 s per MiB each way; a pull also carries the one server's update of the layer
    # (0.5 s) and starts when its push has ended and the pull channel is free.
    # Pushes: L2 [5, 8], L1 [8, 10], L0 [10, 11]. Pulls: L2 [8, 8 + 0.5 + 3 = 11.5],
    # L1 [11.5, 14], L0 [14, 15.5]. No worker update; forward(1, L0) waits for L0's pull.
    _assert_timeline(
        _timeline(t, "comm0"),
        [(5, 8, "comm", "L2:push"), (8, 10, "comm", "L1:push"), (10, 11, "comm", "L0:push")],
    )
    _assert_timeline(
        _timeline(t, "comm1"),
        [
            (8, 11.5, "comm", "L2:pull"),
            (11.5, 14, "comm", "L1:pull"),
            (14, 15.5, "comm", "L0:pull"),
        ],
    )
    fwd1 = [s for s in _timeline(t, COMPUTE, (1,)) if s[2] == "forward"]
    assert [s[:2] for s in fwd1] == [(15.5, 16.5), (16.5, 17.5), (17.5, 18.5)]
