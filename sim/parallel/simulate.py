"""Run a 3D layout: plans -> task graph -> engine (one lane per stage) -> Trace, and
the figures large-model papers report, read from that Trace.

Figures (Narayanan et al., SC'21, §5.1 and appendix; Chowdhery et al., PaLM, 2022,
appendix B):

- achieved TFLOP/s per GPU = FLOPs the hardware ran per iteration, recomputation
  included (as Megatron-LM counts it) / (iteration time × devices);
- MFU = model FLOPs per iteration (the workload's forward and backward FLOPs, no
  recomputation) / (iteration time × devices × the device's peak in the run's dtype);
- bubble fraction: on stage 0, the share of the pipeline phase (first forward start to
  last backward end of a steady iteration) in which the stage neither computes nor runs
  its blocking tensor-parallel all-reduces;
- memory per GPU: the largest over stages of static memory plus the activations in
  flight, from the Trace's memory samples.

A result above a physical bound (MFU or achieved FLOP/s above the peak) raises
:class:`~sim.errors.PhysicalBoundError`; the time figures pass
:func:`sim.analysis.metrics.metrics` (its bounds check) first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from sim.analysis.metrics import Metrics, metrics, union_in
from sim.engine.core import Engine, EngineStats
from sim.engine.graph import COMPUTE, TaskGraph
from sim.engine.trace import IterationWork, Trace, TraceMeta
from sim.errors import InputError, PhysicalBoundError
from sim.model.collectives import CostModel
from sim.model.topology import Topology
from sim.parallel.layout import LayoutScenario
from sim.parallel.pipeline import TP_CHANNEL, build_graph
from sim.parallel.stages import Plans, StagePlan, coarse_plans, plan_stages

# A layout's run is refused beyond this many tasks (a few seconds per 100,000).
MAX_LAYOUT_TASKS = 2_000_000
# Above this many tasks, each micro-batch's tensor-parallel all-reduces become one task
# (stages.coarse_plans): same timing, a few seconds of engine time at most.
FINE_TASKS = 600_000
WARMUP_ITERATIONS = 1


def min_iterations(delay: int) -> int:
    """Iterations a layout's run needs: one of warm-up (and ``delay`` more), two whole
    windows to compare, the ``delay`` iterations their collectives end in, and the
    start of the next."""
    return 4 + 2 * delay


def cost_model(ls: LayoutScenario) -> CostModel:
    return CostModel(Topology(ls.scenario.hardware, ls.scenario.placement))


def plans_for(ls: LayoutScenario, model: CostModel | None = None) -> Plans:
    sc = ls.scenario
    return plan_stages(
        sc.workload,
        sc.hardware,
        ls.layout,
        model or cost_model(ls),
        dtype=sc.dtype,
        optimizer=sc.optimizer,
        algorithm=sc.collective_algorithm,
    )


def layout_work(graph: TaskGraph, ls: LayoutScenario, iterations: int) -> IterationWork:
    """What each iteration asks of each resource (the ``meta.work`` of
    :mod:`sim.analysis.bounds`): stage 0's compute (rank 0, whose windows the metrics
    read), the busiest (stage, channel)'s collective time as the one channel's, and the
    bandwidth work of each (stage, link class). Under ``delayed:d`` stage 0's channels
    and links only: a later stage's collectives may fall behind for many iterations
    while stage 0 repeats (they meet only every d iterations, through the update), and
    the steady windows are stage 0's."""
    fb = np.zeros(iterations)
    up = np.zeros(iterations)
    channels: dict[tuple[int, str], np.ndarray] = {}
    links: dict[str, np.ndarray] = {}
    for t in graph.tasks:
        if t.resource == COMPUTE:
            if t.rank == 0:
                (up if t.kind == "update" else fb)[t.iteration] += t.work_s
        elif t.kind == "comm" and (t.rank == 0 or not ls.layout.delay):
            key = (t.rank, t.resource)
            channels.setdefault(key, np.zeros(iterations))[t.iteration] += t.latency_s + t.work_s
            for link in set(t.links):
                name = f"{link}@stage{t.rank}"
                links.setdefault(name, np.zeros(iterations))[t.iteration] += t.work_s
    busiest = max(channels.values(), key=lambda v: float(v.sum()), default=np.zeros(iterations))
    return IterationWork(
        interference_factor=ls.scenario.hardware.interference_factor,
        staleness=ls.layout.delay,
        channels=1,
        forward_backward_s=tuple(fb.tolist()),
        update_s=tuple(up.tolist()),
        slowest_rank_factor=1.0,
        comm_s=tuple(busiest.tolist()),
        links_s=MappingProxyType({k: tuple(v.tolist()) for k, v in sorted(links.items())}),
    )


def gpu_stages(plans: Plans, pp: int) -> list[list[StagePlan]]:
    """Per GPU (pipeline stage s), the model stages it holds: s, s + P, ... (one unless
    the schedule is interleaved)."""
    return [[p for p in plans.stages if p.stage % pp == s] for s in range(pp)]


def _tasks(plans: Plans, micro_batches: int) -> int:
    return sum((len(p.forward) + len(p.backward) + 2) * micro_batches + 4 for p in plans.stages)


# delayed:d: the most iterations a run is extended to while a stage has not settled.
MAX_DELAYED_ITERATIONS = 64


# delayed:d: a later stage whose collectives fall behind stage 0 by less than this
# fraction of an iteration per iteration counts as settled (it moves the steady
# iteration by at most that fraction, once its backlog fills the d buffers).
DRIFT_TOLERANCE = 1e-4


def settled_everywhere(trace: Trace, pp: int) -> bool:
    """Whether stage 0 repeats (:func:`sim.analysis.metrics.steady_state`) and no other
    stage falls behind it: under ``delayed:d`` a later stage's collectives may take a
    little longer than stage 0's iteration and lag more each iteration, unseen by stage
    0's windows until the d buffers fill (llama2-7b's last stage holds the output layer,
    its first the embedding: nearly a tie)."""
    from sim.analysis.metrics import steady_state

    steady = steady_state(trace, 0)
    if not steady.settled:
        return False
    window = steady.windows[-1][2] - steady.windows[-1][1]
    for rank in range(1, pp):
        starts: dict[int, float] = {}
        ends: dict[int, float] = {}
        for s in trace.spans:
            if s.rank == rank:
                if s.kind == "forward":
                    starts[s.iteration] = min(starts.get(s.iteration, s.start_s), s.start_s)
                ends[s.iteration] = max(ends.get(s.iteration, s.end_s), s.end_s)
        last = max(starts.values())
        done = [t for t in sorted(starts) if t in ends and ends[t] <= last]
        lags = [ends[t] - starts[t] for t in done[-3:]]
        if len(lags) < 3:
            return False
        drift = max(b - a for a, b in zip(lags, lags[1:], strict=False))
        if drift > DRIFT_TOLERANCE * window:
            return False
    return True


def simulate_layout(
    ls: LayoutScenario, plans: Plans | None = None, iterations: int | None = None
) -> tuple[Trace, EngineStats, Plans]:
    """Simulate ``ls`` for ``iterations`` (default: the scenario's) iterations. Under
    ``delayed:d``, at least :func:`min_iterations`, doubled (up to
    :data:`MAX_DELAYED_ITERATIONS` and the task limit) until every stage settles: a
    backlog of collectives grows until the d buffers are full."""
    plans = plans or plans_for(ls)
    its = iterations or ls.scenario.iterations
    delay = ls.layout.delay
    if not delay:
        return _simulate(ls, plans, its)
    # d more iterations of warm-up (no update yet), and d more after the windows
    # compared (each iteration's collective ends within the next d).
    its = max(its, min_iterations(delay))
    while True:
        trace, stats, run_plans = _simulate(ls, plans, its)
        more = min(2 * its, MAX_DELAYED_ITERATIONS)
        tasks = _tasks(run_plans, ls.layout.num_micro_batches) * more
        if more <= its or tasks > MAX_LAYOUT_TASKS or settled_everywhere(trace, ls.layout.pp):
            return trace, stats, run_plans
        its = more


def _simulate(ls: LayoutScenario, plans: Plans, its: int) -> tuple[Trace, EngineStats, Plans]:
    delay = ls.layout.delay
    if its < 4:
        raise InputError(
            "a layout needs at least 4 iterations (one of warm-up, two whole windows to "
            "compare, and the start of the next)",
            key="iterations",
        )
    m = ls.layout.num_micro_batches
    if _tasks(plans, m) * its > FINE_TASKS:
        plans = coarse_plans(plans)
    if _tasks(plans, m) * its > MAX_LAYOUT_TASKS:
        raise InputError(
            f"{ls.layout.name()} over {its} iterations is {_tasks(plans, m) * its:,} tasks, "
            f"more than {MAX_LAYOUT_TASKS:,}; give fewer --iterations (a flushed pipeline "
            "repeats every iteration) or fewer micro-batches",
            key="iterations",
        )
    graph = build_graph(plans, ls.layout, its)
    static = [0.0] * ls.layout.pp
    for p in plans.stages:
        static[p.stage % ls.layout.pp] += sum(p.static_bytes.values())
    engine = Engine(
        graph,
        ranks=1,
        interference_factor=ls.scenario.hardware.interference_factor,
        base_memory_bytes=static,
    )
    spans, samples, stats = engine.run()
    sc = ls.scenario
    lay = ls.layout
    fields: dict[str, Any] = {
        "strategy": f"layout {lay.name()}",
        "ranks_mode": "representative",
        "global_batch": lay.global_batch,
        "batch_per_device": lay.micro_batch,
        # Each rank (stage) of this Trace stands for the D·T GPUs of its stage.
        "devices": lay.dp * lay.tp,
        "iterations": its,
        "warmup_iterations": WARMUP_ITERATIONS + delay,
        "period": 1,
        "jitter": 0.0,
        "device_memory_bytes": sc.hardware.device.memory_bytes,
        "static_memory_bytes": {
            k: sum(p.static_bytes[k] for p in plans.stages if p.stage % lay.pp == 0)
            for k in plans.stages[0].static_bytes
        },
        "comm_links": {
            t.label: tuple(t.links) for t in graph.tasks if t.kind == "comm" and t.links
        },
        "scenario": ls.summary(),
        "work": layout_work(graph, ls, its),
    }
    extra = {
        "pipeline_stages": f"rank s is pipeline stage s of {lay.pp}",
        "layout": lay.name(),
    }
    meta = TraceMeta(**fields, extra=MappingProxyType(extra))
    return Trace(tuple(spans), tuple(samples), meta), stats, plans


@dataclass(frozen=True)
class LayoutMetrics:
    """The figures of one layout's run. Times in seconds, sizes in bytes, rates per
    second; ``memory_by_stage``: per stage, its static memory by kind and its peak."""

    layout: str
    iteration_time_s: float
    tokens_per_s: float
    samples_per_s: float
    achieved_tflops_per_gpu: float
    model_tflops_per_gpu: float
    mfu: float
    bubble_fraction: float
    peak_memory_bytes: float
    device_memory_bytes: float
    fits: bool
    memory_by_stage: tuple[dict, ...]
    exposed_comm_s: float
    steady: bool

    def as_dict(self) -> dict:
        d = asdict(self)
        d["memory_by_stage"] = [dict(x) for x in self.memory_by_stage]
        return d


def bubble_fraction(trace: Trace, windows: tuple[tuple[int, float, float], ...]) -> float:
    """Stage 0's idle share of the pipeline phase (see the module docstring), mean over
    the steady windows."""
    out = []
    for it, lo, hi in windows:
        mine = [
            s for s in trace.spans if s.rank == 0 and s.iteration == it and lo <= s.start_s < hi
        ]
        work = [s for s in mine if s.kind in ("forward", "backward") or s.resource == TP_CHANNEL]
        if not work:
            continue
        start = min(s.start_s for s in work if s.kind == "forward")
        end = max(s.end_s for s in work if s.kind in ("backward", "comm"))
        busy = union_in(sorted((s.start_s, s.end_s) for s in work), start, end)
        out.append(1.0 - busy / (end - start) if end > start else 0.0)
    return float(np.mean(out)) if out else 0.0


def layout_metrics(trace: Trace, ls: LayoutScenario, plans: Plans) -> tuple[LayoutMetrics, Metrics]:
    """The layout's figures (and the plain metrics they come from); raises
    PhysicalBoundError when MFU or achieved FLOP/s pass the device's peak."""
    from sim.analysis.metrics import steady_state

    m = metrics(trace)
    steady = steady_state(trace)
    settled = m.steady and (not ls.layout.delay or settled_everywhere(trace, ls.layout.pp))
    it = m.iteration_time_s
    sc = ls.scenario
    devices = ls.layout.devices
    peak = sc.hardware.device.peak_flops[sc.dtype]
    achieved = plans.hardware_flops / (it * devices)
    model = plans.model_flops / (it * devices)
    mfu = model / peak
    if achieved > peak * (1 + 1e-9) or mfu > 1:
        raise PhysicalBoundError(
            f"layout {ls.layout.name()}: {achieved / 1e12:.6g} TFLOP/s per GPU achieved "
            f"(MFU {mfu:.4f}) exceeds the device's {peak / 1e12:g} TFLOP/s {sc.dtype} peak "
            f"(iteration {it:.6g} s; scenario: {ls.summary()})"
        )
    by_stage: dict[int, float] = {}
    for sample in trace.memory:
        by_stage[sample.rank] = max(by_stage.get(sample.rank, 0.0), sample.bytes_in_use)
    memory = tuple(
        {
            "stage": lane[0].stage,
            "blocks": ", ".join(f"{p.blocks[0]}-{p.blocks[1] - 1}" for p in lane),
            **{k: float(sum(p.static_bytes[k] for p in lane)) for k in lane[0].static_bytes},
            "peak_bytes": by_stage.get(lane[0].stage, 0.0),
        }
        for lane in gpu_stages(plans, ls.layout.pp)
    )
    device_mem = float(sc.hardware.device.memory_bytes)
    tokens = ls.layout.global_batch * plans.seq_len
    return (
        LayoutMetrics(
            layout=ls.layout.name(),
            iteration_time_s=it,
            tokens_per_s=tokens / it,
            samples_per_s=ls.layout.global_batch / it,
            achieved_tflops_per_gpu=achieved / 1e12,
            model_tflops_per_gpu=model / 1e12,
            mfu=mfu,
            bubble_fraction=bubble_fraction(trace, steady.windows),
            peak_memory_bytes=m.peak_memory_bytes,
            device_memory_bytes=device_mem,
            fits=m.peak_memory_bytes <= device_mem,
            memory_by_stage=memory,
            exposed_comm_s=m.exposed_comm_s,
            steady=settled,
        ),
        m,
    )
