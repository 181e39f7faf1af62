"""Collectives progressed by the computing thread's polls (``comm_progress: polled``): the
engine's poll spans, the error budget's "outside" row, and the calibration's choices of
poll spacing and compute between collectives. Exact times on hand-made graphs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibrate.validation.compare import error_budget, measured_stats
from hardware_profiles import load_profile
from sim.analysis import metrics as M
from sim.analysis.breakdown import breakdown
from sim.app.calibration import (
    MAX_COMPUTE_BETWEEN_S,
    between_note,
    compute_between_s,
    poll_spacing_s,
)
from sim.engine.core import Engine
from sim.engine.graph import COMPUTE, TaskGraph
from sim.engine.simulate import simulate_steady
from sim.engine.trace import Span, Trace, TraceMeta
from sim.errors import InputError
from sim.model.scenario import make_scenario, with_interference, with_polled_progress
from sim.strategies import parse_strategy
from workloads import load_workload

MEASURED = "hardware_profiles/measured/epyc-2core-vm.yaml"


def _one_collective_beside_compute(polled: bool) -> list[Span]:
    # A 4 s collective and an 8 s compute task start together. Compute at 1/(1 + 1),
    # the collective at 1/(1 + 3) while the rank computes: after 8 s of wall time the
    # collective has done 2 s and the compute 4 s; from 8 to 16 the compute goes on at
    # half speed (the collective still runs), the collective finishes at 8 + 2 / (1/4)
    # = 16, exactly when the compute's remaining 4 s at 1/2 end: both end at 16.
    g = TaskGraph()
    g.add("comm", "comm0", 0, "all", 4.0, links=("x",))
    g.add("forward", COMPUTE, 0, "L0", 8.0)
    spans, _, _ = Engine(
        g, interference_factor=1.0, comm_interference_factor=3.0, polled=polled
    ).run()
    return sorted(spans, key=lambda s: (s.resource, s.start_s, s.kind))


def test_compute_beside_a_polled_collective_splits_into_work_and_polls():
    spans = _one_collective_beside_compute(polled=True)
    by_kind = {s.kind: (s.start_s, s.end_s) for s in spans}
    assert by_kind["comm"] == pytest.approx((0.0, 16.0), abs=1e-12)
    # The forward's 8 s of work, then the 8 s its thread spent polling.
    assert by_kind["forward"] == pytest.approx((0.0, 8.0), abs=1e-12)
    assert by_kind["poll"] == pytest.approx((8.0, 16.0), abs=1e-12)


def test_without_polling_the_slowdown_stays_in_the_compute_span():
    # The same rates with a communication thread (GPUs, progress threads): the compute
    # is slower, not polling, so its span covers the whole 16 s and no poll span exists.
    spans = _one_collective_beside_compute(polled=False)
    assert {s.kind for s in spans} == {"comm", "forward"}
    fwd = next(s for s in spans if s.kind == "forward")
    assert (fwd.start_s, fwd.end_s) == pytest.approx((0.0, 16.0), abs=1e-12)


def _forward_then_poll_spans() -> list[Span]:
    """Six 2 s iterations: forward [0, 1], a poll [1, 2], a collective in flight [0, 2]."""
    spans = []
    for t in range(6):
        t0 = 2.0 * t
        spans += [
            Span(0, COMPUTE, "forward", t, "L0", t0, t0 + 1.0),
            Span(0, COMPUTE, "poll", t, "L0", t0 + 1.0, t0 + 2.0),
            Span(0, "comm0", "comm", t, "all", t0, t0 + 2.0, 8.0),
        ]
    return spans


def test_polls_are_exposed_communication_and_the_budget_predicts_outside():
    # Iterations of: forward 1 s while the previous iteration's 1 s collective runs
    # (delayed-like), then 1 s of polling. The simulated breakdown counts the poll as
    # polled time (idle compute, not forward) and the error budget sets it beside a real
    # run's time outside every layer and wait.
    spans = _forward_then_poll_spans()
    predicted = Trace(tuple(spans), meta=TraceMeta(warmup_iterations=1, global_batch=2))
    parts = breakdown(predicted)
    assert parts.forward_s == pytest.approx(1.0)
    assert parts.polled_s == pytest.approx(1.0)
    assert M.exposed_comm_s(predicted) == pytest.approx(1.0)
    # A measured run of the same shape: the poll is a gap (no span) in the real trace.
    measured = Trace(
        tuple(s for s in spans if s.kind != "poll"),
        meta=TraceMeta(warmup_iterations=1, global_batch=2),
    )
    budget = {r["component"]: r for r in error_budget([measured_stats(measured)], predicted)}
    assert budget["outside_s"]["measured_s"] == pytest.approx(1.0)
    assert budget["outside_s"]["predicted_s"] == pytest.approx(1.0)
    # Blocked on a collective: nothing on either side (the poll is not a wait).
    assert budget["exposed_s"]["predicted_s"] == pytest.approx(0.0)
    assert budget["forward_s"]["error_fraction"] == pytest.approx(0.0)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    spec=st.sampled_from(("layerwise", "bucketed:1", "delayed:1", "delayed:3", "sync")),
    f=st.floats(0.0, 3.0),
    g=st.floats(0.0, 8.0),
    jitter=st.sampled_from((0.0, 0.2)),
)
def test_polled_runs_keep_work_and_polls_apart(spec, f, g, jitter):
    """Over strategies, factors and jitter on the measured CPU profile: every compute
    span lasts exactly its work (the slowdown went to a poll span after it, on the same
    lane), a poll span follows its task's span directly, and every result passes the
    bounds check (inside metrics)."""
    measured = load_profile(MEASURED)
    hw = with_polled_progress(with_interference(measured, f), g)
    explicit = jitter > 0
    sc = make_scenario(
        load_workload("mlp"),
        hw,
        2,
        batch_per_device=8,
        iterations=8,
        ranks="explicit" if explicit else "representative",
        jitter=jitter,
    )
    trace, _, _ = simulate_steady(sc, parse_strategy(spec))
    M.metrics(trace)  # raises if a bound breaks
    ends = {(s.rank, s.iteration, s.label, s.kind): s.end_s for s in trace.spans}
    for s in trace.spans:
        if s.kind == "poll":
            assert s.resource == COMPUTE and s.duration_s > 0
            task_kinds = [
                k
                for k in ("forward", "backward", "update")
                if (s.rank, s.iteration, s.label, k) in ends
            ]
            assert any(ends[(s.rank, s.iteration, s.label, k)] == s.start_s for k in task_kinds)
    if g == 0 and f == 0:
        assert not any(s.kind == "poll" for s in trace.spans)


def test_with_polled_progress_refuses_bad_factors():
    hw = load_profile(MEASURED)
    assert with_polled_progress(hw, 2.5).comm_progress == "polled"
    for bad in (-1.0, float("nan"), float("inf"), 1e6):
        with pytest.raises(InputError):
            with_polled_progress(hw, bad)


def test_a_profile_file_takes_polled_progress_and_refuses_unknown_modes(tmp_path):
    import yaml

    from hardware_profiles.loader import parse_profile

    doc = yaml.safe_load(open("hardware_profiles/measured/epyc-2core-vm.yaml"))
    hw = parse_profile(dict(doc, comm_progress="polled", comm_interference_factor=3.5), "p.yaml")
    assert (hw.comm_progress, hw.comm_interference_factor) == ("polled", 3.5)
    assert parse_profile(doc, "p.yaml").comm_progress == "thread"  # the default
    for key, value in (("comm_progress", "spin"), ("comm_interference_factor", -1)):
        with pytest.raises(InputError) as e:
            parse_profile(dict(doc, **{key: value}), "p.yaml")
        assert key in str(e.value)


# -- the calibration's choices -----------------------------------------------------------------
def _compute(tiles: list[tuple[float, float]], whole: float, sgd: float | None):
    layers = [SimpleNamespace(forward_s=a, backward_s=b) for a, b in tiles]
    workload = SimpleNamespace(update_seconds=lambda model, optimizer: sgd)
    return SimpleNamespace(
        layers=layers, whole_model_s=whole, workload=workload, device=SimpleNamespace(model="m")
    )


def test_poll_spacing_is_the_plain_mean_tile():
    # Tiles 1, 3, 0 (skipped: no backward), 2, 2 ms: mean 2 ms (length-weighted: 2.33).
    c = _compute([(1e-3, 3e-3), (2e-3, 0.0), (2e-3, 0.0)], whole=8e-3, sgd=None)
    assert poll_spacing_s(c) == pytest.approx(2e-3)
    assert poll_spacing_s(_compute([], whole=0.0, sgd=None)) == pytest.approx(1e-3)
    assert poll_spacing_s(_compute([(1e-9, 1e-9)], whole=0.0, sgd=None)) == pytest.approx(1e-5)


def test_compute_between_collectives_is_a_pass_and_an_sgd_step_capped():
    assert compute_between_s(_compute([], whole=5e-3, sgd=1.5e-3)) == pytest.approx(6.5e-3)
    assert compute_between_s(_compute([], whole=5e-3, sgd=None)) == pytest.approx(5e-3)
    assert compute_between_s(_compute([], whole=1.0, sgd=0.1)) == MAX_COMPUTE_BETWEEN_S
    # the cap is said: calibrate all prints and returns this
    assert between_note(_compute([], whole=1.0, sgd=0.1)) == {
        "seconds": MAX_COMPUTE_BETWEEN_S, "workload_s": pytest.approx(1.1), "capped": True,
    }  # fmt: skip
    assert between_note(_compute([], whole=5e-3, sgd=None))["capped"] is False


def test_polled_profile_is_said_by_profiles_show(tmp_path):
    import yaml
    from cli_helpers import dtsim

    doc = yaml.safe_load(open("hardware_profiles/measured/epyc-2core-vm.yaml"))
    path = tmp_path / "polled.yaml"
    path.write_text(yaml.safe_dump(dict(doc, comm_progress="polled", comm_interference_factor=3.5)))
    result = dtsim("profiles", "show", str(path))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "polled by the computing thread" in text and "3.5" in text


def test_a_profile_refuses_true_or_false_for_a_number():
    import yaml

    from hardware_profiles.loader import parse_profile

    doc = yaml.safe_load(open(MEASURED))
    for key in ("interference_factor", "comm_interference_factor"):
        with pytest.raises(InputError) as e:
            parse_profile(dict(doc, **{key: True}), "p.yaml")
        assert e.value.key == key and "not true" in str(e.value)
    device = dict(doc["device"], memory_gib=False)
    with pytest.raises(InputError) as e:
        parse_profile(dict(doc, device=device), "p.yaml")
    assert e.value.key == "device.memory_gib"


def test_whatif_says_how_polled_collectives_are_counted(tmp_path):
    import yaml
    from cli_helpers import dtsim

    doc = yaml.safe_load(open(MEASURED))
    path = tmp_path / "polled.yaml"
    doc.update(comm_progress="polled", comm_interference_factor=2.8, interference_factor=0.6)
    path.write_text(yaml.safe_dump(doc))
    result = dtsim(
        "whatif", "--hardware", path, "--workload", "mlp", "--devices", "2",
        "--batch-per-device", "32", "--strategies", "sync,delayed:1", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    import json

    notes = " ".join(json.loads(result.stdout)["notes"])
    assert "comm_progress: polled" in notes and "polling per iteration: delayed:1" in notes


def test_validate_rows_count_only_blocking_as_exposed_on_both_sides():
    """A measured run's polls are gaps, outside its wait spans; a predicted run's are poll
    spans, inside the compute stream's idle time. The comparison row takes them out of the
    prediction, so both sides' exposed time is blocking only (here none) and overlap 100%."""
    from calibrate.validation.compare import compare

    spans = _forward_then_poll_spans()
    meta = TraceMeta(warmup_iterations=1, global_batch=2)
    predicted = Trace(tuple(spans), meta=meta)
    measured = Trace(tuple(s for s in spans if s.kind != "poll"), meta=meta)
    pm = _plain_metrics(predicted)
    row = compare({"delayed:1": [measured_stats(measured)]}, {"delayed:1": (pm, predicted)})[0]
    assert pm.exposed_comm_s == pytest.approx(1.0)  # the simulator's idle time: the poll
    assert row["predicted_exposed_s"] == pytest.approx(0.0)
    assert row["measured_exposed_s"] == pytest.approx(0.0)
    assert row["predicted_overlap_fraction"] == pytest.approx(1.0)
    assert row["measured_overlap_fraction"] == pytest.approx(1.0)


def _plain_metrics(trace: Trace):
    """Metrics of a hand-made Trace (it carries no per-iteration work, so no bounds)."""
    return M.metrics(trace)


def test_run_says_how_polled_collectives_are_counted(tmp_path):
    import json

    import yaml
    from cli_helpers import dtsim

    doc = yaml.safe_load(open(MEASURED))
    path = tmp_path / "polled.yaml"
    doc.update(comm_progress="polled", comm_interference_factor=2.8, interference_factor=0.6)
    path.write_text(yaml.safe_dump(doc))
    args = (
        "run", "--hardware", path, "--workload", "mlp", "--devices", "2",
        "--batch-per-device", "32", "--strategy", "delayed:1", "--iterations", "12",
    )  # fmt: skip
    result = dtsim(*args, "--json")
    assert result.returncode == 0, result.stderr
    notes = " ".join(json.loads(result.stdout)["notes"])
    assert "comm_progress: polled" in notes and "polling per iteration: delayed:1" in notes
    plain = dtsim(*args)
    assert "note: collectives progress only in the computing thread's polls" in plain.stderr
