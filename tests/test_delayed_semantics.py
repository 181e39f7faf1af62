"""Delayed updates: the timeline applies w_{t+1} = w_t - η·g_{t-d}, as convergence does.

Pass s reads layer l's weights from forward(s, l)'s start to backward(s, l)'s end. The
convergence module (``calibrate.convergence.runs.apply_schedule``) says pass s reads
w_s = w_0 - η·(g_0 + ... + g_{s-1-d}), d the strategy's ``staleness``. These tests read,
from the Trace alone, which gradients each pass's weights include, and check that no
update changes weights while a pass is reading them (issue #14: before, update(t) waited
only for comm(t) and in 39 of 40 iterations landed inside pass t+1).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from calibrate.convergence.runs import apply_schedule, layer_staleness
from hardware_profiles import load_profile
from sim.engine.simulate import build_context, simulate
from sim.engine.trace import Span
from sim.model.scenario import make_scenario, with_nic_bandwidth
from sim.strategies import parse_strategy
from workloads import load_workload

SPECS = ["delayed:1", "delayed:2", "delayed:3", "async-layerwise:1", "async-layerwise:2"]
ITERATIONS = 12


def _trace(spec: str, nic_gbps: float | None):
    hw = load_profile("dgx1-p100")
    if nic_gbps is not None:
        hw = with_nic_bandwidth(hw, nic_gbps)  # comm-bound: collectives outlast a pass
    sc = make_scenario(load_workload("alexnet"), hw, 16, global_batch=256, iterations=ITERATIONS)
    strategy = parse_strategy(spec)
    ctx = build_context(sc)
    trace, _ = simulate(sc, strategy, ctx)
    return strategy, ctx, trace


def _passes(spans: list[Span]) -> dict[tuple[int, str], tuple[float, float]]:
    """(pass, layer name) -> (forward start, backward end): when the pass reads it."""
    fwd = {(s.iteration, s.label): s.start_s for s in spans if s.kind == "forward"}
    bwd = {(s.iteration, s.label): s.end_s for s in spans if s.kind == "backward"}
    return {key: (fwd[key], bwd[key]) for key in fwd}


def _updates_of_layer(spans: list[Span], layer: str) -> list[Span]:
    return [s for s in spans if s.kind == "update" and s.label in (layer, "all")]


@pytest.mark.parametrize("nic_gbps", [None, 10.0])
@pytest.mark.parametrize("spec", SPECS)
def test_no_update_lands_inside_a_pass_that_reads_its_weights(spec, nic_gbps):
    strategy, ctx, trace = _trace(spec, nic_gbps)
    spans = [s for s in trace.spans if s.rank == 0]
    reads = _passes(spans)
    for layer in (ctx.names[i] for i in ctx.param_layers):
        for u in _updates_of_layer(spans, layer):
            for s in range(u.iteration + 1, ITERATIONS):
                start, end = reads[(s, layer)]
                assert u.end_s <= start or u.start_s >= end, (spec, layer, u, s)


@pytest.mark.parametrize("nic_gbps", [None, 10.0])
@pytest.mark.parametrize("spec", ["delayed:1", "delayed:2", "delayed:3"])
def test_delayed_single_update_falls_between_passes(spec, nic_gbps):
    """The one update of gradient t is never between the first forward and the last
    backward of a later pass."""
    _, _, trace = _trace(spec, nic_gbps)
    spans = [s for s in trace.spans if s.rank == 0]
    first = {s.iteration: s.start_s for s in spans if s.kind == "forward" and s.label}
    for s in spans:
        if s.kind == "forward":
            first[s.iteration] = min(first[s.iteration], s.start_s)
    last = {}
    for s in spans:
        # A copy of gradients into the communication buffer ("copy:<bucket>") reads no
        # weights: the update may run before it.
        if s.kind == "backward" and not s.label.startswith("copy:"):
            last[s.iteration] = max(last.get(s.iteration, 0.0), s.end_s)
    updates = [s for s in spans if s.kind == "update"]
    assert len(updates) == ITERATIONS
    for u in updates:
        for p in range(u.iteration + 1, ITERATIONS):
            assert u.end_s <= first[p] or u.start_s >= last[p], (spec, u, p)


@pytest.mark.parametrize("nic_gbps", [None, 10.0])
@pytest.mark.parametrize("spec", SPECS)
def test_timeline_staleness_is_the_convergence_rule(spec, nic_gbps):
    """Which gradients each pass's weights include, read from the Trace, equals what
    apply_schedule's weights include (one-hot gradients: g_t = e_t per layer, η = 1)."""
    strategy, ctx, trace = _trace(spec, nic_gbps)
    spans = [s for s in trace.spans if s.rank == 0]
    reads = _passes(spans)
    param_layers = list(ctx.param_layers)
    stale = layer_staleness(spec, len(param_layers))
    assert stale == (strategy.staleness,) * len(param_layers)

    seen: dict[int, tuple[np.ndarray, ...]] = {}
    apply_schedule(
        spec,
        lambda t, w: [np.eye(ITERATIONS)[t] for _ in w],
        [np.zeros(ITERATIONS) for _ in param_layers],
        1.0,
        ITERATIONS - 1,
        on_step=lambda t, w: seen.__setitem__(t, w),
    )
    for s in range(ITERATIONS):
        for k, i in enumerate(param_layers):
            start, _ = reads[(s, ctx.names[i])]
            from_trace = {
                u.iteration for u in _updates_of_layer(spans, ctx.names[i]) if u.end_s <= start
            }
            from_rule = set(np.flatnonzero(seen[s][k] < 0).tolist())
            assert from_trace == from_rule == set(range(s - strategy.staleness)), (spec, s, i)


def test_deferred_update_holds_a_gradient_buffer_not_a_weight_copy():
    """The deferral keeps g_t reduced until pass t+d ends: one of the d gradient buffers
    (d = 2: g_t waiting, g_{t+1} in flight, g_{t+2} in the model's own buffer), plus the
    communication buffer g_{t+2} is copied into before its collective. Weights are
    changed between passes, so no second weight copy is needed."""
    strategy = parse_strategy("delayed:2")
    sc = make_scenario(load_workload("alexnet"), load_profile("dgx1-p100"), 8, global_batch=256)
    ctx = build_context(sc)
    assert strategy.extra_buffer_bytes(ctx) == 3 * sum(ctx.grad_bytes)
    no_copy = dataclasses.replace(ctx, copy_s=lambda nbytes: 0.0)
    assert strategy.extra_buffer_bytes(no_copy) == 2 * sum(ctx.grad_bytes)
