"""The what-if and run jobs: a typed request in, results out (no printing)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sim.app.spec import ScenarioSpec
from sim.engine.core import EngineStats
from sim.engine.trace import Trace
from sim.errors import InputError
from sim.model.scenario import Scenario
from sim.strategies.base import Strategy


@dataclass(frozen=True)
class StrategyOptions:
    """Options some strategies read: ``apply`` (layerwise: wait-all, in-order,
    as-ready) and ``per_tensor`` (one reduction per parameter tensor)."""

    apply: str = "wait-all"
    per_tensor: bool = False

    def as_kwargs(self) -> dict[str, Any]:
        return {"apply": self.apply, "per_tensor": self.per_tensor}


@dataclass(frozen=True)
class WhatifRequest:
    spec: ScenarioSpec
    strategies: str = "all"  # comma-separated specs, or "all"
    options: StrategyOptions = StrategyOptions()
    convergence_path: str | None = None  # a `dtsim convergence` JSON
    sweep_devices: tuple[int, ...] = ()  # also run at these device counts


@dataclass(frozen=True)
class WhatifResult:
    scenario: Scenario
    strategies: tuple[Strategy, ...]
    rows: list[dict[str, Any]]  # sorted by iteration (or time to target)
    columns: tuple[str, ...]  # the keys every consumer shows, in order
    recommendation: str
    notes: list[str]
    sweep_rows: list[dict[str, Any]] | None = None
    with_convergence: bool = False
    traces: dict[str, Trace] = field(default_factory=dict)  # by strategy name

    def traces_in_row_order(self) -> list[tuple[str, Trace]]:
        return [(r["strategy"], self.traces[r["strategy"]]) for r in self.rows]


def whatif(
    request: WhatifRequest, progress: Callable[[str, int], None] | None = None
) -> WhatifResult:
    """Every requested strategy on one scenario, compared with sync and one device.
    ``progress(name, total)`` is called as each strategy starts.

    Rules: ``all`` on a profile without NICs (one node, e.g. a calibrated one) leaves
    out ``ps`` (its servers are reached over NICs) and says so. Every device count of
    ``sweep_devices`` is validated before anything is simulated.
    """
    from sim.analysis.device_sweep import sweep_devices
    from sim.analysis.whatif import (
        RESULT_KEYS,
        TTA_KEYS,
        add_time_to_accuracy,
        extrapolation_notes,
        polling_notes,
        recommend,
        recommend_time_to_accuracy,
        run_notes,
        run_whatif,
    )
    from sim.app.convergence import read_iterations_to_target
    from sim.model.costs import measurement_notes
    from sim.strategies import parse_strategies

    convergence = (
        read_iterations_to_target(request.convergence_path) if request.convergence_path else None
    )
    chosen = parse_strategies(request.strategies, **request.options.as_kwargs())
    scenario = request.spec.build()
    skipped: list[str] = []
    if request.strategies.strip() == "all" and scenario.hardware.nics.count_per_node == 0:
        skipped = [s.name for s in chosen if s.family == "ps"]
        chosen = [s for s in chosen if s.name not in skipped]
    for n in request.sweep_devices:
        try:
            request.spec.replace(devices=n).build()
        except InputError as e:
            raise InputError(f"--sweep-devices {n}: {e.reason}", key="sweep-devices") from None
    traces: dict[str, Trace] = {}
    rows = run_whatif(
        scenario,
        chosen,
        progress=(lambda name: progress(name, len(chosen))) if progress else None,
        traces=traces,
    )
    sweep_rows = (
        sweep_devices(request.spec, chosen, request.sweep_devices)
        if request.sweep_devices
        else None
    )
    columns: tuple[str, ...] = RESULT_KEYS
    advice = recommend(rows, scenario)
    notes = (
        run_notes(rows, scenario)
        + measurement_notes(
            scenario.workload,
            scenario.hardware.device,
            scenario.batch_per_device,
            scenario.optimizer,
            scenario.dtype,
            scenario.devices,
        )
        + extrapolation_notes(traces.values())
        + polling_notes(traces, scenario)
    )
    if skipped:
        notes.append(
            f"skipped {', '.join(skipped)}: the profile has no NICs to reach a server over"
        )
    if convergence is not None:
        rows = add_time_to_accuracy(rows, convergence.iterations)
        columns = RESULT_KEYS + TTA_KEYS
        advice = recommend_time_to_accuracy(rows, convergence.target)
        notes.extend(convergence.notes)
    return WhatifResult(
        scenario=scenario,
        strategies=tuple(chosen),
        rows=rows,
        columns=columns,
        recommendation=advice,
        notes=notes,
        sweep_rows=sweep_rows,
        with_convergence=convergence is not None,
        traces=traces,
    )


@dataclass(frozen=True)
class RunRequest:
    spec: ScenarioSpec
    strategy: str = "sync"
    options: StrategyOptions = StrategyOptions()


@dataclass(frozen=True)
class RunResult:
    scenario: Scenario
    strategy: Strategy
    trace: Trace
    stats: EngineStats
    metrics: Any  # sim.analysis.metrics.Metrics
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how the numbers were obtained


def run(request: RunRequest) -> RunResult:
    """Simulate one strategy for exactly ``spec.iterations`` iterations (no extension:
    the Trace is what the user asked to see); warns when it has not settled."""
    from sim.analysis.metrics import metrics
    from sim.engine.simulate import simulate
    from sim.strategies import parse_strategy

    strategy = parse_strategy(request.strategy, **request.options.as_kwargs())
    scenario = request.spec.build()
    trace, stats = simulate(scenario, strategy)
    m = metrics(trace)
    warnings = []
    if not m.steady:
        warnings.append(
            f"{strategy.name} has not settled in {scenario.iterations} "
            "iterations (the last periods' iteration times still differ); the figures are "
            "estimates: raise --iterations" + settled_floor_note(trace, m.iteration_time_s)
        )
    from sim.analysis.whatif import polling_notes

    notes = polling_notes({strategy.name: trace}, scenario)
    return RunResult(scenario, strategy, trace, stats, m, warnings, notes)


def settled_floor_note(trace: Trace, iteration_s: float) -> str:
    """For an unsettled run averaging less than a resource's work per iteration: what
    a settled iteration takes at least (the backlog the short run did not wait for)."""
    from sim.analysis.bounds import sustained_bounds

    bounds = sustained_bounds(trace)
    if not bounds:
        return ""
    top = max(bounds, key=lambda b: b.seconds)
    if iteration_s >= top.seconds:
        return ""
    return (
        f". Its {iteration_s * 1e3:.4g} ms is less than the {top.seconds * 1e3:.4g} ms "
        f"of work {top.name} carries per iteration: its work is falling behind "
        f"(finishing after the last iteration), and a settled iteration takes at least "
        f"{top.seconds * 1e3:.4g} ms"
    )
