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


def _with_steps(wl, steps):
    from workloads.model import MeasuredUpdate

    return dataclasses.replace(
        wl,
        measured_update=MappingProxyType({DEVICE: tuple(MeasuredUpdate(o, s) for o, s in steps)}),
    )


def test_a_measured_optimizer_step_is_the_update_split_by_parameters():
    from sim.engine.simulate import build_context
    from sim.model.scenario import make_scenario

    wl = _with_steps(load_workload("mlp"), [("sgd", 3e-3), ("adam", 9e-3)])
    for optimizer, step in (("sgd", 3e-3), ("adam", 9e-3)):
        sc = make_scenario(wl, HW, 2, batch_per_device=8, optimizer=optimizer, iterations=3)
        ctx = build_context(sc)
        assert sum(ctx.update_s) == pytest.approx(step)
        # Split by parameters: each layer's share is its parameters' share.
        for layer, u in zip(wl.layers, ctx.update_s, strict=True):
            assert u == pytest.approx(step * layer.params / wl.total_params)
    # An optimizer that was not timed falls back to the traffic model, and says so.
    sc = make_scenario(wl, HW, 2, batch_per_device=8, optimizer="momentum", iterations=3)
    assert sum(build_context(sc).update_s) != pytest.approx(3e-3)
    notes = measurement_notes(wl, HW.device, 8, "momentum")
    assert any("momentum update is costed by memory traffic" in n for n in notes)
    # A delayed update is costed as the hot step when no stale step was measured: said.
    (note,) = measurement_notes(wl, HW.device, 8, "sgd")
    assert "not from a stale buffer: the workload has none measured" in note
    assert build_context(sc).stale_update_s == build_context(sc).update_s


def test_a_delayed_update_is_the_stale_step_where_it_was_measured():
    from sim.engine.simulate import build_context
    from sim.model.scenario import make_scenario
    from workloads.model import MeasuredUpdate

    wl = dataclasses.replace(
        load_workload("mlp"),
        measured_update=MappingProxyType(
            {DEVICE: (MeasuredUpdate("sgd", 3e-3, stale_seconds=4.5e-3),)}
        ),
    )
    sc = make_scenario(wl, HW, 2, batch_per_device=8, optimizer="sgd", iterations=3)
    ctx = build_context(sc)
    assert sum(ctx.update_s) == pytest.approx(3e-3)
    assert sum(ctx.stale_update_s) == pytest.approx(4.5e-3)
    (note,) = measurement_notes(wl, HW.device, 8, "sgd")
    assert "from a buffer a pass left untouched (4.5 ms; 3 ms right after" in note
    # Measured for the optimizer the calibration trained with only: which, and how to
    # measure this one's.
    wl2 = dataclasses.replace(
        wl,
        measured_update=MappingProxyType(
            {
                DEVICE: (
                    MeasuredUpdate("sgd", 3e-3, stale_seconds=4.5e-3),
                    MeasuredUpdate("adam", 9e-3),
                )
            }
        ),
    )
    (note,) = measurement_notes(wl2, HW.device, 8, "adam")
    assert "the workload's is for sgd" in note and "--optimizer adam" in note
    # The iteration of delayed:1 pays it, sync does not (SGD's state: none).
    assert wl.update_seconds(DEVICE, "sgd", stale=True) == pytest.approx(4.5e-3)
    assert wl.update_seconds(DEVICE, "sgd") == pytest.approx(3e-3)


def test_measured_steps_survive_the_workload_file(tmp_path):
    import yaml

    from workloads.loader import load_yaml, to_document

    wl = _with_steps(load_workload("mlp"), [("sgd", 3e-3), ("adamw", 1.25e-2)])
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(to_document(wl)))
    back = load_yaml(path)
    assert back.update_seconds(DEVICE, "sgd") == pytest.approx(3e-3)
    assert back.update_seconds(DEVICE, "adamw") == pytest.approx(1.25e-2)
    assert back.update_seconds(DEVICE, "adam") is None
    assert back.measured_step(DEVICE, "sgd").stale_seconds is None


def test_the_stale_step_survives_the_workload_file(tmp_path):
    import yaml

    from workloads.loader import load_yaml, to_document
    from workloads.model import MeasuredUpdate

    wl = dataclasses.replace(
        load_workload("mlp"),
        measured_update=MappingProxyType(
            {DEVICE: (MeasuredUpdate("adam", 9e-3, 1e-4, 8, 1.2e-2, 2e-4),)}
        ),
    )
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(to_document(wl)))
    (back,) = load_yaml(path).measured_update[DEVICE]
    assert back.stale_seconds == pytest.approx(1.2e-2)
    assert back.stale_iqr_s == pytest.approx(2e-4)
    doc = to_document(wl)
    doc["measured_update"][DEVICE][0]["stale_step_ms"] = -1
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(Exception, match="stale_step_ms"):
        load_yaml(path)


# -- the measured gradient copy -----------------------------------------------------------
def _with_copy(wl, nbytes: int, seconds: float):
    from workloads.model import MeasuredCopy

    return dataclasses.replace(
        wl, measured_copy=MappingProxyType({DEVICE: MeasuredCopy(nbytes, seconds)})
    )


def test_a_measured_copy_costs_every_buffer_copy_in_proportion_to_its_bytes():
    from sim.engine.simulate import build_context
    from sim.model.costs import buffer_copy_s
    from sim.model.scenario import make_scenario

    base = load_workload("mlp")
    grad = base.total_params * 4
    wl = _with_copy(base, grad, 2e-3)  # the whole gradient's copy: 2 ms
    ctx = build_context(make_scenario(wl, HW, 2, batch_per_device=8, iterations=3))
    assert ctx.copy_s(grad) == pytest.approx(2e-3)
    assert ctx.copy_s(grad / 4) == pytest.approx(0.5e-3)
    # Without it, two passes at the profile's memory bandwidth.
    ctx = build_context(make_scenario(base, HW, 2, batch_per_device=8, iterations=3))
    assert ctx.copy_s(grad) == pytest.approx(buffer_copy_s(grad, HW.device))
    # A copy measured on another device type is not used.
    other = dataclasses.replace(
        base, measured_copy=MappingProxyType({"other": wl.measured_copy[DEVICE]})
    )
    ctx = build_context(make_scenario(other, HW, 2, batch_per_device=8, iterations=3))
    assert ctx.copy_s(grad) == pytest.approx(buffer_copy_s(grad, HW.device))


def test_a_sync_timeline_carries_the_measured_copy():
    from sim.engine.simulate import simulate
    from sim.model.scenario import make_scenario
    from sim.strategies import parse_strategy

    base = load_workload("mlp")
    wl = _with_copy(base, base.total_params * 4, 2e-3)
    scenario = make_scenario(wl, HW, 2, batch_per_device=8, iterations=3)
    trace, _ = simulate(scenario, parse_strategy("sync"))
    copies = [s for s in trace.spans if s.label == "copy:all"]
    assert copies and all(s.end_s - s.start_s == pytest.approx(2e-3) for s in copies)


def test_the_measured_copy_survives_the_workload_file_and_bad_values_are_refused(tmp_path):
    import yaml

    from sim.errors import InputError
    from workloads.loader import load_yaml, to_document

    wl = _with_copy(load_workload("mlp"), 7_454_760, 1.25e-3)
    path = tmp_path / "w.yaml"
    doc = to_document(wl)
    path.write_text(yaml.safe_dump(doc))
    back = load_yaml(path)
    assert back.measured_copy[DEVICE].bytes == 7_454_760
    assert back.copy_seconds(DEVICE, 7_454_760) == pytest.approx(1.25e-3)
    for bad in (
        {"bytes": 0, "copy_ms": 1.0},
        {"bytes": 10, "copy_ms": 0},
        {"bytes": True, "copy_ms": 1.0},
        {"bytes": 10},
        # A review found these loaded and broke the simulation (1e17 s per iteration,
        # or 5.7e6 ms for a 1-byte copy scaled to the model's gradients).
        {"bytes": 7_454_760, "copy_ms": 1e20},
        {"bytes": 1, "copy_ms": 1.0},
    ):
        doc["measured_copy"] = {DEVICE: bad}
        path.write_text(yaml.safe_dump(doc))
        with pytest.raises(InputError, match="measured_copy"):
            load_yaml(path)


def test_calibrated_times_are_the_means_of_their_repeats(tmp_path):
    """A layer's tile, a step and the copy are written as the mean of their repeats, not
    the median: an iteration adds them up, and a tile that now and then runs long makes
    the mean iteration longer (``expected_time``). The raw CSV of a finished calibration
    is edited so one layer's forward reads 1, 2 and 9 ms (median 2, mean 4) and the SGD
    step 3, 3 and 6 ms (median 3, mean 4); resuming it measures nothing again."""
    import csv

    from calibrate.measure.compute import calibrate_compute

    raw = tmp_path / "raw.csv"
    calibrate_compute("mlp", batch=2, threads=1, warmup=0, repeats=3, csv_path=raw)
    rows = list(csv.reader(raw.open()))
    header, body = rows[0], rows[1:]
    at = {name: header.index(name) for name in ("repeat", "layer", "phase", "seconds")}
    fwd = {0: 1e-3, 1: 2e-3, 2: 9e-3}
    step = {0: 3e-3, 1: 3e-3, 2: 6e-3}
    for row in body:
        r = int(row[at["repeat"]])
        if (row[at["layer"]], row[at["phase"]]) == ("fc1", "forward"):
            row[at["seconds"]] = repr(fwd[r])
        if (row[at["layer"]], row[at["phase"]]) == ("<update>", "sgd"):
            row[at["seconds"]] = repr(step[r])
    with raw.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *body])
    result = calibrate_compute(
        "mlp", batch=2, threads=1, warmup=0, repeats=3, csv_path=raw, resume=True
    )
    (fc1,) = [t for t in result.layers if t.name == "fc1"]
    assert fc1.forward_s == pytest.approx(4e-3)
    device = result.device.model
    assert result.workload.update_seconds(device, "sgd") == pytest.approx(4e-3)


def _with_allreduce(wl, nbytes, ranks, seconds):
    from workloads.model import MeasuredAllreduce

    measured = MeasuredAllreduce(nbytes, ranks, seconds, 1e-4, 16)
    return dataclasses.replace(wl, measured_allreduce=MappingProxyType({DEVICE: measured}))


def test_the_allreduce_after_a_pass_scales_every_allreduce_by_its_ratio_to_the_table():
    """The workload's whole-gradient all-reduce measured after a pass, over the table's
    time for its bytes, scales every all-reduce of an fp32 run on its rank count: the
    whole gradient's costs exactly the measurement, half of it the table's time for half
    times the same ratio, the latency kept. Another rank count keeps the table; whatif's
    notes say which."""
    from sim.engine.simulate import build_context, training_context
    from sim.model.costs import measurement_notes
    from sim.model.scenario import make_scenario

    base = load_workload("mlp")
    grad = base.total_params * 4
    plain = build_context(make_scenario(base, HW, 2, batch_per_device=8))
    ratio = 3e-3 / plain.allreduce(grad).time_s
    wl = _with_allreduce(base, grad, 2, 3e-3)
    ctx = build_context(make_scenario(wl, HW, 2, batch_per_device=8))
    assert training_context(make_scenario(wl, HW, 2, batch_per_device=8), plain.allreduce) == (
        pytest.approx(ratio)
    )
    assert ctx.allreduce(grad).time_s == pytest.approx(3e-3)
    half, table_half = ctx.allreduce(grad / 2), plain.allreduce(grad / 2)
    assert half.time_s == pytest.approx(ratio * table_half.time_s)
    assert half.latency_s == table_half.latency_s and half.links == table_half.links
    assert "after a pass" in half.algorithm
    notes = measurement_notes(wl, HW.device, 8, "sgd", "fp32", 2)
    assert any("measured after a pass" in n and "on 2 ranks: 3 ms" in n for n in notes), notes
    # Measured on another rank count: the table, and the note says so.
    other = _with_allreduce(base, grad, 4, 3e-3)
    got = build_context(make_scenario(other, HW, 2, batch_per_device=8)).allreduce(grad / 2)
    assert got == table_half
    notes = measurement_notes(other, HW.device, 8, devices=2)
    assert any("on 4 ranks, not as this run's" in n for n in notes), notes


def test_the_measured_allreduce_survives_the_workload_file_and_bad_values_are_refused(
    tmp_path,
):
    import yaml

    from sim.errors import InputError
    from workloads.loader import load_yaml, to_document

    wl = _with_allreduce(load_workload("mlp"), 7_454_760, 2, 1.5e-3)
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(to_document(wl)))
    back = load_yaml(path)
    assert back.measured_allreduce == wl.measured_allreduce
    for bad in (
        {"bytes": 10, "ranks": 1, "allreduce_ms": 1.0},  # one rank reduces nothing
        {"bytes": 0, "ranks": 2, "allreduce_ms": 1.0},
        {"bytes": 10, "ranks": 2, "allreduce_ms": 0},
        {"bytes": 10, "ranks": 2},
        {"bytes": 10**12, "ranks": 2, "allreduce_ms": 1e-6},  # 1e21 B/s
    ):
        doc = to_document(wl)
        doc["measured_allreduce"] = {DEVICE: bad}
        path.write_text(yaml.safe_dump(doc))
        with pytest.raises(InputError) as e:
            load_yaml(path)
        assert "measured_allreduce" in str(e.value)
