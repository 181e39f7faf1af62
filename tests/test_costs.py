"""What an iteration's work costs: Horovod's cycle waits apart from its collectives, the
first layer's backward, and the optimizer step (issue #14, "Strategies as real systems
run them")."""

from __future__ import annotations

import pytest

from hardware_profiles import load_profile
from sim.analysis import metrics as M
from sim.engine.simulate import build_context, simulate
from sim.model.scenario import make_scenario, with_nic_bandwidth
from sim.strategies import parse_strategy
from workloads import load_workload


def _resnet50_on_64_a100(spec: str):
    hw = with_nic_bandwidth(load_profile("dgx-a100"), 100)
    sc = make_scenario(load_workload("resnet50"), hw, 64, batch_per_device=32, iterations=12)
    trace, _ = simulate(sc, parse_strategy(spec), build_context(sc))
    return trace


def test_horovod_cycle_wait_is_reported_apart_from_its_collectives():
    trace = _resnet50_on_64_a100("horovod")
    windows = M.steady_windows(trace)
    comm = M.comm_time_s(trace, windows=windows)
    wait = M.cycle_wait_s(trace, windows=windows)
    collectives = sorted((s.start_s, s.end_s) for s in trace.spans if s.kind == "comm")
    alone = sum(M.union_in(collectives, lo, hi) for _, lo, hi in windows) / len(windows)
    assert 0 < wait < comm
    assert comm - wait == pytest.approx(alone, rel=1e-9)


def test_strategies_without_a_cycle_have_no_cycle_wait():
    assert M.cycle_wait_s(_resnet50_on_64_a100("bucketed")) == 0.0
