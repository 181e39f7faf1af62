"""The copy of gradients into a collective's buffer (sim.model.costs.buffer_copy_s):
where the timeline puts it and when it is not charged."""

from __future__ import annotations

import dataclasses

import pytest

from hardware_profiles import load_profile
from sim.engine.simulate import build_context, simulate
from sim.model.scenario import make_scenario
from sim.strategies import parse_strategy
from workloads.model import GRADIENT_COPY, IN_LAYER_TIMES, Layer, Workload

# Two layers; l0 holds 1,000,000 fp32 parameters (4 MB of gradients), l1 none.
LAYERS = (
    Layer("l0", "linear", 1_000_000, 1e6, 2e6, 10, 10, (1_000_000,)),
    Layer("l1", "linear", 0, 1e6, 2e6, 10, 10, ()),
)


def _run(devices: int, spec: str = "sync", workload: Workload | None = None):
    wl = workload or Workload("two", "two layers", LAYERS)
    hw = load_profile("dgx-a100")  # 2,039 GB/s of memory bandwidth
    sc = make_scenario(wl, hw, devices, batch_per_device=1, iterations=4)
    return sc, simulate(sc, parse_strategy(spec))[0]


def test_sync_copies_its_buffer_after_backward_then_reduces_it():
    _, trace = _run(2)
    spans = [s for s in trace.spans if s.rank == 0 and s.iteration == 1]
    (copy,) = [s for s in spans if s.label == "copy:all"]
    # 2 x 4,000,000 B (one read, one write) / 2,039e9 B/s = 3.9235 us
    assert copy.duration_s == pytest.approx(2 * 4e6 / 2039e9, rel=1e-12)
    assert copy.kind == "backward" and copy.resource == "compute" and copy.bytes == 4e6
    last_backward = max(s.end_s for s in spans if s.kind == "backward" and s is not copy)
    (comm,) = [s for s in spans if s.kind == "comm"]
    assert copy.start_s == pytest.approx(last_backward, abs=1e-15)
    assert comm.start_s == pytest.approx(copy.end_s, abs=1e-15)


def test_bucketed_copies_each_bucket_once():
    _, trace = _run(2, "bucketed")
    copies = [
        s for s in trace.spans if s.rank == 0 and s.iteration == 1 and s.label.startswith("copy:")
    ]
    comms = [s for s in trace.spans if s.rank == 0 and s.iteration == 1 and s.kind == "comm"]
    assert len(copies) == len(comms) >= 1
    assert sum(c.duration_s for c in copies) == pytest.approx(2 * 4e6 / 2039e9, rel=1e-9)


def test_one_device_copies_nothing():
    sc, trace = _run(1)
    assert not [s for s in trace.spans if s.label.startswith("copy:")]
    assert parse_strategy("sync").extra_buffer_bytes(build_context(sc)) == 0


def test_the_copy_needs_its_buffer_in_memory():
    sc, _ = _run(2)
    ctx = build_context(sc)
    assert parse_strategy("sync").extra_buffer_bytes(ctx) == 4e6
    assert parse_strategy("delayed:2").extra_buffer_bytes(ctx) == 3 * 4e6  # 2 held + 1


def test_times_read_from_a_ddp_trace_already_hold_the_copy():
    wl = Workload(
        "two",
        "two layers",
        LAYERS,
        provenance={GRADIENT_COPY: IN_LAYER_TIMES, "device": "A100 SXM4 80GB"},
    )
    sc, trace = _run(2, workload=wl)
    assert sc.hardware.device.model == "A100 SXM4 80GB"
    assert not [s for s in trace.spans if s.label.startswith("copy:")]
    # ...but only on the device whose trace it is
    other = dataclasses.replace(wl, provenance={GRADIENT_COPY: IN_LAYER_TIMES, "device": "x"})
    assert build_context(make_scenario(other, sc.hardware, 2, batch_per_device=1)).copy_s(1e6) > 0
