"""The comparison behind ``dtsim validate``, on hand-made Traces with exact times."""

from __future__ import annotations

import pytest

from calibrate.validation.compare import Measured, compare, measured_stats, same_ranking
from sim.analysis.metrics import Metrics
from sim.engine.trace import Span, Trace, TraceMeta


def _trace(iterations: int, period: float, comm: float, wait: float, warmup: int = 1) -> Trace:
    """Rank 0: forward at k*period, a comm span from 0.5*period lasting ``comm``, and a
    wait span at the end of the window lasting ``wait``. Rank 1 is noise to be ignored."""
    spans = []
    for t in range(iterations):
        t0 = t * period
        spans.append(Span(0, "compute", "forward", t, "l0", t0, t0 + 0.2 * period))
        spans.append(
            Span(0, "comm0", "comm", t, "all", t0 + 0.5 * period, t0 + 0.5 * period + comm, 8)
        )
        spans.append(Span(0, "compute", "wait", t, "all", t0 + period - wait, t0 + period))
        spans.append(Span(1, "compute", "forward", t, "l0", t0 + 0.01, t0 + 0.9 * period))
    return Trace(tuple(spans), meta=TraceMeta(warmup_iterations=warmup, global_batch=4))


def test_measured_stats_reads_windows_after_warmup():
    m = measured_stats(_trace(6, period=0.010, comm=0.004, wait=0.001))
    assert m.iteration_s == pytest.approx(0.010)
    # Communication is the simulator's: the union of comm and wait spans (here the wait
    # lies outside the comm span: 0.004 + 0.001).
    assert m.comm_s == pytest.approx(0.005)
    assert m.exposed_s == pytest.approx(0.001)
    assert m.overlap == pytest.approx(0.8)
    # The budget's parts: 0.2 periods of forward, the rest idle (0.001 of it blocked).
    assert m.parts is not None
    assert m.parts.forward_s == pytest.approx(0.002)
    assert m.parts.exposed_s == pytest.approx(0.008)
    assert m.parts.collectives_s == {"all": pytest.approx(0.004)}


def test_error_budget_sets_components_beside_predictions():
    from calibrate.validation.compare import error_budget

    runs = [measured_stats(_trace(6, period=0.010, comm=0.004, wait=0.001))] * 3
    # Predicted: the same trace with a slower forward (0.003 instead of 0.002 s).
    predicted = _trace(6, period=0.010, comm=0.004, wait=0.001)
    slower = tuple(
        s._replace(end_s=s.start_s + 0.003) if s.kind == "forward" and s.rank == 0 else s
        for s in predicted.spans
    )
    budget = {r["component"]: r for r in error_budget(runs, Trace(slower, meta=predicted.meta))}
    assert budget["forward_s"]["error_fraction"] == pytest.approx(0.5)
    assert budget["iteration_s"]["error_fraction"] == pytest.approx(0.0)
    assert budget["collective all"]["predicted_s"] == pytest.approx(0.004)
    assert budget["outside_s"]["measured_s"] == pytest.approx(0.007)


def test_warmup_windows_are_dropped():
    trace = _trace(6, period=0.010, comm=0.004, wait=0.0)
    spans = list(trace.spans)
    # A slow first iteration: everything of iteration >= 1 moves 0.05 s later.
    shifted = [
        s if s.iteration == 0 else s._replace(start_s=s.start_s + 0.05, end_s=s.end_s + 0.05)
        for s in spans
    ]
    m = measured_stats(Trace(tuple(shifted), meta=trace.meta))
    assert m.iteration_s == pytest.approx(0.010)


def test_no_comm_means_full_overlap():
    assert Measured(0.01, 0.0, 0.0).overlap == 1.0


def _metrics(it: float, overlap: float) -> Metrics:
    return Metrics("x", it, 4 / it, 0.004, (1 - overlap) * 0.004, overlap, it, 0.0, False, True)


def test_compare_rows_and_errors():
    measured = {
        "sync": [
            Measured(0.010, 0.004, 0.004),
            Measured(0.012, 0.004, 0.004),
            Measured(0.011, 0.004, 0.004),
        ],
        "delayed:1": [Measured(0.008, 0.004, 0.0)] * 3,
    }
    predicted = {"sync": (_metrics(0.0121, 0.0), None), "delayed:1": (_metrics(0.0076, 1.0), None)}
    rows = {r["strategy"]: r for r in compare(measured, predicted)}
    sync, delayed = rows["sync"], rows["delayed:1"]
    assert sync["measured_iteration_time_s"] == pytest.approx(0.011)
    assert sync["measured_iqr_s"] == pytest.approx(0.001)  # quartiles 0.0105 and 0.0115
    assert sync["error_fraction"] == pytest.approx(0.0121 / 0.011 - 1)
    assert delayed["measured_speedup_vs_sync"] == pytest.approx(0.011 / 0.008)
    assert delayed["predicted_speedup_vs_sync"] == pytest.approx(0.0121 / 0.0076)
    assert delayed["measured_overlap_fraction"] == 1.0 and sync["measured_overlap_fraction"] == 0.0
    assert same_ranking(list(rows.values()))


def test_ranking_flags_a_swap_but_not_a_tie():
    rows = [
        {"measured_iteration_time_s": 0.010, "predicted_iteration_time_s": 0.008},
        {"measured_iteration_time_s": 0.009, "predicted_iteration_time_s": 0.009},
    ]
    assert not same_ranking(rows)
    assert same_ranking(rows, tolerance=0.15)


def test_a_collective_counts_from_its_last_member_s_arrival():
    """Rank 0 calls the all-reduce at 0.5 periods, rank 1 at 0.7; both leave it at 0.9.
    Rank 0's blocking call lasts 0.4 periods, 0.2 of them waiting for rank 1: the
    collective itself took 0.2 periods (as the simulator, which starts it on every
    member when the last arrives, times it). The wait stays in rank 0's communication
    and exposed time."""
    period = 0.010
    spans = []
    for t in range(6):
        t0 = t * period
        for rank, arrive in ((0, 0.5), (1, 0.7)):
            spans.append(Span(rank, "compute", "forward", t, "l0", t0, t0 + arrive * period))
            call = (t0 + arrive * period, t0 + 0.9 * period)
            spans.append(Span(rank, "comm0", "comm", t, "all", *call, 8))
            spans.append(Span(rank, "compute", "wait", t, "all", *call))
    m = measured_stats(Trace(tuple(spans), meta=TraceMeta(warmup_iterations=1, global_batch=4)))
    assert m.parts is not None
    assert m.parts.collectives_s == {"all": pytest.approx(0.2 * period)}
    assert m.comm_s == pytest.approx(0.4 * period)
    assert m.exposed_s == pytest.approx(0.4 * period)
    # Rank 1, which came last, waited for nobody: its call is the collective.
    last = measured_stats(Trace(tuple(spans), meta=TraceMeta(warmup_iterations=1)), rank=1)
    assert last.parts is not None and last.parts.collectives_s == {"all": pytest.approx(0.002)}
    assert last.comm_s == pytest.approx(0.2 * period)


def test_one_repeat_has_no_spread_to_show():
    """The budget says how many repeats each figure has; with one, the table prints no
    '± 0 s' (which would claim a perfect precision nothing measured)."""
    from rich.console import Console

    from calibrate.validation.compare import error_budget
    from sim.cli.calibrate import _budget_table

    trace = _trace(6, period=0.010, comm=0.004, wait=0.001)
    for runs, shown in (([measured_stats(trace)], False), ([measured_stats(trace)] * 3, True)):
        budget = error_budget(runs, trace)
        assert {b["measured_repeats"] for b in budget} == {len(runs)}
        console = Console(width=200, record=True)
        console.print(_budget_table([{"strategy": "sync", "budget": budget}]))
        cells = [line for line in console.export_text().splitlines() if line.startswith("│")]
        assert any("±" in line for line in cells) is shown


def _polled_trace(
    other_busy_until: float | None, measured: bool = False, other_from: float = 4.0
) -> Trace:
    """Two ranks, period 10: a collective in flight from 1 to 5 on both; rank 0 does its
    part in a poll span [3, 5] (the last part) and computes again from 5; rank 1 ran its
    part earlier, in a poll [1.5, 2.5], and then computes [other_from, other_busy_until]
    (or is idle from 2.5)."""
    spans = []
    for t in range(4):
        o = 10.0 * t
        for rank in (0, 1):
            spans.append(Span(rank, "compute", "forward", t, "l0", o, o + 1))
            spans.append(Span(rank, "comm0", "comm", t, "all", o + 1, o + 5, 8))
        spans.append(Span(0, "compute", "poll", t, "all", o + 3, o + 5))
        spans.append(Span(0, "compute", "backward", t, "l0", o + 5, o + 6))
        spans.append(Span(1, "compute", "poll", t, "all", o + 1.5, o + 2.5))
        if other_busy_until is not None:
            spans.append(
                Span(1, "compute", "backward", t, "l0", o + other_from, o + other_busy_until)
            )
    return Trace(tuple(spans), meta=TraceMeta(warmup_iterations=1, measured=measured or None))


def test_a_polled_collective_is_seen_done_at_the_other_rank_s_next_poll():
    """A real rank sees a polled collective complete only in a poll, and the rank whose
    part came last does not see it in that poll (breakdown.seen_complete): the first
    return is the other rank's next poll, at the end of the task it is running (7), or
    the end itself when that rank is idle (blocked in a wait: 5)."""
    from sim.analysis.breakdown import breakdown

    assert breakdown(_polled_trace(7.0)).collectives_s == {"all": pytest.approx(6.0)}
    assert breakdown(_polled_trace(None)).collectives_s == {"all": pytest.approx(4.0)}
    # A task that begins at the end itself (made ready by it) does not hide it.
    assert breakdown(_polled_trace(7.0, other_from=5.0)).collectives_s == {
        "all": pytest.approx(4.0)
    }
    # A measured trace's comm spans already end at the first return: kept as they are.
    assert breakdown(_polled_trace(7.0, measured=True)).collectives_s == {"all": pytest.approx(4.0)}
