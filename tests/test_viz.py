"""sim.viz.figures, sim.formats.chrome_trace, sim.analysis.device_sweep and sim.cli.timeline
without a browser: what the figures hold, the Chrome trace rules, the readers and
the timeline command.

The hand trace (one rank, 2 iterations, seconds):

    compute  forward L0 [0, 1]  backward L0 [1, 2]  .. idle ..  forward L0 [4, 5]
    comm0                       all-reduce L0 [2, 3.5]

Iteration 0's window is [0, 4] (forward of iteration 1 starts at 4); compute is idle
over [2, 4] and the collective runs over [2, 3.5], so the exposed communication is
[2, 3.5] (1.5 s) and [3.5, 4] is idle with nothing in flight.
"""

from __future__ import annotations

import json
import re

import numpy as np
import plotly.graph_objects as go
import pytest
from click.testing import CliRunner

from hardware_profiles import load_profile
from sim.analysis.device_sweep import parse_device_counts, sweep_devices
from sim.analysis.whatif import RESULT_KEYS
from sim.app.spec import ScenarioSpec
from sim.app.whatif import WhatifRequest, whatif
from sim.cli.timeline import timeline
from sim.engine.simulate import simulate
from sim.engine.trace import MemorySample, Span, Trace, TraceMeta
from sim.errors import InputError
from sim.formats.chrome_trace import assign_lanes, check_chrome_trace, chrome_trace
from sim.formats.io import chrome_trace as io_chrome_trace
from sim.formats.io import write_chrome_trace, write_csv
from sim.formats.trace_files import read_trace_file
from sim.model.scenario import make_scenario
from sim.strategies import parse_strategies, parse_strategy
from sim.viz import figures as viz
from workloads import load_workload

HAND = Trace(
    spans=(
        Span(0, "compute", "forward", 0, "L0", 0.0, 1.0),
        Span(0, "compute", "backward", 0, "L0", 1.0, 2.0),
        Span(0, "comm0", "comm", 0, "L0", 2.0, 3.5, 4096.0),
        Span(0, "compute", "forward", 1, "L0", 4.0, 5.0),
    ),
    memory=(MemorySample(0, 0.0, 100.0),),
    meta=TraceMeta(strategy="hand", ranks_mode="explicit", global_batch=8, warmup_iterations=0),
)

# Measured layerwise: two collectives in flight at once on comm0 (non-blocking calls).
MEASURED = Trace(
    spans=(
        Span(0, "compute", "forward", 0, "L0", 0.0, 1.0),
        Span(0, "compute", "backward", 0, "L1", 1.0, 2.0),
        Span(0, "comm0", "comm", 0, "L1", 1.5, 3.0, 64.0),
        Span(0, "compute", "backward", 0, "L0", 2.0, 2.5),
        Span(0, "comm0", "comm", 0, "L0", 2.5, 3.2, 32.0),
        Span(0, "compute", "wait", 0, "waitall", 2.5, 3.2),
        Span(0, "compute", "forward", 1, "L0", 3.3, 4.0),
    ),
    meta=TraceMeta(strategy="layerwise", ranks_mode="explicit", measured=True),
)


def small_scenario(ranks: str = "representative", iterations: int = 6, devices: int = 8):
    return make_scenario(
        load_workload("alexnet"),
        load_profile("dgx1-p100"),
        devices,
        global_batch=256,
        iterations=iterations,
        ranks=ranks,
    )


@pytest.fixture(scope="module")
def three():
    sc = small_scenario()
    return [(s, simulate(sc, parse_strategy(s))[0]) for s in ("sync", "bucketed", "delayed:2")]


# -- Chrome trace rules -------------------------------------------------------------------
def _doc(*events: dict) -> dict:
    names = [
        {"ph": "M", "name": "process_name", "pid": 0, "tid": 0, "args": {"name": "rank 0"}},
        {"ph": "M", "name": "thread_name", "pid": 0, "tid": 0, "args": {"name": "compute"}},
    ]
    return {"traceEvents": names + list(events), "displayTimeUnit": "ms"}


def _x(ts: float, dur: float, **kw) -> dict:
    return {"ph": "X", "name": "f", "pid": 0, "tid": 0, "ts": ts, "dur": dur, **kw}


def test_clean_document_has_no_problems():
    doc = _doc(
        _x(0, 10),
        _x(2, 3),  # nested inside the first
        _x(10, 5),  # starts where the first ends
        {"ph": "C", "name": "memory", "pid": 0, "ts": 0, "args": {"bytes": 1.0}},
    )
    assert check_chrome_trace(doc) == []
    assert check_chrome_trace(doc["traceEvents"]) == []  # a bare list is allowed


@pytest.mark.parametrize(
    "event, expect",
    [
        ({"ph": "Q", "pid": 0, "tid": 0}, "unknown phase"),
        ({"name": "f", "pid": 0, "tid": 0, "ts": 0, "dur": 1}, "unknown phase"),
        (_x(0, -1), "negative dur"),
        (_x("0", 1), "ts"),
        ({"ph": "X", "name": "f", "pid": 0, "tid": 0, "ts": 0}, "dur"),
        ({"ph": "X", "name": "f", "pid": 0, "ts": 0, "dur": 1}, "tid"),
        (_x(0, float("inf")), "dur"),
        ({"ph": "M", "name": "thread_colour", "pid": 0, "args": {}}, "unknown metadata"),
        ({"ph": "M", "name": "thread_name", "pid": 0, "tid": 1, "args": {}}, "args.name"),
        ({"ph": "C", "name": "m", "pid": 0, "ts": 0, "args": {"b": "x"}}, "numbers"),
    ],
)
def test_each_rule_is_checked(event, expect):
    problems = check_chrome_trace(_doc(event))
    assert len(problems) == 1 and expect in problems[0], problems


def test_partial_overlap_on_one_thread_is_a_problem_nesting_is_not():
    problems = check_chrome_trace(_doc(_x(0, 10), _x(5, 10)))
    assert len(problems) == 1 and "partly overlaps" in problems[0]
    # Float noise below the tolerance (1 ns) is not an overlap.
    assert check_chrome_trace(_doc(_x(0, 10.0000000001), _x(10, 1))) == []


def test_missing_names_are_problems():
    doc = {"traceEvents": [_x(0, 1)]}
    problems = check_chrome_trace(doc)
    assert any("no thread_name" in p for p in problems)
    assert any("no process_name" in p for p in problems)
    assert check_chrome_trace({"events": []}) == ["the document has no 'traceEvents' list"]


@pytest.mark.parametrize("ranks", ["representative", "explicit"])
def test_simulated_traces_pass_with_both_exporters(ranks):
    sc = small_scenario(ranks=ranks, iterations=5, devices=4)
    for name in ("sync", "horovod", "delayed:2", "async-layerwise:2", "priority", "ps:2"):
        trace, _ = simulate(sc, parse_strategy(name))
        for export in (io_chrome_trace, chrome_trace):
            assert check_chrome_trace(export(trace)) == [], (name, export.__module__)


def test_delayed_channels_are_separate_threads():
    trace, _ = simulate(small_scenario(iterations=5), parse_strategy("delayed:2"))
    doc = chrome_trace(trace)
    threads = {
        e["tid"]: e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"
    }
    assert sorted(threads.values()) == ["comm0", "comm1", "compute"]
    tids = {e["tid"] for e in doc["traceEvents"] if e.get("cat") == "comm"}
    assert {threads[t] for t in tids} == {"comm0", "comm1"}


def test_overlapping_measured_collectives_get_their_own_threads():
    doc = chrome_trace(MEASURED)
    assert check_chrome_trace(doc) == []
    names = [e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "thread_name"]
    assert names == ["compute", "comm0", "comm0 #2"]
    assert assign_lanes([s for s in MEASURED.spans if s.resource == "comm0"]) == [0, 1]


def test_io_exporter_nests_measured_collectives():
    # sim.formats.io.chrome_trace once put concurrent measured collectives on one thread.
    assert check_chrome_trace(io_chrome_trace(MEASURED)) == []


# -- the timeline -------------------------------------------------------------------------
def _by_name(fig: go.Figure, name: str) -> list:
    return [t for t in fig.data if t.name == name]


def test_timeline_traces_rows_and_labels(three):
    fig = viz.timeline_figure(three)
    kinds = {t.name for t in fig.data if t.type == "scattergl"}
    assert kinds == {"forward", "backward", "update", "comm"}
    gl = [t for t in fig.data if t.type == "scattergl"]
    # Per kind and group: one hover trace, and bars in two shades (alternate spans on a
    # row), one shade only where every span of the kind falls on the same parity.
    kinds_per_group = sum(len({s.kind for s in t.spans}) for _, t in three)
    assert len([t for t in gl if t.mode == "markers"]) == kinds_per_group
    assert kinds_per_group < len([t for t in gl if t.mode == "lines"]) <= 2 * kinds_per_group
    shades = {t.line.color for t in gl if t.mode == "lines" and t.name == "forward"}
    assert shades == {viz.KIND_COLOURS["forward"], "#416790"}  # 14% darker
    assert fig.data[0].type == "table"
    assert len(_by_name(fig, "iteration start")) == 3
    # Legend: each kind once; a click toggles its whole group (every lane group).
    assert sorted(t.name for t in fig.data[1:] if t.showlegend is not False) == sorted(
        ["forward", "backward", "update", "comm", "iteration start", "exposed comm"]
    )
    assert all(t.legendgroup == t.name for t in gl)
    # Every span is drawn: 3 points (start, end, gap) per span.
    drawn = sum(len(t.x) // 3 for t in gl if t.mode == "lines")
    # ...and every collective once more on the row of each link class it loads (one
    # DGX-1 node: NVLink only).
    comm = sum(1 for _, t in three for s in t.spans if s.kind == "comm")
    assert drawn == sum(len(t) for _, t in three) + comm
    ticks = [list(fig.layout[f"yaxis{i}"].ticktext) for i in ("", "2", "3")]
    assert ticks[0] == [
        "rank 0 (representative of 8) · compute",
        "rank 0 (representative of 8) · comm0",
        "rank 0 (representative of 8) · link:nvlink",
    ]
    assert "rank 0 (representative of 8) · comm1" in ticks[2]  # delayed:2's channel
    assert fig.layout.meta["dtsim_note"] is None
    assert not fig.layout.annotations or all(
        a.name != "aggregation-note" for a in fig.layout.annotations
    )


def test_hover_data_and_exposed_shading_of_the_hand_trace():
    fig = viz.timeline_figure([("hand", HAND)])
    comm = [t for t in _by_name(fig, "comm") if t.mode == "markers"][0]
    start_ms, dur_ms, iteration, nbytes = comm.customdata[0]
    assert (start_ms, dur_ms, iteration, nbytes) == (2000.0, 1500.0, 0.0, 4096.0)
    assert comm.x[0] == 2750.0 and list(comm.text) == ["L0"]
    assert (
        "bytes" not in [t for t in _by_name(fig, "forward") if t.mode == "markers"][0].hovertemplate
    )
    (shade,) = _by_name(fig, "exposed comm")
    assert list(shade.x) == [2000.0, 3500.0, 3500.0, 2000.0, 2000.0, None]
    (bounds,) = _by_name(fig, "iteration start")
    assert [x for x in bounds.x if x is not None] == [0.0, 0.0, 4000.0, 4000.0]
    assert list(fig.layout.yaxis.ticktext) == ["rank 0 · compute", "rank 0 · comm0"]


def test_exposed_intervals_by_hand():
    assert viz.exposed_intervals(HAND.spans, [(0.0, 4.0)]) == [(2.0, 3.5)]
    # Outside the windows nothing is exposed; compute covering comm hides it.
    assert viz.exposed_intervals(HAND.spans, [(0.0, 2.0)]) == []


def test_measured_overlap_gets_extra_lanes_and_wait_is_exposed():
    fig = viz.timeline_figure([("measured", MEASURED)])
    assert list(fig.layout.yaxis.ticktext) == [
        "rank 0 · compute",
        "rank 0 · comm0 #1",
        "rank 0 · comm0 #2",
    ]
    (shade,) = _by_name(fig, "exposed comm")
    # Window [0, 3.3]: compute (forward/backward) idle over [2.5, 3.3], comm until 3.2.
    assert list(shade.x[:2]) == [2500.0, 3200.0]
    # No global batch: the table says so instead of a throughput.
    assert viz.summary_rows([("m", MEASURED)])[0]["throughput_samples_per_s"] is None


def test_aggregation_keeps_whole_iterations_and_says_so(three):
    total = sum(len(t) for _, t in three)
    fig = viz.timeline_figure(three, max_spans=200)
    meta = fig.layout.meta
    assert meta["dtsim_spans"] == total
    # Spans per iteration: sync 25, bucketed 31, delayed:2 25 (81 together; each
    # bucket's gradient copy is a span): two iterations each (162) fit in 200, three
    # (243) do not. Windows start after warm-up (1 for sync and bucketed, 1 + d = 3 for
    # delayed:2).
    assert meta["dtsim_spans_drawn"] == 162
    assert meta["dtsim_note"] == (
        "Showing 162 spans (sync: iterations 1–2 of 0–5; bucketed: iterations 1–2 of 0–5; "
        "delayed:2: iterations 3–4 of 0–5): 486 spans in all, above the limit of 200. "
        "The table's metrics use every span."
    )
    (ann,) = [a for a in fig.layout.annotations if a.name == "aggregation-note"]
    assert "Showing" in ann.text
    drawn = sum(len(t.x) // 3 for t in fig.data if t.type == "scattergl" and t.mode == "lines")
    # The traces' own spans, and their collectives again on the link rows.
    shown = viz.select_spans(three, 200).spans
    assert drawn == meta["dtsim_spans_drawn"] + sum(s.kind == "comm" for sp in shown for s in sp)


def test_aggregation_falls_back_to_ranks_then_earliest_spans():
    trace, _ = simulate(
        small_scenario(ranks="explicit", iterations=3, devices=4), parse_strategy("sync")
    )
    per_rank_iteration = sum(1 for s in trace.spans if s.rank == 0 and s.iteration == 1)
    sel = viz.select_spans([("x", trace)], 2 * per_rank_iteration)
    assert "iteration 1, ranks 0–1 of 4" in sel.note
    assert {s.rank for s in sel.spans[0]} == {0, 1}
    sel = viz.select_spans([("x", trace)], 5)
    assert len(sel.spans[0]) == 5 and "earliest 5" in sel.note


def test_bad_timeline_input():
    with pytest.raises(InputError):
        viz.timeline_figure([])
    with pytest.raises(InputError):
        viz.timeline_figure([("hand", HAND)], max_spans=0)


# -- other figures ------------------------------------------------------------------------
SWEEP_ROWS = [
    {
        "devices": n,
        "strategy": s,
        "iteration_time_s": t,
        "parallel_efficiency": e,
        "comm_s": 0.01,
        "exposed_comm_s": x,
    }
    for n, s, t, e, x in (
        (8, "sync", 0.10, 0.9, 0.01),
        (16, "sync", 0.11, 0.8, 0.02),
        (8, "bucketed", 0.09, 0.95, 0.002),
        (16, "bucketed", 0.095, 0.9, 0.004),
    )
]


def test_scaling_figure():
    fig = viz.scaling_figure(SWEEP_ROWS)
    assert [t.name for t in fig.data] == ["ideal", "sync", "sync", "bucketed", "bucketed"]
    assert list(fig.data[1].y) == pytest.approx([7.2, 12.8])  # devices x efficiency
    assert list(fig.data[2].y) == [0.9, 0.8]
    with pytest.raises(InputError, match="devices"):
        viz.scaling_figure([{"strategy": "sync", "parallel_efficiency": 1.0}])


def test_breakdown_figure():
    fig = viz.breakdown_figure(SWEEP_ROWS[:2])
    compute, exposed, hidden, it = fig.data
    assert list(compute.x) == ["sync @ 8", "sync @ 16"]
    # No compute_s: compute = iteration - exposed.
    assert list(compute.y) == pytest.approx([90.0, 90.0])
    assert list(hidden.y) == pytest.approx([0.0, 0.0])
    assert list(it.y) == pytest.approx([100.0, 110.0])


def test_validation_figure():
    report = {
        "results": [
            {
                "strategy": "sync",
                "measured_iteration_time_s": 0.2,
                "measured_iqr_s": 0.02,
                "predicted_iteration_time_s": 0.22,
            }
        ]
    }
    measured, predicted = viz.validation_figure(report).data
    assert list(measured.error_y.array) == pytest.approx([10.0])  # ± IQR / 2, ms
    assert list(predicted.text) == ["+10%"]
    with pytest.raises(InputError, match="measured_iteration_time_s"):
        viz.validation_figure({"results": [{"strategy": "sync"}]})


# -- files --------------------------------------------------------------------------------
def test_write_html_is_self_contained_and_atomic(tmp_path, three):
    path = tmp_path / "t.html"
    viz.write_html([viz.timeline_figure(three), viz.scaling_figure(SWEEP_ROWS)], path)
    text = path.read_text()
    assert text.count("dtsimRendered") == 2
    assert not re.search(r"<script[^>]*\bsrc=", text)  # nothing fetched: works offline
    # plotly.js inline exactly once (its licence banner starts the bundle).
    assert text.count("plotly.js v") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["t.html"]
    with pytest.raises(InputError, match="does not exist"):
        viz.write_html(viz.scaling_figure(SWEEP_ROWS), tmp_path / "no" / "t.html")


def test_export_static_says_what_to_install(tmp_path):
    fig = viz.scaling_figure(SWEEP_ROWS)
    with pytest.raises(InputError, match=r"\.png, \.svg or \.pdf"):
        viz.export_static(fig, tmp_path / "x.gif")
    try:
        import kaleido  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="pip install kaleido"):
            viz.export_static(fig, tmp_path / "x.png")
        assert not (tmp_path / "x.png").exists()


# -- readers, sweep and the command -------------------------------------------------------
def test_read_csv_and_json_traces(tmp_path):
    csv_path = tmp_path / "hand.csv"
    write_csv(HAND, csv_path)
    back = read_trace_file(csv_path)
    assert back.spans == HAND.spans and back.meta.source == "hand.csv"
    from sim.formats.trace_files import write_trace

    json_path = tmp_path / "hand.trace.json"
    write_trace(HAND, json_path)
    assert read_trace_file(json_path) == HAND
    # dtsim's own Chrome trace reads back as the spans it was written from (issue #15:
    # the timeline takes Chrome and Kineto traces beside dtsim's).
    chrome = tmp_path / "chrome.json"
    write_chrome_trace(HAND, chrome)
    back = read_trace_file(chrome)
    assert sorted(back.spans, key=lambda s: (s.start_s, s.kind)) == sorted(
        HAND.spans, key=lambda s: (s.start_s, s.kind)
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("rank,resource,kind,iteration,label,start_s,end_s,bytes\n0,compute,x\n")
    with pytest.raises(InputError, match="line 2"):
        read_trace_file(bad)
    with pytest.raises(InputError, match="not found"):
        read_trace_file(tmp_path / "missing.csv")


def test_timeline_command(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "m.trace.json"
    write_csv(HAND, a)
    from sim.formats.trace_files import write_trace

    write_trace(MEASURED, b)
    out = tmp_path / "page.html"
    result = CliRunner().invoke(timeline, [str(a), str(b), "--html", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [t["name"] for t in doc["traces"]] == ["a.csv", "layerwise (measured)"]
    assert out.stat().st_size > 1_000_000  # plotly.js is inline
    result = CliRunner().invoke(timeline, [str(a), "--html", str(out), "--max-spans", "2"])
    assert result.exit_code == 0 and "note: Showing" in result.output
    result = CliRunner().invoke(
        timeline, [str(a), "--html", str(out), "--name", "x", "--name", "y"]
    )
    assert result.exit_code == 2 and "once per TRACE" in result.output
    result = CliRunner().invoke(timeline, [str(tmp_path / "nope.csv"), "--html", str(out)])
    assert result.exit_code == 2 and "file not found" in result.output


def test_parse_device_counts():
    assert parse_device_counts("16, 8,32,8") == [8, 16, 32]
    for bad in ("", "8,x", "0,8"):
        with pytest.raises(InputError):
            parse_device_counts(bad)


def test_sweep_devices_and_whatif_page(tmp_path):
    options = {
        "hardware": "dgx1-p100",
        "workload": "alexnet",
        "batch_per_device": 32,
        "iterations": 6,
    }
    strategies = parse_strategies("sync,bucketed")
    rows = sweep_devices(ScenarioSpec(**options, devices=8), strategies, [8, 16])
    assert [(r["devices"], r["strategy"]) for r in rows if r["strategy"] == "sync"] == [
        (8, "sync"),
        (16, "sync"),
    ]
    assert len(rows) == 4
    result = whatif(WhatifRequest(ScenarioSpec(**options, devices=8), strategies="sync,bucketed"))
    mine = [r for r in rows if r["devices"] == 8]
    assert [{k: r[k] for k in RESULT_KEYS} for r in result.rows] == [
        {k: r[k] for k in RESULT_KEYS} for r in mine
    ]
    traces = result.traces_in_row_order()
    assert [name for name, _ in traces] == [r["strategy"] for r in mine]
    for (_, trace), r in zip(traces, mine, strict=True):  # the same runs as the table's
        assert viz.summary_rows([("x", trace)])[0]["iteration_time_s"] == r["iteration_time_s"]
    figs = viz.whatif_figures(traces, mine, rows)
    assert [f.layout.title.text.split(":")[0] for f in figs] == [
        "dtsim scaling",
        "dtsim timeline",
        "Where an iteration goes (steady state)",
    ]


def test_plotly_arrays_go_out_as_typed_arrays(three):
    """The page stays small because numpy arrays are written as base64 typed arrays."""
    fig = viz.timeline_figure(three)
    doc = json.loads(fig.to_json())
    bars = next(t for t in doc["data"] if t["type"] == "scattergl")
    assert set(bars["x"]) == {"dtype", "bdata"} and bars["x"]["dtype"] == "f8"
    assert bars["y"]["dtype"] == "u1"
    assert np.isnan(np.asarray(fig.data[3].x, dtype=float)[2])
