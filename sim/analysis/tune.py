"""Tuner: the strategy, bucket size and delay that minimise iteration time (or time to
accuracy) on one scenario.

Search, per strategy family:

- ``bucketed``, ``horovod``, ``priority`` (a size in MiB: DDP's bucket cap, Horovod's
  fusion threshold, the partition size): a geometric sweep of sizes from 1 MiB to the
  whole gradient (factor 2), then two refinements around the best size (factors
  2^(±1/4, ±1/2, ±3/4), then 2^(±1/8)). Merging gradients into fewer, larger buckets
  trades per-collective latency against how late the first bucket can start: the
  trade-off MG-WFBP (Shi, Chu & Li, INFOCOM 2019) optimises layer by layer; a sweep of
  caps from one layer per bucket to one bucket for everything covers the merges a cap
  can express.
- ``delayed``, ``async-layerwise``: each delay d in ``delays``.
- ``layerwise``: each way of applying the updates (wait-all, in-order, as-ready).
- ``sync``, ``ps``: as they are.

Sizes that produce the same task graph (caps between the same two layer boundaries)
give the same run, so each distinct graph is simulated once (the engine is
deterministic); the others are recorded as ``same_as`` it. A candidate that does not
fit in device memory, or that is bad input (e.g. too many partitions), is kept in the
list but cannot win; so is one whose run did not settle (its figure is an estimate).
Time to accuracy multiplies the iteration time by the measured
iterations to the target of the strategy's update rule
(:func:`sim.analysis.whatif.convergence_entry`): strategies without a figure cannot win.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sim.app.spec import ScenarioSpec
from sim.errors import InputError
from sim.model.scenario import Scenario

MIB = 2**20
DEFAULT_STRATEGIES = ("bucketed", "horovod", "priority", "delayed", "layerwise", "sync")
LAYERWISE_APPLY = ("wait-all", "in-order", "as-ready")
OBJECTIVES = ("iteration", "time-to-accuracy")


@dataclass
class Candidate:
    """One configuration tried. ``objective_s`` is what is minimised (None: cannot win)."""

    family: str
    strategy: str  # the spec to pass to --strategy
    options: dict[str, Any] = field(default_factory=dict)  # e.g. {"apply": "as-ready"}
    size_mib: float | None = None
    delay: int = 0
    iteration_time_s: float | None = None
    throughput_samples_per_s: float | None = None
    exposed_comm_s: float | None = None
    overlap_fraction: float | None = None
    peak_memory_bytes: float | None = None
    memory_exceeds_device: bool = False
    steady: bool | None = None
    iterations_to_target: float | None = None
    time_to_target_s: float | None = None
    objective_s: float | None = None
    same_as: str | None = None  # label of the candidate whose graph it shares
    error: str | None = None

    @property
    def label(self) -> str:
        opts = "".join(f" --{k.replace('_', '-')} {v}" for k, v in self.options.items())
        return f"{self.strategy}{opts}"

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, **asdict(self)}


@dataclass
class TuneResult:
    objective: str
    best: Candidate | None
    runner_up: Candidate | None  # the best of another strategy family
    margin: float | None  # runner_up.objective / best.objective - 1
    candidates: list[Candidate]  # every one tried, best first (cannot-win last)
    simulated: int  # distinct task graphs simulated
    evaluated: int  # candidates tried (simulated or identical to one that was)
    wall_s: float
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "best": self.best.as_dict() if self.best else None,
            "runner_up": self.runner_up.as_dict() if self.runner_up else None,
            "margin": self.margin,
            "search_cost": {
                "simulated": self.simulated,
                "evaluated": self.evaluated,
                "wall_s": self.wall_s,
            },
            "candidates": [c.as_dict() for c in self.candidates],
            "notes": list(self.notes),
        }


def _size_text(mib: float) -> str:
    return f"{mib:.4g}"


def geometric_sizes(total_mib: float, smallest_mib: float = 1.0) -> list[float]:
    """1, 2, 4, ... MiB up to the first size that holds the whole gradient."""
    sizes = [smallest_mib]
    while sizes[-1] < total_mib:
        sizes.append(sizes[-1] * 2)
    return sizes


def _graph_signature(graph: Any, strategy: Any, ctx: Any) -> int:
    """Equal for graphs the engine runs identically (labels aside)."""
    tasks = tuple(
        (t.kind, t.resource, t.iteration, t.work_s, t.deps, t.priority, t.latency_s, t.links)
        + (t.bytes, t.memory_bytes)
        for t in graph.tasks
    )
    extra = (
        graph.channels,
        strategy.extra_buffer_bytes(ctx),
        strategy.staleness,
        strategy.workers_hold_optimizer_state,
    )
    return hash((tasks, extra))


class _Evaluator:
    def __init__(
        self, scenario: Scenario, objective: str, convergence: Mapping[str, Any] | None
    ) -> None:
        from sim.engine.simulate import build_context

        self.scenario = scenario
        self.ctx = build_context(scenario)
        self.objective = objective
        self.convergence = convergence
        self.seen: dict[int, Candidate] = {}
        self.by_label: dict[str, Candidate] = {}
        self.simulated = 0

    def evaluate(self, c: Candidate) -> Candidate:
        if c.label in self.by_label:
            return self.by_label[c.label]
        self.by_label[c.label] = c
        from sim.analysis.metrics import metrics
        from sim.analysis.whatif import convergence_entry
        from sim.engine.simulate import simulate_steady
        from sim.strategies import parse_strategy

        try:
            strategy = parse_strategy(c.strategy, **c.options)
            signature = _graph_signature(strategy.build(self.ctx), strategy, self.ctx)
        except InputError as e:
            c.error = e.message
            return c
        twin = self.seen.get(signature)
        if twin is not None:
            for k in (
                "iteration_time_s",
                "throughput_samples_per_s",
                "exposed_comm_s",
                "overlap_fraction",
                "peak_memory_bytes",
                "memory_exceeds_device",
                "steady",
            ):
                setattr(c, k, getattr(twin, k))
            c.same_as = twin.label
        else:
            trace, _, _ = simulate_steady(self.scenario, strategy, self.ctx)
            self.simulated += 1
            m = metrics(trace)
            c.iteration_time_s = m.iteration_time_s
            c.throughput_samples_per_s = m.throughput_samples_per_s
            c.exposed_comm_s = m.exposed_comm_s
            c.overlap_fraction = m.overlap_fraction
            c.peak_memory_bytes = m.peak_memory_bytes
            c.memory_exceeds_device = m.memory_exceeds_device
            c.steady = m.steady
            self.seen[signature] = c
        if self.convergence is not None:
            its = convergence_entry(strategy.name, strategy.update_rule, self.convergence)
            c.iterations_to_target = its
            assert c.iteration_time_s is not None
            c.time_to_target_s = its * c.iteration_time_s if its is not None else None
        value = c.iteration_time_s if self.objective == "iteration" else c.time_to_target_s
        # A run that has not settled is an estimate: it is listed, never chosen.
        c.objective_s = None if (c.memory_exceeds_device or c.steady is False) else value
        return c


TIE_RELATIVE = 1e-9  # objectives this close are equal (floating-point noise of the engine)


def _score(c: Candidate) -> tuple:
    """Sort key: lowest objective; ties to the least stale, then the least memory.

    Objectives are compared rounded to :data:`TIE_RELATIVE`, so that delayed:3 does not
    win over delayed:1 on a difference in the 16th digit."""
    if c.objective_s is None:
        return (1, math.inf, 0, 0.0, c.label)
    rounded = float(f"{c.objective_s:.9g}")
    return (0, rounded, c.delay, c.peak_memory_bytes or 0.0, c.label)


def _refine(ev: _Evaluator, family: str, tried: list[Candidate], hi_mib: float) -> None:
    """Try sizes around the best so far: 2^(±1/4, ±1/2, ±3/4), then 2^(±1/8)."""
    for steps in ((-3, -2, -1, 1, 2, 3), (-1, 1)):
        ok = [c for c in tried if c.objective_s is not None and c.size_mib is not None]
        if not ok:
            return
        best = min(ok, key=_score)
        assert best.size_mib is not None
        unit = 0.25 if len(steps) > 2 else 0.125
        for k in steps:
            mib = float(_size_text(best.size_mib * 2 ** (k * unit)))
            if 0 < mib <= hi_mib:
                c = Candidate(family, f"{family}:{_size_text(mib)}", size_mib=mib)
                tried.append(ev.evaluate(c))


def tune(
    scenario_args: ScenarioSpec | Scenario,
    *,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    bucket_sizes_mb: Sequence[float] | None = None,
    delays: Sequence[int] = (1, 2, 3),
    objective: str = "iteration",
    convergence: Mapping[str, Any] | None = None,
    refine: bool = True,
) -> TuneResult:
    """Search ``strategies`` (families: see the module docstring) on one scenario.

    ``scenario_args``: a :class:`Scenario`, or a :class:`~sim.app.spec.ScenarioSpec`
    that builds one. ``bucket_sizes_mb``: the sizes to
    try (default: geometric, 1 MiB to the whole gradient), refined around the best
    unless ``refine`` is False. ``objective``: ``iteration`` (time per iteration) or
    ``time-to-accuracy`` (needs ``convergence``: iterations to the target per strategy
    name, as :func:`sim.analysis.whatif.add_time_to_accuracy` takes them).
    """
    t0 = time.perf_counter()
    if objective not in OBJECTIVES:
        raise InputError(
            f"unknown objective '{objective}'; choose one of {', '.join(OBJECTIVES)}",
            key="objective",
        )
    if objective == "time-to-accuracy" and convergence is None:
        raise InputError(
            "the time-to-accuracy objective needs convergence figures "
            "(--convergence conv.json from `dtsim convergence`)",
            key="convergence",
        )
    from sim.strategies import REGISTRY, parse_strategy

    families = []
    for s in strategies:
        s = s.strip()
        if s not in REGISTRY:
            raise InputError(
                f"cannot tune '{s}': give strategy families without parameters, from "
                f"{', '.join(REGISTRY)} (the tuner chooses sizes and delays)",
                key="strategies",
            )
        if s not in families:
            families.append(s)
    if not families:
        raise InputError("no strategy to tune", key="strategies")
    for d in delays:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise InputError(f"delays must be whole numbers >= 1, got {d!r}", key="delays")
    if bucket_sizes_mb is not None:
        for mb in bucket_sizes_mb:
            if not (isinstance(mb, (int, float)) and math.isfinite(mb) and mb > 0):
                raise InputError(f"bucket sizes must be numbers > 0 MiB, got {mb!r}", key="sizes")
    scenario = scenario_args if isinstance(scenario_args, Scenario) else scenario_args.build()
    ev = _Evaluator(scenario, objective, convergence)
    total_mib = sum(ev.ctx.grad_bytes) / MIB
    sizes = (
        sorted(set(float(s) for s in bucket_sizes_mb))
        if bucket_sizes_mb is not None
        else geometric_sizes(total_mib)
    )
    hi_mib = max(sizes[-1], total_mib)
    notes: list[str] = []
    for family in families:
        tunes = parse_strategy(family).tunes
        if tunes == "size":
            tried = [
                ev.evaluate(Candidate(family, f"{family}:{_size_text(mb)}", size_mib=mb))
                for mb in sizes
            ]
            if refine:
                _refine(ev, family, tried, hi_mib)
        elif tunes == "delay":
            for d in delays:
                ev.evaluate(Candidate(family, f"{family}:{d}", delay=d))
        elif tunes == "apply":
            for apply in LAYERWISE_APPLY:
                options = {} if apply == "wait-all" else {"apply": apply}
                ev.evaluate(Candidate(family, "layerwise", options=options))
        else:
            ev.evaluate(Candidate(family, family))
    candidates = sorted(ev.by_label.values(), key=_score)
    winners = [c for c in candidates if c.objective_s is not None]
    best = winners[0] if winners else None
    runner_up = next((c for c in winners if best and c.family != best.family), None)
    margin = None
    if best is not None and runner_up is not None and best.objective_s:
        assert runner_up.objective_s is not None
        margin = runner_up.objective_s / best.objective_s - 1
    if best is None:
        notes.append(
            "no candidate can win: none fits in device memory"
            + (" or has a convergence figure" if objective == "time-to-accuracy" else "")
        )
    if best is not None and best.delay > 0 and best.objective_s:
        fresh = [c for c in winners if c.delay == 0]
        if fresh and fresh[0].objective_s is not None:
            gap = fresh[0].objective_s / best.objective_s - 1
            if gap <= 0.01:
                notes.append(
                    f"{best.label} applies gradients {best.delay} iteration(s) late and is only "
                    f"{gap:.2%} ahead of {fresh[0].label}, which applies none: prefer that "
                    "unless time to accuracy says otherwise"
                )
    unsettled = [c.label for c in candidates if c.steady is False and c.same_as is None]
    if unsettled:
        notes.append("not settled in the longest run (estimates): " + ", ".join(unsettled))
    if objective == "time-to-accuracy":
        missing = sorted({c.family for c in candidates if c.iterations_to_target is None})
        if missing:
            notes.append("no convergence figure for: " + ", ".join(missing))
    return TuneResult(
        objective=objective,
        best=best,
        runner_up=runner_up,
        margin=margin,
        candidates=candidates,
        simulated=ev.simulated,
        evaluated=len(candidates),
        wall_s=time.perf_counter() - t0,
        notes=notes,
    )
