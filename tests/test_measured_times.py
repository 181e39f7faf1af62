"""Per-layer measured times: which batch they are read at, and what is said when they
cannot be used (issue #13 item 3)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest

from hardware_profiles import load_profile
from sim.model.costs import layer_cost, measurement_notes
from workloads import load_workload
from workloads.model import MeasuredTime

HW = load_profile("hardware_profiles/measured/epyc-2core-vm.yaml")
DEVICE = HW.device.model


def _layer(points):
    base = load_workload("mlp").layers[0]
    return dataclasses.replace(base, measured=MappingProxyType({DEVICE: tuple(points)}))


def _cost(points, batch):
    return layer_cost(_layer(points), HW.device, batch, "fp32", 4)


def test_exact_batch_is_the_measurement():
    c = _cost([MeasuredTime(8, 1e-3, 2e-3), MeasuredTime(32, 3e-3, 7e-3)], 8)
    assert (c.forward_s, c.backward_s, c.source) == (1e-3, 2e-3, "measured")


def test_between_two_batches_is_linear():
    # batch 16 lies a third of the way from 8 to 32: 1 + (3 - 1) / 3 ms, 2 + (7 - 2) / 3 ms.
    c = _cost([MeasuredTime(8, 1e-3, 2e-3), MeasuredTime(32, 3e-3, 7e-3)], 16)
    assert c.forward_s == pytest.approx(1e-3 + 2e-3 / 3)
    assert c.backward_s == pytest.approx(2e-3 + 5e-3 / 3)
    assert c.source == "measured"


def test_outside_the_batches_is_scaled_and_marked():
    c = _cost([MeasuredTime(8, 1e-3, 2e-3), MeasuredTime(32, 3e-3, 7e-3)], 64)
    assert (c.forward_s, c.backward_s) == pytest.approx((6e-3, 14e-3))  # 32's, x 64/32
    assert c.source == "measured-scaled"
    c = _cost([MeasuredTime(8, 1e-3, 2e-3)], 4)
    assert (c.forward_s, c.source) == (pytest.approx(0.5e-3), "measured-scaled")


def test_notes_say_when_times_are_for_another_device_or_scaled():
    wl = load_workload("mlp")
    layers = tuple(
        dataclasses.replace(
            layer,
            measured=MappingProxyType({"AMD EPYC (2 threads)": (MeasuredTime(8, 1e-3, 2e-3),)}),
        )
        for layer in wl.layers
    )
    other = dataclasses.replace(wl, layers=layers)
    notes = measurement_notes(other, HW.device, 8)
    assert len(notes) == 1 and "use a roofline" in notes[0] and "(2 threads)" in notes[0]
    assert f"{len(wl.layers)} of {len(wl.layers)} layers" in notes[0]
    mine = dataclasses.replace(
        wl,
        layers=tuple(
            dataclasses.replace(
                layer, measured=MappingProxyType({DEVICE: (MeasuredTime(8, 1e-3, 2e-3),)})
            )
            for layer in wl.layers
        ),
    )
    assert measurement_notes(mine, HW.device, 8) == []
    scaled = measurement_notes(mine, HW.device, 32)
    assert len(scaled) == 1 and "from batch 8 to 32" in scaled[0]
    # A roofline-only workload is the documented default: nothing to say.
    assert measurement_notes(wl, HW.device, 8) == []


def test_whatif_prints_the_note():
    from sim.app.spec import ScenarioSpec
    from sim.app.whatif import WhatifRequest, whatif

    spec = ScenarioSpec(
        hardware="hardware_profiles/measured/epyc-2core-vm.yaml",
        workload="hardware_profiles/measured/epyc-2core-vm.small-cnn.yaml",
        devices=2,
        batch_per_device=64,
        iterations=6,
    )
    result = whatif(WhatifRequest(spec, strategies="sync"))
    assert any("scaled in proportion to the batch" in n for n in result.notes)
