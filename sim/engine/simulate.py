"""Run one scenario under one strategy: costs -> task graph -> engine -> Trace."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from sim.engine.core import Engine, EngineStats
from sim.engine.graph import COMPUTE, Task, TaskGraph
from sim.engine.trace import ExtrapolatedCollective, IterationWork, Trace, TraceMeta
from sim.model.collectives import SUPPORTED, CollectiveCost, CostModel
from sim.model.costs import buffer_copy_s, layer_costs, update_cost_s
from sim.model.hardware import Device
from sim.model.scenario import OPTIMIZER_STATE_COPIES, Scenario
from sim.model.stragglers import SlowNicTopology
from sim.model.topology import Topology
from sim.strategies.base import BuildContext, Strategy
from workloads.model import Workload

FP32_BYTES = 4


def build_context(scenario: Scenario) -> BuildContext:
    """Per-layer costs and cached collective costs for ``scenario``."""
    hw = scenario.hardware
    dev = hw.device
    b = scenario.batch_per_device
    size = scenario.dtype_bytes
    layers = scenario.workload.layers
    # The first layer with parameters (and any before it) computes no input gradient.
    costs = layer_costs(scenario.workload, dev, b, scenario.dtype, size)
    state = OPTIMIZER_STATE_COPIES[scenario.optimizer]
    topology = (
        SlowNicTopology(hw, scenario.placement, dict(scenario.slow_nics))
        if scenario.slow_nics
        else Topology(hw, scenario.placement)
    )
    model = CostModel(topology)
    allreduce_cache: dict[float, CollectiveCost] = {}
    ps_cache: dict[tuple[float, int], CollectiveCost] = {}

    def table(nbytes: float) -> CollectiveCost:
        return model.cost("allreduce", nbytes, algorithm=scenario.collective_algorithm)

    context = training_context(scenario, table)

    def allreduce(nbytes: float) -> CollectiveCost:
        c = allreduce_cache.get(nbytes)
        if c is None:
            c = after_a_pass(table(nbytes), context)
            allreduce_cache[nbytes] = c
        return c

    collective_cache: dict[tuple[str, float], CollectiveCost] = {}

    def collective(op: str, nbytes: float) -> CollectiveCost:
        """Any op over all devices. An algorithm the op does not have (a tree or NVLS
        all-gather) leaves the choice to the tuner, as NCCL does for such an op."""
        key = (op, nbytes)
        c = collective_cache.get(key)
        if c is None:
            algorithm = scenario.collective_algorithm
            if algorithm not in ("auto", "measured", *SUPPORTED[op]):
                algorithm = "auto"
            c = model.cost(op, nbytes, algorithm=algorithm)
            collective_cache[key] = c
        return c

    def push_pull(nbytes: float, servers: int) -> CollectiveCost:
        key = (nbytes, servers)
        c = ps_cache.get(key)
        if c is None:
            c = model.parameter_server(nbytes, scenario.devices, servers)
            ps_cache[key] = c
        return c

    return BuildContext(
        scenario=scenario,
        names=tuple(layer.name for layer in layers),
        forward_s=tuple(c.forward_s for c in costs),
        backward_s=tuple(c.backward_s for c in costs),
        update_s=_update_costs(scenario, state),
        stale_update_s=_update_costs(scenario, state, stale=True),
        grad_bytes=tuple(float(layer.params * size) for layer in layers),
        tensor_bytes=tuple(tuple(float(t * size) for t in layer.param_tensors) for layer in layers),
        activation_bytes=tuple(layer.activation_elements_per_sample * b * size for layer in layers),
        allreduce=allreduce,
        push_pull=push_pull,
        iterations=scenario.iterations,
        collective=collective,
        # One device has nothing to reduce, so nothing to copy into a buffer; times read
        # from a DDP trace hold the copy already.
        copy_s=_no_copy
        if scenario.devices == 1 or scenario.workload.copies_gradients_in_layers(dev.model)
        else _copy_cost(scenario.workload, dev),
    )


def training_context(scenario: Scenario, table: Callable[[float], CollectiveCost]) -> float:
    """How much slower an all-reduce runs in training than the profile's table says: the
    workload's whole-gradient all-reduce measured after a pass on this device and rank
    count (:class:`workloads.model.MeasuredAllreduce`) over the table's time for its
    bytes; 1.0 without one, for another rank count, or outside fp32. A benchmark repeats
    one all-reduce on a buffer the caches hold; in training a pass has filled them with
    other data before every collective, whatever its size (every bucket of layerwise and
    bucketed too). :func:`sim.model.costs.measurement_notes` says when it applies."""
    if scenario.dtype != "fp32":
        return 1.0
    m = scenario.workload.measured_allreduce.get(scenario.hardware.device.model)
    if m is None or m.ranks != scenario.devices:
        return 1.0
    alone = table(float(m.bytes)).time_s
    return m.seconds / alone if alone > 0 else 1.0


def after_a_pass(cost: CollectiveCost, context: float) -> CollectiveCost:
    """An all-reduce's table ``cost`` in training: its time times ``context``
    (:func:`training_context`), its latency kept and the rest its bandwidth part. A
    polled profile's ``poll_work_factor`` multiplies it as it does the table's cost (see
    sim.app.calibration._set_poll_work)."""
    if context == 1.0 or cost.time_s <= 0:
        return cost
    return dataclasses.replace(
        cost,
        algorithm=f"{cost.algorithm} x{context:.3g} after a pass",
        bandwidth_s=max(0.0, cost.time_s * context - cost.latency_s),
    )


def _copy_cost(workload: Workload, dev: Device) -> Callable[[float], float]:
    """The copy of gradients into a communication buffer: the workload's measured copy
    on this device, scaled to the bytes, else two passes at the memory bandwidth."""

    def copy_s(nbytes: float) -> float:
        measured = workload.copy_seconds(dev.model, nbytes)
        return buffer_copy_s(nbytes, dev) if measured is None else measured

    return copy_s


def _no_copy(nbytes: float) -> float:
    return 0.0


def _update_costs(scenario: Scenario, state: int, stale: bool = False) -> tuple[float, ...]:
    """Per layer, the optimizer update: the workload's measured step of this optimizer on
    this device (calibrated in fp32; used for fp32 runs), split over the layers by
    parameters; else the memory-traffic model (:func:`sim.model.costs.update_cost_s`).
    ``stale``: a delayed update's, from a gradient buffer passes have moved out of the
    caches, where the workload measured that step (else the same as the update's)."""
    dev, size, layers = scenario.hardware.device, scenario.dtype_bytes, scenario.workload.layers
    measured = scenario.workload.update_seconds(dev.model, scenario.optimizer, stale=stale)
    total = scenario.workload.total_params
    if measured is not None and scenario.dtype == "fp32" and total > 0:
        return tuple(measured * layer.params / total for layer in layers)
    return tuple(
        update_cost_s(layer.params, dev, size, state, optimizer=scenario.optimizer)
        for layer in layers
    )


def static_memory_bytes(ctx: BuildContext, strategy: Strategy) -> dict[str, float]:
    """Weights, gradients, optimizer state and the strategy's extra buffers, per device.

    Below 4 bytes per value the run is mixed precision (Micikevicius et al., ICLR 2018):
    the optimizer keeps an fp32 master copy of the weights and its state in fp32. A
    parameter server's workers keep no optimizer state (the servers do). A sharded
    strategy keeps a share of each (:meth:`Strategy.state_share`; ZeRO, SC'20, Figure 1).
    """
    sc = ctx.scenario
    params = sc.workload.total_params
    weights = float(params * sc.dtype_bytes)
    master = params * FP32_BYTES if sc.dtype_bytes < FP32_BYTES else 0.0
    state = float(params * FP32_BYTES * OPTIMIZER_STATE_COPIES[sc.optimizer])
    if not strategy.workers_hold_optimizer_state:
        master = state = 0.0
    share = strategy.state_share(ctx)
    return {
        "weights": weights * share.weights,
        "gradients": weights * share.gradients,
        "master_weights": master * share.optimizer_state,
        "optimizer_state": state * share.optimizer_state,
        "strategy_buffers": strategy.extra_buffer_bytes(ctx),
    }


def warmup_iterations(scenario: Scenario, strategy: Strategy) -> int:
    """Iterations to skip before steady state: the pipeline a delay builds must fill
    (1 + d), and per-layer gating takes a few iterations to settle (a quarter of the
    run). Never more than leaves one measured window."""
    delay = strategy.staleness
    return min(max(scenario.iterations - 2, 0), max(1 + delay, scenario.iterations // 4))


def _extrapolated_collectives(
    ctx: BuildContext, graph: TaskGraph
) -> tuple[ExtrapolatedCollective, ...]:
    """The graph's all-reduces whose cost a measured table extrapolated beyond its sizes,
    sorted by bytes, from the
    context's cached costs. A comm task is matched to its cost by its bandwidth part, so
    a parameter server's push-pull of the same size is not mistaken for an all-reduce."""
    sc = ctx.scenario
    if not sc.hardware.measured_collectives or sc.collective_algorithm not in ("auto", "measured"):
        return ()
    comms: dict[float, Task] = {}
    for t in graph.tasks:
        if t.kind == "comm" and t.bytes > 0:
            comms.setdefault(t.bytes, t)
    out = []
    for nbytes, task in sorted(comms.items()):
        c = ctx.allreduce(nbytes)
        if c.extrapolated_from_bytes is not None and c.bandwidth_s == task.work_s:
            out.append(
                ExtrapolatedCollective(
                    c.op, nbytes, c.extrapolated_from_bytes, c.extrapolation_factor
                )
            )
    return tuple(out)


def simulate(
    scenario: Scenario, strategy: Strategy, ctx: BuildContext | None = None
) -> tuple[Trace, EngineStats]:
    """Simulate ``scenario`` under ``strategy``; returns the Trace and engine statistics."""
    ctx = ctx or build_context(scenario)
    graph = strategy.build(ctx)
    memory = static_memory_bytes(ctx, strategy)
    explicit = scenario.ranks == "explicit"
    # Jitter and slow ranks exist only in explicit mode (make_scenario refuses them
    # otherwise; a representative copy such as what-if's one-device baseline ignores them).
    mu, sigma = scenario.jitter_lognormal() if explicit else (0.0, 0.0)
    engine = Engine(
        graph,
        ranks=scenario.devices if explicit else 1,
        interference_factor=scenario.hardware.interference_factor,
        comm_interference_factor=scenario.hardware.comm_interference_factor,
        polled=scenario.hardware.comm_progress == "polled",
        poll_work=scenario.hardware.poll_work_factor,
        base_memory_bytes=sum(memory.values()),
        jitter=sigma,
        jitter_mu=mu,
        rank_speeds=scenario.rank_speeds() if explicit and scenario.slow_ranks else None,
        seed=scenario.seed,
    )
    spans, samples, stats = engine.run()
    meta = TraceMeta(
        strategy=strategy.name,
        ranks_mode=scenario.ranks,
        global_batch=scenario.global_batch,
        batch_per_device=scenario.batch_per_device,
        devices=scenario.devices,
        iterations=scenario.iterations,
        warmup_iterations=warmup_iterations(scenario, strategy),
        period=strategy.period,
        jitter=sigma,
        device_memory_bytes=scenario.hardware.device.memory_bytes,
        static_memory_bytes=dict(memory),
        stragglers=scenario.straggler_summary() if scenario.has_stragglers else None,
        # Which link classes each collective loads (the timeline's link rows).
        comm_links={t.label: tuple(t.links) for t in graph.tasks if t.kind == "comm" and t.links},
        # All-reduces a measured table costed beyond its sizes (whatif.extrapolation_notes).
        extrapolated_collectives=_extrapolated_collectives(ctx, graph) or None,
        # What the scenario is and what each iteration asks of each resource: the physical
        # bounds every result is checked against (sim.analysis.bounds).
        scenario=scenario.summary(),
        work=work_per_iteration(graph, engine, strategy, scenario),
    )
    return Trace(tuple(spans), tuple(samples), meta), stats


def work_per_iteration(
    graph: TaskGraph, engine: Engine, strategy: Strategy, scenario: Scenario
) -> IterationWork:
    """What each iteration asks of each resource, for :mod:`sim.analysis.bounds`.

    ``forward_backward_s``, ``update_s``: rank 0's compute work per iteration at full
    speed (its jitter draws and speed applied), the time it takes when nothing slows it.
    ``slowest_rank_factor``: how much longer the slowest rank's compute takes than rank
    0's without jitter (1 with no slow rank). ``comm_s``: per iteration, latency plus
    bandwidth work of its collectives, the least time they hold their channel
    (``t mod channels``). ``links_s``: per link class and iteration, the bandwidth work
    of the collectives that load it (a link delivers at most 1 s of work per second).
    ``staleness``: forward(t + 1 + staleness) waits for iteration t's updates.
    """
    n = 1 + max((t.iteration for t in graph.tasks), default=0)
    fb = np.zeros(n)
    up = np.zeros(n)
    comm = np.zeros(n)
    links: dict[str, np.ndarray] = {}
    scale = engine.scale[0] if engine.scale is not None else None
    for t in graph.tasks:
        if t.resource == COMPUTE:
            work = t.work_s * (scale[t.id] if scale is not None else 1.0)
            if t.kind == "update":
                up[t.iteration] += work
            else:
                fb[t.iteration] += work
        elif t.kind == "comm":
            comm[t.iteration] += t.latency_s + t.work_s
            for link in set(t.links):
                links.setdefault(link, np.zeros(n))[t.iteration] += t.work_s
    factors = engine.rank_factor or [1.0]
    return IterationWork(
        interference_factor=scenario.hardware.interference_factor,
        staleness=strategy.staleness,
        channels=graph.channels,
        forward_backward_s=tuple((fb * factors[0]).tolist()),
        update_s=tuple((up * factors[0]).tolist()),
        slowest_rank_factor=max(factors) / factors[0],
        comm_s=tuple(comm.tolist()),
        links_s={k: tuple(v.tolist()) for k, v in sorted(links.items())},
    )


# Longest run the what-if will extend to while waiting for steady state.
MAX_STEADY_ITERATIONS = 640


def simulate_steady(
    scenario: Scenario, strategy: Strategy, ctx: BuildContext | None = None
) -> tuple[Trace, EngineStats, int]:
    """Simulate, doubling the iterations until the run settles (``metrics.is_steady``: its
    last period, of any length, repeats the one before, collectives' lags included) or
    reaches :data:`MAX_STEADY_ITERATIONS`. Returns the Trace, stats and iterations run.

    A delay of d needs more than 1 + d iterations to settle when communication outlasts
    compute: its backlog grows until the d buffers are full, and until then the windows
    are the compute time, equal but not steady.
    """
    from sim.analysis.metrics import is_steady

    iterations = scenario.iterations
    while True:
        sc = (
            scenario
            if iterations == scenario.iterations
            else dataclasses.replace(scenario, iterations=iterations)
        )
        run_ctx = ctx
        if ctx is not None and iterations != ctx.iterations:
            run_ctx = dataclasses.replace(ctx, scenario=sc, iterations=iterations)
        trace, stats = simulate(sc, strategy, run_ctx)
        if is_steady(trace) or iterations >= MAX_STEADY_ITERATIONS:
            return trace, stats, iterations
        iterations = min(MAX_STEADY_ITERATIONS, max(iterations * 2, 8))
