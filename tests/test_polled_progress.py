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


def _engine(graph: TaskGraph, **kw) -> list[tuple[int, str, str, float, float]]:
    spans, _, _ = Engine(graph, polled=True, **kw).run()
    return sorted((s.rank, s.kind, s.label, s.start_s, s.end_s) for s in spans)


def _assert_spans(actual, expected) -> None:
    assert [a[:3] for a in actual] == [e[:3] for e in expected], actual
    for a, e in zip(actual, expected, strict=True):
        assert a[3:] == pytest.approx(e[3:], abs=1e-12), (a, e)


def test_a_collective_beside_compute_is_done_at_the_next_poll():
    # A 4 s collective and an 8 s compute task L0 ready together: the thread has work,
    # so it computes, at 1/(1 + 1) while the collective is in flight: [0, 16]. Nothing
    # progresses inside the task; the hook after it, with L1 ready, polls: the
    # collective's work at poll_work 1.5 times its time alone, [16, 22], where the
    # collective ends. L1 then runs at full speed: [22, 23].
    g = TaskGraph()
    g.add("comm", "comm0", 0, "all", 4.0, links=("x",))
    first = g.add("forward", COMPUTE, 0, "L0", 8.0)
    g.add("forward", COMPUTE, 0, "L1", 1.0, deps=(first,))
    _assert_spans(
        _engine(g, interference_factor=1.0, poll_work=1.5),
        [
            (0, "comm", "all", 0.0, 22.0),
            (0, "forward", "L0", 0.0, 16.0),
            (0, "forward", "L1", 22.0, 23.0),
            (0, "poll", "all", 16.0, 22.0),
        ],
    )


def test_a_waiting_thread_progresses_at_the_collectives_own_cost():
    # forward 2 s, then a 3 s collective the update waits for: the thread has nothing to
    # do, so it progresses the collective as a blocking call would, at its time alone
    # and not poll_work times it, and its time is a wait (no poll span): [2, 5].
    g = TaskGraph()
    f = g.add("forward", COMPUTE, 0, "L0", 2.0)
    c = g.add("comm", "comm0", 0, "all", 3.0, deps=(f,), links=("x",))
    g.add("update", COMPUTE, 0, "all", 1.0, deps=(c,))
    _assert_spans(
        _engine(g, interference_factor=1.0, poll_work=2.0),
        [
            (0, "comm", "all", 2.0, 5.0),
            (0, "forward", "L0", 0.0, 2.0),
            (0, "update", "all", 5.0, 6.0),
        ],
    )


def test_the_collective_ends_when_its_last_member_has_done_its_part():
    # Two ranks, rank 1 at half speed. forward F (2 s of work), then a collective C
    # (0.5 s latency, 1 s of work) and a 2 s task G beside it; the update U after C and
    # a 1 s task H after G. C starts when rank 1 arrives, at 4; its work is there at 4.5.
    # Rank 0: F [0, 2], G [2, 4], H [4, 5]; then nothing is ready (U needs C), so it
    # progresses its part while waiting, at its time alone: [5, 6], a wait (no span).
    # Rank 1: F [0, 4], G [4, 8]; with H ready, its hook polls its part at poll_work 2:
    # [8, 10]. C ends at 10 on both, when its last member is done. Rank 0: U [10, 11];
    # rank 1: U (the lower task id) [10, 12], H [12, 14].
    g = TaskGraph()
    f = g.add("forward", COMPUTE, 0, "F", 2.0)
    c = g.add("comm", "comm0", 0, "all", 1.0, deps=(f,), links=("x",), latency_s=0.5)
    gt = g.add("forward", COMPUTE, 0, "G", 2.0, deps=(f,))
    g.add("update", COMPUTE, 0, "U", 1.0, deps=(c,))
    g.add("backward", COMPUTE, 0, "H", 1.0, deps=(gt,))
    _assert_spans(
        _engine(g, ranks=2, poll_work=2.0, rank_speeds=(1.0, 0.5)),
        [
            (0, "backward", "H", 4.0, 5.0),
            (0, "comm", "all", 4.0, 10.0),
            (0, "forward", "F", 0.0, 2.0),
            (0, "forward", "G", 2.0, 4.0),
            (0, "update", "U", 10.0, 11.0),
            (1, "backward", "H", 12.0, 14.0),
            (1, "comm", "all", 4.0, 10.0),
            (1, "forward", "F", 0.0, 4.0),
            (1, "forward", "G", 4.0, 8.0),
            (1, "poll", "all", 8.0, 10.0),
            (1, "update", "U", 10.0, 12.0),
        ],
    )


def test_a_waiting_thread_does_its_collectives_one_at_a_time():
    # Two collectives start at 1 on two channels, A (1 s) and B (3 s); U needs only A.
    # The waiting thread does A's part first, [1, 2]: A ends at 2 and U, now ready, runs
    # [2, 3] before B's part, which the thread does while it waits again: [3, 6].
    g = TaskGraph()
    f = g.add("forward", COMPUTE, 0, "F", 1.0)
    a = g.add("comm", "comm0", 0, "A", 1.0, deps=(f,), links=("x",))
    g.add("comm", "comm1", 0, "B", 3.0, deps=(f,), links=("x",))
    g.add("update", COMPUTE, 0, "U", 1.0, deps=(a,))
    _assert_spans(
        _engine(g, poll_work=2.0),
        [
            (0, "comm", "A", 1.0, 2.0),
            (0, "comm", "B", 1.0, 6.0),
            (0, "forward", "F", 0.0, 1.0),
            (0, "update", "U", 2.0, 3.0),
        ],
    )


def test_a_collective_without_latency_is_polled_as_one_with_a_little():
    # f, then a collective C and a task g beside it, then V after both. The hook at f's
    # end polls only what was pending before f ended, so C, started by f's end, is done
    # after g whether its latency is 0 or 1e-9: g [1, 2], then nothing is ready, so the
    # thread waits and does C's part at its time alone, [2, 3]; V [3, 4]. Two identical
    # ranks get identical timelines (no dependence on which rank's event runs first).
    def timeline(latency: float, ranks: int = 1):
        g = TaskGraph()
        f = g.add("forward", COMPUTE, 0, "f", 1.0)
        c = g.add("comm", "comm0", 0, "C", 1.0, deps=(f,), links=("x",), latency_s=latency)
        gt = g.add("forward", COMPUTE, 0, "g", 1.0, deps=(f,))
        g.add("update", COMPUTE, 0, "V", 1.0, deps=(c, gt))
        return _engine(g, poll_work=3.0, ranks=ranks)

    zero, tiny = timeline(0.0), timeline(1e-9)
    assert [x[:3] for x in zero] == [x[:3] for x in tiny]
    for a, b in zip(zero, tiny, strict=True):
        assert a[3:] == pytest.approx(b[3:], abs=1e-8)
    _assert_spans(
        zero,
        [
            (0, "comm", "C", 1.0, 3.0),
            (0, "forward", "f", 0.0, 1.0),
            (0, "forward", "g", 1.0, 2.0),
            (0, "update", "V", 3.0, 4.0),
        ],
    )
    both = timeline(0.0, ranks=2)
    assert [x[1:] for x in both if x[0] == 0] == [x[1:] for x in both if x[0] == 1]


def test_thread_progress_slows_both_by_their_factors():
    # With a communication thread (GPUs, progress threads) the same 4 s collective and
    # 8 s compute share the rank as fluids: compute at 1/(1 + 1) while the collective
    # runs, the collective at 1/(1 + 3) while the rank computes. After 8 s the collective
    # has done 2 s and the compute 4 s; the collective's other 2 s at 1/4 take 8 s more,
    # as do the compute's 4 s at 1/2: both end at 16, and no poll span exists.
    g = TaskGraph()
    g.add("comm", "comm0", 0, "all", 4.0, links=("x",))
    g.add("forward", COMPUTE, 0, "L0", 8.0)
    spans, _, _ = Engine(g, interference_factor=1.0, comm_interference_factor=3.0).run()
    _assert_spans(
        sorted((s.rank, s.kind, s.label, s.start_s, s.end_s) for s in spans),
        [(0, "comm", "all", 0.0, 16.0), (0, "forward", "L0", 0.0, 16.0)],
    )


def test_poll_work_below_one_is_refused():
    # A collective cannot cost its thread less polled than alone; and the fluid model's
    # factor has no meaning on polled progress.
    for bad in (0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="poll_work"):
            Engine(TaskGraph(), polled=True, poll_work=bad)
    with pytest.raises(ValueError, match="comm_interference_factor"):
        Engine(TaskGraph(), polled=True, comm_interference_factor=1.0)


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
    k=st.floats(1.0, 8.0),
    jitter=st.sampled_from((0.0, 0.2)),
)
def test_polled_runs_keep_work_and_polls_apart(spec, f, k, jitter):
    """Over strategies, factors and jitter on the measured CPU profile: a rank's thread
    does one thing at a time (its compute and poll spans never overlap), every poll
    follows one of its compute tasks directly (the hook after a layer), and every result
    passes the bounds check (inside metrics)."""
    measured = load_profile(MEASURED)
    hw = with_polled_progress(with_interference(measured, f), k)
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
    for rank in {s.rank for s in trace.spans}:
        thread = sorted(
            (s.start_s, s.end_s, s.kind)
            for s in trace.spans
            if s.rank == rank and s.resource == COMPUTE and s.kind != "wait"
        )
        for (_, end, _), (start, _, _) in zip(thread, thread[1:], strict=False):
            assert start >= end - 1e-9 * max(1.0, end)
        ends = {e for _, e, kind in thread if kind != "poll"}
        for start, end, kind in thread:
            if kind == "poll":
                assert end > start and start in ends
    if spec == "sync":  # the thread always waits for sync's all-reduce: no poll
        assert not any(s.kind == "poll" for s in trace.spans)


def test_with_polled_progress_refuses_bad_factors():
    hw = load_profile(MEASURED)
    polled = with_polled_progress(hw, 2.5)
    assert polled.comm_progress == "polled" and polled.poll_work_factor == 2.5
    for bad in (0.5, -1.0, float("nan"), float("inf"), 1e6):
        with pytest.raises(InputError):
            with_polled_progress(hw, bad)


def test_a_profile_keeps_each_progress_model_to_its_own_factor(tmp_path):
    """comm_interference_factor belongs to thread progress and poll_work_factor to polled
    progress: a profile that mixes them is refused, naming the key and what to do."""
    import yaml

    from hardware_profiles.loader import load_profile_file

    doc = yaml.safe_load(open(MEASURED))
    for extra, key in (
        ({"comm_progress": "polled", "comm_interference_factor": 2.0}, "comm_interference_factor"),
        ({"poll_work_factor": 2.0}, "poll_work_factor"),
    ):
        path = tmp_path / "p.yaml"
        path.write_text(yaml.safe_dump({**doc, **extra}))
        with pytest.raises(InputError, match=key) as err:
            load_profile_file(path)
        assert err.value.key == key
    path.write_text(yaml.safe_dump({**doc, "comm_progress": "polled", "poll_work_factor": 2.0}))
    assert load_profile_file(path).poll_work_factor == 2.0


def test_a_profile_file_takes_polled_progress_and_refuses_unknown_modes(tmp_path):
    import yaml

    from hardware_profiles.loader import parse_profile

    doc = yaml.safe_load(open("hardware_profiles/measured/epyc-2core-vm.yaml"))
    hw = parse_profile(dict(doc, comm_progress="polled", poll_work_factor=3.5), "p.yaml")
    assert (hw.comm_progress, hw.poll_work_factor) == ("polled", 3.5)
    assert parse_profile(doc, "p.yaml").comm_progress == "thread"  # the default
    for key, value in (
        ("comm_progress", "spin"),
        ("comm_interference_factor", -1),
        ("poll_work_factor", 0.5),
    ):
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
    path.write_text(yaml.safe_dump(dict(doc, comm_progress="polled", poll_work_factor=3.5)))
    result = dtsim("profiles", "show", str(path))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "polled by the computing thread" in text and "3.5x its time alone" in text


def test_a_profile_refuses_true_or_false_for_a_number():
    import yaml

    from hardware_profiles.loader import parse_profile

    doc = yaml.safe_load(open(MEASURED))
    for key in ("interference_factor", "comm_interference_factor", "poll_work_factor"):
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
    doc.update(comm_progress="polled", poll_work_factor=2.8, interference_factor=0.6)
    path.write_text(yaml.safe_dump(doc))
    result = dtsim(
        "whatif", "--hardware", path, "--workload", "mlp", "--devices", "2",
        "--batch-per-device", "32", "--strategies", "sync,delayed:1", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    import json

    notes = " ".join(json.loads(result.stdout)["notes"])
    assert "comm_progress: polled" in notes and "polling per iteration: delayed:1" in notes
    assert "2.8x their time alone" in notes


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
    doc.update(comm_progress="polled", poll_work_factor=2.8, interference_factor=0.6)
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


def test_the_poll_work_factor_makes_the_measured_size_cost_the_measured_poll_time():
    """calibrate all writes poll_work_factor against the profile's own cost of the
    measured all-reduce: its latency plus poll_work_factor times its bandwidth part is the
    thread's measured time per collective. Below 1 it is raised to 1, and said."""
    import yaml

    from hardware_profiles.loader import parse_profile
    from sim.app.calibration import _set_poll_work
    from sim.model.collectives import CostModel
    from sim.model.topology import Topology, make_placement

    doc = dict(yaml.safe_load(open(MEASURED)), comm_progress="polled")
    nbytes = 7_454_760
    profile = parse_profile(doc, "p.yaml")
    cost = CostModel(Topology(profile, make_placement(profile, 2))).cost("allreduce", nbytes)
    measured = cost.latency_s + 2.5 * cost.bandwidth_s
    ranks = (SimpleNamespace(rank=0, comm_iterations=9), SimpleNamespace(rank=1, comm_iterations=9))

    def written(poll_collective_s: float, samples=ranks) -> tuple[float, str]:
        d = dict(doc, sources=list(doc["sources"]))
        run = SimpleNamespace(bytes=nbytes, poll_collective_s=poll_collective_s, samples=samples)
        _set_poll_work(d, run, 2)
        parse_profile(d, "p.yaml")
        return d["poll_work_factor"], " ".join(d["sources"][-1].split())

    k, text = written(measured)
    assert k == pytest.approx(2.5, abs=1e-4)
    assert text.startswith("poll_work_factor = ") and "written as" not in text
    k, text = written(0.5 * cost.time_s)
    assert k == 1.0
    assert "written as 1 (a collective costs its thread at least its time alone)" in text
    k, text = written(cost.latency_s + 250 * cost.bandwidth_s)
    assert k == 100.0 and "capped at 100" in text
    stalled = (ranks[0], SimpleNamespace(rank=1, comm_iterations=0))
    k, text = written(measured, stalled)
    assert k == 100.0 and "rank(s) 1 completed no all-reduce while computing" in text
